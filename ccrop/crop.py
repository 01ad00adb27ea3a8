"""The crop law (``CropPlan``), per sample (``random.Random``) and batched (torch, any device),
and the crop transforms built on it.

The law (Peng et al., CVPR 2022, Sec. 3.3): area fraction ``s ~ U(scale)`` and log aspect ratio
``~ U(log ratio)`` give ``w = round(sqrt(s*H*W*r))``, ``h = round(sqrt(s*H*W/r))`` (``MAX_TRIES``
tries until the crop fits, else a centre crop with the ratio clamped). Placement ``paper``:
centre ``lo + (hi - lo) * u`` per axis, ``u ~ Beta(alpha, alpha)``, ``lo, hi`` the box edges,
shifted inside the image. ``official`` (the official code): the top-left range ``[int(H*y0) -
h//2, int(H*y1) - h//2]`` clamped into ``[0, H-h]``, then ``top = a + int((b - a) * u)``.
``uniform`` (RandomResizedCrop, and ccrop's guard for boxes of area >= ``full_box_guard``):
top-left uniform.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import torch
import torchvision.transforms.functional as TF
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform, query_size
from torchvision.transforms.v2 import functional as F

from .boxes import FULL_BOX, Box, check_box
from .config import CHOICES  # the one list of each choice

CENTER_BOX: Box = (0.25, 0.25, 0.75, 0.75)
MAX_TRIES = 10
KINDS = CHOICES["crop.kind"]
PLACEMENTS = CHOICES["crop.placement"]  # of a box's crop; "uniform" is RandomResizedCrop's
BOX_KEY = "ccrop_box"  # dict key of a normalised (x0, y0, x1, y1) object box in a v2 sample
_ROTATED = ("XYWHR", "CXCYWHR", "XYXYXYXY")
_MISSING = (
    "ContrastiveCrop needs the object box in the sample: a tv_tensors.BoundingBoxes in pixels "
    "(e.g. crop((image, BoundingBoxes([[x0, y0, x1, y1]], format='XYXY', canvas_size=(H, W))))) "
    f"or a normalised (x0, y0, x1, y1) under the dict key {BOX_KEY!r} "
    f"(e.g. crop({{'image': image, {BOX_KEY!r}: (0.1, 0.2, 0.8, 0.9)}})). "
    "SimCCrop needs no box."
)


def as_rng(generator: torch.Generator | random.Random | None) -> random.Random | Any:
    """The ``random`` module for None, a ``random.Random`` as is, or one seeded from a 63-bit
    draw of a ``torch.Generator``."""
    if generator is None:
        return random
    if isinstance(generator, torch.Generator):
        return random.Random(int(torch.randint(0, 2**63 - 1, (1,), generator=generator)))
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
    """``paper`` top/left: centre ``(lo + (hi - lo) * u) * extent``, shifted into the image."""
    centre = (lo + (hi - lo) * u) * extent
    start = int(math.floor(centre - size / 2 + 0.5))
    return min(max(start, 0), extent - size)


def _place_official(lo: float, hi: float, extent: int, size: int, u: float) -> int:
    """``official`` top/left: the range clamped into ``[0, extent - size]``, then drawn."""
    a = min(max(int(extent * lo) - size // 2, 0), extent - size)
    b = min(max(int(extent * hi) - size // 2, 0), extent - size)
    return a + int((b - a) * u)


def sample_crop_params(
    height: int, width: int, box: Box = FULL_BOX, scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3), alpha: float = 0.6,
    generator: torch.Generator | random.Random | None = None,
    full_box_guard: float | None = None, placement: str = "paper",
) -> tuple[int, int, int, int]:
    """One crop ``(top, left, h, w)`` inside an ``H x W`` image for a normalised ``box``
    (arguments trusted); ``placement`` is ``paper``, ``official`` or ``uniform``."""
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
    """float64 Beta(alpha, alpha) samples of ``shape`` as ``X / (X + Y)``, without host syncs:
    X, Y ~ Gamma(alpha) by Marsaglia-Tsang on Gamma(alpha + 1) with 8 proposals at once (all
    fail below 1e-10: then the mode), times ``U ** (1/alpha)``."""
    n = int(math.prod(shape))
    d = alpha + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    kw = dict(generator=generator, device=device, dtype=torch.float64)
    z = torch.randn(8, 2 * n, **kw)  # (R, 2n) proposals
    u = torch.rand(8, 2 * n, **kw)
    v = (1.0 + c * z) ** 3
    ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * z * z + d - d * v
                    + d * torch.log(v.clamp_min(1e-300)))
    first = torch.argmax(ok.to(torch.int8), dim=0, keepdim=True)  # (1, 2n) first accepted
    g = torch.where(ok.any(dim=0), (d * v).gather(0, first)[0], torch.full_like(v[0], d))
    boost = torch.rand(2 * n, **kw)
    g = torch.exp(torch.log(g) + torch.log(boost.clamp_min(1e-300)) / alpha)  # (2n,) log space
    x, y = g[:n], g[n:]
    total = x + y
    out = torch.where(total > 0, x / total.clamp_min(1e-30), torch.full_like(x, 0.5))
    return out.reshape(tuple(shape))


def _fallback_batch(height: torch.Tensor, width: torch.Tensor,
                    ratio: tuple[float, float]) -> tuple[torch.Tensor, ...]:
    """``_fallback`` of (B,) float64 sizes: four (B,) float64 ``top, left, h, w``."""
    in_ratio = width / height  # (B,)
    tall_h = torch.minimum(height, torch.round(width / ratio[0]).clamp_min(1.0))
    wide_w = torch.minimum(width, torch.round(height * ratio[1]).clamp_min(1.0))
    h = torch.where(in_ratio < ratio[0], tall_h, height)  # too tall: clamp the height
    w = torch.where(in_ratio > ratio[1], wide_w, width)  # too wide: clamp the width
    return torch.floor((height - h) / 2), torch.floor((width - w) / 2), h, w


def _place_batch(lo: torch.Tensor, hi: torch.Tensor, extent: torch.Tensor, size: torch.Tensor,
                 u: torch.Tensor) -> torch.Tensor:
    """``_place`` of (B,) float64 tensors, before the shift into the image."""
    return torch.floor((lo + (hi - lo) * u) * extent - size / 2 + 0.5)


def _place_official_batch(lo: torch.Tensor, hi: torch.Tensor, extent: torch.Tensor,
                          size: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``_place_official`` of (B,) float64 tensors."""
    last = extent - size  # (B,) largest admissible top/left
    half = torch.floor(size / 2)
    a = torch.minimum((torch.floor(lo * extent) - half).clamp_min(0), last)
    b = torch.minimum((torch.floor(hi * extent) - half).clamp_min(0), last)
    return a + torch.floor((b - a) * u)


def sample_crop_params_batch(
    height: int | torch.Tensor, width: int | torch.Tensor, boxes: torch.Tensor,
    scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
    alpha: float = 0.6, generator: torch.Generator | None = None,
    full_box_guard: float | None = None, placement: str = "paper",
) -> torch.Tensor:
    """``sample_crop_params`` for (B, 4) ``boxes`` at once, without host syncs: (B, 4) int64
    ``top, left, h, w`` on ``boxes.device``. ``height``/``width``: ints shared by the batch or
    (B,) integer tensors (one image size per box)."""
    dev = boxes.device
    b = boxes.shape[0]
    height, width = (  # (B,) float64; an int fills without a host-to-device copy
        v.to(dev, torch.float64, non_blocking=True) if isinstance(v, torch.Tensor)
        else torch.full((b,), float(v), dtype=torch.float64, device=dev) for v in (height, width))
    kw = dict(generator=generator, device=dev, dtype=torch.float64)
    # the MAX_TRIES tries of every sample at once; h, w: the first that fits (ok: one does)
    area = (height * width)[:, None]  # (B, 1)
    s = torch.rand(b, MAX_TRIES, **kw) * (scale[1] - scale[0]) + scale[0]  # (B, T)
    log_r = torch.rand(b, MAX_TRIES, **kw) * (math.log(ratio[1]) - math.log(ratio[0]))
    aspect = torch.exp(log_r + math.log(ratio[0]))
    ws = torch.round(torch.sqrt(area * s * aspect))  # (B, T); half-even like Python round
    hs = torch.round(torch.sqrt(area * s / aspect))
    fits = (ws > 0) & (hs > 0) & (ws <= width[:, None]) & (hs <= height[:, None])
    first = torch.argmax(fits.to(torch.int8), dim=1, keepdim=True)  # (B, 1)
    h, w, ok = hs.gather(1, first)[:, 0], ws.gather(1, first)[:, 0], fits.any(dim=1)
    bx = boxes.to(torch.float64)
    u = sample_beta(alpha, (b, 2), generator, dev)  # (B, 2) for (y, x)
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
    fallback = _fallback_batch(height, width, ratio)  # where no try fits
    cols = [torch.where(ok, col, fb) for col, fb in zip((top, left, h, w), fallback)]
    return torch.stack(cols, dim=1).to(torch.int64)  # (B, 4)


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class CropPlan:
    """One crop law, shared by every path that draws crops (checked once, here): ``kind``
    ``ccrop`` (boxes from the store), ``simccrop`` (``CENTER_BOX``, no guard) or ``rcrop``
    (RandomResizedCrop); ``scale``: area fraction range; ``ratio``: aspect ratio (w/h) range;
    ``alpha``: Beta(alpha, alpha) concentration of the crop centre in the box;
    ``full_box_guard`` (ccrop only): box area share from which the position is uniform, None =
    the paper's law; ``placement``: ``paper`` or ``official`` (module docstring)."""

    kind: str = "ccrop"
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    alpha: float = 0.6
    full_box_guard: float | None = 0.95
    placement: str = "paper"

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.placement not in PLACEMENTS:
            raise ValueError(f"crop kind must be one of {KINDS} and placement one of "
                             f"{PLACEMENTS}, got {self.kind!r}, {self.placement!r}")
        scale, ratio, alpha, guard = self.scale, self.ratio, self.alpha, self.full_box_guard
        if len(scale) != 2 or not (0.0 < float(scale[0]) <= float(scale[1]) <= 1.0):
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1, got {tuple(scale)}")
        if len(ratio) != 2 or not (0.0 < float(ratio[0]) <= float(ratio[1]) < math.inf):
            raise ValueError(f"ratio must be (lo, hi) with 0 < lo <= hi, got {tuple(ratio)}")
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        if guard is not None and not (0.0 < float(guard) <= 1.0):
            raise ValueError(f"full_box_guard must be in (0, 1] or None, got {guard!r}")
        object.__setattr__(self, "scale", (float(scale[0]), float(scale[1])))
        object.__setattr__(self, "ratio", (float(ratio[0]), float(ratio[1])))
        object.__setattr__(self, "alpha", float(alpha))

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
        """Whether 0-based ``epoch`` draws from this law (else ``plain``): ccrop after warm-up,
        simccrop always, rcrop never."""
        return self.kind == "simccrop" or (self.kind == "ccrop" and epoch >= warmup_epochs)

    def plain(self) -> CropPlan:
        """The warm-up law: RandomResizedCrop with this plan's scale and ratio."""
        return CropPlan("rcrop", self.scale, self.ratio, 1.0, None)

    @property
    def guard(self) -> float | None:
        """The full-box guard in effect (None but for ccrop)."""
        return self.full_box_guard if self.kind == "ccrop" else None

    def _law(self) -> tuple[float | None, str]:
        return self.guard, "uniform" if self.kind == "rcrop" else self.placement

    def sample(self, height: int, width: int, box: Box = FULL_BOX,
               generator: torch.Generator | random.Random | None = None
               ) -> tuple[int, int, int, int]:
        """One crop ``(top, left, h, w)``; ``box`` (checked by the caller) is read by ccrop only."""
        box = box if self.kind == "ccrop" else self.fixed_box
        return sample_crop_params(height, width, box, self.scale, self.ratio, self.alpha,
                                  generator, *self._law())

    def sample_batch(self, height: int | torch.Tensor, width: int | torch.Tensor,
                     boxes: torch.Tensor, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
        """(B, 4) int64 crops of (B, 4) ``boxes`` (``fixed_box`` unless ccrop)."""
        if self.kind != "ccrop":  # fills from Python scalars: no host-to-device copy
            boxes = torch.stack([torch.full(boxes.shape[:1], v, device=boxes.device)
                                 for v in self.fixed_box], dim=1)  # (B, 4)
        return sample_crop_params_batch(height, width, boxes, self.scale, self.ratio,
                                        self.alpha, generator, *self._law())


# ----------------------------------------------------------------------------- transforms
@dataclass
class _NormalisedBox:
    """Holds a ``"ccrop_box"`` value during a v2 call, so pytree keeps the 4 numbers together
    and v2 never takes a (4,) tensor for the image."""

    value: Any


def _wrap_box(sample: Any) -> Any:
    """Copy of ``sample`` (nested dicts, lists, tuples), ``"ccrop_box"`` values wrapped."""
    if isinstance(sample, dict):
        out = copy.copy(sample)  # keeps the dict type and key order
        for key, value in sample.items():
            out[key] = _NormalisedBox(value) if key == BOX_KEY else _wrap_box(value)
        return out
    if type(sample) in (list, tuple):
        return type(sample)(_wrap_box(v) for v in sample)
    return sample


def _is_box(x: Any) -> bool:
    """Whether a call's second argument is a normalised box (per-sample form)."""
    if type(x) is torch.Tensor:
        return x.dim() == 1
    return isinstance(x, (tuple, list)) and all(isinstance(v, Real) for v in x)


def object_box(boxes: Sequence[tv_tensors.BoundingBoxes]) -> Box:
    """The normalised union of K >= 1 ``BoundingBoxes`` of one canvas (any format; rotated
    boxes by their corners), clamped to [0, 1]."""
    corners = []
    for bb in boxes:
        target = "XYXYXYXY" if bb.format.value in _ROTATED else "XYXY"
        xy = F.convert_bounding_box_format(bb, new_format=target).as_subclass(torch.Tensor)
        scale = torch.tensor([bb.canvas_size[1], bb.canvas_size[0]], dtype=torch.float64)
        corners.append(xy.reshape(-1, 2).to(torch.float64) / scale)  # (corners, 2) x, y
    xy = torch.cat(corners) if corners else torch.empty(0, 2)
    if xy.shape[0] == 0:
        raise ValueError("the sample's BoundingBoxes hold no box; " + _MISSING)
    box = torch.cat([xy.amin(dim=0), xy.amax(dim=0)]).clamp(0.0, 1.0)  # (4,) x0, y0, x1, y1
    return check_box(box, "BoundingBoxes (union, normalised)")


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(h, w)``: a positive int or a pair of them (never truncated)."""
    pair = (size, size) if isinstance(size, Integral) else size
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2 \
            or not all(isinstance(v, Integral) and not isinstance(v, bool) and v >= 1
                       for v in pair):
        raise ValueError(f"size must be a positive int or a pair (h, w) of positive ints, "
                         f"got {size!r}")
    return int(pair[0]), int(pair[1])


class BoxCrop(Transform):
    """The crop of a ``CropPlan``, resized to ``size`` (side or ``(h, w)``; ``interpolation``
    of images, masks: nearest); a torchvision v2 transform.

    * ``crop(img, box, generator=None)``: a PIL image or (C, H, W) tensor and a normalised
      ``(x0, y0, x1, y1)`` -> the view (``generator``: ``random.Random``, ``torch.Generator``,
      or None: the ``random`` module).
    * v2: ``crop(sample)`` (nested tuples, lists, dicts) crops every image, video, mask and
      bounding box in it; the object box is a ``"ccrop_box"`` entry (normalised, returned
      unchanged) or else the union of the ``BoundingBoxes``; one seed from torch's global RNG.
    """

    _transformed_types = (*Transform._transformed_types, _NormalisedBox)

    def __init__(self, plan: CropPlan, size: int | Sequence[int],
                 interpolation: TF.InterpolationMode | int = TF.InterpolationMode.BILINEAR,
                 antialias: bool | None = True) -> None:
        super().__init__()
        self.plan, self.size = plan, _check_size(size)
        self.interpolation, self.antialias = interpolation, antialias

    scale = property(lambda self: self.plan.scale, doc="area fraction range")
    ratio = property(lambda self: self.plan.ratio, doc="aspect ratio range")
    alpha = property(lambda self: self.plan.alpha, doc="Beta concentration")
    full_box_guard = property(lambda self: self.plan.guard, doc="guard in effect (or None)")

    def get_params(self, height: int, width: int, box: Any = FULL_BOX,
                   generator: torch.Generator | random.Random | None = None
                   ) -> tuple[int, int, int, int]:
        """Crop ``(top, left, h, w)`` in an ``H x W`` image; ``box`` is read by ccrop only."""
        if int(height) < 1 or int(width) < 1:
            raise ValueError(f"the image must be at least 1 pixel per side, got {height}x{width}")
        box = check_box(box) if self.plan.localizes else self.plan.fixed_box
        return self.plan.sample(int(height), int(width), box, generator)

    def forward(self, *inputs: Any, generator: Any = None) -> Any:
        """``crop(img, box, generator)`` per sample, else the v2 call (class docstring)."""
        if len(inputs) in (2, 3) and _is_box(inputs[1]):  # crop(img, box[, generator])
            img, box, gen = (*inputs, generator)[:3]
        elif len(inputs) == 1 and generator is not None:  # crop(img, generator=g): whole image
            img, box, gen = inputs[0], FULL_BOX, generator
        else:
            return super().forward(_wrap_box(inputs if len(inputs) > 1 else inputs[0]))
        top, left, ch, cw = self.get_params(*F.get_size(img), box, gen)
        return TF.resized_crop(img, top, left, ch, cw, list(self.size), self.interpolation,
                               antialias=self.antialias is not False)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """The v2 draw: ``top, left, height, width`` in pixels and the normalised ``box``."""
        height, width = query_size(flat_inputs)
        given = [x for x in flat_inputs if isinstance(x, _NormalisedBox)]
        boxes = [x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes)]
        if not self.plan.localizes:
            box = self.plan.fixed_box
        elif given:
            box = check_box(given[0].value, BOX_KEY)
        elif boxes:
            box = object_box(boxes)
        else:
            raise ValueError(_MISSING)
        top, left, h, w = self.plan.sample(height, width, box, as_rng(torch.default_generator))
        return dict(top=top, left=left, height=h, width=w, box=box)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Apply the drawn crop to one input; the normalised box passes through unchanged."""
        if isinstance(inpt, _NormalisedBox):
            return inpt.value
        return self._call_kernel(F.resized_crop, inpt, top=params["top"], left=params["left"],
                                 height=params["height"], width=params["width"],
                                 size=list(self.size), interpolation=self.interpolation,
                                 antialias=self.antialias)

    def extra_repr(self) -> str:
        p = self.plan
        return (f"size={self.size}, kind={p.kind!r}, scale={p.scale}, "
                f"ratio={tuple(round(r, 4) for r in p.ratio)}, alpha={p.alpha}, "
                f"full_box_guard={p.guard}, placement={p.placement!r}")


class ContrastiveCrop(BoxCrop):
    """ContrastiveCrop: the crop centre drawn from Beta(alpha, alpha) inside each image's box,
    e.g. ``ContrastiveCrop(32, alpha=0.6)(img, (0.1, 0.2, 0.7, 0.9))``. ``alpha``: 0.6 in the
    paper for ImageNet, 0.1 for small sets; ``full_box_guard``: box area share from which the
    position is uniform (None: the paper exactly); other arguments as ``CropPlan``/``BoxCrop``."""

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), alpha: float = 0.6,
                 full_box_guard: float | None = 0.95, placement: str = "paper",
                 interpolation: TF.InterpolationMode | int = TF.InterpolationMode.BILINEAR,
                 antialias: bool | None = True) -> None:
        super().__init__(CropPlan("ccrop", tuple(scale), tuple(ratio), alpha, full_box_guard,
                                  placement), size, interpolation, antialias)


class SimCCrop(BoxCrop):
    """SimCCrop: ContrastiveCrop with the fixed centre box ``CENTER_BOX`` (no box read, no
    guard); arguments as ``ContrastiveCrop``."""

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), alpha: float = 0.6,
                 placement: str = "paper", interpolation: Any = TF.InterpolationMode.BILINEAR,
                 antialias: bool | None = True) -> None:
        super().__init__(CropPlan("simccrop", tuple(scale), tuple(ratio), alpha, None,
                                  placement), size, interpolation, antialias)


class BoxRandomResizedCrop(BoxCrop):
    """RandomResizedCrop's law (ccrop's ``rcrop`` baseline) with the ``BoxCrop`` interface:
    box ignored, top-left uniform."""

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.2, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3),
                 interpolation: Any = TF.InterpolationMode.BILINEAR, antialias: bool = True
                 ) -> None:
        super().__init__(CropPlan("rcrop", tuple(scale), tuple(ratio), 1.0, None), size,
                         interpolation, antialias)
