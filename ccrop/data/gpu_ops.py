"""Batched image ops on tensors (GPU or CPU): crop+resize, flip, jitter, gray, blur, solarize.

Pure functions of images and per-sample parameters; ``ccrop.data.gpu_views.GPUViews`` chains
them into views. They are the GPU twin of ``ccrop.data.views.ViewTransform``: the same
photometric distributions (``ccrop.data.views.Recipe``) applied to a whole batch with
per-sample parameters, without a Python loop over samples and without host syncs on CUDA.
Numeric differences from the PIL pipeline (uint8 rounding, PIL's blur and hue) are listed in
``docs/gpu_views.md``.

Every image op takes float images ``(B, 3, H, W)`` in [0, 1] and per-sample parameters ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .views import RECIPES, Recipe

#: ITU-R 601 luma weights as torchvision's ``rgb_to_grayscale`` uses them.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: PIL ``solarize(img, 128)`` inverts uint8 pixels >= 128.
SOLARIZE_THRESHOLD = 128 / 255


# ----------------------------------------------------------------------------- crop + resize


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample 1-D crop-and-resize matrices with PIL's antialiased bilinear (triangle) filter.

    Row ``o`` of sample ``b`` holds the weights of input pixels ``0..in_size-1`` for output pixel
    ``o`` of the crop ``[start, start + length)``: a triangle of half-width ``max(1, scale)``
    (``scale = length / out_size``) centred at ``start + (o + 0.5) * scale``, clipped to the crop
    and normalised, as ``PIL.Image.resize(BILINEAR)`` and torchvision's antialiased resize do.
    Upscaling reduces to plain bilinear interpolation with edge replication.

    Args:
        start: (B,) first pixel of the crop (int or float).
        length: (B,) crop length in pixels (>= 1).
        in_size: image extent along this axis.
        out_size: output extent S.
        flip: optional (B,) bool; True reverses the output order (a mirrored crop).

    Returns:
        (B, S, in_size) float32 weights, each row summing to 1.
    """
    dev = start.device
    length = length.to(torch.float32)
    scale = length / out_size  # (B,)
    support = scale.clamp_min(1.0)[:, None, None]  # (B, 1, 1)
    o = torch.arange(out_size, device=dev, dtype=torch.float32)[None, :]  # (1, S)
    if flip is not None:
        o = torch.where(flip[:, None], out_size - 1 - o, o)  # (B, S)
    centre = (o + 0.5) * scale[:, None]  # (B, S)
    pos = (torch.arange(in_size, device=dev, dtype=torch.float32)[None, None, :]
           - start.to(torch.float32)[:, None, None] + 0.5)  # (B, 1, in) centres in crop coords
    w = (1.0 - ((pos - centre[:, :, None]) / support).abs()).clamp_min(0.0)  # (B, S, in)
    w = w * ((pos > 0) & (pos < length[:, None, None]))
    return w / w.sum(dim=-1, keepdim=True)


def crop_resize(images: torch.Tensor, src_index: torch.Tensor, params: torch.Tensor, size: int,
                flip: torch.Tensor | None = None) -> torch.Tensor:
    """One batched crop-and-resize (two batched matmuls), optionally with a horizontal flip.

    ``out[b] = Ry[b] @ images[src_index[b]] @ Rx[b]^T`` with ``resize_weights`` matrices, i.e.
    ``TF.resized_crop(..., BILINEAR, antialias=True)`` for every sample at once, up- or
    downscaling. Only the ``B`` selected images are read (one image may serve several views).
    A flip reverses the rows of ``Rx``, so it costs nothing (and commutes with every later op).

    Args:
        images: (N, C, H, W) uint8 (scaled by 1/255) or float in [0, 1]; C is 1 or 3
            (1 is broadcast to RGB).
        src_index: (B,) int64 source image of each output, on ``images.device``.
        params: (B, 4) int64 ``(top, left, h, w)`` inside the image
            (``ccrop.crop.sample_crop_params_batch``).
        size: output side S.
        flip: optional (B,) bool, True = mirror left-right.

    Returns:
        (B, 3, S, S) float32 in [0, 1], contiguous.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1|3, H, W), got {tuple(images.shape)}")
    if params.dim() != 2 or params.shape[1] != 4 or params.shape[0] != src_index.shape[0]:
        raise ValueError(f"params must be (B, 4) with B = len(src_index), got "
                         f"{tuple(params.shape)} for {src_index.shape[0]} indices")
    b, c, h_img, w_img = src_index.shape[0], images.shape[1], images.shape[2], images.shape[3]
    ry = resize_weights(params[:, 0], params[:, 2], h_img, size)  # (B, S, H)
    rx = resize_weights(params[:, 1], params[:, 3], w_img, size, flip)  # (B, S, W)
    if images.dtype == torch.uint8:
        ry = ry * (1.0 / 255.0)  # the uint8 -> [0, 1] scale, folded into the weights
    x = images.index_select(0, src_index)  # (B, C, H, W), only the selected images
    # rows first with the channels folded into the columns: two plain bmm, no broadcast copies
    xt = torch.empty((b, h_img, c, w_img), dtype=torch.float32, device=images.device)
    xt.copy_(x.permute(0, 2, 1, 3))  # (B, H, C, W) float
    out = torch.bmm(ry, xt.view(b, h_img, c * w_img))  # (B, S, C*W)
    out = torch.bmm(out.view(b, size * c, w_img), rx.transpose(1, 2))  # (B, S*C, S)
    out = out.view(b, size, c, size).permute(0, 2, 1, 3).contiguous().clamp_(0.0, 1.0)
    return out.expand(-1, 3, -1, -1).contiguous() if c == 1 else out


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the samples with ``flip`` set.

    Args:
        x: (B, C, H, W) images.
        flip: (B,) bool.

    Returns:
        (B, C, H, W).
    """
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ----------------------------------------------------------------------------- colour
#
# Every op takes ``inplace``: the view pipeline owns its buffer and mutates it (on CPU each
# fresh 12 MB result costs page faults); the default returns a new tensor.


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B`` (torchvision's): (B, 3, H, W) -> (B, 1, H, W)."""
    r, g, b = x.unbind(dim=1)
    gray = r * GRAY_WEIGHTS[0]  # (B, H, W)
    return gray.add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2]).unsqueeze(1)


def _per_sample(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """(B,) values (or a scalar) as a (B, 1, 1, 1) tensor of ``x``'s dtype and device."""
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


def _blend_(x: torch.Tensor, target: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """In place ``clamp(f * x + (1 - f) * target, 0, 1)`` (torchvision's ``_blend``).

    Written as ``lerp(x, target, 1 - f)``: ``f = 1`` leaves ``x`` bit-exact. ``target``
    broadcasts to x; ``factor`` is (B,).
    """
    return x.lerp_(target, 1.0 - _per_sample(factor, x)).clamp_(0.0, 1.0)


def _out(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    return x if inplace else x.clone()


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Brightness as ``TF.adjust_brightness``: blend with black.

    Args:
        x: (B, 3, H, W) in [0, 1].
        factor: (B,) >= 0.
        inplace: overwrite ``x``.

    Returns:
        (B, 3, H, W).
    """
    return _blend_(_out(x, inplace), x.new_zeros(()), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Contrast as ``TF.adjust_contrast``: blend with the image's mean luma (args as brightness)."""
    mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _blend_(_out(x, inplace), mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Saturation as ``TF.adjust_saturation``: blend with the luma image (args as brightness)."""
    gray = rgb_to_gray(x)  # (B, 1, H, W)
    return _blend_(_out(x, inplace), gray, factor)


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Hue shift as ``TF.adjust_hue`` (hexcone HSV: rotate H by ``factor`` turns, keep S and V).

    Computed without building HSV: max and min per pixel are kept, and each channel is
    ``max - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h') mod 6``, n = 5, 3, 1 for
    R, G, B (the closed form of HSV -> RGB).

    Args:
        x: (B, 3, H, W) in [0, 1].
        factor: (B,) hue shift in turns, in [-0.5, 0.5].

    Returns:
        (B, 3, H, W), a new tensor.
    """
    r, g, b = x.unbind(dim=1)  # (B, H, W) each
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = maxc - torch.minimum(torch.minimum(r, g), b)
    # chroma < 1e-12 only where all channels (nearly) agree: any hue gives the same pixel
    num = torch.where(maxc == r, g - b, torch.where(maxc == g, b - r, r - g))
    sector = torch.where(maxc == r, 0.0, torch.where(maxc == g, 2.0, 4.0))
    h6 = num.div_(chroma.clamp_min(1e-12)).add_(sector)  # (B, H, W) hue in sixths of a turn
    h6.add_(6.0 * _per_sample(factor, x)[:, 0])
    offs = torch.arange(5, 0, -2, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)  # R, G, B
    k = torch.remainder(h6.unsqueeze(1) + offs, 6.0)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    out = torch.addcmul(maxc.unsqueeze(1), chroma.unsqueeze(1), ramp, value=-1.0)
    return out.clamp_(0.0, 1.0)


def _blend_stage_(x: torch.Tensor, op: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """One jitter stage, in place, for brightness (op 0), contrast (1) or saturation (2).

    Each sample blends with its own target (0, mean luma or luma image); samples whose op is
    hue, or that skip jitter, carry ``f = 1`` and stay bit-exact.
    """
    gray = rgb_to_gray(x)  # (B, 1, H, W)
    mean = gray.mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    is_con = (op == 1).to(x.dtype).view(-1, 1, 1, 1)
    is_sat = (op == 2).to(x.dtype).view(-1, 1, 1, 1)
    target = torch.addcmul(mean * is_con, gray, is_sat)  # (B, 1, H, W); 0 for brightness
    return _blend_(x, target, f)


def default_sync_free(device: torch.device) -> bool:
    """Whether ops on ``device`` should avoid data-dependent shapes. On the CPU a boolean index
    (``nonzero``) costs nothing and skips work; on accelerators it is a host sync that stalls
    the stream (``ccrop.syncs``), so every sample is computed and picked with ``torch.where``.
    Sync audits on the CPU pass ``sync_free=True`` to take the accelerator paths."""
    return device.type != "cpu"


def _hue_stage_(x: torch.Tensor, sel: torch.Tensor, shift: torch.Tensor,
                sync_free: bool) -> torch.Tensor:
    """Hue-shift, in place, the samples with ``sel``: only those with a boolean index, or (sync
    free) every sample, picked with ``torch.where``."""
    if not sync_free:
        idx = sel.nonzero().squeeze(1)  # (K,)
        if idx.numel() > 0:
            x.index_copy_(0, idx, adjust_hue(x.index_select(0, idx), shift[idx]))
        return x
    return x.copy_(torch.where(sel.view(-1, 1, 1, 1), adjust_hue(x, shift), x))


def color_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor,
                 apply: torch.Tensor, inplace: bool = False,
                 sync_free: bool | None = None) -> torch.Tensor:
    """ColorJitter with each sample's own op order, as ``ViewTransform`` applies it.

    Four stages; at stage j every sample runs op ``order[:, j]`` (0 brightness, 1 contrast,
    2 saturation, 3 hue) with factor ``factors[:, op]``.

    Args:
        x: (B, 3, H, W) in [0, 1].
        order: (B, 4) int64, a permutation of 0..3 per row.
        factors: (B, 4) brightness, contrast, saturation factors (>= 0) and hue shift.
        apply: (B,) bool; False leaves the sample unchanged.
        inplace: overwrite ``x``.
        sync_free: no data-dependent shapes (default: ``default_sync_free(x.device)``).

    Returns:
        (B, 3, H, W).
    """
    x = _out(x, inplace)
    sync_free = default_sync_free(x.device) if sync_free is None else sync_free
    factors = factors.to(x.dtype)
    for j in range(4):
        op = order[:, j]  # (B,)
        f = factors.gather(1, op.clamp(max=2)[:, None]).squeeze(1)  # (B,)
        f = torch.where(apply & (op < 3), f, torch.ones_like(f))
        _blend_stage_(x, op, f)
        _hue_stage_(x, apply & (op == 3), factors[:, 3], sync_free)
    return x


def grayscale(x: torch.Tensor, apply: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Replace the selected samples by their luma, repeated over 3 channels.

    Args:
        x: (B, 3, H, W).
        apply: (B,) bool.
        inplace: overwrite ``x``.

    Returns:
        (B, 3, H, W).
    """
    gray = rgb_to_gray(x)  # (B, 1, H, W)
    # lerp with weight 0 or 1 returns start or end exactly
    return _out(x, inplace).lerp_(gray, _per_sample(apply, x))


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels, one per sample, as torchvision's.

    Args:
        sigma: (B,) standard deviations; ``sigma <= 0`` gives the identity (delta) kernel.
        kernel_size: odd K.

    Returns:
        (B, K) float32.
    """
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=torch.float32)
    s = sigma.to(torch.float32).clamp_min(1e-6)[:, None]  # (B, 1)
    pdf = torch.exp(-0.5 * (t[None, :] / s) ** 2)  # (B, K)
    pdf = pdf / pdf.sum(dim=1, keepdim=True)
    delta = (t == 0).to(torch.float32)[None, :]
    return torch.where(sigma[:, None] > 0, pdf, delta)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor,
                  kernel_size: int) -> torch.Tensor:
    """Per-sample separable Gaussian blur with reflect padding, as ``TF.gaussian_blur``.

    Non-selected samples get a delta kernel (exactly unchanged). One grouped convolution per
    axis over all B*C channels.

    Args:
        x: (B, C, H, W).
        sigma: (B,) standard deviation in pixels.
        apply: (B,) bool.
        kernel_size: odd K with ``K // 2 < min(H, W)`` (reflect padding).

    Returns:
        (B, C, H, W), a new tensor.
    """
    b, c, h, w = x.shape
    if kernel_size < 1 or kernel_size % 2 == 0 or kernel_size // 2 >= min(h, w):
        raise ValueError(f"kernel_size must be odd, >= 1 and < 2*min(H, W) = {2 * min(h, w)}, "
                         f"got {kernel_size}")
    k = gaussian_kernels(torch.where(apply, sigma, torch.zeros_like(sigma)), kernel_size)
    k = k.to(x.dtype)[:, None, :].expand(b, c, kernel_size).reshape(b * c, kernel_size)
    p = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (p, p, p, p), mode="reflect")  # (1, B*C, H+2p, W+2p)
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)  # (1, B*C, H+2p, W)
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)  # (1, B*C, H, W)
    return y.view(b, c, h, w)


def solarize(x: torch.Tensor, apply: torch.Tensor,
             threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    """Invert pixels ``>= threshold`` of the selected samples (``TF.solarize``).

    Args:
        x: (B, C, H, W) in [0, 1].
        apply: (B,) bool.
        threshold: in [0, 1]; the default equals PIL's ``solarize(img, 128)``.

    Returns:
        (B, C, H, W), a new tensor.
    """
    return torch.where(apply.view(-1, 1, 1, 1) & (x >= threshold), 1.0 - x, x)


def normalize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor,
              std: Sequence[float] | torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``(x - mean) / std`` per channel.

    Args:
        x: (B, C, H, W).
        mean: C values.
        std: C values (> 0).
        inplace: overwrite ``x``.

    Returns:
        (B, C, H, W).
    """
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return _out(x, inplace).sub_(m).div_(s)


# ----------------------------------------------------------------------------- parameters


def sample_view_params(b: int, recipe: Recipe, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Per-sample photometric parameters with ``ViewTransform``'s distributions.

    Args:
        b: batch size B.
        recipe: probabilities and strengths (``ccrop.data.views.Recipe``).
        generator: optional ``torch.Generator`` on ``device``.
        device: where the tensors live.

    Returns:
        dict of ``flip`` (B,) bool, ``jitter`` (B,) bool, ``order`` (B, 4) int64 (uniform random
        permutation of 0..3 = brightness, contrast, saturation, hue), ``factors`` (B, 4) float32
        (``U(max(0, 1-s), 1+s)`` x3, ``U(-h, h)``), ``gray`` (B,) bool, ``blur`` (B,) bool,
        ``sigma`` (B,) float32 ``U(blur_sigma)``, ``solarize`` (B,) bool.
    """
    u = torch.rand(b, 10, generator=generator, device=device)  # (B, 10)
    order = torch.argsort(torch.rand(b, 4, generator=generator, device=device), dim=1)
    jb, jc, js, jh = recipe.jitter
    lo = (max(0.0, 1 - jb), max(0.0, 1 - jc), max(0.0, 1 - js), -jh)
    hi = (1 + jb, 1 + jc, 1 + js, jh)
    # column by column with Python scalars: no host -> device copy (a sync on CUDA)
    factors = torch.stack([lo[k] + (hi[k] - lo[k]) * u[:, 2 + k] for k in range(4)], dim=1)
    s0, s1 = recipe.blur_sigma
    return {
        "flip": u[:, 0] < recipe.flip_p,
        "jitter": u[:, 1] < recipe.jitter_p,
        "order": order,
        "factors": factors,
        "gray": u[:, 6] < recipe.gray_p,
        "blur": u[:, 7] < recipe.blur_p,
        "sigma": s0 + (s1 - s0) * u[:, 8],
        "solarize": u[:, 9] < recipe.solarize_p,
    }


def augment(x: torch.Tensor, params: dict[str, torch.Tensor], recipe: Recipe,
            blur_kernel_size: int, inplace: bool = False,
            sync_free: bool | None = None) -> torch.Tensor:
    """Photometric chain of ``ViewTransform`` after crop and flip: jitter, gray, blur, solarize.

    Ops whose probability in ``recipe`` is 0 are skipped (a static check, no sync).

    Args:
        x: (B, 3, S, S) in [0, 1].
        params: from ``sample_view_params``.
        recipe: the recipe the params were drawn with.
        blur_kernel_size: odd K of the Gaussian blur.
        inplace: let jitter and grayscale overwrite ``x`` (the view pipeline's own buffer).
        sync_free: see ``color_jitter``.

    Returns:
        (B, 3, S, S) in [0, 1].
    """
    x = _out(x, inplace)
    if recipe.jitter_p > 0:
        x = color_jitter(x, params["order"], params["factors"], params["jitter"], inplace=True,
                         sync_free=sync_free)
    if recipe.gray_p > 0:
        x = grayscale(x, params["gray"], inplace=True)
    if recipe.blur_p > 0:
        x = gaussian_blur(x, params["sigma"], params["blur"], blur_kernel_size)
    if recipe.solarize_p > 0:
        x = solarize(x, params["solarize"])
    return x


# ----------------------------------------------------------------------------- checks


def check_recipe(recipe: Recipe | str) -> Recipe:
    """Resolve a recipe name and validate its probabilities and strengths."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {tuple(RECIPES)} or a Recipe, got {recipe!r}")
        recipe = RECIPES[recipe]
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe must be a Recipe or a name, got {type(recipe).__name__}")
    for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
        if not 0.0 <= getattr(recipe, name) <= 1.0:
            raise ValueError(f"recipe.{name} must be in [0, 1], got {getattr(recipe, name)}")
    b, c, s, h = recipe.jitter
    if min(b, c, s) < 0 or not 0 <= h <= 0.5:
        raise ValueError(f"recipe.jitter must be (b, c, s >= 0, 0 <= hue <= 0.5), got "
                         f"{recipe.jitter}")
    if not 0 < recipe.blur_sigma[0] <= recipe.blur_sigma[1]:
        raise ValueError(f"recipe.blur_sigma must be (lo, hi) with 0 < lo <= hi, got "
                         f"{recipe.blur_sigma}")
    return recipe


def check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, 3, H, W) uint8 tensor, got {shape}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
    if images.shape[0] < 1:
        raise ValueError("images must hold at least one image")
    return images


def check_extents(extents: Any, b: int) -> torch.Tensor:
    """Validate the (B, 2) integer ``(h, w)`` valid regions of a batch (shape and dtype only)."""
    ok = isinstance(extents, torch.Tensor) and tuple(extents.shape) == (b, 2)
    if not ok or extents.is_floating_point() or extents.dtype == torch.bool:
        got = f"{extents.dtype} {tuple(extents.shape)}" if isinstance(extents, torch.Tensor) \
            else type(extents).__name__
        raise ValueError(f"extents must be a ({b}, 2) integer tensor of (h, w), got {got}")
    return extents


def check_stats(values: Sequence[float], name: str, positive: bool) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if t.numel() != 3 or not torch.isfinite(t).all() or (positive and (t <= 0).any()):
        need = "3 finite values > 0" if positive else "3 finite values"
        raise ValueError(f"{name} must be {need}, got {values!r}")
    return t
