"""Batched image ops on tensors (GPU or CPU): crop+resize, jitter, gray, blur, solarize.

The batched twin of ``ccrop.data.views.ViewTransform`` (same laws, per-sample parameters, no
loop over samples, no host syncs on CUDA; differences: ``docs/gpu_views.md``). Images are float
(B, 3, H, W) in [0, 1] and parameters (B,) unless stated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .views import Recipe


def resize_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample 1-D crop-and-resize matrices (B, S, in_size) of PIL's antialiased bilinear:
    output pixel ``o`` of the crop ``[start, start + length)`` ((B,) each) weighs the input with
    a triangle of half-width ``max(1, length / S)``, clipped to the crop, rows summing to 1;
    ``flip`` (B,) bool reverses the output order."""
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
    """``TF.resized_crop(..., antialias=True)`` of every sample in two batched matmuls:
    ``images`` (N, C, H, W) uint8 or float in [0, 1] (C = 1 is broadcast to RGB), rows
    ``src_index`` (B,), crops ``params`` (B, 4) int64 ``(top, left, h, w)``, optional mirror
    ``flip`` (B,) bool -> (B, 3, S, S) float32 in [0, 1]."""
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


def _gray(x: torch.Tensor) -> torch.Tensor:
    """torchvision's luma ``0.2989 R + 0.587 G + 0.114 B``: (B, 1, H, W)."""
    r, g, b = x.unbind(dim=1)
    return (r * 0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _per_sample(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """(B,) values (or a scalar) as (B, 1, 1, 1) of ``x``'s dtype and device."""
    return torch.as_tensor(value, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)


def adjust_hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``TF.adjust_hue`` (hexcone HSV, H rotated by ``factor`` turns in [-0.5, 0.5]); new tensor.

    Max and min per pixel are kept; each channel is ``max - chroma * clamp(min(k, 4 - k), 0, 1)``
    with ``k = (n + 6 h) mod 6``, n = 5, 3, 1 for R, G, B (closed-form HSV -> RGB).
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


def default_sync_free(device: torch.device) -> bool:
    """Avoid data-dependent shapes off the CPU: a boolean index is free on the CPU but a host
    sync on accelerators (``ccrop.syncs``), so there every sample is computed and picked."""
    return device.type != "cpu"


def color_jitter(x: torch.Tensor, order: torch.Tensor, factors: torch.Tensor,
                 apply: torch.Tensor, sync_free: bool | None = None) -> torch.Tensor:
    """ColorJitter in place, each sample's ops in its own ``order`` (B, 4) (permutations of 0..3:
    brightness, contrast, saturation, hue) with ``factors`` (B, 4); ``apply`` (B,) False leaves
    a sample unchanged. ``sync_free``: default ``default_sync_free(x.device)``."""
    sync_free = default_sync_free(x.device) if sync_free is None else sync_free
    factors = factors.to(x.dtype)
    for j in range(4):
        op = order[:, j]  # (B,)
        f = factors.gather(1, op.clamp(max=2)[:, None]).squeeze(1)  # (B,)
        f = torch.where(apply & (op < 3), f, torch.ones_like(f))  # 1: hue or no jitter, exact
        # blend with black (op 0), the mean luma (1) or the luma (2), as torchvision's _blend
        gray = _gray(x)  # (B, 1, H, W)
        is_con = (op == 1).to(x.dtype).view(-1, 1, 1, 1)
        is_sat = (op == 2).to(x.dtype).view(-1, 1, 1, 1)
        target = torch.addcmul(gray.mean(dim=(2, 3), keepdim=True) * is_con, gray, is_sat)
        x.lerp_(target, 1.0 - _per_sample(f, x)).clamp_(0.0, 1.0)
        hue = apply & (op == 3)  # hue-shift these: all computed, or a boolean index
        if sync_free:
            x.copy_(torch.where(hue.view(-1, 1, 1, 1), adjust_hue(x, factors[:, 3]), x))
        elif (idx := hue.nonzero().squeeze(1)).numel() > 0:  # (K,)
            x.index_copy_(0, idx, adjust_hue(x.index_select(0, idx), factors[idx, 3]))
    return x


def grayscale(x: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Replace the samples with ``apply`` by their luma on 3 channels, in place."""
    # lerp with weight 0 or 1 returns start or end exactly
    return x.lerp_(_gray(x), _per_sample(apply, x))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor,
                  kernel_size: int) -> torch.Tensor:
    """``TF.gaussian_blur`` (reflect padding) with per-sample sigma of the samples with
    ``apply`` (the others get a delta kernel); one grouped conv per axis. x (B, C, H, W), odd
    K with K // 2 < min(H, W)."""
    b, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=sigma.device, dtype=torch.float32)
    sigma = torch.where(apply, sigma, torch.zeros_like(sigma))
    pdf = torch.exp(-0.5 * (t[None, :] / sigma.to(torch.float32).clamp_min(1e-6)[:, None]) ** 2)
    k = torch.where(sigma[:, None] > 0, pdf / pdf.sum(dim=1, keepdim=True),
                    (t == 0).to(torch.float32)[None, :])  # (B, K)
    k = k.to(x.dtype)[:, None, :].expand(b, c, kernel_size).reshape(b * c, kernel_size)
    p = kernel_size // 2
    y = F.pad(x.reshape(1, b * c, h, w), (p, p, p, p), mode="reflect")  # (1, B*C, H+2p, W+2p)
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)  # (1, B*C, H+2p, W)
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)  # (1, B*C, H, W)
    return y.view(b, c, h, w)


def solarize(x: torch.Tensor, apply: torch.Tensor, threshold: float = 128 / 255) -> torch.Tensor:
    """Invert pixels ``>= threshold`` of the samples with ``apply`` (default: PIL's
    ``solarize(img, 128)``); new tensor."""
    return torch.where(apply.view(-1, 1, 1, 1) & (x >= threshold), 1.0 - x, x)


def sample_view_params(b: int, recipe: Recipe, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Per-sample photometric parameters with ``ViewTransform``'s laws, for B samples.

    Returns ``flip``, ``jitter``, ``gray``, ``blur``, ``solarize`` (B,) bool; ``order`` (B, 4)
    int64 uniform permutations; ``factors`` (B, 4) ``U(max(0, 1-s), 1+s)`` x3 and ``U(-h, h)``;
    ``sigma`` (B,) ``U(blur_sigma)``.
    """
    u = torch.rand(b, 10, generator=generator, device=device)  # (B, 10)
    order = torch.argsort(torch.rand(b, 4, generator=generator, device=device), dim=1)
    jb, jc, js, jh = recipe.jitter
    lo = (max(0.0, 1 - jb), max(0.0, 1 - jc), max(0.0, 1 - js), -jh)
    hi = (1 + jb, 1 + jc, 1 + js, jh)
    # column by column with Python scalars: no host -> device copy (a sync on CUDA)
    factors = torch.stack([lo[k] + (hi[k] - lo[k]) * u[:, 2 + k] for k in range(4)], dim=1)
    s0, s1 = recipe.blur_sigma
    return dict(flip=u[:, 0] < recipe.flip_p, jitter=u[:, 1] < recipe.jitter_p, order=order,
                factors=factors, gray=u[:, 6] < recipe.gray_p, blur=u[:, 7] < recipe.blur_p,
                sigma=s0 + (s1 - s0) * u[:, 8], solarize=u[:, 9] < recipe.solarize_p)


def augment(x: torch.Tensor, params: dict[str, torch.Tensor], recipe: Recipe,
            blur_kernel_size: int, sync_free: bool | None = None) -> torch.Tensor:
    """``ViewTransform``'s chain after crop and flip (jitter, gray, blur, solarize, skipping ops
    of probability 0) on (B, 3, S, S), overwriting ``x``, with ``sample_view_params``."""
    if recipe.jitter_p > 0:
        x = color_jitter(x, params["order"], params["factors"], params["jitter"], sync_free)
    if recipe.gray_p > 0:
        x = grayscale(x, params["gray"])
    if recipe.blur_p > 0:
        x = gaussian_blur(x, params["sigma"], params["blur"], blur_kernel_size)
    if recipe.solarize_p > 0:
        x = solarize(x, params["solarize"])
    return x
