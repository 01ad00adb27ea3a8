"""Localization: feature maps (B, C, h, w) -> heatmaps (B, H, W) -> boxes (B, 4) -> BoxStore.

The paper (Sec. 3.2) sums the last feature map over channels, min-max normalises it, upsamples
it bilinearly and boxes the pixels ``> k``. ccrop adds (docs/results.md) other stages, per-map
thresholds, the ``peak`` region, border-contrast heat, polarity flips, a centre prior and a
confidence fallback. A degenerate map gives the full image. Batched, no host syncs.
"""

from __future__ import annotations

import difflib
import functools
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from . import dist
from .boxes import BoxStore, box_area, box_iou
from .config import CHOICES  # the one list of each choice
from .runtime import autocast, eval_mode
from .runtime import progress as progress_bar

MODES = CHOICES["crop.threshold_mode"]
#: ``extent``: every kept pixel (the paper); ``peak``: the kept pixels connected to the maximum.
REGIONS = CHOICES["crop.box_region"]
#: ``peak`` works on a grid of at most this many cells per side (exact up to 32 px images).
PEAK_GRID = 32
#: Cell placement when upsampling. ``paper``: cell j covers pixels [s*j, s*(j+1)) (plain
#: bilinear resize). ``receptive``: cell j centred on pixel s*j, where ResNet puts it.
ALIGNS = CHOICES["crop.heatmap_align"]
FULL_SHARE_AREA = 0.95  # a box at least this large counts as "full image" in the statistics
#: A cell's heat: ``sum`` of channels (the paper), or ``contrast``: cosine distance of its
#: feature to the mean feature of the map's border ring.
HEATMAPS = CHOICES["crop.heatmap"]
#: ``auto`` flips a map whose border ring is hotter on average than its interior.
POLARITIES = CHOICES["crop.polarity"]
CENTER_SIGMA = 0.3  # the centre prior's Gaussian width, as a fraction of the image side
SALIENCY_SIDE = 64  # saliency is computed at most at this side (larger images: resized)
_CHOICES = dict(mode=MODES, region=REGIONS, align=ALIGNS, heatmap=HEATMAPS,
                polarity=POLARITIES, reference=("mean", "nearest"))
_MAX_CANDIDATES = 20  # at most this many module names in an unknown-layer error


def _check(threshold: float | None = None, **given: str) -> None:
    """ValueError naming the first argument outside its choices (``_CHOICES``) or range."""
    for name, value in given.items():
        if value not in _CHOICES[name]:
            raise ValueError(f"{name} must be one of {_CHOICES[name]}, got {value!r}")
    if threshold is not None and not 0.0 <= float(threshold) < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")


# ----------------------------------------------------------------------------- heatmaps
def _ring(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Flat row-major indices (R,) of the outermost cells of an h x w map (no host sync)."""
    idx = torch.arange(h * w, device=device).view(h, w)
    if h <= 2 or w <= 2:  # no interior: every cell is on the ring
        return idx.flatten()
    return torch.cat([idx[0], idx[1:-1, ::w - 1].flatten(), idx[-1]])  # left, right: ::w - 1


def _cell_scores(fmap: torch.Tensor, heatmap: str) -> torch.Tensor:
    """(B, C, h, w) -> (B, h, w): channel sum, or cosine distance to the border-ring mean."""
    if heatmap == "sum":
        return fmap.float().sum(dim=1)
    feat = F.normalize(fmap.float(), dim=1)  # (B, C, h, w) unit vectors
    ring = _ring(*feat.shape[-2:], feat.device)  # (R,) border cells
    ref = F.normalize(feat.flatten(2).index_select(2, ring).mean(dim=2), dim=1)  # (B, C)
    return 1 - torch.einsum("bchw,bc->bhw", feat, ref)  # (B, h, w) in [0, 2]


def inverted(heat: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the (B, h, w) map's border ring is hotter on average than its interior, if any."""
    h, w = heat.shape[-2:]
    if h <= 2 or w <= 2:
        return torch.zeros(heat.shape[0], dtype=torch.bool, device=heat.device)
    ring = heat.flatten(1).index_select(1, _ring(h, w, heat.device))  # (B, R)
    return ring.mean(dim=1) > heat[:, 1:-1, 1:-1].flatten(1).mean(dim=1)


def _normalised_maps(fmap: torch.Tensor, heatmap: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image min-max cell scores (B, h, w) in [0, 1] and (B,) ``bad`` (NaN/inf or constant
    maps, returned as zeros)."""
    heat = _cell_scores(fmap, heatmap)  # (B, h, w)
    finite = torch.isfinite(heat).flatten(1).all(dim=1)  # (B,)
    heat = torch.where(finite[:, None, None], heat, torch.zeros_like(heat))
    lo = heat.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    span = heat.amax(dim=(1, 2), keepdim=True) - lo
    flat = span[:, 0, 0] <= 1e-12 * heat.abs().amax(dim=(1, 2)).clamp_min(1.0)
    bad = ~finite | flat
    heat = (heat - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(bad[:, None, None], torch.zeros_like(heat), heat.clamp(0, 1)), bad


def _upsample(heat: torch.Tensor, image_size: tuple[int, int], align: str) -> torch.Tensor:
    """Bilinear (B, h, w) -> (B, H, W); ``receptive``: pixel p of n cells over ``size`` pixels
    reads cell coordinate ``p * n / size`` (edges clamped)."""
    H, W = int(image_size[0]), int(image_size[1])
    if align == "paper":
        return F.interpolate(heat[:, None], size=(H, W), mode="bilinear",
                             align_corners=False)[:, 0]
    for dim, size in ((1, H), (2, W)):
        n = heat.shape[dim]
        pos = torch.arange(size, device=heat.device, dtype=torch.float32) * (n / size)
        pos = pos.clamp(max=n - 1)  # (size,) in cell units
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=n - 1)
        frac = (pos - lo).view((size, 1) if dim == 1 else (size,))  # broadcast along dim
        heat = heat.index_select(dim, lo) * (1 - frac) + heat.index_select(dim, hi) * frac
    return heat


def heatmaps_from_features(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    align: str = "paper", heatmap: str = "sum", polarity: str = "none",
    center_prior: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (B, H, W) float32 in [0, 1] of ``image_size`` and (B,) bool ``degenerate``
    (NaN/inf or constant map: zeros) of a (B, C, h, w) ``fmap`` or a list of one batch's maps
    (averaged). ``align``, ``heatmap``, ``polarity``: see ``ALIGNS``, ``HEATMAPS``,
    ``POLARITIES``; ``center_prior``: weight w of the prior ``exp(-w r^2 / (2 CENTER_SIGMA^2))``
    (r: distance to the centre, in sides), 0 = none. Defaults: the paper's channel sums."""
    return heatmap_parts(fmap, image_size, align, heatmap, polarity, center_prior)[:2]


def heatmap_parts(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    align: str = "paper", heatmap: str = "sum", polarity: str = "none",
    center_prior: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``heatmaps_from_features`` plus (B,) bool ``flipped`` (any stage flipped by polarity)."""
    maps = list(fmap) if isinstance(fmap, (list, tuple)) else [fmap]
    if not maps or any(not isinstance(m, torch.Tensor) or m.dim() != 4 for m in maps) \
            or len({m.shape[0] for m in maps}) != 1:
        raise ValueError("fmap must be a (B, C, h, w) tensor or a non-empty list of them that "
                         f"agree in B, got {[getattr(m, 'shape', type(m)) for m in maps]}")
    _check(align=align, heatmap=heatmap, polarity=polarity)
    total = bad = None
    flipped = torch.zeros(maps[0].shape[0], dtype=torch.bool, device=maps[0].device)
    for m in maps:
        h, b = _normalised_maps(m, heatmap)  # (B, h, w) in [0, 1], (B,)
        if polarity == "auto":
            f = inverted(h) & ~b
            h = torch.where(f[:, None, None], 1 - h, h)
            flipped = flipped | f
        up = _upsample(h, image_size, align)  # (B, H, W)
        total, bad = (up, b) if total is None else (total + up, bad | b)
    if center_prior > 0:  # Gaussian weights around the image centre, 1 at the centre
        ys, xs = ((torch.arange(n, device=total.device, dtype=torch.float32) + 0.5) / n - 0.5
                  for n in total.shape[-2:])
        r2 = ys[:, None] ** 2 + xs[None, :] ** 2  # (H, W)
        total = total * torch.exp(-center_prior * r2 / (2 * CENTER_SIGMA**2))
    if len(maps) > 1 or center_prior > 0:
        total, flat = _normalised_maps(total[:, None])  # back to [0, 1]
        bad = bad | flat
    return total, bad, flipped


# ----------------------------------------------------------------------------- boxes
def box_confidence(heat: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B,) mean heat inside each (B, 4) box minus mean heat outside, in [-1, 1], for (B, H, W)
    heat in [0, 1]: near 1 around the only hot region, 0 for a full-image box."""
    B, H, W = heat.shape
    ys = (torch.arange(H, device=heat.device, dtype=torch.float32) + 0.5) / H  # pixel centres
    xs = (torch.arange(W, device=heat.device, dtype=torch.float32) + 0.5) / W
    rows = (ys >= boxes[:, 1:2]) & (ys < boxes[:, 3:4])  # (B, H)
    cols = (xs >= boxes[:, 0:1]) & (xs < boxes[:, 2:3])  # (B, W)
    inside = (rows[:, :, None] & cols[:, None, :]).float()  # (B, H, W)
    n_in = inside.sum(dim=(1, 2))
    s_in = (heat * inside).sum(dim=(1, 2))
    mean_in = s_in / n_in.clamp_min(1)
    mean_out = (heat.sum(dim=(1, 2)) - s_in) / (H * W - n_in).clamp_min(1)
    return torch.where((n_in > 0) & (n_in < H * W), mean_in - mean_out, torch.zeros_like(s_in))


def otsu_levels(heat: torch.Tensor) -> torch.Tensor:
    """(B,) Otsu level of each (B, H, W) map (pixels ``> level`` are the upper class), exact:
    every split of the sorted values scored from cumulative sums."""
    vals = heat.flatten(1).float().sort(dim=1).values  # (B, n) ascending
    n = vals.shape[1]
    if n < 2:
        return vals[:, 0]
    csum = vals.cumsum(dim=1)  # (B, n)
    k = torch.arange(1, n, device=vals.device, dtype=torch.float32)  # lower-class sizes
    low_mean = csum[:, :-1] / k  # (B, n - 1)
    high_mean = (csum[:, -1:] - csum[:, :-1]) / (n - k)
    between = k * (n - k) * (high_mean - low_mean) ** 2  # (B, n - 1), up to a factor n^2
    best = between.argmax(dim=1, keepdim=True)  # (B, 1)
    return vals.gather(1, best)[:, 0]  # the largest value of the lower class


def peak_component(mask: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: the part of ``mask`` 8-connected to the first maximum of ``heat`` (empty
    where the peak is not kept): ``h + w`` geodesic dilations on the mask max-pooled by
    ``ceil(side / PEAK_GRID)`` (parts that close count as connected)."""
    B, H, W = mask.shape
    f = -(-max(H, W) // PEAK_GRID)
    grid = mask.float()[:, None]  # (B, 1, H, W)
    if f > 1:
        grid = F.max_pool2d(grid, f, f, ceil_mode=True)  # (B, 1, h, w)
    h, w = grid.shape[-2:]
    peak = heat.flatten(1).argmax(dim=1)  # (B,)
    cell = (peak // W) // f * w + (peak % W) // f  # (B,) the peak's grid cell
    reach = torch.zeros_like(grid).flatten(1)
    reach.scatter_(1, cell[:, None], 1.0)
    reach = reach.view_as(grid) * grid
    for _ in range(h + w):
        reach = F.max_pool2d(reach, 3, 1, 1) * grid  # one geodesic dilation step
    if f > 1:
        reach = reach.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)[..., :H, :W]
    return mask & (reach[:, 0] > 0)


def boxes_from_heatmaps(
    heat: torch.Tensor, threshold: float = 0.1, mode: str = "fixed", region: str = "extent"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes (B, 4) normalised around the kept pixels of (B, H, W) heatmaps in [0, 1], and (B,)
    bool ``empty`` (nothing kept: full image). ``mode`` ``fixed`` keeps pixels ``> threshold``
    (the paper's k = 0.1), ``quantile`` those above each map's ``threshold``-quantile, ``otsu``
    those above its Otsu level; ``region``: see ``REGIONS`` (``peak``: ``peak_component``)."""
    _check(threshold, mode=mode, region=region)
    if mode == "quantile":
        level = torch.quantile(heat.flatten(1).float(), float(threshold), dim=1)
    elif mode == "otsu":
        level = otsu_levels(heat)
    else:
        level = torch.full((heat.shape[0],), float(threshold), device=heat.device)
    if region == "peak":
        kept = peak_component(heat > level[:, None, None], heat)  # (B, H, W)
        return _extent(kept.any(dim=2), kept.any(dim=1))
    return _extent(heat.amax(dim=2) > level[:, None], heat.amax(dim=1) > level[:, None])


def _extent(rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box from row/column occupancy (B, H), (B, W) -> normalised (B, 4), empty (B,)."""
    H, W = rows.shape[1], cols.shape[1]
    empty = ~rows.any(dim=1)  # (B,)
    y0 = rows.to(torch.int8).argmax(dim=1)  # first kept row
    y1 = H - rows.flip(1).to(torch.int8).argmax(dim=1)  # one past the last kept row
    x0 = cols.to(torch.int8).argmax(dim=1)
    x1 = W - cols.flip(1).to(torch.int8).argmax(dim=1)
    # Python scalars only: torch.tensor(..., device=...) would be a host sync per batch
    cols_ = [torch.where(empty, full, v.float() / n)
             for v, n, full in ((x0, W, 0.0), (y0, H, 0.0), (x1, W, 1.0), (y1, H, 1.0))]
    return torch.stack(cols_, dim=1), empty  # (B, 4), (B,)


class Localized(NamedTuple):
    """What ``localize`` found for a batch of B images."""

    boxes: torch.Tensor  # (B, 4) normalised; degenerate and fallback rows hold the full image
    degenerate: torch.Tensor  # (B,) bool: NaN/inf or constant map, or no pixel kept
    confidence: torch.Tensor  # (B,) ``box_confidence`` of the box found (before any fallback)
    fallback: torch.Tensor  # (B,) bool: confidence below ``min_confidence``, box set to full
    flipped: torch.Tensor  # (B,) bool: ``polarity="auto"`` flipped the map

    @classmethod
    def join(cls, parts: Iterable[Localized]) -> Localized:
        """The batches' results as one, each field concatenated along B."""
        return cls(*(torch.cat(field) for field in zip(*parts)))


def localize(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    threshold: float = 0.1, mode: str = "fixed", align: str = "paper", region: str = "extent",
    heatmap: str = "sum", polarity: str = "none", center_prior: float = 0.0,
    min_confidence: float = 0.0,
) -> Localized:
    """Feature maps to ``Localized`` boxes (``heatmap_parts`` then ``boxes_from_heat``);
    ``min_confidence``: boxes whose ``box_confidence`` is below it become the full image (0 =
    never). Other arguments as ``heatmaps_from_features`` and ``boxes_from_heatmaps``."""
    heat, bad, flipped = heatmap_parts(fmap, image_size, align, heatmap, polarity, center_prior)
    return boxes_from_heat(heat, bad, threshold, mode, region, min_confidence, flipped)


def boxes_from_heat(heat: torch.Tensor, bad: torch.Tensor, threshold: float = 0.1,
                    mode: str = "fixed", region: str = "extent", min_confidence: float = 0.0,
                    flipped: torch.Tensor | None = None) -> Localized:
    """``localize``'s second half: (B, H, W) heat and (B,) bad maps -> ``Localized``."""
    boxes, empty = boxes_from_heatmaps(heat, threshold, mode, region)
    degenerate = bad | empty
    conf = box_confidence(heat, boxes)
    fallback = torch.zeros_like(degenerate)
    if min_confidence > 0:  # only boxes not (near) full already count as falling back
        low = (conf < min_confidence) & ~degenerate  # (B,)
        full = torch.cat([torch.zeros_like(boxes[:, :2]), torch.ones_like(boxes[:, 2:])], dim=1)
        boxes, fallback = (torch.where(low[:, None], full, boxes),
                           low & (box_area(boxes) < FULL_SHARE_AREA))
    return Localized(boxes, degenerate, conf, fallback,
                     torch.zeros_like(bad) if flipped is None else flipped)


def boxes_from_features(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    threshold: float = 0.1, mode: str = "fixed", align: str = "paper", region: str = "extent",
    **rule: Any,
) -> torch.Tensor:
    """(B, 4) normalised object boxes (full image where degenerate) of (B, C, h, w) feature
    map(s), e.g. ``backbone.forward_features(images)``. The defaults are the paper's rule;
    ``**CropConfig().box_rule()`` gives ccrop's. Arguments as ``localize``."""
    return localize(fmap, image_size, threshold, mode, align, region, **rule).boxes


# ----------------------------------------------------------------------------- encoders
def feature_fn(model: torch.nn.Module, stages: Sequence[int] | None = None,
               layers: str | Sequence[str] | None = None) -> Callable[[torch.Tensor], Any]:
    """The callable ``x (B, 3, H, W) -> (B, C, h, w)`` map (or a list of maps) of a model.

    * ``stages`` (ccrop's backbones): 1-based ResNet stages through ``forward_features`` (the
      last, the default) and ``stage_maps(x, stages)``, e.g. ``feature_fn(backbone, (3,))``.
    * ``layers`` (any ``nn.Module``; strings given as ``stages`` count as layers): submodule
      names as in ``model.named_modules()``, e.g. ``feature_fn(resnet18(), layers=["layer3"])``,
      caught by forward hooks during ``model(x)``, which stops once the last has run.

    ``fn.__self__`` is the model (``update_boxes`` switches it to eval mode). Unknown layers and
    stages the model cannot give raise ``ValueError`` here.
    """
    if stages is not None and (isinstance(stages, str) or any(isinstance(s, str) for s in stages)):
        stages, layers = (None, stages) if layers is None else (stages, layers)
    if layers is not None:
        if stages is not None:
            raise ValueError(f"give the maps as stages or as layers, not both: got "
                             f"stages={stages!r}, layers={layers!r}")
        return _LayerMaps(model, layers)
    last = stages is None or tuple(stages) == (getattr(model, "num_stages", 4),)
    method = "forward_features" if last else "stage_maps"
    if not callable(getattr(model, method, None)):
        raise ValueError(f"heatmap stages {stages} need {type(model).__name__}.{method}(x): name "
                         f"modules instead, e.g. feature_fn(model, layers=['layer3'])")
    if last:
        return model.forward_features
    fn = functools.partial(model.stage_maps, stages=tuple(int(s) for s in stages))
    fn.__self__ = model  # type: ignore[attr-defined]  # as a bound method's: the module
    return fn


class _LayersDone(Exception):
    """Raised by ``_LayerMaps``'s hooks once every layer has run: ends the forward early."""


def _layer_candidates(model: torch.nn.Module, missing: str) -> str:
    """Names to suggest for an unknown layer: close names, the children, names holding it."""
    names = [n for n, _ in model.named_modules() if n]
    holding = [n for n in names if missing and missing.lower() in n.lower()]
    found = list(dict.fromkeys([*difflib.get_close_matches(missing, names, n=8, cutoff=0.6),
                                *(n for n, _ in model.named_children()), *holding]))
    more = len(found) - _MAX_CANDIDATES
    return ", ".join(found[:_MAX_CANDIDATES]) + (f", ... ({more} more)" if more > 0 else "")


class _LayerMaps:
    """``x -> output(s) of the named submodules``, caught by forward hooks during ``model(x)``
    (a module run twice gives its first output); ``__self__`` is the model."""

    def __init__(self, model: torch.nn.Module, layers: str | Sequence[str]) -> None:
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        if not isinstance(model, torch.nn.Module) or not names:
            raise ValueError(f"feature_fn(layers=...) needs an nn.Module and a non-empty list "
                             f"of its module names, got {type(model).__name__}, {layers!r}")
        self._modules = []
        for name in names:
            try:
                self._modules.append(model.get_submodule(name))
            except AttributeError:
                raise ValueError(f"{type(model).__name__} has no module {name!r} (names as in "
                                 f"model.named_modules()); candidates: "
                                 f"{_layer_candidates(model, str(name)) or 'none'}") from None
        self.__self__, self.layers = model, names
        self.single = isinstance(layers, str) or len(names) == 1

    def __repr__(self) -> str:
        return f"feature_fn({type(self.__self__).__name__}, layers={list(self.layers)})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        outs: dict[int, Any] = {}

        def hook(i: int, module: torch.nn.Module, args: Any, output: Any) -> None:
            outs.setdefault(i, output)
            if len(outs) == len(self.layers):
                raise _LayersDone

        handles = [m.register_forward_hook(functools.partial(hook, i))
                   for i, m in enumerate(self._modules)]
        try:
            self.__self__(x)
        except _LayersDone:
            pass
        finally:
            for h in handles:
                h.remove()
        model = type(self.__self__).__name__
        for i, name in enumerate(self.layers):
            out = outs.get(i)
            if out is None:
                raise ValueError(f"layer {name!r} did not run in forward(x) ({model})")
            if not (isinstance(out, torch.Tensor) and out.dim() == 4):
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                hint = "name a module whose output is a feature map"
                if isinstance(out, torch.Tensor) and out.dim() == 3:
                    hint = "tokens (B, N, C) need reshaping to the patch grid first"
                raise ValueError(f"layer {name!r} gave {got}, not a (B, C, h, w) map: {hint} "
                                 f"({model})")
        return outs[0] if self.single else [outs[i] for i in range(len(self.layers))]


# ----------------------------------------------------------------------------- saliency
def saliency_heatmaps(images: torch.Tensor, reference: str = "nearest"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Network-free saliency (B, H, W) in [0, 1] and (B,) bool ``degenerate`` (uniform image)
    of (B, 3, H, W) float images: each pixel's colour distance to the nearest (or ``"mean"``)
    colour of the border ring (``max(1, side // 16)`` px), 3 x 3 mean smoothed and min-max
    normalised; computed at most at ``SALIENCY_SIDE`` (antialiased resize)."""
    _check(reference=reference)
    x = images.float()
    size = x.shape[-2:]
    if max(size) > SALIENCY_SIDE:
        f = SALIENCY_SIDE / max(size)
        x = F.interpolate(x, size=(max(1, round(size[0] * f)), max(1, round(size[1] * f))),
                          mode="bilinear", antialias=True, align_corners=False)
    B, C, H, W = x.shape
    r = max(1, min(H, W) // 16)
    ring = torch.ones(H, W, dtype=torch.bool, device=x.device)
    ring[r:H - r, r:W - r] = False
    border = x[:, :, ring]  # (B, C, R)
    if reference == "mean":
        dist_ = (x - border.mean(dim=2)[:, :, None, None]).norm(dim=1)  # (B, H, W)
    else:  # nearest ring colour: (B, HW, R) distances, min over R
        dist_ = torch.cdist(x.flatten(2).transpose(1, 2), border.transpose(1, 2)).amin(2)
        dist_ = dist_.view(B, H, W)
    smooth = F.avg_pool2d(dist_[:, None], 3, 1, 1, count_include_pad=False)  # (B, 1, H, W)
    if tuple(size) != (H, W):
        smooth = F.interpolate(smooth, size=tuple(size), mode="bilinear", align_corners=False)
    return _normalised_maps(smooth)


@torch.no_grad()
def saliency_boxes(loader: Iterable, store: BoxStore, gt_boxes: torch.Tensor | None = None,
                   progress: bool = False, min_confidence: float = 0.0) -> dict[str, Any]:
    """Write ``saliency_heatmaps`` boxes (Otsu, peak region) of every ``(indices (B,), images
    (B, 3, H, W))`` batch into ``store``; returns ``update_boxes``'s statistics."""
    start = time.perf_counter()
    idx, found = [], []
    for indices, images in progress_bar(loader, "saliency", progress):
        heat, bad = saliency_heatmaps(images)
        idx.append(indices)
        found.append(boxes_from_heat(heat, bad, 0.0, "otsu", "peak", min_confidence))
    return write_boxes(store, torch.cat(idx), Localized.join(found), gt_boxes, start)


# ----------------------------------------------------------------------------- box updates
class FullBoxWarning(UserWarning):
    """Most boxes cover the whole image: ContrastiveCrop degenerates to RandomResizedCrop."""


class FallbackWarning(UserWarning):
    """Most boxes were not confident enough and fell back to the full image."""


def warn_unreliable(stats: dict[str, Any], warn_share: float = 0.8, when: str = "",
                    advice: str | None = None) -> None:
    """Warn when at least ``warn_share`` of an update's boxes fell back or cover the image
    (``when``: e.g. ``" after epoch 3"``; ``advice``: what to try instead)."""
    fallback = stats.get("fallback_share", 0.0)
    if fallback >= warn_share:
        warnings.warn(
            f"{fallback:.0%} of boxes fell back to the full image{when} (box confidence below "
            "crop.min_confidence): for those images ContrastiveCrop is RandomResizedCrop, so the "
            "run gains little from it; the encoder's heatmaps do not separate objects from "
            "background yet (later updates may), or boxes from elsewhere "
            "(crop.box_source=saliency or file:PATH) may serve better.", FallbackWarning,
            stacklevel=2)
    elif stats["full_share"] >= warn_share:
        advice = advice or ("consider crop.threshold_mode=otsu with crop.box_region=peak, or a "
                            "higher crop.threshold; keep crop.full_box_guard on")
        warnings.warn(f"{stats['full_share']:.0%} of boxes cover (almost) the whole image{when}: "
                      f"ContrastiveCrop does little here ({advice}).", FullBoxWarning,
                      stacklevel=2)


@torch.no_grad()
def update_boxes(
    encoder: Callable[[torch.Tensor], Any], loader: Iterable, store: BoxStore,
    threshold: float = 0.1, mode: str = "fixed", device: torch.device | str | None = None,
    amp: bool = False, channels_last: bool = False, gt_boxes: torch.Tensor | None = None,
    progress: bool = False, align: str = "paper", region: str = "extent", heatmap: str = "sum",
    polarity: str = "none", center_prior: float = 0.0, min_confidence: float = 0.0,
    warn_share: float | None = 0.8,
) -> dict[str, Any]:
    """Localize every image of ``loader`` with ``encoder`` (its module in eval mode meanwhile)
    and write its box into ``store`` by dataset index; under DDP each rank localizes its shard
    and every rank receives every box.

    ``encoder``: ``(B, 3, H, W) -> (B, C, h, w)`` map(s), e.g. ``feature_fn(model, ...)``;
    ``loader``: ``(indices (B,), images (B, 3, H, W))`` normalised like training input;
    ``device``: default the encoder's; ``gt_boxes``: optional (N, 4) true boxes (adds
    ``iou_gt``); ``warn_share``: ``warn_unreliable``'s threshold (None: never); the rule
    (``threshold`` ... ``min_confidence``): as ``localize``, the paper's by default
    (``**CropConfig().box_rule()``: ccrop's). Returns statistics: ``seconds``, ``images``,
    ``mean_area``, ``full_share`` (area >= ``FULL_SHARE_AREA``), ``degenerate`` (count),
    ``fallback_share``, ``flipped_share``, ``mean_confidence`` and ``iou_gt``.
    """
    rule = dict(threshold=threshold, mode=mode, align=align, region=region, heatmap=heatmap,
                polarity=polarity, center_prior=center_prior, min_confidence=min_confidence)
    start = time.perf_counter()
    owner = getattr(encoder, "__self__", encoder)
    module = owner if isinstance(owner, torch.nn.Module) else None
    if device is None:
        p = next(module.parameters(), None) if module is not None else None
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    idx, found = [], []
    with eval_mode(module):
        for indices, images in progress_bar(loader, "localize", progress):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                fmap = encoder(images)  # (B, C, h, w), or a list of stage maps
            idx.append(indices.to(device))
            found.append(localize(fmap, images.shape[-2:], **rule))
    if not found:
        raise ValueError("loader yielded no images: cannot update boxes")
    stats = write_boxes(store, torch.cat(idx), Localized.join(found), gt_boxes, start)
    if warn_share is not None and dist.is_main_process():
        warn_unreliable(stats, warn_share)
    return stats


def write_boxes(store: BoxStore, idx: torch.Tensor, found: Localized,
                gt_boxes: torch.Tensor | None, start: float) -> dict[str, Any]:
    """Gather one rank's (n,) indices and ``Localized`` rows over all ranks, write the boxes
    by index and return ``update_boxes``'s statistics (``start``: ``time.perf_counter()``)."""
    idx = dist.all_gather(idx).cpu()  # (N,) over all ranks
    every = Localized(*(dist.all_gather(t).cpu() for t in found))  # one host transfer each
    store.update(idx, every.boxes)
    stats = box_stats(store, idx, every.degenerate, gt_boxes, 0.0)
    n = max(len(idx), 1)
    stats.update(fallback_share=float(every.fallback.sum()) / n,
                 flipped_share=float(every.flipped.sum()) / n,
                 mean_confidence=float(every.confidence.mean()) if len(idx) else 0.0,
                 seconds=time.perf_counter() - start)
    return stats


def localize_dataset(crop: Any, encoder: torch.nn.Module, loader: Iterable, store: BoxStore,
                     device: torch.device | str | None = None, **kw: Any) -> dict[str, Any]:
    """``update_boxes`` with every localization setting of a ``CropConfig`` (stages and rule);
    ``kw``: ``amp``, ``channels_last``, ``gt_boxes``, ``progress``."""
    return update_boxes(feature_fn(encoder, crop.heatmap_stages), loader, store, device=device,
                        **crop.box_rule(), **kw)


def box_stats(store: BoxStore, idx: torch.Tensor, bad: torch.Tensor,
              gt_boxes: torch.Tensor | None, seconds: float) -> dict[str, Any]:
    """Statistics of the boxes just written for (N,) ``idx`` with (N,) ``bad`` flags and
    optional (N_all, 4) ``gt_boxes`` (keys as ``update_boxes``)."""
    uniq = torch.unique(idx)
    boxes = store[uniq]  # (N, 4) after the update
    area = box_area(boxes)
    stats: dict[str, Any] = dict(
        seconds=seconds, images=int(uniq.numel()), mean_area=float(area.mean()),
        full_share=float((area >= FULL_SHARE_AREA).float().mean()), degenerate=int(bad.sum()))
    if gt_boxes is not None:
        stats["iou_gt"] = float(box_iou(boxes, torch.as_tensor(gt_boxes)[uniq].float()).mean())
    return stats
