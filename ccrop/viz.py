"""Figures: heatmaps, boxes and crops (paper Fig. 1/3), the crop-centre law, box statistics, grids.

Every figure is drawn on a standalone ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot,
no display, no global backend switch), saved to ``path`` and closed with the figure object.
Boxes follow the ccrop convention: normalised ``(x0, y0, x1, y1)``, pixel extent ``[x0*W, x1*W)``.
"""

from __future__ import annotations

import math
import random
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image
from torchvision.utils import make_grid

from .boxes import box_area, box_iou, check_boxes
from .crop import (
    ContrastiveCrop,
    RandomResizedCrop,
    check_box,
    check_crop_args,
    sample_crop_params,
)
from .data.boxed import unpack_item
from .data.images import to_rgb
from .localize import FULL_SHARE_AREA, feature_fn, heatmaps_from_features, localize
from .runtime import eval_mode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRED_COLOR = "#00e676"  # predicted box: bright green, visible on jet and on photos
GT_COLOR = "white"  # ground-truth box, dashed
CROP_COLORS = ("#ff1744", "#2979ff", "#ffea00", "#d500f9", "#ff9100", "#00e5ff", "#f50057",
               "#76ff03")  # fmt: skip
DPI = 110


# ----------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    """A standalone Agg figure of ``width`` x ``height`` inches with constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (``.png`` added when there is no suffix); parents are created."""
    out = Path(path)
    if out.suffix == "":
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


def _clean(ax: Axes, frame: str | None = None) -> None:
    """Hide ticks; colour the frame (``None`` = light grey)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(frame or "#bbbbbb")
        spine.set_linewidth(2.5 if frame else 0.8)


def _draw_box(ax: Axes, box: Sequence[float], hw: tuple[int, int], color: str, style: str = "-",
              lw: float = 2.0) -> None:
    """Draw a normalised box on an axis showing an image of ``hw = (H, W)`` pixels."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = hw
    ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                           edgecolor=color, linestyle=style, linewidth=lw,
                           clip_on=False))  # a full-image box stays visible on the frame


def _show(ax: Axes, img: Image.Image | np.ndarray, hw: tuple[int, int] | None = None,
          **kw: Any) -> None:
    """Show an image in pixel coordinates (origin top-left), pixels kept sharp; ``hw`` stretches
    it over an ``(H, W)`` extent other than its own (a heatmap over a differently sized image)."""
    arr = np.asarray(img)
    h, w = hw if hw is not None else arr.shape[:2]
    ax.imshow(arr, extent=(0, w, h, 0), interpolation=kw.pop("interpolation", "nearest"), **kw)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)


# ----------------------------------------------------------------------------- localization


def _check_loc_inputs(
    pics: list[Image.Image], heatmaps: torch.Tensor, boxes: torch.Tensor,
    gt_boxes: torch.Tensor | None, crops_per_image: int, resized_crops: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validate ``plot_localization`` inputs; returns CPU (B,H,W) heat, (B,4) boxes, gt or None."""
    b = len(pics)
    if b == 0:
        raise ValueError("images must hold at least one image")
    heat = torch.as_tensor(heatmaps).detach().float().cpu()
    if heat.dim() != 3 or heat.shape[0] != b:
        raise ValueError(f"heatmaps must have shape (B={b}, H, W), got {tuple(heat.shape)}")
    pred = check_boxes(boxes, "boxes")
    if pred.shape[0] != b:
        raise ValueError(f"boxes must have {b} rows (one per image), got {pred.shape[0]}")
    gt = None if gt_boxes is None else check_boxes(gt_boxes, "gt_boxes")
    if gt is not None and gt.shape[0] != b:
        raise ValueError(f"gt_boxes must have {b} rows (one per image), got {gt.shape[0]}")
    if int(crops_per_image) < 1:
        raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")
    if int(resized_crops) < 0:
        raise ValueError(f"resized_crops must be >= 0, got {resized_crops}")
    return heat, pred, gt


def _heat_panel(ax: Axes, img: Image.Image, heat: torch.Tensor, box: torch.Tensor,
                gt: torch.Tensor | None, degenerate: bool) -> None:
    """Grey image under a semi-transparent jet heatmap, predicted box solid, GT box dashed."""
    hw = (img.height, img.width)
    _show(ax, img.convert("L"), cmap="gray")
    _show(ax, heat.numpy(), hw, cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0,
          interpolation="bilinear")
    _draw_box(ax, box, hw, PRED_COLOR)
    title = f"heatmap + box\narea {float(box_area(box[None])[0]):.2f}"
    if gt is not None:
        _draw_box(ax, gt, hw, GT_COLOR, "--", 1.6)
        title += f", IoU {float(box_iou(box[None], gt[None])[0]):.2f}"
    if degenerate:
        title += "\n(degenerate: full box)"
    ax.set_title(title, fontsize=8)
    _clean(ax)


def _crop_panel(ax: Axes, img: Image.Image, params: list[tuple[int, int, int, int]], title: str,
                box: torch.Tensor | None) -> None:
    """Image with crop rectangles (colour i = crop i) and their centres; the box dotted."""
    _show(ax, img)
    if box is not None:
        _draw_box(ax, box, (img.height, img.width), PRED_COLOR, ":", 1.5)
    for i, (top, left, h, w) in enumerate(params):
        color = CROP_COLORS[i % len(CROP_COLORS)]
        ax.add_patch(Rectangle((left, top), w, h, fill=False, edgecolor=color, linewidth=1.6))
        ax.plot(left + w / 2, top + h / 2, "o", color=color, markersize=4, markeredgecolor="k",
                markeredgewidth=0.5)
    ax.set_title(title, fontsize=8)
    _clean(ax)


def _loc_row(axes: Sequence[Axes], img: Image.Image, heat: torch.Tensor, box: torch.Tensor,
             gt: torch.Tensor | None, degenerate: bool, opts: dict[str, Any]) -> None:
    """One figure row: image, heatmap, ccrop and RRC rectangles, then resized crops of each."""
    h, w = img.height, img.width
    rng, n, shown = opts["rng"], opts["crops_per_image"], opts["resized_crops"]
    _show(axes[0], img)
    axes[0].set_title(f"image ({w}x{h})", fontsize=8)
    _clean(axes[0])
    if opts["label"]:
        axes[0].set_ylabel(opts["label"], fontsize=9)
    _heat_panel(axes[1], img, heat, box, gt, degenerate)
    kinds = (("ContrastiveCrop", "ccrop", opts["ccrop"], box), ("RandomResizedCrop", "RRC",
             RandomResizedCrop((h, w), opts["scale"]), None))  # fmt: skip
    for k, (name, short, sampler, shown_box) in enumerate(kinds):
        params = [sampler.get_params(h, w, box, rng) for _ in range(n)]
        extra = f" α={opts['alpha']:g}" if short == "ccrop" else ""
        note = f"{n} crops, dots = centres"
        guard = opts["ccrop"].full_box_guard
        if short == "ccrop" and guard is not None and float(box_area(box[None])[0]) >= guard:
            note = f"{n} crops; box ≥ guard: uniform"  # the full-box guard makes it RRC
        _crop_panel(axes[2 + k], img, params, f"{name}{extra}\n{note}", shown_box)
        for i in range(shown):
            ax = axes[4 + k * shown + i]
            top, left, ch, cw = params[i]
            _show(ax, TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True))
            ax.set_title(f"{short} crop {i + 1}\nresized", fontsize=8)
            _clean(ax, CROP_COLORS[i % len(CROP_COLORS)])


def plot_localization(
    images: Sequence[Image.Image],
    heatmaps: torch.Tensor,
    boxes: torch.Tensor,
    path: str | Path,
    gt_boxes: torch.Tensor | None = None,
    crops_per_image: int = 4,
    alpha: float = 0.6,
    seed: int = 0,
    *,
    resized_crops: int = 2,
    scale: tuple[float, float] = (0.2, 1.0),
    full_box_guard: float | None = 0.95,
    placement: str = "paper",
    row_labels: Sequence[str] | None = None,
    degenerate: torch.Tensor | None = None,
    title: str | None = None,
) -> Path:
    """Heatmap, box and crops per image, ContrastiveCrop beside RandomResizedCrop (paper Fig. 1/3).

    One row per image: the image; its heatmap over the grey image with the predicted box (solid
    green) and the ground-truth box (dashed white) if given; the image with ``crops_per_image``
    ContrastiveCrop rectangles and their centres (box dotted); the same for RandomResizedCrop;
    then the first ``resized_crops`` crops of each kind resized to the image size, framed in the
    colour of their rectangle.

    Args:
        images: B images (PIL, or anything ``ccrop.data.images.to_rgb`` accepts).
        heatmaps: (B, H, W) heatmaps in [0, 1]; stretched over each image if sizes differ.
        boxes: (B, 4) normalised predicted boxes.
        path: output file (PNG unless another suffix is given).
        gt_boxes: optional (B, 4) normalised ground-truth boxes.
        crops_per_image: crops of each kind drawn as rectangles (>= 1).
        alpha: ContrastiveCrop Beta concentration (> 0).
        seed: seed of the crop sampling (the figure is reproducible).
        resized_crops: crops of each kind also shown resized (capped at ``crops_per_image``).
        scale: crop area fraction range of both crops.
        full_box_guard: ContrastiveCrop guard (ccrop default 0.95; None = the paper's law).
        placement: ContrastiveCrop placement, ``"paper"`` or ``"official"`` (``ccrop.crop``).
        row_labels: optional B row labels (e.g. dataset indices).
        degenerate: optional (B,) bool, marks rows whose map was degenerate.
        title: optional figure title (a key to the colours is always shown).

    Returns:
        The path written.
    """
    check_crop_args(scale, (3 / 4, 4 / 3), alpha, full_box_guard)  # fail before any drawing
    pics = [to_rgb(im) for im in images]
    heat, pred, gt = _check_loc_inputs(pics, heatmaps, boxes, gt_boxes, crops_per_image,
                                       resized_crops)  # fmt: skip
    shown = min(int(resized_crops), int(crops_per_image))
    labels = list(row_labels) if row_labels is not None else [""] * len(pics)
    bad = [False] * len(pics) if degenerate is None else [bool(d) for d in degenerate]
    if len(labels) != len(pics) or len(bad) != len(pics):
        raise ValueError(f"row_labels and degenerate must have {len(pics)} entries")
    ncols = 4 + 2 * shown
    aspect = max(p.height / p.width for p in pics)  # rows as tall as the tallest image needs
    fig = _figure(1.8 * ncols, (0.5 + 1.6 * aspect) * len(pics) + 0.6)
    axes = fig.subplots(len(pics), ncols, squeeze=False)
    opts = dict(rng=random.Random(seed), crops_per_image=int(crops_per_image), resized_crops=shown,
                alpha=float(alpha), scale=tuple(scale))
    for r, img in enumerate(pics):
        opts["ccrop"] = ContrastiveCrop((img.height, img.width), scale, alpha=alpha,
                                        full_box_guard=full_box_guard, placement=placement)
        opts["label"] = labels[r]
        _loc_row(axes[r], img, heat[r], pred[r], None if gt is None else gt[r], bad[r], opts)
    key = "green box: predicted" + ("   ·   dashed white: ground truth" if gt is not None else "")
    key += "   ·   colour i = crop i"
    fig.suptitle(f"{title}\n{key}" if title else key, fontsize=10)
    return _save(fig, path)


def _load_images(dataset: Any, indices: list[int], image_size: int | None) -> list[Image.Image]:
    """RGB PIL images of ``dataset[indices]``, resized to ``image_size`` squares if given."""
    n = len(dataset)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices must lie in [0, {n - 1}], got {bad[:5]}")
    pics = [to_rgb(unpack_item(dataset[i])[0]) for i in indices]
    if image_size is not None:
        if int(image_size) < 1:
            raise ValueError(f"image_size must be >= 1 pixel, got {image_size}")
        side = int(image_size)
        pics = [p.resize((side, side), Image.BILINEAR) for p in pics]
    if len({p.size for p in pics}) > 1:
        raise ValueError(f"images differ in size {sorted({p.size for p in pics})}; pass "
                         "image_size to resize them to one square size")
    return pics


def _batch(pics: list[Image.Image], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised (B, 3, H, W) float batch of RGB images."""
    if len(mean) != 3 or len(std) != 3 or min(float(s) for s in std) <= 0:
        raise ValueError(f"mean and std must have 3 values, std > 0; got {mean}, {std}")
    x = torch.stack([TF.to_tensor(p) for p in pics])  # (B, 3, H, W) in [0, 1]
    return TF.normalize(x, list(mean), list(std))


def _gt_rows(gt_boxes: Any, indices: list[int]) -> torch.Tensor | None:
    """Rows ``indices`` of dataset-wide (N, 4) ground-truth boxes, or None."""
    if gt_boxes is None:
        return None
    gt = torch.as_tensor(gt_boxes)
    if gt.dim() != 2 or gt.shape[1] != 4 or gt.shape[0] <= max(indices):
        raise ValueError(f"gt_boxes must be (N, 4) for the whole dataset (N > {max(indices)}), "
                         f"got {tuple(gt.shape)}")
    return gt[torch.tensor(indices)]


@torch.no_grad()
def localization_figure(
    backbone: torch.nn.Module,
    dataset: Any,
    indices: Sequence[int],
    path: str | Path,
    threshold: float = 0.1,
    mode: str = "fixed",
    device: torch.device | str | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    gt_boxes: torch.Tensor | None = None,
    image_size: int | None = None,
    align: str = "paper",
    region: str = "extent",
    stages: Sequence[int] | None = None,
    heatmap: str = "sum",
    polarity: str = "none",
    center_prior: float = 0.0,
    min_confidence: float = 0.0,
    **kw: Any,
) -> Path:
    """Localize ``dataset[indices]`` with ``backbone`` and draw ``plot_localization``.

    ``heatmap``, ``polarity``, ``center_prior`` and ``min_confidence`` are
    ``ccrop.localize.localize``'s; boxes that fell back to the full image are counted in the
    title.

    ``align`` is the heatmap cell placement (``ccrop.localize.ALIGNS``), ``region`` the box
    region (``ccrop.localize.REGIONS``), ``stages`` the backbone stages of the heatmap (None:
    the last map, ``forward_features``).

    The backbone runs in eval mode without gradients on the un-augmented, normalised images; its
    train/eval state is restored afterwards. Works with random-init and trained encoders.

    Args:
        backbone: module with ``forward_features(x (B, 3, H, W)) -> (B, C, h, w)``.
        dataset: map-style dataset whose items are ``(PIL image, label)`` (no transform).
        indices: dataset indices to show (one row each; keep it to a handful).
        path: output file.
        threshold: the paper's k (``fixed``) or the per-image quantile (``quantile``).
        mode: ``"fixed"``, ``"quantile"`` or ``"otsu"`` (see
            ``ccrop.localize.boxes_from_heatmaps``).
        device: where to run; default the backbone's parameter device (else CPU).
        mean: per-channel normalisation mean (ImageNet by default; pass the dataset's).
        std: per-channel normalisation std.
        gt_boxes: optional (N, 4) ground-truth boxes for the whole dataset; default
            ``dataset.gt_boxes`` when the dataset has one (e.g. ``SyntheticObjects``).
        image_size: resize images to this square side first (needed when sizes differ).
        **kw: passed to ``plot_localization`` (crops_per_image, alpha, seed, ...).

    Returns:
        The path written.
    """
    idx = [int(i) for i in indices]
    if not idx:
        raise ValueError("indices must name at least one dataset index")
    if not callable(getattr(backbone, "forward_features", None)):
        raise ValueError("backbone must have a forward_features(x) -> (B, C, h, w) method")
    features = feature_fn(backbone, stages)
    pics = _load_images(dataset, idx, image_size)
    x = _batch(pics, mean, std)  # (B, 3, H, W)
    if device is None:
        p = next(backbone.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    with eval_mode(backbone), torch.no_grad():
        fmap = features(x.to(device))  # (B, C, h, w) or a list of stage maps
    size = (x.shape[-2], x.shape[-1])
    rule = dict(heatmap=heatmap, polarity=polarity, center_prior=center_prior)
    heat, _ = heatmaps_from_features(fmap, size, align, **rule)  # (B, H, W)
    found = localize(fmap, size, threshold, mode, align, region, **rule,
                     min_confidence=min_confidence)
    boxes, bad = found.boxes, found.degenerate  # (B, 4), (B,)
    gt = _gt_rows(gt_boxes if gt_boxes is not None else getattr(dataset, "gt_boxes", None), idx)
    kw.setdefault("row_labels", [f"index {i}" for i in idx])
    law = f"{mode} threshold {threshold:g}" if mode != "otsu" else "Otsu threshold"
    fell = int(found.fallback.sum())
    kw.setdefault("title", f"localization: {heatmap} heatmap, {law}, {region} box"
                  + (f"; {fell}/{len(idx)} fell back to the full image" if min_confidence
                     else ""))
    return plot_localization(pics, heat.cpu(), boxes.cpu(), path, gt_boxes=gt,
                             degenerate=bad.cpu(), **kw)  # fmt: skip


def config_localization_figure(crop: Any, backbone: torch.nn.Module, dataset: Any,
                               indices: Sequence[int], path: str | Path, **kw: Any) -> Path:
    """``localization_figure`` with every crop and localization setting of a ``CropConfig``
    (``cfg.crop``): heatmap stages and box rule, alpha, scale, guard and placement. The run's
    figure after each box update and ``ccrop viz`` both draw through this.

    Args:
        crop: the run's ``CropConfig``.
        backbone, dataset, indices, path: as ``localization_figure``.
        **kw: ``device``, ``mean``, ``std``, ``gt_boxes``, ``image_size`` and the like.
    """
    return localization_figure(backbone, dataset, indices, path, stages=crop.heatmap_stages,
                               alpha=crop.alpha, scale=tuple(crop.scale),
                               full_box_guard=crop.full_box_guard, placement=crop.placement,
                               **crop.box_rule(), **kw)


# ----------------------------------------------------------------------------- centre law


def _sample_centres(size: int, box: tuple[float, float, float, float], scale: tuple[float, float],
                    alpha: float, n: int, rng: random.Random) -> np.ndarray:
    """Centres (n, 2) as (x, y) in pixels of ``n`` ContrastiveCrop crops (paper law, no guard)."""
    out = np.empty((n, 2))
    for i in range(n):
        top, left, h, w = sample_crop_params(size, size, box, scale, (3 / 4, 4 / 3), alpha, rng)
        out[i] = (left + w / 2, top + h / 2)
    return out


def beta_pdf(u: np.ndarray, alpha: float) -> np.ndarray:
    """Density of Beta(alpha, alpha) at ``u`` in (0, 1).

    Args:
        u: points, shape (K,), strictly inside (0, 1).
        alpha: concentration (> 0).

    Returns:
        (K,) densities.
    """
    log_norm = 2 * math.lgamma(alpha) - math.lgamma(2 * alpha)
    return np.exp((alpha - 1) * (np.log(u) + np.log1p(-u)) - log_norm)


def _scatter_panel(ax: Axes, centres: np.ndarray, box: Sequence[float], size: int,
                   alpha: float) -> None:
    """Crop centres on an image-sized square, the box drawn in green."""
    ax.add_patch(Rectangle((0, 0), size, size, facecolor="#f4f4f4", edgecolor="k", linewidth=1))
    ax.scatter(centres[:, 0], centres[:, 1], s=2, alpha=0.25, color="#1f4e9c", linewidths=0)
    _draw_box(ax, box, (size, size), "#00a152", "-", 1.8)
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)
    ax.set_aspect("equal")
    ax.set_title(f"α = {alpha:g}: crop centres", fontsize=10)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")


def _marginal_panel(ax: Axes, x: np.ndarray, lo: float, hi: float, alpha: float,
                    ref: np.ndarray | None) -> None:
    """Histogram of normalised x centres with the Beta(alpha, alpha) law mapped onto the box;
    ``ref`` (x centres for alpha = 1) drawn as a grey outline for comparison."""
    counts, _, _ = ax.hist(x, bins=48, range=(0, 1), density=True, color="#7aa6e0",
                           label="realised crop centres")
    if ref is not None:
        ax.hist(ref, bins=48, range=(0, 1), density=True, histtype="step", color="#444444",
                linewidth=1.2, label="realised, α = 1 (uniform), for reference")
    u = np.linspace(1e-3, 1 - 1e-3, 400)
    ax.plot(lo + (hi - lo) * u, beta_pdf(u, alpha) / (hi - lo), color="#d62728", linewidth=1.8,
            label=f"drawn centre: Beta({alpha:g}, {alpha:g}) in box")
    for edge in (lo, hi):
        ax.axvline(edge, color="#00a152", linestyle="--", linewidth=1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.6 * max(float(counts.max()), 1.0 / max(hi - lo, 1e-6)))
    ax.set_xlabel("x centre / image width (dashed: box edges)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper center")


def plot_centre_distribution(
    path: str | Path,
    alphas: Sequence[float] = (0.1, 0.6, 1.0),
    box: Sequence[float] = (0.2, 0.2, 0.8, 0.8),
    n: int = 4000,
    size: int = 256,
    seed: int = 0,
    scale: tuple[float, float] = (0.2, 1.0),
) -> Path:
    """Where ContrastiveCrop puts crop centres for several alphas (centre suppression).

    Top row: ``n`` crop centres sampled with ``ccrop.crop.sample_crop_params`` (the paper's law,
    no full-box guard) inside ``box`` on a ``size`` x ``size`` image. Bottom row: the histogram of
    the x centres with the Beta(alpha, alpha) density of the drawn centre mapped onto the box
    (U-shaped for alpha < 1) and, for comparison, the alpha = 1 (uniform) histogram. Realised
    centres differ from the drawn ones where a crop had to be shifted back inside the image,
    which pulls centres near the image edge inwards.

    Args:
        path: output file.
        alphas: Beta concentrations, each > 0.
        box: normalised ``(x0, y0, x1, y1)`` box.
        n: crops per alpha (>= 1).
        size: image side in pixels (>= 2).
        seed: sampling seed.
        scale: crop area fraction range.

    Returns:
        The path written.
    """
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("alphas must hold at least one value > 0")
    for a in alphas:
        check_crop_args(scale, (3 / 4, 4 / 3), a, None)  # raises ValueError for alpha <= 0
    b = check_box(box, "box")
    if int(n) < 1 or int(size) < 2:
        raise ValueError(f"need n >= 1 and size >= 2, got n={n}, size={size}")
    rng = random.Random(seed)
    ref = _sample_centres(int(size), b, tuple(scale), 1.0, int(n), random.Random(seed + 1))
    fig = _figure(3.6 * len(alphas), 7.6)
    axes = fig.subplots(2, len(alphas), squeeze=False)
    for j, a in enumerate(alphas):
        centres = _sample_centres(int(size), b, tuple(scale), a, int(n), rng)  # (n, 2)
        _scatter_panel(axes[0, j], centres, b, int(size), a)
        _marginal_panel(axes[1, j], centres[:, 0] / size, b[0], b[2], a,
                        None if a == 1.0 else ref[:, 0] / size)
    fig.suptitle(f"ContrastiveCrop centre law: {n} crops per α inside the green box, scale "
                 f"{tuple(scale)}\ndrawn centre = box edge + Beta(α, α) x box size; crops are then "
                 "shifted into the image, which pulls large crops' centres inwards", fontsize=10)
    return _save(fig, path)


# ----------------------------------------------------------------------------- box statistics

_STAT_KEYS = ("epoch", "mean_area", "full_share", "degenerate")


def _check_history(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Validate box-statistics rows and sort them by epoch."""
    if not history:
        raise ValueError("history must hold at least one statistics dict")
    for k, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise ValueError(f"history[{k}] must be a dict, got {type(row).__name__}")
        missing = [key for key in _STAT_KEYS if key not in row]
        if missing:
            raise ValueError(f"history[{k}] lacks keys {missing}; needs {list(_STAT_KEYS)}")
        vals = [row[key] for key in _STAT_KEYS] + ([row["iou_gt"]] if "iou_gt" in row else [])
        if not all(math.isfinite(float(v)) for v in vals):
            raise ValueError(f"history[{k}] holds a non-finite value: {dict(row)}")
    return sorted(history, key=lambda r: float(r["epoch"]))


def plot_box_stats(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Box statistics over the localization updates of a run.

    Left: mean box area, share of near-full boxes (area >= 0.95) and, where given, the mean IoU
    with ground-truth boxes. Right: number of degenerate heatmaps (full-box fallback).

    Args:
        history: one dict per update with ``epoch``, ``mean_area``, ``full_share``,
            ``degenerate`` and optionally ``iou_gt`` (``ccrop.localize.update_boxes`` statistics
            plus ``epoch``).
        path: output file.

    Returns:
        The path written.
    """
    rows = _check_history(history)
    ep = [float(r["epoch"]) for r in rows]
    fig = _figure(10.0, 3.8)
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    left.plot(ep, [r["mean_area"] for r in rows], "o-", label="mean box area")
    left.plot(ep, [r["full_share"] for r in rows], "s-",
              label=f"share of near-full boxes (area ≥ {FULL_SHARE_AREA:g})")
    iou = [(float(r["epoch"]), float(r["iou_gt"])) for r in rows if "iou_gt" in r]
    if iou:
        left.plot(*zip(*iou), "^-", label="mean IoU with ground truth")
    left.set_ylim(0, 1.05)
    left.set_ylabel("fraction")
    left.set_title("boxes after each localization update", fontsize=10)
    left.legend(fontsize=8, loc="best")
    right.bar(ep, [float(r["degenerate"]) for r in rows], width=_bar_width(ep), color="#c0504d")
    right.set_ylabel("degenerate heatmaps (count)")
    right.set_title("degenerate maps (full-box fallback)", fontsize=10)
    right.set_ylim(0, max(1.0, 1.15 * max(float(r["degenerate"]) for r in rows)))
    right.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(ep) <= 12:  # few updates: one tick per update
            ax.set_xticks(ep, [f"{e:g}" for e in ep])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


def _bar_width(epochs: list[float]) -> float:
    """Bar width: 60% of the smallest gap between updates (1 for a single update)."""
    gaps = [b - a for a, b in zip(epochs, epochs[1:]) if b > a]
    return 0.6 * min(gaps) if gaps else 1.0


# ----------------------------------------------------------------------------- TensorBoard


def _pixel_boxes(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Normalised (B, 4) boxes -> inclusive integer pixel corners (B, 4) ``(x0, y0, x1, y1)``."""
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)
    last = torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)  # last pixel column, row
    px = boxes.double() * scale  # (B, 4) pixel extent [x0*W, x1*W)
    lo = torch.minimum(px[:, :2].floor().clamp(min=0), last)
    hi = torch.minimum(px[:, 2:].ceil() - 1, last)  # last covered pixel
    hi = torch.maximum(hi, lo)  # a zero-size box is drawn as one line / pixel
    return torch.cat([lo, hi], dim=1).to(torch.int64)


def _outline(img: torch.Tensor, corners: Sequence[int], color: Sequence[int], width: int) -> None:
    """Paint the outline of the inclusive pixel box ``corners`` on a (3, H, W) uint8 image, in
    place; lines grow inwards and never leave the box. (PIL's rectangle, used by torchvision's
    ``draw_bounding_boxes``, paints an extra row for one-pixel-high boxes.)"""
    x0, y0, x1, y1 = (int(v) for v in corners)
    rgb = torch.tensor(color, dtype=torch.uint8)[:, None]  # (3, 1)
    for t in range(width):
        img[:, min(y0 + t, y1), x0 : x1 + 1] = rgb  # top, bottom rows
        img[:, max(y1 - t, y0), x0 : x1 + 1] = rgb
        img[:, y0 : y1 + 1, min(x0 + t, x1)] = rgb  # left, right columns
        img[:, y0 : y1 + 1, max(x1 - t, x0)] = rgb


def box_grid(
    images: torch.Tensor,
    boxes: torch.Tensor,
    gt_boxes: torch.Tensor | None = None,
    nrow: int = 8,
    width: int = 1,
    upscale: int = 1,
    padding: int = 2,
) -> torch.Tensor:
    """Image grid with predicted boxes (green) and ground-truth boxes (magenta), for TensorBoard.

    Args:
        images: (B, 3, H, W) or (B, 1, H, W) float images in [0, 1] (clamped).
        boxes: (B, 4) normalised predicted boxes.
        gt_boxes: optional (B, 4) normalised ground-truth boxes.
        nrow: images per grid row.
        width: box line width in pixels (of the upscaled image).
        upscale: nearest-neighbour upscaling factor (>= 1) so boxes on tiny images stay visible.
        padding: grid padding in pixels.

    Returns:
        (3, H', W') uint8 grid, ready for ``SummaryWriter.add_image``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) or (B, 1, H, W) tensor, got {shape}")
    if min(int(nrow), int(width), int(upscale)) < 1 or int(padding) < 0:
        raise ValueError(f"need nrow, width, upscale >= 1 and padding >= 0, got {nrow}, {width}, "
                         f"{upscale}, {padding}")
    b = images.shape[0]
    pred = check_boxes(boxes, "boxes")
    gt = None if gt_boxes is None else check_boxes(gt_boxes, "gt_boxes")
    if pred.shape[0] != b or (gt is not None and gt.shape[0] != b):
        raise ValueError(f"boxes and gt_boxes need {b} rows (one per image)")
    x = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # (B, 3, H, W)
    if upscale > 1:
        x = x.repeat_interleave(upscale, dim=2).repeat_interleave(upscale, dim=3)
    x = x.clone()  # (B, 3, H', W') own memory: drawn on in place
    h, w = x.shape[-2:]
    layers = ([] if gt is None else [(gt, (255, 0, 255))]) + [(pred, (0, 255, 0))]  # pred on top
    for boxes_k, color in layers:
        for i, corners in enumerate(_pixel_boxes(boxes_k, h, w).tolist()):
            _outline(x[i], corners, color, int(width))
    return make_grid(x, nrow=int(nrow), padding=int(padding))  # (3, H', W')


def plot_knn_curves(run_dirs: Sequence[str | Path], path: str | Path) -> Path:
    """kNN top-1 per epoch of several runs (from each ``metrics.jsonl``), one line per run.

    Args:
        run_dirs: run folders written by ``ccrop pretrain``.
        path: output PNG.

    Raises:
        FileNotFoundError: a run folder has no ``metrics.jsonl``.
    """
    import json

    fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for run in run_dirs:
        metrics = Path(run) / "metrics.jsonl"
        if not metrics.is_file():
            raise FileNotFoundError(f"{str(metrics)!r} not found: is {str(run)!r} a ccrop run?")
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        pts = [(r["epoch"], r["knn_top1"]) for r in rows if "knn_top1" in r]
        summary = Path(run) / "summary.json"
        if summary.is_file():
            final = json.loads(summary.read_text())
            if "knn_top1" in final:
                pts.append((final["epochs"], final["knn_top1"]))
        if pts:
            xs, ys = zip(*sorted(set(pts)))
            ax.plot(xs, ys, marker="o", label=Path(run).name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 (%)  [protocol: knn, k=200, T=0.1]")
    ax.set_title("kNN accuracy during pretraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_epoch_times(times: Mapping[str, float], path: str | Path, title: str = "",
                     reference: str | None = None, target: float | None = None) -> Path:
    """Horizontal bars of seconds per epoch, each labelled with its speed-up over ``reference``.

    Args:
        times: ``{label: seconds per epoch}`` (> 0), drawn top to bottom in order.
        path: output PNG.
        title: figure title (name the device and the setting).
        reference: the label speed-ups are relative to (default: the slowest entry).
        target: optional target seconds, drawn as a dashed line.

    Raises:
        ValueError: no entries, a non-positive or non-finite time, or an unknown ``reference``.
    """
    if not times:
        raise ValueError("times: expected at least one {label: seconds} entry")
    bad = {k: v for k, v in times.items() if not (math.isfinite(v) and v > 0)}
    if bad:
        raise ValueError(f"times: seconds must be finite and > 0, got {bad}")
    if reference is None:
        reference = max(times, key=times.get)
    if reference not in times:
        raise ValueError(f"reference {reference!r} is not one of {list(times)}")
    labels, secs = list(times), [float(v) for v in times.values()]
    fig = _figure(7, 0.6 * len(labels) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, secs, color=["#888888" if k == reference else "#2a7ab9" for k in labels])
    ax.set_xscale("log")
    for y, s in zip(ys, secs):
        ax.text(s * 1.05, y, f"{s:.2f} s  ({times[reference] / s:.1f}x)", va="center",
                fontsize=8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlim(min(secs) / 1.5, max(secs) * 4)
    if target is not None:
        ax.axvline(target, color="#c0392b", ls="--", lw=1)
        ax.text(target, ys[-1] - 0.55, f" target {target:g} s", color="#c0392b", fontsize=8)
    ax.set_xlabel("seconds per epoch (log scale)")
    fig.suptitle(textwrap.fill(title, 90), fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def _knn_band(ax: Axes, label: str, curves: Sequence[Sequence[Sequence[float]]],
              dodge: float) -> None:
    """One arm of ``plot_knn_bands``: mean line over seeds, min–max band (error bar if 1 epoch)."""
    by_epoch: dict[float, list[float]] = {}
    for curve in curves:
        for epoch, top1 in curve:
            by_epoch.setdefault(float(epoch), []).append(float(top1))
    if not by_epoch:
        return
    xs = np.array(sorted(by_epoch))
    mean = np.array([np.mean(by_epoch[x]) for x in xs])
    lo = np.array([min(by_epoch[x]) for x in xs])
    hi = np.array([max(by_epoch[x]) for x in xs])
    (line,) = ax.plot(xs, mean, marker="o", label=label)
    ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if len(xs) == 1:  # a band of one epoch has no width: the range as a (dodged) error bar
        line.set_xdata(xs + dodge)
        ax.errorbar(xs + dodge, mean, yerr=[mean - lo, hi - mean], color=line.get_color(),
                    capsize=5)


def plot_knn_bands(groups: Mapping[str, Sequence[Sequence[Sequence[float]]]],
                   path: str | Path) -> Path:
    """kNN top-1 per epoch of an A/B, one band per arm: mean across seeds, min–max shaded.

    Args:
        groups: ``{arm: [curve per seed]}`` in legend order; a curve is a sequence of
            ``(epoch, top1 %)`` points (the monitor epochs of ``metrics.jsonl`` and the final
            value of ``summary.json``). An epoch only some seeds reached averages those seeds.
        path: output PNG.

    Returns:
        The path written.
    """
    fig = _figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    k = len(groups)
    for i, (arm, curves) in enumerate(groups.items()):
        _knn_band(ax, f"{arm} (n={len(curves)})", curves, 0.08 * (i - (k - 1) / 2))
    xs = [x for line in ax.lines for x in line.get_xdata()]
    if xs and max(xs) - min(xs) < 1:  # one epoch: keep the axis readable
        ax.set_xlim(round(float(np.mean(xs))) - 1, round(float(np.mean(xs))) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("kNN top-1 (%)  [protocol: knn]")
    ax.set_title("kNN accuracy during pretraining: mean across seeds, min–max band")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no kNN values", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)
