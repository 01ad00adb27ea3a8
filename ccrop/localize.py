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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

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


def _normalised_maps(fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel sum and per-image min-max at feature resolution: (B,C,h,w) -> (B,h,w), (B,) bad.

    Degenerate maps (NaN/inf, or constant) come back as zeros with ``bad`` set.
    """
    heat = fmap.float().sum(dim=1)  # (B, h, w)
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
    align: str = "paper",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-summed, min-max normalised, upsampled heatmaps.

    Args:
        fmap: (B, C, h, w) feature map (any float dtype), or a list of maps of one batch (e.g.
            layer3 and layer4, each its own C, h, w): their heatmaps are averaged and the
            average min-max normalised again.
        image_size: output ``(H, W)``.
        align: cell placement, ``"paper"`` or ``"receptive"`` (see ``ALIGNS``).

    Returns:
        ``(heat, degenerate)``: heat (B, H, W) float32 in [0, 1]; degenerate (B,) bool, True
        where a map had NaN/inf or was constant (its heat is then all zeros).
    """
    maps = _as_maps(fmap)
    _check_align(align)
    heats, bads = zip(*(_normalised_maps(m) for m in maps))
    heat = _upsample(heats[0], image_size, align)
    bad = bads[0]
    if len(maps) == 1:
        return heat, bad
    for h, b in zip(heats[1:], bads[1:]):
        heat = heat + _upsample(h, image_size, align)  # (B, H, W)
        bad = bad | b
    heat, flat = _normalised_maps(heat[:, None])  # back to [0, 1]
    return heat, bad | flat


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


def localize(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    threshold: float = 0.1, mode: str = "fixed", align: str = "paper", region: str = "extent",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps to boxes plus a degenerate flag.

    Args:
        fmap: (B, C, h, w) feature map, or a list of maps (see ``heatmaps_from_features``).
        image_size: ``(H, W)`` of the images the map came from.
        threshold, mode, region: see ``boxes_from_heatmaps``.
        align: cell placement (see ``ALIGNS``).

    Returns:
        ``(boxes (B, 4), degenerate (B,) bool)``; degenerate rows hold the full-image box.
    """
    heat, bad = heatmaps_from_features(fmap, image_size, align)
    boxes, empty = boxes_from_heatmaps(heat, threshold, mode, region)
    return boxes, bad | empty


def boxes_from_features(
    fmap: torch.Tensor | Sequence[torch.Tensor], image_size: tuple[int, int],
    threshold: float = 0.1, mode: str = "fixed", align: str = "paper", region: str = "extent",
) -> torch.Tensor:
    """Boxes of the object in each image from its last feature map (public API).

    Args:
        fmap: (B, C, h, w) feature map, e.g. ``backbone.forward_features(images)``, or a list
            of maps of several stages.
        image_size: ``(H, W)`` of the input images.
        threshold: the paper's k in ``fixed`` mode; the per-image quantile in ``quantile`` mode;
            unused in ``otsu`` mode.
        mode: ``"fixed"``, ``"quantile"`` or ``"otsu"``.
        align: cell placement, ``"paper"`` (default, exact) or ``"receptive"`` (see ``ALIGNS``).
        region: ``"extent"`` (default, the paper) or ``"peak"`` (see ``boxes_from_heatmaps``).

    Returns:
        (B, 4) normalised ``(x0, y0, x1, y1)``; degenerate maps give the full image.
    """
    return localize(fmap, image_size, threshold, mode, align, region)[0]


def feature_fn(encoder: torch.nn.Module,
               stages: Sequence[int] | None = None) -> Callable[[torch.Tensor], Any]:
    """The callable that gives an encoder's heatmap features.

    Args:
        encoder: a backbone with ``forward_features`` (B, 3, H, W) -> (B, C, h, w); for other
            stages than the last it needs ``stage_maps(x, stages)`` (ccrop's ResNets).
        stages: 1-based stages whose maps make the heatmap, e.g. ``(4,)`` (the paper: the last
            map), ``(3,)`` or ``(3, 4)``; None = the last.

    Returns:
        ``fn(x) -> (B, C, h, w)`` or a list of such maps; ``fn.__self__`` is the encoder (so
        ``update_boxes`` can switch it to eval mode).
    """
    last = getattr(encoder, "num_stages", 4)
    if stages is None or tuple(stages) == (last,):
        return encoder.forward_features
    if not callable(getattr(encoder, "stage_maps", None)):
        raise ValueError(f"heatmap stages {tuple(stages)} need an encoder with stage_maps(x, "
                         f"stages); {type(encoder).__name__} has only forward_features")
    return _StageMaps(encoder, tuple(int(s) for s in stages))


class _StageMaps:
    """``x -> encoder.stage_maps(x, stages)`` with ``__self__`` naming the encoder."""

    def __init__(self, encoder: torch.nn.Module, stages: tuple[int, ...]) -> None:
        self.__self__, self.stages = encoder, stages

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.__self__.stage_maps(x, self.stages)


def _as_module(encoder: Callable) -> torch.nn.Module | None:
    owner = getattr(encoder, "__self__", encoder)
    return owner if isinstance(owner, torch.nn.Module) else None


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
) -> dict[str, Any]:
    """Run the encoder over un-augmented images and write one box per image into ``store``.

    The encoder's module (if any) is put in eval mode and restored afterwards. Boxes are written
    by dataset index, so sampler order and DistributedSampler padding do not matter; under DDP
    each rank localizes its shard and all ranks receive every box.

    Args:
        encoder: callable (B, 3, H, W) -> (B, C, h, w) or a list of maps, e.g.
            ``backbone.forward_features`` or ``feature_fn(backbone, (3,))``.
        loader: yields ``(indices (B,), images (B, 3, H, W))`` normalised like training input.
        store: the ``BoxStore`` to update.
        threshold, mode, region: see ``boxes_from_heatmaps``.
        device: where to run (default: the encoder's parameters' device, else CPU).
        amp: bf16 autocast on CUDA.
        channels_last: feed channels_last images.
        gt_boxes: optional (N, 4) ground-truth boxes; adds ``iou_gt`` to the statistics.
        progress: show a progress bar (main process).
        align: cell placement of the heatmap (see ``ALIGNS``).

    Returns:
        Statistics: ``seconds``, ``images``, ``mean_area``, ``full_share`` (share of boxes with
        area >= 0.95), ``degenerate`` (count), and ``iou_gt`` when ``gt_boxes`` is given.
    """
    _check_threshold(threshold, mode, align, region)
    start = time.perf_counter()
    module = _as_module(encoder)
    if device is None:
        p = next(module.parameters(), None) if module is not None else None
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    all_idx, all_boxes, all_bad = [], [], []
    with eval_mode(module):
        for indices, images in progress_bar(loader, "localize", progress):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                fmap = encoder(images)  # (B, C, h, w), or a list of stage maps
            boxes, bad = localize(fmap, images.shape[-2:], threshold, mode, align, region)
            all_idx.append(indices.to(device))
            all_boxes.append(boxes)
            all_bad.append(bad)
    if not all_idx:
        raise ValueError("loader yielded no images: cannot update boxes")
    idx = dist.all_gather(torch.cat(all_idx))  # (N,) over all ranks
    boxes = dist.all_gather(torch.cat(all_boxes))  # (N, 4)
    bad = dist.all_gather(torch.cat(all_bad))
    store.update(idx.cpu(), boxes.cpu())  # the one host transfer
    return box_stats(store, idx.cpu(), bad.cpu(), gt_boxes, time.perf_counter() - start)


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
