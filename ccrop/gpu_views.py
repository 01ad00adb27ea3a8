"""Batched view generation on tensors (GPU or CPU): crop+resize, flip, jitter, gray, blur, solarize.

The GPU twin of ``ccrop.data.views.ViewTransform``: the same crop law (``ccrop.crop``, batched),
the same photometric distributions (``ccrop.data.views.Recipe``), applied to a whole batch with
per-sample parameters, without a Python loop over samples and without host syncs on CUDA.
Numeric differences from the PIL pipeline (uint8 rounding, PIL's blur and hue) are listed in
``docs/gpu_views.md``.

Every image op takes float images ``(B, 3, H, W)`` in [0, 1] and per-sample parameters ``(B,)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from .boxes import BoxStore
from .crop import CropPlan
from .data.views import RECIPES, Recipe

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


_FORCE_ACCELERATOR_PATHS = False


def _syncs_are_free(device: torch.device) -> bool:
    """True where a data-dependent shape (``nonzero``) costs nothing: the CPU. On accelerators
    it is a host sync, which stalls the stream (``ccrop.syncs``)."""
    return device.type == "cpu" and not _FORCE_ACCELERATOR_PATHS


@contextmanager
def accelerator_paths() -> Iterator[None]:
    """Take the sync-free code paths meant for accelerators on CPU too (sync audits on CPU)."""
    global _FORCE_ACCELERATOR_PATHS
    before, _FORCE_ACCELERATOR_PATHS = _FORCE_ACCELERATOR_PATHS, True
    try:
        yield
    finally:
        _FORCE_ACCELERATOR_PATHS = before


def _hue_stage_(x: torch.Tensor, sel: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Hue-shift, in place, the samples with ``sel``. On CPU only those samples are computed
    (a boolean index costs nothing there); on accelerators every sample is computed and picked
    with ``torch.where``, so no host sync happens."""
    if _syncs_are_free(x.device):
        idx = sel.nonzero().squeeze(1)  # (K,)
        if idx.numel() > 0:
            x.index_copy_(0, idx, adjust_hue(x.index_select(0, idx), shift[idx]))
        return x
    return x.copy_(torch.where(sel.view(-1, 1, 1, 1), adjust_hue(x, shift), x))


def color_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor,
                 apply: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """ColorJitter with each sample's own op order, as ``ViewTransform`` applies it.

    Four stages; at stage j every sample runs op ``order[:, j]`` (0 brightness, 1 contrast,
    2 saturation, 3 hue) with factor ``factors[:, op]``.

    Args:
        x: (B, 3, H, W) in [0, 1].
        order: (B, 4) int64, a permutation of 0..3 per row.
        factors: (B, 4) brightness, contrast, saturation factors (>= 0) and hue shift.
        apply: (B,) bool; False leaves the sample unchanged.
        inplace: overwrite ``x``.

    Returns:
        (B, 3, H, W).
    """
    x = _out(x, inplace)
    factors = factors.to(x.dtype)
    for j in range(4):
        op = order[:, j]  # (B,)
        f = factors.gather(1, op.clamp(max=2)[:, None]).squeeze(1)  # (B,)
        f = torch.where(apply & (op < 3), f, torch.ones_like(f))
        _blend_stage_(x, op, f)
        _hue_stage_(x, apply & (op == 3), factors[:, 3])
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
            blur_kernel_size: int, inplace: bool = False) -> torch.Tensor:
    """Photometric chain of ``ViewTransform`` after crop and flip: jitter, gray, blur, solarize.

    Ops whose probability in ``recipe`` is 0 are skipped (a static check, no sync).

    Args:
        x: (B, 3, S, S) in [0, 1].
        params: from ``sample_view_params``.
        recipe: the recipe the params were drawn with.
        blur_kernel_size: odd K of the Gaussian blur.
        inplace: let jitter and grayscale overwrite ``x`` (the view pipeline's own buffer).

    Returns:
        (B, 3, S, S) in [0, 1].
    """
    x = _out(x, inplace)
    if recipe.jitter_p > 0:
        x = color_jitter(x, params["order"], params["factors"], params["jitter"], inplace=True)
    if recipe.gray_p > 0:
        x = grayscale(x, params["gray"], inplace=True)
    if recipe.blur_p > 0:
        x = gaussian_blur(x, params["sigma"], params["blur"], blur_kernel_size)
    if recipe.solarize_p > 0:
        x = solarize(x, params["solarize"])
    return x


# ----------------------------------------------------------------------------- view source


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


def _check_images(images: Any) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, 3, H, W) uint8 tensor, got {shape}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (0..255), got {images.dtype}")
    if images.shape[0] < 1:
        raise ValueError("images must hold at least one image")
    return images


def _check_extents(extents: Any, b: int) -> torch.Tensor:
    """Validate the (B, 2) integer ``(h, w)`` valid regions of a batch (shape and dtype only)."""
    ok = isinstance(extents, torch.Tensor) and tuple(extents.shape) == (b, 2)
    if not ok or extents.is_floating_point() or extents.dtype == torch.bool:
        got = f"{extents.dtype} {tuple(extents.shape)}" if isinstance(extents, torch.Tensor) \
            else type(extents).__name__
        raise ValueError(f"extents must be a ({b}, 2) integer tensor of (h, w), got {got}")
    return extents


def _check_stats(values: Sequence[float], name: str, positive: bool) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if t.numel() != 3 or not torch.isfinite(t).all() or (positive and (t <= 0).any()):
        need = "3 finite values > 0" if positive else "3 finite values"
        raise ValueError(f"{name} must be {need}, got {values!r}")
    return t


class GPUViews:
    """View source for small datasets held on the device: ``indices -> [view_1, ..., view_V]``.

    The whole dataset lives on ``device`` as uint8; a batch of indices becomes V augmented views
    in a handful of batched ops (crop law of ``ccrop.crop``, photometric law of
    ``ccrop.data.views.ViewTransform``). The engine calls ``sync_boxes`` after every box update.

    Args:
        images: (N, 3, H, W) uint8 dataset (e.g. from ``ccrop.data.dataset_to_uint8``); (N, 1, H, W)
            is broadcast to RGB. An int N instead means no resident images: batches decoded
            elsewhere (folder datasets) are augmented with ``views_of``.
        store: ``BoxStore`` of N boxes (read by a ccrop plan); None = the plan's fixed box.
        recipe: ``Recipe`` or a name in ``ccrop.data.views.RECIPES``.
        plan: the crop law (``ccrop.crop.CropPlan``: ContrastiveCrop, SimCCrop or RRC), the
            same object the per-sample transforms use.
        size: output side S (default H).
        mean: per-channel normalisation mean.
        std: per-channel normalisation std (> 0).
        num_views: V (>= 1).
        device: where images, boxes and views live (default ``images.device``).
        out_dtype: float32, float16 or bfloat16 views.
        channels_last: return views in channels-last memory format.
        blur_kernel_size: odd Gaussian kernel size (default ``2 * ceil(3 * max sigma) + 1``,
            capped below ``2 * S``).

    Example:
        >>> views = GPUViews(images.cuda(), store, recipe="cifar", plan=CropPlan(alpha=0.1))
        >>> for idx in views.epoch_batches(512, generator=g):
        ...     v1, v2 = views(idx, generator=g)
    """

    def __init__(
        self, images: torch.Tensor, store: BoxStore | None = None, recipe: Recipe | str = "cifar",
        plan: CropPlan | None = None, size: int | None = None,
        mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
        num_views: int = 2, device: torch.device | str | None = None,
        out_dtype: torch.dtype = torch.float32, channels_last: bool = False,
        blur_kernel_size: int | None = None,
    ) -> None:
        resident = not isinstance(images, int)
        if resident:
            images = _check_images(images)
        elif images < 1:
            raise ValueError(f"images must be a (N, C, H, W) uint8 tensor or N >= 1, got {images}")
        if plan is not None and not isinstance(plan, CropPlan):
            raise ValueError(f"plan must be a ccrop.crop.CropPlan, got {type(plan).__name__}")
        self.plan = plan if plan is not None else CropPlan()
        if size is None and not resident:
            raise ValueError("size is required when images is a count (no resident images)")
        self.size = int(images.shape[-2] if size is None else size)
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if int(num_views) < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if out_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"out_dtype must be float32, float16 or bfloat16, got {out_dtype}")
        if device is None:
            device = images.device if resident else "cpu"
        self.device = torch.device(device)
        self.images = images.to(self.device) if resident else None  # (N, C, H, W) uint8
        self._n = images.shape[0] if resident else int(images)
        self.recipe = check_recipe(recipe)
        self.num_views, self.out_dtype = int(num_views), out_dtype
        self.channels_last = bool(channels_last)
        self.mean = _check_stats(mean, "mean", False).to(self.device)
        self.std = _check_stats(std, "std", True).to(self.device)
        self.blur_kernel_size = self._kernel_size(blur_kernel_size)
        fixed = torch.tensor(self.plan.fixed_box, dtype=torch.float32, device=self.device)
        self.boxes = fixed.repeat(len(self), 1)  # (N, 4) the plan reads them if it localizes
        if store is not None:
            self.sync_boxes(store)

    def _kernel_size(self, k: int | None) -> int:
        """Validate or derive the blur kernel size (odd, reflect padding needs K // 2 < S)."""
        if k is None:
            k = min(2 * math.ceil(3 * self.recipe.blur_sigma[1]) + 1, 2 * self.size - 1)
        if int(k) < 1 or int(k) % 2 == 0 or int(k) // 2 >= self.size:
            raise ValueError(f"blur_kernel_size must be odd and in [1, {2 * self.size - 1}], "
                             f"got {k}")
        return int(k)

    def __len__(self) -> int:
        return self._n

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored images."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def sync_boxes(self, store: BoxStore | torch.Tensor) -> None:
        """Copy the store's boxes (N, 4) to the device; call after every box update."""
        boxes = store.boxes if isinstance(store, BoxStore) else torch.as_tensor(store)
        if tuple(boxes.shape) != (len(self), 4):
            raise ValueError(f"store must hold ({len(self)}, 4) boxes, got {tuple(boxes.shape)}")
        self.boxes.copy_(boxes.to(self.device, torch.float32))

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """1-D int64 on the device (range not checked: that would need a host sync)."""
        if not isinstance(indices, torch.Tensor) or indices.dim() != 1:
            raise ValueError("indices must be a 1-D int64 tensor of dataset indices")
        if indices.dtype != torch.int64:
            raise ValueError(f"indices must be int64, got {indices.dtype}")
        return indices.to(self.device, non_blocking=True)

    def crop_params(self, src: torch.Tensor, generator: torch.Generator | None = None,
                    image_size: tuple[int, int] | torch.Tensor | None = None) -> torch.Tensor:
        """Crop rectangles for the boxes of dataset indices ``src``.

        Args:
            src: (B,) int64 dataset indices on the device.
            generator: optional ``torch.Generator`` on the device.
            image_size: ``(H, W)`` shared by the batch (default: the resident images' size),
                or a (B, 2) integer tensor of per-sample ``(h, w)`` valid regions.

        Returns:
            (B, 4) int64 ``(top, left, h, w)``, each inside its own image or valid region.
        """
        boxes = self.boxes.index_select(0, src)  # (B, 4)
        if isinstance(image_size, torch.Tensor):
            h, w = image_size[:, 0], image_size[:, 1]  # (B,) each
        else:
            h, w = image_size or self.image_size
        return self.plan.sample_batch(h, w, boxes, generator)

    def __call__(self, indices: torch.Tensor,
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """V independent augmented views of each indexed image.

        Args:
            indices: (B,) int64 dataset indices (on the device).
            generator: optional ``torch.Generator`` on the device.

        Returns:
            V tensors (B, 3, S, S), normalised, ``out_dtype``.
        """
        if self.images is None:
            raise ValueError("no resident images: use views_of(batch, indices)")
        idx = self._check_indices(indices)
        return self._views(self.images, idx, idx, generator)

    def views_of(self, batch: torch.Tensor, indices: torch.Tensor,
                 generator: torch.Generator | None = None,
                 extents: torch.Tensor | None = None) -> list[torch.Tensor]:
        """V augmented views of a decoded batch (folder datasets: DataLoader workers decode).

        Boxes are read by dataset index and are normalised, so they apply to the decoded size.
        With ``extents`` each image is the top-left ``h x w`` region of its canvas (the rest is
        padding): crops are sampled inside that region, boxes are relative to it, and the
        padding is never read (``crop_resize`` weights vanish outside each crop).

        Args:
            batch: (B, C, H0, W0) uint8 images (canvases) on any device (moved to
                ``self.device``).
            indices: (B,) int64 dataset indices of the batch's images.
            generator: optional ``torch.Generator`` on the device.
            extents: optional (B, 2) int64 ``(h, w)`` valid region of each canvas, with
                ``1 <= h <= H0`` and ``1 <= w <= W0`` (not checked: a host sync);
                None = the whole ``H0 x W0`` canvas.

        Returns:
            V tensors (B, 3, S, S), normalised, ``out_dtype``.
        """
        batch = _check_images(batch).to(self.device, non_blocking=True)
        idx = self._check_indices(indices)
        if extents is not None:
            extents = _check_extents(extents, batch.shape[0]).to(self.device, non_blocking=True)
        rows = torch.arange(batch.shape[0], device=self.device)
        return self._views(batch, rows, idx, generator, extents)

    def _views(self, images: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor,
               generator: torch.Generator | None,
               extents: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Views of ``images[rows]`` with the boxes of dataset indices ``idx`` (both (B,)),
        cropped inside the (B, 2) ``extents`` if given."""
        v = self.num_views
        src, rows = idx.repeat(v), rows.repeat(v)  # (V*B,) view-major: view k is [k*B:(k+1)*B]
        size = tuple(images.shape[-2:]) if extents is None else extents.repeat(v, 1)  # (V*B, 2)
        params = self.crop_params(src, generator, size)  # (V*B, 4)
        vp = sample_view_params(src.shape[0], self.recipe, generator, self.device)
        x = crop_resize(images, rows, params, self.size, flip=vp["flip"])  # (V*B, 3, S, S)
        x = augment(x, vp, self.recipe, self.blur_kernel_size, inplace=True)
        return list(self._finish(x).split(idx.shape[0]))

    def eval_batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Un-augmented normalised images (localization pass, kNN): (B,) -> (B, 3, H, W)."""
        if self.images is None:
            raise ValueError("no resident images: eval_batch needs images held on the device")
        idx = self._check_indices(indices)
        x = self.images.index_select(0, idx).expand(-1, 3, -1, -1)  # (B, 3, H, W) uint8
        return self._finish(x.to(torch.float32, memory_format=torch.contiguous_format).div_(255))

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, cast and lay out: (B, 3, S, S) in [0, 1] -> output tensor."""
        x = normalize(x, self.mean, self.std, inplace=True).to(self.out_dtype)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def num_batches(self, batch_size: int, drop_last: bool = True, world_size: int = 1) -> int:
        """Number of batches ``epoch_batches`` yields with the same arguments."""
        per_rank = len(self) // world_size
        return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)

    def epoch_batches(
        self, batch_size: int, shuffle: bool = True, generator: torch.Generator | None = None,
        drop_last: bool = True, rank: int = 0, world_size: int = 1,
    ) -> Iterator[torch.Tensor]:
        """Index batches of one epoch, made on the device (no host round trip).

        Args:
            batch_size: indices per batch (>= 1).
            shuffle: random permutation (``torch.randperm`` on the device) or 0..N-1.
            generator: optional ``torch.Generator`` on the device; with several ranks every rank
                must pass an identically seeded one.
            drop_last: drop the last incomplete batch.
            rank: this process's rank; it takes every ``world_size``-th index.
            world_size: number of ranks (the N % world_size tail is dropped so ranks match).

        Yields:
            (batch_size,) int64 index tensors (the last one shorter if ``drop_last`` is False).
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        order = order[: n - n % world_size][rank::world_size]  # (N // world_size,)
        m = order.shape[0]
        stop = m - m % batch_size if drop_last else m
        for start in range(0, stop, batch_size):
            yield order[start:start + batch_size]

    def __repr__(self) -> str:
        h, w = self.image_size if self.images is not None else (0, 0)
        return (f"{type(self).__name__}(n={len(self)}, image={h}x{w}, size={self.size}, "
                f"plan={self.plan}, views={self.num_views}, device={self.device})")
