"""ContrastiveCrop and SimCCrop: the crop-parameter sampling law, per sample and batched.

The law (Peng et al., CVPR 2022, Sec. 3.3 "center-suppressed sampling"):

1. area fraction ``s ~ U(scale)`` of the *whole image*, log aspect ratio ``~ U(log ratio)``,
   crop ``w = round(sqrt(s*H*W*r))``, ``h = round(sqrt(s*H*W/r))``; retry up to 10 times until
   the crop fits the image;
2. crop centre ``c = lo + (hi - lo) * u`` per axis, ``u ~ Beta(alpha, alpha)``, with ``lo, hi``
   the box edges in pixels; ``alpha < 1`` is U-shaped and pushes the two views apart;
3. the crop is shifted to lie fully inside the image (it may extend past the box);
4. after 10 failed tries: a centre crop of the whole image (aspect ratio clamped to ``ratio``).

Placement of the crop (``PLACEMENTS``): ``paper`` is steps 2-3 above, as the paper states it;
``official`` is the official code's law, which produced the paper's numbers: the admissible range
of the top-left corner, ``[int(H*y0) - h//2, int(H*y1) - h//2]`` (same for x), is clamped to
``[0, H-h]`` first and ``top = lo + int((hi - lo) * u)`` is drawn inside it. The two agree
whenever the box edge is at least half a crop away from the image edge. ``uniform`` is
RandomResizedCrop's (top-left uniform over all positions), used by ``rcrop`` and by the guard.

``CropPlan`` holds one crop law (kind, scale, ratio, alpha, guard, placement), built once from the
config and used by the per-sample transforms, the batched GPU sampler and the schedule: the only
place that branches on the crop kind.

Degenerate-box guard (ccrop's own default, off in the paper-reproduction configs): when a box
covers at least ``full_box_guard`` of the image area, the top-left corner is drawn uniformly as
RandomResizedCrop does. With a full-image box and alpha = 0.1 the paper's law pushes every crop
to the image borders, which was measured to cost accuracy (docs/design.md).

Randomness: the per-sample path draws from a ``random.Random`` (fast, no tensor overhead); a
``torch.Generator`` is accepted and seeds one. The batched path draws from torch on any device.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
import torchvision.transforms.functional as TF
from PIL import Image

Box = tuple[float, float, float, float]
FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)
CENTER_BOX: Box = (0.25, 0.25, 0.75, 0.75)
MAX_TRIES = 10
KINDS = ("ccrop", "simccrop", "rcrop")
PLACEMENTS = ("paper", "official")  # of a box's crop; "uniform" is RandomResizedCrop's


# ----------------------------------------------------------------------------- validation


def check_box(box: Any, name: str = "box") -> Box:
    """Validate one normalised box and return it as a float tuple.

    Args:
        box: 4 numbers ``(x0, y0, x1, y1)`` with ``0 <= x0 <= x1 <= 1`` and ``0 <= y0 <= y1 <= 1``
            (a sequence or a (4,) tensor).
        name: argument name used in the error message.

    Returns:
        ``(x0, y0, x1, y1)`` as Python floats.

    Raises:
        ValueError: wrong length, NaN/inf, outside [0, 1], or x0 > x1 / y0 > y1.
    """
    if isinstance(box, torch.Tensor):
        box = box.detach().cpu().tolist()
    try:
        vals = tuple(float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be 4 numbers (x0, y0, x1, y1), got {box!r}") from err
    if len(vals) != 4:
        raise ValueError(f"{name} must have 4 values (x0, y0, x1, y1), got {len(vals)}")
    x0, y0, x1, y1 = vals
    if 0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0:  # per-sample fast path (NaN fails)
        return vals  # type: ignore[return-value]
    from .boxes import check_boxes  # the one box validator (ccrop.boxes imports this module)

    # float64 holds the Python floats exactly: the values checked are the values returned
    check_boxes(torch.tensor([vals], dtype=torch.float64), where=lambda _: f"{name} {vals}",
                dtype=torch.float64)
    return vals  # type: ignore[return-value]


def check_crop_args(
    scale: Sequence[float], ratio: Sequence[float], alpha: float, full_box_guard: float | None
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Validate the hyper-parameters of the crop law.

    Args:
        scale: ``(lo, hi)`` area fraction range, ``0 < lo <= hi <= 1``.
        ratio: ``(lo, hi)`` aspect ratio (w/h) range, ``0 < lo <= hi``.
        alpha: Beta concentration, ``> 0``.
        full_box_guard: area share in (0, 1] above which the centre is uniform, or None.

    Returns:
        ``(scale, ratio)`` as float pairs.
    """
    if len(scale) != 2 or not (0.0 < float(scale[0]) <= float(scale[1]) <= 1.0):
        raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1, got {tuple(scale)}")
    if len(ratio) != 2 or not (0.0 < float(ratio[0]) <= float(ratio[1]) < math.inf):
        raise ValueError(f"ratio must be (lo, hi) with 0 < lo <= hi, got {tuple(ratio)}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if full_box_guard is not None and not (0.0 < float(full_box_guard) <= 1.0):
        raise ValueError(f"full_box_guard must be in (0, 1] or None, got {full_box_guard!r}")
    return (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))


def as_rng(generator: torch.Generator | random.Random | None) -> random.Random | Any:
    """Turn an optional generator into a ``random.Random``-like source.

    Args:
        generator: None (the global ``random`` module, seeded per DataLoader worker by PyTorch),
            a ``random.Random``, or a ``torch.Generator`` (one 63-bit seed is drawn from it).
    """
    if generator is None:
        return random
    if isinstance(generator, torch.Generator):
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
        return random.Random(seed)
    return generator


# ----------------------------------------------------------------------------- per sample


def _fallback(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """Centre crop of the whole image, aspect ratio clamped to ``ratio``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, min(height, max(1, int(round(width / ratio[0]))))
    elif in_ratio > ratio[1]:
        h, w = height, min(width, max(1, int(round(height * ratio[1]))))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def _place(lo: float, hi: float, extent: int, size: int, u: float) -> int:
    """Top/left pixel of a crop of ``size`` whose centre is ``lo + (hi - lo) * u`` (normalised),
    shifted to lie inside ``[0, extent)``."""
    centre = (lo + (hi - lo) * u) * extent
    start = int(math.floor(centre - size / 2 + 0.5))
    return min(max(start, 0), extent - size)


def _place_official(lo: float, hi: float, extent: int, size: int, u: float) -> int:
    """The official code's top/left pixel: the range ``[int(extent*lo) - size//2,
    int(extent*hi) - size//2]`` clamped into ``[0, extent - size]``, then ``a + int((b-a)*u)``."""
    a = min(max(int(extent * lo) - size // 2, 0), extent - size)
    b = min(max(int(extent * hi) - size // 2, 0), extent - size)
    return a + int((b - a) * u)


def sample_crop_params(
    height: int,
    width: int,
    box: Box = FULL_BOX,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    alpha: float = 0.6,
    generator: torch.Generator | random.Random | None = None,
    full_box_guard: float | None = None,
    placement: str = "paper",
) -> tuple[int, int, int, int]:
    """Sample one ContrastiveCrop rectangle (arguments assumed validated; see the module doc).

    Args:
        height: image height H in pixels (>= 1).
        width: image width W in pixels (>= 1).
        box: normalised ``(x0, y0, x1, y1)`` region where the crop centre must fall.
        scale: area fraction range of the whole image.
        ratio: aspect ratio (w/h) range.
        alpha: Beta(alpha, alpha) concentration of the centre inside the box.
        generator: randomness source (see ``as_rng``).
        full_box_guard: box area share at or above which the centre is uniform (RRC); None = off.
        placement: ``"paper"``, ``"official"`` or ``"uniform"`` (see the module docstring).

    Returns:
        ``(top, left, h, w)`` integers with ``0 <= top``, ``top + h <= H``, ``0 <= left``,
        ``left + w <= W``, ``h, w >= 1``.
    """
    rng = as_rng(generator)
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    x0, y0, x1, y1 = box
    uniform = placement == "uniform" or (
        full_box_guard is not None and (x1 - x0) * (y1 - y0) >= full_box_guard)
    place = _place_official if placement == "official" else _place
    for _ in range(MAX_TRIES):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            if uniform:  # RandomResizedCrop: top-left uniform over all positions
                return rng.randint(0, height - h), rng.randint(0, width - w), h, w
            top = place(y0, y1, height, h, rng.betavariate(alpha, alpha))
            left = place(x0, x1, width, w, rng.betavariate(alpha, alpha))
            return top, left, h, w
    return _fallback(height, width, ratio)


# ----------------------------------------------------------------------------- batched


def sample_beta(alpha: float, shape: Sequence[int], generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Draw Beta(alpha, alpha) samples with torch, honouring an optional generator.

    Beta = X / (X + Y) with X, Y ~ Gamma(alpha); Gamma by Marsaglia-Tsang on Gamma(alpha + 1)
    times ``U ** (1 / alpha)`` (valid for every alpha > 0), vectorised with a few rejection rounds.

    Args:
        alpha: concentration (> 0).
        shape: output shape.
        generator: optional ``torch.Generator`` on ``device``.
        device: output device.

    Returns:
        float32 tensor of ``shape`` with values in [0, 1].
    """
    n = int(math.prod(shape))
    g = _gamma(alpha, 2 * n, generator, device)  # (2n,)
    x, y = g[:n], g[n:]
    total = x + y
    out = torch.where(total > 0, x / total.clamp_min(1e-30), torch.full_like(x, 0.5))
    return out.reshape(tuple(shape))


def _gamma(alpha: float, n: int, generator: torch.Generator | None, device: Any,
           rounds: int = 8) -> torch.Tensor:
    """Gamma(alpha, 1) samples (n,), float64, without host syncs.

    Marsaglia-Tsang accepts > 95% of proposals at every alpha, so ``rounds`` proposals per sample
    are drawn at once and the first accepted is kept; the chance that all 8 fail is below 1e-10
    (then the proposal mode ``d`` is used).
    """
    d = alpha + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    z = torch.randn(rounds, n, **kw)  # (R, n)
    u = torch.rand(rounds, n, **kw)
    v = (1.0 + c * z) ** 3
    ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * z * z + d - d * v
                    + d * torch.log(v.clamp_min(1e-300)))
    first = torch.argmax(ok.to(torch.int8), dim=0, keepdim=True)  # (1, n) first accepted round
    g = torch.where(ok.any(dim=0), (d * v).gather(0, first)[0], torch.full_like(v[0], d))
    boost = torch.rand(n, **kw)
    # Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha), in log space to avoid underflow to 0
    return torch.exp(torch.log(g) + torch.log(boost.clamp_min(1e-300)) / alpha)


def _fallback_batch(height: torch.Tensor, width: torch.Tensor,
                    ratio: tuple[float, float]) -> tuple[torch.Tensor, ...]:
    """Tensor twin of ``_fallback`` for per-sample sizes, without host syncs.

    Args:
        height: (B,) float64 image heights (whole numbers >= 1).
        width: (B,) float64 image widths.
        ratio: aspect ratio (w/h) range.

    Returns:
        ``(top, left, h, w)``: four (B,) float64 tensors of whole numbers, the same values
        ``_fallback`` gives for each sample (Python ``round`` and ``torch.round`` both round
        half to even).
    """
    in_ratio = width / height  # (B,)
    tall_h = torch.minimum(height, torch.round(width / ratio[0]).clamp_min(1.0))
    wide_w = torch.minimum(width, torch.round(height * ratio[1]).clamp_min(1.0))
    h = torch.where(in_ratio < ratio[0], tall_h, height)  # too tall: clamp the height
    w = torch.where(in_ratio > ratio[1], wide_w, width)  # too wide: clamp the width
    return torch.floor((height - h) / 2), torch.floor((width - w) / 2), h, w


def _batch_sizes(height: int | torch.Tensor, width: int | torch.Tensor, b: int,
                 device: torch.device) -> tuple[Any, Any]:
    """Image sizes of a batch: two Python ints (shared by the batch) or, as soon as one of them
    is a tensor, two (B,) float64 tensors on ``device`` (values not checked: a host sync)."""
    if not isinstance(height, torch.Tensor) and not isinstance(width, torch.Tensor):
        return height, width
    out = []
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, torch.Tensor):
            out.append(torch.full((b,), float(v), dtype=torch.float64, device=device))
            continue
        if tuple(v.shape) != (b,) or v.is_floating_point() or v.dtype == torch.bool:
            raise ValueError(f"{name} must be an int or a ({b},) integer tensor (one size per "
                             f"box), got {v.dtype} of shape {tuple(v.shape)}")
        out.append(v.to(device, torch.float64, non_blocking=True))
    return out[0], out[1]


def _try_sizes(height: Any, width: Any, b: int, scale: tuple[float, float],
               ratio: tuple[float, float], kw: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """The ``MAX_TRIES`` tries of every sample at once.

    Args:
        height: int (shared) or (B,) float64 heights.
        width: int or (B,) float64 widths.
        b: batch size B.
        scale, ratio: as in ``sample_crop_params``.
        kw: ``generator``, ``device`` and ``dtype`` (float64) of the draws.

    Returns:
        ``(h, w, ok)``: (B,) float64 size of each sample's first fitting try and (B,) bool,
        False where no try fits.
    """
    if isinstance(height, torch.Tensor):
        height, width = height[:, None], width[:, None]  # (B, 1)
        area = height * width
    else:
        area = float(height * width)
    s = torch.rand(b, MAX_TRIES, **kw) * (scale[1] - scale[0]) + scale[0]  # (B, T)
    log_r = torch.rand(b, MAX_TRIES, **kw) * (math.log(ratio[1]) - math.log(ratio[0]))
    aspect = torch.exp(log_r + math.log(ratio[0]))
    w = torch.round(torch.sqrt(area * s * aspect))  # (B, T); round-half-even like Python round
    h = torch.round(torch.sqrt(area * s / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # (B, T)
    first = torch.argmax(fits.to(torch.int8), dim=1, keepdim=True)  # (B, 1) first fitting try
    return h.gather(1, first)[:, 0], w.gather(1, first)[:, 0], fits.any(dim=1)


def _place_batch(lo: torch.Tensor, hi: torch.Tensor, extent: Any, size: torch.Tensor,
                 u: torch.Tensor) -> torch.Tensor:
    """``_place`` for (B,) float64 tensors (before the shift into the image, done by the
    caller): ``floor(centre - size / 2 + 0.5)`` with ``centre = (lo + (hi - lo) * u) * extent``."""
    return torch.floor((lo + (hi - lo) * u) * extent - size / 2 + 0.5)


def _place_official_batch(lo: torch.Tensor, hi: torch.Tensor, extent: Any, size: torch.Tensor,
                          u: torch.Tensor) -> torch.Tensor:
    """``_place_official`` for (B,) float64 tensors; ``extent`` an int or (B,) float64."""
    last = extent - size  # (B,) largest admissible top/left
    half = torch.floor(size / 2)
    a = torch.minimum((torch.floor(lo * extent) - half).clamp_min(0), last)
    b = torch.minimum((torch.floor(hi * extent) - half).clamp_min(0), last)
    return a + torch.floor((b - a) * u)


def sample_crop_params_batch(
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    boxes: torch.Tensor,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    alpha: float = 0.6,
    generator: torch.Generator | None = None,
    full_box_guard: float | None = None,
    placement: str = "paper",
) -> torch.Tensor:
    """Vectorised twin of ``sample_crop_params``: one crop per box, same law, no Python loop.

    The 10 tries run in parallel; each sample takes its first fitting try (else the centre-crop
    fallback). Works on any device without host syncs; the output lives on ``boxes.device``.
    Per-sample sizes (tensors) give each sample the law of its own image; a batch whose tensor
    sizes are all equal gives the same crops as the int sizes with the same generator state.

    Args:
        height: image height H: an int shared by the batch, or a (B,) integer tensor of
            per-sample heights (>= 1, not checked: that would need a host sync).
        width: image width W: an int or a (B,) integer tensor.
        boxes: (B, 4) normalised ``(x0, y0, x1, y1)`` boxes, relative to each sample's image.
        scale, ratio, alpha, full_box_guard, placement: as in ``sample_crop_params``.
        generator: optional ``torch.Generator`` on ``boxes.device``.

    Returns:
        (B, 4) int64 tensor of ``(top, left, h, w)``, each crop inside its own ``H x W`` image.
    """
    dev = boxes.device
    b = boxes.shape[0]
    height, width = _batch_sizes(height, width, b, dev)  # ints, or (B,) float64
    kw = dict(generator=generator, device=dev, dtype=torch.float64)
    h, w, ok = _try_sizes(height, width, b, scale, ratio, kw)  # (B,), (B,), (B,) bool
    bx = boxes.to(torch.float64)
    u = sample_beta(alpha, (b, 2), generator, dev).to(torch.float64)  # (B, 2) for (y, x)
    place = _place_official_batch if placement == "official" else _place_batch
    top = place(bx[:, 1], bx[:, 3], height, h, u[:, 0])
    left = place(bx[:, 0], bx[:, 2], width, w, u[:, 1])
    if full_box_guard is not None or placement == "uniform":
        full = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1]) >= (full_box_guard or 0.0)
        if placement == "uniform":
            full = torch.ones_like(full)
        uy = torch.floor(torch.rand(b, **kw) * (height - h + 1))
        ux = torch.floor(torch.rand(b, **kw) * (width - w + 1))
        top, left = torch.where(full, uy, top), torch.where(full, ux, left)
    top = torch.minimum(top.clamp_min(0), height - h)
    left = torch.minimum(left.clamp_min(0), width - w)
    if isinstance(height, torch.Tensor):
        fallback: tuple[Any, ...] = _fallback_batch(height, width, ratio)
    else:  # Python scalars: no host-to-device copy, no sync
        fallback = tuple(float(v) for v in _fallback(height, width, ratio))
    cols = [torch.where(ok, col, fb) for col, fb in zip((top, left, h, w), fallback)]
    return torch.stack(cols, dim=1).to(torch.int64)  # (B, 4)


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class CropPlan:
    """One crop law, built once (``from_config``) and shared by every path that draws crops.

    Args:
        kind: ``"ccrop"`` (boxes from the store: ContrastiveCrop), ``"simccrop"`` (the fixed
            centre box ``CENTER_BOX``, no guard) or ``"rcrop"`` (RandomResizedCrop).
        scale: area fraction range of the whole image.
        ratio: aspect ratio (w/h) range.
        alpha: Beta(alpha, alpha) concentration of the crop centre in the box.
        full_box_guard: ccrop only: box area share from which the position is uniform (RRC);
            None = the paper's law.
        placement: ``"paper"`` (centre in the box, then shifted inside the image) or
            ``"official"`` (the official code's clamp-first law); see the module docstring.
    """

    kind: str = "ccrop"
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    alpha: float = 0.6
    full_box_guard: float | None = 0.95
    placement: str = "paper"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"crop kind must be one of {KINDS}, got {self.kind!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        scale, ratio = check_crop_args(self.scale, self.ratio, self.alpha, self.full_box_guard)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "alpha", float(self.alpha))

    @classmethod
    def from_config(cls, crop: Any) -> CropPlan:
        """The plan of a ``CropConfig`` (``cfg.crop``)."""
        return cls(crop.kind, tuple(crop.scale), tuple(crop.ratio), crop.alpha,
                   crop.full_box_guard, crop.placement)

    @property
    def localizes(self) -> bool:
        """Whether boxes come from localization (or a given box source) into the store."""
        return self.kind == "ccrop"

    @property
    def fixed_box(self) -> Box:
        """The box of every image when the store is not read: centre (simccrop) or full."""
        return CENTER_BOX if self.kind == "simccrop" else FULL_BOX

    def uses_boxes(self, epoch: int, warmup_epochs: int) -> bool:
        """Whether 0-based ``epoch`` draws from this law (else the warm-up law, ``plain``):
        ccrop from the end of warm-up on, simccrop always, rcrop never."""
        if self.kind == "rcrop":
            return False
        return self.kind == "simccrop" or epoch >= warmup_epochs

    def plain(self) -> CropPlan:
        """The warm-up law: RandomResizedCrop with this plan's scale and ratio."""
        return CropPlan("rcrop", self.scale, self.ratio, 1.0, None)

    @property
    def guard(self) -> float | None:
        """The full-box guard in effect: ccrop's ``full_box_guard``, None for rcrop/simccrop."""
        return self._law()[0]

    def _law(self) -> tuple[float | None, str]:
        """``(guard, placement)`` handed to the samplers."""
        if self.kind == "rcrop":
            return None, "uniform"
        return (self.full_box_guard if self.kind == "ccrop" else None), self.placement

    def sample(self, height: int, width: int, box: Box = FULL_BOX,
               generator: torch.Generator | random.Random | None = None
               ) -> tuple[int, int, int, int]:
        """One crop ``(top, left, h, w)`` (``sample_crop_params``); ``box`` is read by ccrop
        only (validated by the caller)."""
        guard, placement = self._law()
        box = box if self.kind == "ccrop" else self.fixed_box
        return sample_crop_params(height, width, box, self.scale, self.ratio, self.alpha,
                                  generator, guard, placement)

    def sample_batch(self, height: int | torch.Tensor, width: int | torch.Tensor,
                     boxes: torch.Tensor, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
        """(B, 4) int64 crops for (B, 4) ``boxes`` (``sample_crop_params_batch``); the boxes
        are replaced by ``fixed_box`` unless the kind is ccrop."""
        guard, placement = self._law()
        if self.kind != "ccrop":  # fills from Python scalars: no host-to-device copy
            boxes = torch.stack([torch.full(boxes.shape[:1], v, device=boxes.device)
                                 for v in self.fixed_box], dim=1)  # (B, 4)
        return sample_crop_params_batch(height, width, boxes, self.scale, self.ratio,
                                        self.alpha, generator, guard, placement)


# ----------------------------------------------------------------------------- transforms


def _image_hw(img: Image.Image | torch.Tensor) -> tuple[int, int]:
    if isinstance(img, Image.Image):
        w, h = img.size
    elif isinstance(img, torch.Tensor):
        if img.dim() < 2:
            raise ValueError(f"img tensor must be (C,H,W) or (H,W), got shape {tuple(img.shape)}")
        h, w = int(img.shape[-2]), int(img.shape[-1])
    else:
        raise ValueError(f"img must be a PIL image or a (C,H,W) tensor, got {type(img).__name__}")
    if h < 1 or w < 1:
        raise ValueError(f"img must be at least 1x1 pixel, got {h}x{w}")
    return h, w


class ContrastiveCrop:
    """Crop whose centre is drawn from Beta(alpha, alpha) inside a per-image box, then resized.

    Args:
        size: output side (int) or ``(h, w)``.
        scale: area fraction range of the whole image, ``0 < lo <= hi <= 1``.
        ratio: aspect ratio (w/h) range.
        alpha: Beta concentration (> 0); 0.6 in the paper for ImageNet, 0.1 for small sets.
        full_box_guard: box area share at or above which the centre is uniform as in RRC
            (ccrop default 0.95; None reproduces the paper exactly).
        interpolation: resize interpolation.
        placement: ``"paper"`` (centre in the box, then shifted into the image) or
            ``"official"`` (the official code's clamp-first law; module docstring).

    The law lives in ``self.plan`` (a ``CropPlan``); ``from_plan`` builds the transform of any
    plan (ContrastiveCrop, SimCCrop or RandomResizedCrop).

    Example:
        >>> crop = ContrastiveCrop(size=32, alpha=0.6)
        >>> view = crop(img, (0.1, 0.2, 0.7, 0.9))   # PIL image or (C,H,W) tensor
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        alpha: float = 0.6,
        full_box_guard: float | None = 0.95,
        interpolation: TF.InterpolationMode = TF.InterpolationMode.BILINEAR,
        placement: str = "paper",
    ) -> None:
        self.size = _check_size(size)
        self.plan = CropPlan("ccrop", tuple(scale), tuple(ratio), alpha, full_box_guard,
                             placement)
        self.interpolation = interpolation

    @classmethod
    def from_plan(cls, plan: CropPlan, size: int | Sequence[int],
                  interpolation: TF.InterpolationMode = TF.InterpolationMode.BILINEAR
                  ) -> ContrastiveCrop:
        """The crop transform of ``plan`` (any kind) with output ``size``."""
        crop = cls.__new__(cls)
        crop.size, crop.plan, crop.interpolation = _check_size(size), plan, interpolation
        return crop

    scale = property(lambda self: self.plan.scale, doc="area fraction range")
    ratio = property(lambda self: self.plan.ratio, doc="aspect ratio range")
    alpha = property(lambda self: self.plan.alpha, doc="Beta concentration")
    full_box_guard = property(lambda self: self.plan.guard, doc="guard in effect (or None)")

    def get_params(
        self, height: int, width: int, box: Any = FULL_BOX,
        generator: torch.Generator | random.Random | None = None,
    ) -> tuple[int, int, int, int]:
        """Crop rectangle ``(top, left, h, w)`` in integer pixels, always inside the image.

        Args:
            height: image height (>= 1).
            width: image width (>= 1).
            box: normalised ``(x0, y0, x1, y1)``; ignored by SimCCrop and RandomResizedCrop.
            generator: optional ``torch.Generator`` or ``random.Random`` for reproducibility.
        """
        if int(height) < 1 or int(width) < 1:
            raise ValueError(f"height and width must be >= 1 pixel, got {height}x{width}")
        box = check_box(box) if self.plan.kind == "ccrop" else self.plan.fixed_box
        return self.plan.sample(int(height), int(width), box, generator)

    def __call__(self, img: Image.Image | torch.Tensor, box: Any = FULL_BOX,
                 generator: torch.Generator | random.Random | None = None):
        """Crop and resize one image.

        Args:
            img: PIL image or (C, H, W) tensor (uint8 or float).
            box: normalised ``(x0, y0, x1, y1)``.
            generator: optional randomness source.

        Returns:
            Same type as ``img``, of size ``self.size``.
        """
        h, w = _image_hw(img)
        top, left, ch, cw = self.get_params(h, w, box, generator)
        return TF.resized_crop(img, top, left, ch, cw, list(self.size), self.interpolation,
                               antialias=True)

    def __repr__(self) -> str:
        p = self.plan
        return (f"{type(self).__name__}(size={self.size}, kind={p.kind!r}, scale={p.scale}, "
                f"ratio={tuple(round(r, 4) for r in p.ratio)}, alpha={p.alpha}, "
                f"full_box_guard={self.full_box_guard}, placement={p.placement!r})")


class SimCCrop(ContrastiveCrop):
    """ContrastiveCrop with the fixed centre box (0.25, 0.25, 0.75, 0.75); no localization.

    The ``box`` argument of ``get_params``/``__call__`` is ignored. The guard is off (the fixed box
    covers a quarter of the image).
    """

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), alpha: float = 0.6,
                 interpolation: TF.InterpolationMode = TF.InterpolationMode.BILINEAR,
                 placement: str = "paper") -> None:
        self.size, self.interpolation = _check_size(size), interpolation
        self.plan = CropPlan("simccrop", tuple(scale), tuple(ratio), alpha, None, placement)


class RandomResizedCrop(ContrastiveCrop):
    """Plain RandomResizedCrop (the "rcrop" baseline) with the same interface: box ignored,
    top-left uniform. Same law as ``torchvision.transforms.RandomResizedCrop``."""

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3),
                 interpolation: TF.InterpolationMode = TF.InterpolationMode.BILINEAR) -> None:
        self.size, self.interpolation = _check_size(size), interpolation
        self.plan = CropPlan("rcrop", tuple(scale), tuple(ratio), 1.0, None)


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(h, w)``: a positive int or a pair of positive ints (a float such as 1.5,
    a string or a pair of floats is refused, never truncated)."""
    def positive_int(v: Any) -> bool:
        return isinstance(v, Integral) and not isinstance(v, bool) and v >= 1

    pair = (size, size) if isinstance(size, Integral) else size
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2 \
            or not all(positive_int(v) for v in pair):
        raise ValueError(f"size must be a positive int or a pair (h, w) of positive ints, "
                         f"got {size!r}")
    return int(pair[0]), int(pair[1])
