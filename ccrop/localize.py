"""Semantic-aware localization: feature maps (B,C,h,w) -> heatmaps (B,H,W) -> boxes (B,4) -> store.

The paper's step (Sec. 3.2): sum the last convolutional feature map over channels, min-max
normalise each map to [0, 1], upsample bilinearly to the input size and keep pixels ``> k``;
the box is the tight axis-aligned extent of the kept pixels (row/column projections, not a
connected component).

ccrop adds, each measured against true boxes (docs/results.md): heatmaps from an earlier stage
or several stages (``feature_fn``; several maps are averaged after normalising), a per-map
threshold (``quantile``, or ``otsu``: the level that best splits the map into two classes), and
the ``peak`` region: only the connected part of the kept pixels that holds the heatmap's peak,
so a second hot spot (clutter) does not stretch the box.

Degenerate maps never produce NaN or a crash (the official code divides by zero on a constant
map and fails on an empty mask). A map is *degenerate* when it holds NaN/inf, is constant, or
keeps no pixel; its box falls back to the full image ``(0, 0, 1, 1)`` (with ccrop's full-box
guard this makes the crop plain RandomResizedCrop) and it is counted in the statistics.
Everything is batched: no per-image Python loop and no host sync until the store is written.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from . import dist
from .boxes import BoxStore, box_area, box_iou
from .runtime import autocast, eval_mode
from .runtime import progress as progress_bar

MODES = ("fixed", "quantile", "otsu")
#: ``extent``: the box of every kept pixel (the paper). ``peak``: the box of the kept pixels
#: connected to the heatmap's maximum.
REGIONS = ("extent", "peak")
#: ``peak`` finds the connected part on a grid of at most this many cells per side (the mask
#: max-pooled by ``ceil(side / PEAK_GRID)``; exact up to 32 px images).
PEAK_GRID = 32
#: How feature cells map to pixels when upsampling. ``paper``: cell j covers pixels
#: [s*j, s*(j+1)) (plain bilinear resize, as the official code). ``receptive``: cell j is centred
#: on pixel s*j, where ResNet's padded stride-2 convolutions and 1x1 stride-2 shortcuts put it;
#: the paper's placement shifts every heatmap by (s-1)/2 pixels down and right (3.5 px at
#: CIFAR's stride 8, 15.5 px at ImageNet's stride 32).
ALIGNS = ("paper", "receptive")
FULL_SHARE_AREA = 0.95  # a box at least this large counts as "full image" in the statistics
#: What a cell's heat is. ``sum``: the channel sum (the paper). ``contrast``: the cosine distance
#: of the cell's feature vector to the mean feature of the map's border ring (a boundary prior:
#: borders are mostly background), so the object is hot whatever the sign of its activations.
HEATMAPS = ("sum", "contrast")
#: ``auto`` flips a map whose border ring is hotter on average than its interior (a young
#: encoder often activates more on flat background than on the object); ``none`` never flips.
POLARITIES = ("none", "auto")
CENTER_SIGMA = 0.3  # the centre prior's Gaussian width, as a fraction of the image side


def _check_align(align: str) -> None:
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")


def _check_threshold(threshold: float, mode: str, align: str = "paper",
                     region: str = "extent") -> None:
    _check_align(align)
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not (0.0 <= float(threshold) < 1.0):
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")


def _check_fmap(fmap: torch.Tensor) -> None:
    if not isinstance(fmap, torch.Tensor) or fmap.dim() != 4:
        shape = tuple(fmap.shape) if isinstance(fmap, torch.Tensor) else type(fmap).__name__
        raise ValueError(f"fmap must be a (B, C, h, w) tensor or a list of them, got {shape}")


def _as_maps(fmap: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    maps = list(fmap) if isinstance(fmap, (list, tuple)) else [fmap]
    if not maps:
        raise ValueError("fmap must be a (B, C, h, w) tensor or a non-empty list of them")
    for m in maps:
        _check_fmap(m)
    if len({m.shape[0] for m in maps}) != 1:
        raise ValueError(f"feature maps of one batch must agree in B, got "
                         f"{[tuple(m.shape) for m in maps]}")
    return maps


def _ring(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Flat indices (R,) of the outermost cells of an h x w map, in row-major order (as a
    boolean mask would give them; built arithmetically: no host sync)."""
    if h <= 2 or w <= 2:  # no interior: every cell is on the ring
        return torch.arange(h * w, device=device)
    rows = torch.arange(1, h - 1, device=device) * w  # (h - 2,) first cell of middle rows
    sides = torch.stack([rows, rows + (w - 1)], dim=1).flatten()  # left, right per row
    top = torch.arange(w, device=device)
    return torch.cat([top, sides, top + (h - 1) * w])


def _interior(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Flat indices of the cells off the ring (h, w >= 3), in row-major order."""
    rows = torch.arange(1, h - 1, device=device)[:, None] * w
    return (rows + torch.arange(1, w - 1, device=device)[None, :]).flatten()


def _cell_scores(fmap: torch.Tensor, heatmap: str) -> torch.Tensor:
    """(B, C, h, w) -> (B, h, w): channel sum, or cosine distance to the border-ring mean."""
    if heatmap == "sum":
        return fmap.float().sum(dim=1)
    feat = F.normalize(fmap.float(), dim=1)  # (B, C, h, w) unit vectors
    ring = _ring(*feat.shape[-2:], feat.device)  # (R,) border cells
    ref = F.normalize(feat.flatten(2).index_select(2, ring).mean(dim=2), dim=1)  # (B, C)
    return 1 - torch.einsum("bchw,bc->bhw", feat, ref)  # (B, h, w) in [0, 2]


def inverted(heat: torch.Tensor) -> torch.Tensor:
    """True where a heatmap's border ring is hotter on average than its interior.

    Args:
        heat: (B, h, w) heatmaps; maps without interior (h or w <= 2) are never inverted.

    Returns:
        (B,) bool.
    """
    h, w = heat.shape[-2:]
    if h <= 2 or w <= 2:
        return torch.zeros(heat.shape[0], dtype=torch.bool, device=heat.device)
    flat = heat.flatten(1)  # (B, h*w)
    outer = flat.index_select(1, _ring(h, w, heat.device)).mean(dim=1)
    inner = flat.index_select(1, _interior(h, w, heat.device)).mean(dim=1)
    return outer > inner


def _normalised_maps(fmap: torch.Tensor, heatmap: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """Cell scores and per-image min-max at feature resolution: (B,C,h,w) -> (B,h,w), (B,) bad.

    Degenerate maps (NaN/inf, or constant) come back as zeros with ``bad`` set.
    """
    heat = _cell_scores(fmap, heatmap)  # (B, h, w)
    finite = torch.isfinite(heat).flatten(1).all(dim=1)  # (B,)
    heat = torch.where(finite[:, None, None], heat, torch.zeros_like(heat))
    lo = heat.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    span = heat.amax(dim=(1, 2), keepdim=True) - lo
    flat = span[:, 0, 0] <= 1e-12 * heat.abs().amax(dim=(1, 2)).clamp_min(1.0)
    bad = ~finite | flat
    heat = (heat - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(bad[:, None, None], torch.zeros_like(heat), heat.clamp(0, 1)), bad


def _upsample(heat: torch.Tensor, image_size: tuple[int, int],
              align: str = "paper") -> torch.Tensor:
    """Bilinear upsampling (B,h,w) -> (B,H,W) with the cell placement ``align``; stays in [0,1]."""
    H, W = int(image_size[0]), int(image_size[1])
    if H < 1 or W < 1:
        raise ValueError(f"image_size must be >= 1 pixel per side, got {tuple(image_size)}")
    if align == "paper":
        return F.interpolate(heat[:, None], size=(H, W), mode="bilinear",
                             align_corners=False)[:, 0]
    out = _lerp_axis(heat, H, dim=1)  # (B, H, w)
    return _lerp_axis(out, W, dim=2)  # (B, H, W)


def _lerp_axis(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Linear interpolation along ``dim`` to ``size`` samples, output pixel p reading cell
    coordinate ``p * n / size`` (cell j centred on pixel stride*j), edges clamped."""
    n = x.shape[dim]
    pos = (torch.arange(size, device=x.device, dtype=torch.float32) * (n / size)).clamp(
        max=n - 1)  # (size,) in cell units
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    shape = [1, 1, 1]
    shape[dim] = size
    frac = (pos - lo).view(shape)
    return x.index_select(dim, lo) * (1 - frac) + x.index_select(dim, hi) * frac


def heatmaps_from_features(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    align: str = "paper", heatmap: str = "sum", polarity: str = "none",
    center_prior: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalised, upsampled heatmaps (the paper: channel sums, nothing else).

    Args:
        fmap: (B, C, h, w) feature map (any float dtype), or a list of maps of one batch (e.g.
            layer3 and layer4, each its own C, h, w): their heatmaps are averaged and the
            average min-max normalised again.
        image_size: output ``(H, W)``.
        align: cell placement, ``"paper"`` or ``"receptive"`` (see ``ALIGNS``).
        heatmap: cell score, ``"sum"`` or ``"contrast"`` (see ``HEATMAPS``).
        polarity: ``"none"`` or ``"auto"`` (flip inverted maps, per stage; see ``POLARITIES``).
        center_prior: weight w >= 0 of a centred Gaussian prior: the heat is multiplied by
            ``exp(-w * r^2 / (2 * CENTER_SIGMA^2))`` (r: distance to the image centre, as a
            fraction of the side) and normalised again; 0 = none.

    Returns:
        ``(heat, degenerate)``: heat (B, H, W) float32 in [0, 1]; degenerate (B,) bool, True
        where a map had NaN/inf or was constant (its heat is then all zeros).
    """
    heat, bad, _ = heatmap_parts(fmap, image_size, align, heatmap, polarity, center_prior)
    return heat, bad


def heatmap_parts(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    align: str = "paper", heatmap: str = "sum", polarity: str = "none",
    center_prior: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``heatmaps_from_features`` plus which maps were flipped.

    Returns:
        ``(heat (B, H, W), degenerate (B,) bool, flipped (B,) bool)``; ``flipped`` is True
        where ``polarity="auto"`` flipped the map of any stage.
    """
    maps = _as_maps(fmap)
    _check_align(align)
    if heatmap not in HEATMAPS or polarity not in POLARITIES:
        raise ValueError(f"heatmap must be one of {HEATMAPS} and polarity one of {POLARITIES}, "
                         f"got {heatmap!r}, {polarity!r}")
    total = bad = flipped = None
    for m in maps:
        h, b = _normalised_maps(m, heatmap)  # (B, h, w) in [0, 1], (B,)
        if polarity == "auto":
            f = inverted(h) & ~b
            h = torch.where(f[:, None, None], 1 - h, h)
            flipped = f if flipped is None else flipped | f
        up = _upsample(h, image_size, align)  # (B, H, W)
        total, bad = (up, b) if total is None else (total + up, bad | b)
    if len(maps) > 1 or center_prior > 0:
        if center_prior > 0:
            total = total * _center_prior(total.shape[-2:], center_prior, total.device)
        total, flat = _normalised_maps(total[:, None])  # back to [0, 1]
        bad = bad | flat
    if flipped is None:
        flipped = torch.zeros_like(bad)
    return total, bad, flipped


def _center_prior(size: tuple[int, int], weight: float, device: torch.device) -> torch.Tensor:
    """(H, W) Gaussian weights around the image centre (1 at the centre)."""
    ys, xs = ((torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n - 0.5
              for n in size)
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2  # (H, W)
    return torch.exp(-weight * r2 / (2 * CENTER_SIGMA**2))


def box_confidence(heat: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Label-free confidence of each box: mean heat inside it minus mean heat outside.

    A box around the only hot region scores near 1; a box on a flat or noisy map, or around
    a region no hotter than the rest, near 0 or below. A full-image box (nothing outside)
    scores 0.

    Args:
        heat: (B, H, W) heatmaps in [0, 1].
        boxes: (B, 4) normalised boxes.

    Returns:
        (B,) float32 in [-1, 1].
    """
    B, H, W = heat.shape
    ys = (torch.arange(H, device=heat.device, dtype=torch.float32) + 0.5) / H  # pixel centres
    xs = (torch.arange(W, device=heat.device, dtype=torch.float32) + 0.5) / W
    rows = (ys >= boxes[:, 1:2]) & (ys < boxes[:, 3:4])  # (B, H)
    cols = (xs >= boxes[:, 0:1]) & (xs < boxes[:, 2:3])  # (B, W)
    inside = (rows[:, :, None] & cols[:, None, :]).float()  # (B, H, W)
    n_in = inside.sum(dim=(1, 2))
    n_out = H * W - n_in
    s_in = (heat * inside).sum(dim=(1, 2))
    s_out = heat.sum(dim=(1, 2)) - s_in
    mean_in = s_in / n_in.clamp_min(1)
    mean_out = s_out / n_out.clamp_min(1)
    return torch.where((n_in > 0) & (n_out > 0), mean_in - mean_out, torch.zeros_like(s_in))


def otsu_levels(heat: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold of each heatmap: the level that maximises the between-class variance.

    Exact and batched: each map's values are sorted once and every split point is scored from
    cumulative sums (no histogram binning, no host sync).

    Args:
        heat: (B, H, W) heatmaps.

    Returns:
        (B,) levels; pixels ``> level`` form the upper class (a constant map gives its value).
    """
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


def _levels(heat: torch.Tensor, threshold: float, mode: str) -> torch.Tensor:
    """Per-map keep level (B,) of ``mode``: pixels ``> level`` are kept."""
    if mode == "quantile":
        return torch.quantile(heat.flatten(1).float(), float(threshold), dim=1)
    if mode == "otsu":
        return otsu_levels(heat)
    return torch.full((heat.shape[0],), float(threshold), device=heat.device)


def peak_component(mask: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """The part of each mask connected (8-neighbourhood) to its heatmap's maximum.

    Found by geodesic dilation from the peak for ``h + w`` steps on a grid of at most
    ``PEAK_GRID`` cells per side (the mask max-pooled by ``f = ceil(side / PEAK_GRID)``, so
    parts closer than ``f`` pixels count as connected; exact for images up to 32 px). A fixed
    step count, so no host sync; a snake-like part longer than ``h + w`` cells is cut.

    Args:
        mask: (B, H, W) bool kept pixels.
        heat: (B, H, W) heatmaps (the peak is the first maximum).

    Returns:
        (B, H, W) bool, a subset of ``mask``; empty where the peak pixel is not kept.
    """
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
    """Tight boxes around heatmap pixels above a threshold.

    With ``region="extent"`` a row (column) holds a kept pixel iff its maximum exceeds the
    level, so the box comes from two max-projections of the map; no mask of the full map is
    built.

    Args:
        heat: (B, H, W) heatmaps in [0, 1].
        threshold: ``fixed``: keep pixels ``> threshold`` (the paper's k, 0.1 in all official
            configs); ``quantile``: keep pixels above each map's ``threshold``-quantile (e.g. 0.5
            keeps the hottest half), adapting to encoders whose maps are flat; ``otsu``:
            ignored (each map's Otsu level).
        mode: ``"fixed"``, ``"quantile"`` or ``"otsu"``.
        region: ``"extent"`` (every kept pixel, the paper) or ``"peak"`` (the kept pixels
            connected to the map's maximum: ``peak_component``).

    Returns:
        ``(boxes, empty)``: boxes (B, 4) normalised float32; empty (B,) bool where no pixel was
        kept (box set to the full image).
    """
    _check_threshold(threshold, mode, region=region)
    level = _levels(heat, threshold, mode)[:, None]  # (B, 1)
    if region == "peak":
        kept = peak_component(heat > level[:, :, None], heat)  # (B, H, W)
        return _extent(kept.any(dim=2), kept.any(dim=1))
    rows = heat.amax(dim=2) > level  # (B, H) row holds a kept pixel
    cols = heat.amax(dim=1) > level  # (B, W)
    return _extent(rows, cols)


def _extent(rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Box from row/column occupancy (B,H), (B,W) -> normalised (B, 4), empty (B,)."""
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
    """Feature maps to boxes, with a degenerate flag, a confidence and the fallback.

    Args:
        fmap: (B, C, h, w) feature map, or a list of maps (see ``heatmaps_from_features``).
        image_size: ``(H, W)`` of the images the map came from.
        threshold, mode, region: see ``boxes_from_heatmaps``.
        align, heatmap, polarity, center_prior: see ``heatmaps_from_features``.
        min_confidence: boxes whose ``box_confidence`` is below this become the full image
            (with ccrop's full-box guard: plain RandomResizedCrop for that image); 0 = never.

    Returns:
        ``Localized(boxes (B, 4), degenerate (B,), confidence (B,), fallback (B,), flipped (B,))``.
    """
    heat, bad, flipped = heatmap_parts(fmap, image_size, align, heatmap, polarity, center_prior)
    return boxes_from_heat(heat, bad, threshold, mode, region, min_confidence, flipped)


def boxes_from_heat(heat: torch.Tensor, bad: torch.Tensor, threshold: float = 0.1,
                    mode: str = "fixed", region: str = "extent", min_confidence: float = 0.0,
                    flipped: torch.Tensor | None = None) -> Localized:
    """Boxes, confidence and fallback from heatmaps (the second half of ``localize``).

    Args:
        heat: (B, H, W) heatmaps in [0, 1]; bad: (B,) degenerate maps (``heatmap_parts``).
        threshold, mode, region: see ``boxes_from_heatmaps``.
        min_confidence: see ``localize``.
        flipped: (B,) maps flipped by the polarity rule, passed through (default none).

    Returns:
        ``Localized`` as ``localize``.
    """
    boxes, empty = boxes_from_heatmaps(heat, threshold, mode, region)
    degenerate = bad | empty
    conf = box_confidence(heat, boxes)
    boxes, fallback = _fall_back(boxes, conf, degenerate, min_confidence)
    return Localized(boxes, degenerate, conf, fallback,
                     torch.zeros_like(bad) if flipped is None else flipped)


def _fall_back(boxes: torch.Tensor, conf: torch.Tensor, degenerate: torch.Tensor,
               min_confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Set found boxes less confident than the threshold to the full image.

    Returns:
        ``(boxes (B, 4), fallback (B,) bool)``; ``fallback`` counts only the boxes that were
        not (near) full already (area < ``FULL_SHARE_AREA``), whose crop law it changes.
    """
    if min_confidence <= 0:
        return boxes, torch.zeros_like(degenerate)
    low = (conf < min_confidence) & ~degenerate  # (B,)
    return (torch.where(low[:, None], _full_like(boxes), boxes),
            low & (box_area(boxes) < FULL_SHARE_AREA))


def _full_like(boxes: torch.Tensor) -> torch.Tensor:
    """(B, 4) full-image boxes like ``boxes`` (no host-to-device copy)."""
    return torch.cat([torch.zeros_like(boxes[:, :2]), torch.ones_like(boxes[:, 2:])], dim=1)


def boxes_from_features(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    threshold: float = 0.1, mode: str = "fixed", align: str = "paper", region: str = "extent",
    **rule: Any,
) -> torch.Tensor:
    """Boxes of the object in each image from its feature maps (public API).

    The defaults are the paper's rule; ``**CropConfig().box_rule()`` gives ccrop's.

    Args:
        fmap: (B, C, h, w) feature map, e.g. ``backbone.forward_features(images)``, or a list
            of maps of several stages.
        image_size: ``(H, W)`` of the input images.
        threshold: the paper's k in ``fixed`` mode; the per-image quantile in ``quantile`` mode;
            unused in ``otsu`` mode.
        mode: ``"fixed"``, ``"quantile"`` or ``"otsu"``.
        align: cell placement, ``"paper"`` (default, exact) or ``"receptive"`` (see ``ALIGNS``).
        region: ``"extent"`` (default, the paper) or ``"peak"`` (see ``boxes_from_heatmaps``).
        **rule: ``heatmap``, ``polarity``, ``center_prior``, ``min_confidence`` (``localize``).

    Returns:
        (B, 4) normalised ``(x0, y0, x1, y1)``; degenerate maps give the full image.
    """
    return localize(fmap, image_size, threshold, mode, align, region, **rule).boxes


def feature_fn(model: torch.nn.Module, stages: Sequence[int] | None = None,
               layers: str | Sequence[str] | None = None) -> Callable[[torch.Tensor], Any]:
    """The callable that gives a model's heatmap features.

    Two ways to name the maps:

    * ``stages`` (ccrop's backbones): 1-based ResNet stages through ``forward_features`` and
      ``stage_maps``, e.g. ``feature_fn(backbone, (3,))``.
    * ``layers`` (any ``nn.Module``: torchvision, timm, your own): names of submodules as in
      ``model.named_modules()``, e.g. ``feature_fn(torchvision.models.resnet18(),
      layers=["layer3"])``. Their outputs are caught with forward hooks while ``model(x)``
      runs; the forward stops once the last of them has run, and the hooks are removed after
      every call, also on error. A module run several times in one forward (a shared ReLU)
      gives its first output. Every output must be a (B, C, h, w) tensor (channels first).

    Args:
        model: the encoder. With ``stages``: a backbone with ``forward_features``
            (B, 3, H, W) -> (B, C, h, w), and ``stage_maps(x, stages)`` for other stages than
            the last (ccrop's ResNets and ``timm:``/``tv:`` backbones). With ``layers``: any
            module whose ``forward(x)`` takes the (B, 3, H, W) images.
        stages: 1-based stages whose maps make the heatmap, e.g. ``(4,)`` (the paper: the last
            map), ``(3,)`` or ``(3, 4)``; None = the last. A list of strings here is read as
            ``layers``.
        layers: submodule names, e.g. ``["layer3"]`` or ``["layer3", "layer4"]``; one name
            may be given as a string. Checked here: an unknown name raises ``ValueError``.

    Returns:
        ``fn(x) -> (B, C, h, w)``, or a list of such maps (several stages, or several layers
        in the given order); ``fn.__self__`` is the model (so ``update_boxes`` can switch it
        to eval mode).

    Raises:
        ValueError: both ``stages`` and ``layers``; an unknown layer name; stages the model
            cannot give (no ``forward_features`` / ``stage_maps``).
    """
    if stages is not None and (isinstance(stages, str)
                               or any(isinstance(s, str) for s in stages)):
        if layers is not None:
            raise ValueError("give the maps as stages or as layers, not both")
        stages, layers = None, stages
    if layers is not None:
        if stages is not None:
            raise ValueError(f"give the maps as stages or as layers, not both: got "
                             f"stages={tuple(stages)}, layers={layers!r}")
        return _LayerMaps(model, layers)
    last = getattr(model, "num_stages", 4)
    name = type(model).__name__
    if stages is None or tuple(stages) == (last,):
        if not callable(getattr(model, "forward_features", None)):
            raise ValueError(f"{name} has no forward_features(x): name the modules whose "
                             f"output makes the heatmap, e.g. feature_fn(model, "
                             f"layers=['layer3'])")
        return model.forward_features
    if not callable(getattr(model, "stage_maps", None)):
        has = ("only forward_features" if hasattr(model, "forward_features")
               else "neither forward_features nor stage_maps")
        raise ValueError(f"heatmap stages {tuple(stages)} need an encoder with stage_maps(x, "
                         f"stages); {name} has {has}: name modules instead, e.g. "
                         f"feature_fn(model, layers=['layer3'])")
    return _StageMaps(model, tuple(int(s) for s in stages))


class _StageMaps:
    """``x -> encoder.stage_maps(x, stages)`` with ``__self__`` naming the encoder."""

    def __init__(self, encoder: torch.nn.Module, stages: tuple[int, ...]) -> None:
        self.__self__, self.stages = encoder, stages

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.__self__.stage_maps(x, self.stages)


class _LayersDone(Exception):
    """Raised by ``_LayerMaps``'s hooks once every layer has run: ends the forward early."""


#: at most this many module names in an unknown-layer error
_MAX_CANDIDATES = 20


def _layer_candidates(model: torch.nn.Module, missing: str) -> list[str]:
    """Names to suggest for an unknown layer: close names, the children, names holding it."""
    import difflib

    names = [n for n, _ in model.named_modules() if n]
    text = missing.lower()
    near = difflib.get_close_matches(missing, names, n=8, cutoff=0.6)
    holding = [n for n in names if text and text in n.lower()]
    children = [n for n, _ in model.named_children()]
    return list(dict.fromkeys([*near, *children, *holding]))


class _LayerMaps:
    """``x -> [output of each named submodule]`` caught by forward hooks during ``model(x)``.

    ``__self__`` is the model. One layer gives its (B, C, h, w) map, several give a list.
    """

    def __init__(self, model: torch.nn.Module, layers: str | Sequence[str]) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"feature_fn(layers=...) needs an nn.Module, got "
                            f"{type(model).__name__}")
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}")
        modules = []
        for name in names:
            try:
                modules.append(model.get_submodule(name))
            except AttributeError:
                found = _layer_candidates(model, name)
                more = len(found) - _MAX_CANDIDATES
                shown = ", ".join(found[:_MAX_CANDIDATES]) + (f", ... ({more} more)"
                                                              if more > 0 else "")
                raise ValueError(f"{type(model).__name__} has no module {name!r} (names as in "
                                 f"model.named_modules()); candidates: {shown or 'none'}"
                                 ) from None
        self.__self__, self.layers, self._modules = model, names, modules
        self.single = isinstance(layers, str) or len(names) == 1

    def __repr__(self) -> str:
        return f"feature_fn({type(self.__self__).__name__}, layers={list(self.layers)})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Run the model on ``x`` (B, 3, H, W) up to the last named layer.

        Returns:
            The (B, C, h, w) map of the one layer, or a list of maps in the layers' order.
        """
        outs: dict[int, Any] = {}
        todo = len(self.layers)

        def catch(i: int) -> Callable[..., None]:
            def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
                if i not in outs:
                    outs[i] = output
                    if len(outs) == todo:
                        raise _LayersDone

            return hook

        handles = [m.register_forward_hook(catch(i)) for i, m in enumerate(self._modules)]
        try:
            self.__self__(x)
        except _LayersDone:
            pass
        finally:
            for h in handles:
                h.remove()
        maps = [self._checked(i, outs) for i in range(len(self.layers))]
        return maps[0] if self.single else maps

    def _checked(self, i: int, outs: dict[int, Any]) -> torch.Tensor:
        name, model = self.layers[i], type(self.__self__).__name__
        if i not in outs:
            raise ValueError(f"layer {name!r} did not run in {model}'s forward(x)")
        out = outs[i]
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            return out
        if isinstance(out, torch.Tensor) and out.dim() == 3:
            raise ValueError(f"layer {name!r} of {model} gave {tuple(out.shape)}, not a "
                             f"(B, C, h, w) map: tokens (B, N, C) need reshaping to the patch "
                             f"grid first (ccrop's timm: backbones do it in forward_features)")
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"layer {name!r} of {model} gave {got}, not a (B, C, h, w) tensor: "
                         f"name a module whose output is a feature map")


def _as_module(encoder: Callable) -> torch.nn.Module | None:
    owner = getattr(encoder, "__self__", encoder)
    return owner if isinstance(owner, torch.nn.Module) else None


SALIENCY_SIDE = 64  # saliency is computed at most at this side (larger images: resized)


def saliency_heatmaps(images: torch.Tensor, reference: str = "nearest") -> torch.Tensor:
    """Low-level saliency with no network: each pixel's colour distance to the image border.

    The border ring (the outer ``max(1, H // 16)`` pixels) stands for the background; a pixel's
    saliency is its Euclidean colour distance to the nearest ring colour (``"nearest"``, the
    default: measured better on multi-coloured photographs) or to the ring's mean colour
    (``"mean"``), smoothed by a 3 x 3 mean and min-max normalised per image. Images larger
    than ``SALIENCY_SIDE`` are resized (antialiased) first and the heat resized back. Pair it
    with Otsu's threshold and the peak region (``crop.box_source=saliency``); a uniform image
    is degenerate (all zeros).

    Args:
        images: (B, 3, H, W) float images (any per-channel normalisation).
        reference: ``"mean"`` or ``"nearest"``.

    Returns:
        ``(heat (B, H, W) in [0, 1], degenerate (B,) bool)``.
    """
    if reference not in ("mean", "nearest"):
        raise ValueError(f"reference must be 'mean' or 'nearest', got {reference!r}")
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
    """Boxes from ``saliency_heatmaps`` (Otsu, peak region) for every image, into ``store``.

    No encoder and no warm-up needed (image filtering, as FilteringCrop initialises object
    centres); the confidence and fallback are those of ``localize``.

    Args:
        loader: yields ``(indices (B,), images (B, 3, H, W))``.
        store: the ``BoxStore`` to update.
        gt_boxes: optional (N, 4) true boxes (adds ``iou_gt``).
        progress: show a progress bar.
        min_confidence: as ``localize``.

    Returns:
        ``update_boxes``'s statistics.
    """
    start = time.perf_counter()
    idx, found = [], []
    for indices, images in progress_bar(loader, "saliency", progress):
        heat, bad = saliency_heatmaps(images)
        idx.append(indices)
        found.append(boxes_from_heat(heat, bad, 0.0, "otsu", "peak", min_confidence))
    return write_boxes(store, torch.cat(idx), Localized.join(found), gt_boxes, start)


class FullBoxWarning(UserWarning):
    """Most boxes cover the whole image: ContrastiveCrop degenerates to RandomResizedCrop."""


class FallbackWarning(UserWarning):
    """Most boxes were not confident enough and fell back to the full image."""


def warn_unreliable(stats: dict[str, Any], warn_share: float = 0.8, when: str = "",
                    advice: str | None = None) -> None:
    """Warn (once per call) when most boxes of an update cover the image or fell back.

    Args:
        stats: ``update_boxes`` statistics (``full_share``, optional ``fallback_share``).
        warn_share: warn when a share is at least this.
        when: e.g. ``" after epoch 3"``, for the message.
        advice: what to try instead (default: ccrop's localization settings).
    """
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
    encoder: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable,
    store: BoxStore,
    threshold: float = 0.1,
    mode: str = "fixed",
    device: torch.device | str | None = None,
    amp: bool = False,
    channels_last: bool = False,
    gt_boxes: torch.Tensor | None = None,
    progress: bool = False,
    align: str = "paper",
    region: str = "extent",
    heatmap: str = "sum",
    polarity: str = "none",
    center_prior: float = 0.0,
    min_confidence: float = 0.0,
    warn_share: float | None = 0.8,
) -> dict[str, Any]:
    """Run the encoder over un-augmented images and write one box per image into ``store``.

    The encoder's module (if any) is put in eval mode and restored afterwards. Boxes are written
    by dataset index, so sampler order and DistributedSampler padding do not matter; under DDP
    each rank localizes its shard and all ranks receive every box. The defaults are the
    paper's rule; ``**CropConfig().box_rule()`` gives ccrop's.

    Args:
        encoder: callable (B, 3, H, W) -> (B, C, h, w) or a list of maps, e.g.
            ``feature_fn(backbone, layers=["layer3"])`` or ``backbone.forward_features``.
        loader: yields ``(indices (B,), images (B, 3, H, W))`` normalised like training input.
        store: the ``BoxStore`` to update.
        threshold, mode, region: see ``boxes_from_heatmaps``.
        device: where to run (default: the encoder's parameters' device, else CPU).
        amp: bf16 autocast on CUDA.
        channels_last: feed channels_last images.
        gt_boxes: optional (N, 4) ground-truth boxes; adds ``iou_gt`` to the statistics.
        progress: show a progress bar (main process).
        align, heatmap, polarity, center_prior, min_confidence: see ``localize``.
        warn_share: warn (``FullBoxWarning``, ``FallbackWarning``) when at least this share of
            boxes covers the whole image or fell back; None: never (main process only).

    Returns:
        Statistics: ``seconds``, ``images``, ``mean_area``, ``full_share`` (share of boxes with
        area >= 0.95), ``degenerate`` (count), ``fallback_share`` (boxes set to the full image
        for low confidence), ``flipped_share`` (inverted maps flipped), ``mean_confidence``,
        and ``iou_gt`` when ``gt_boxes`` is given.
    """
    _check_threshold(threshold, mode, align, region)
    rule = dict(threshold=threshold, mode=mode, align=align, region=region, heatmap=heatmap,
                polarity=polarity, center_prior=center_prior, min_confidence=min_confidence)
    start = time.perf_counter()
    module = _as_module(encoder)
    if device is None:
        p = next(module.parameters(), None) if module is not None else None
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    found: list[tuple[torch.Tensor, Localized]] = []
    with eval_mode(module):
        for indices, images in progress_bar(loader, "localize", progress):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                fmap = encoder(images)  # (B, C, h, w), or a list of stage maps
            found.append((indices.to(device), localize(fmap, images.shape[-2:], **rule)))
    if not found:
        raise ValueError("loader yielded no images: cannot update boxes")
    stats = write_boxes(store, torch.cat([i for i, _ in found]),
                        Localized.join(f for _, f in found), gt_boxes, start)
    if warn_share is not None and dist.is_main_process():
        warn_unreliable(stats, warn_share)
    return stats


def write_boxes(store: BoxStore, idx: torch.Tensor, found: Localized,
                gt_boxes: torch.Tensor | None, start: float) -> dict[str, Any]:
    """Gather one rank's boxes (and flags) over all ranks, write them by index, and count.

    Args:
        store: the ``BoxStore``.
        idx: (n,) dataset indices of this rank's boxes.
        found: ``localize``'s result for them (n rows).
        gt_boxes: optional (N, 4) true boxes.
        start: ``time.perf_counter()`` when the update began.

    Returns:
        ``update_boxes``'s statistics.
    """
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
    """``update_boxes`` with every localization setting of a ``CropConfig`` (``cfg.crop``):
    heatmap stages, threshold and mode, box region, cell alignment. The engine's box update
    and ``ccrop boxes`` both localize through this.

    Args:
        crop: the run's ``CropConfig``.
        encoder: the backbone (``forward_features``; ``stage_maps`` for other stages).
        loader, store, device: as ``update_boxes``.
        **kw: ``amp``, ``channels_last``, ``gt_boxes``, ``progress``.

    Returns:
        ``update_boxes``'s statistics.
    """
    return update_boxes(feature_fn(encoder, crop.heatmap_stages), loader, store, device=device,
                        **crop.box_rule(), **kw)


def box_stats(store: BoxStore, idx: torch.Tensor, bad: torch.Tensor,
              gt_boxes: torch.Tensor | None, seconds: float) -> dict[str, Any]:
    """Statistics of the boxes just written for ``idx`` (N,), ``bad`` (N,) flags, optional
    (N_all, 4) ``gt_boxes``; see ``update_boxes`` for the keys."""
    uniq = torch.unique(idx)
    boxes = store[uniq]  # (N, 4) after the update
    area = box_area(boxes)
    stats: dict[str, Any] = {
        "seconds": seconds,
        "images": int(uniq.numel()),
        "mean_area": float(area.mean()),
        "full_share": float((area >= FULL_SHARE_AREA).float().mean()),
        "degenerate": int(bad.sum()),
    }
    if gt_boxes is not None:
        stats["iou_gt"] = float(box_iou(boxes, torch.as_tensor(gt_boxes)[uniq].float()).mean())
    return stats
