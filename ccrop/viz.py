"""Figures: heatmaps, boxes and crops (paper Fig. 1/3), the crop-centre law, box grids, kNN bands.

Each is drawn on a standalone Agg ``Figure`` (no pyplot, no global backend switch) and saved.
"""

from __future__ import annotations

import random
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

from . import localize as loc
from .boxes import box_area, box_iou, check_box, check_boxes
from .crop import BoxRandomResizedCrop, ContrastiveCrop, sample_crop_params
from .data.boxed import unpack_item
from .data.images import to_rgb
from .runtime import eval_mode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRED_COLOR = "#00e676"  # predicted box: bright green, visible on jet and on photos
GT_COLOR = "white"  # ground-truth box, dashed
CROP_COLORS = ("#ff1744", "#2979ff", "#ffea00", "#d500f9", "#ff9100", "#00e5ff", "#f50057",
               "#76ff03")  # fmt: skip
DPI = 110


def _figure(width: float, height: float) -> Figure:
    """A standalone Agg figure of ``width`` x ``height`` inches with constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (``.png`` added when there is no suffix); parents are created."""
    out = Path(path) if Path(path).suffix else Path(path).with_suffix(".png")
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
    """Show an image in pixel coordinates, pixels sharp; ``hw``: an ``(H, W)`` extent to stretch
    it over (a heatmap over its image)."""
    arr = np.asarray(img)
    h, w = hw if hw is not None else arr.shape[:2]
    ax.imshow(arr, extent=(0, w, h, 0), interpolation=kw.pop("interpolation", "nearest"), **kw)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)



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
             BoxRandomResizedCrop((h, w), opts["scale"]), None))  # fmt: skip
    for k, (name, short, sampler, shown_box) in enumerate(kinds):
        params = [sampler.get_params(h, w, box, rng) for _ in range(n)]
        extra = f" α={opts['alpha']:g}" if short == "ccrop" else ""
        guard = opts["ccrop"].full_box_guard if short == "ccrop" else None  # RRC when it holds
        note = f"{n} crops; box ≥ guard: uniform" if guard is not None and \
            float(box_area(box[None])[0]) >= guard else f"{n} crops, dots = centres"
        _crop_panel(axes[2 + k], img, params, f"{name}{extra}\n{note}", shown_box)
        for i in range(shown):
            ax = axes[4 + k * shown + i]
            top, left, ch, cw = params[i]
            _show(ax, TF.resized_crop(img, top, left, ch, cw, [h, w], antialias=True))
            ax.set_title(f"{short} crop {i + 1}\nresized", fontsize=8)
            _clean(ax, CROP_COLORS[i % len(CROP_COLORS)])


def plot_localization(
    images: Sequence[Image.Image], heatmaps: torch.Tensor, boxes: torch.Tensor, path: str | Path,
    gt_boxes: torch.Tensor | None = None, crops_per_image: int = 4, alpha: float = 0.6,
    seed: int = 0, *, resized_crops: int = 2, scale: tuple[float, float] = (0.2, 1.0),
    full_box_guard: float | None = 0.95, placement: str = "paper",
    row_labels: Sequence[str] | None = None, degenerate: torch.Tensor | None = None,
    title: str | None = None,
) -> Path:
    """Heatmap, box and crops per image, ContrastiveCrop beside RandomResizedCrop (paper Fig. 1/3).

    One row per image (B images): the image; its (B, H, W) heatmap in [0, 1] over the grey image
    with the (B, 4) predicted box, the true box if given and ``degenerate`` (B,) maps marked; then
    ``crops_per_image`` ContrastiveCrop (``alpha``, ``scale``, ``full_box_guard``, ``placement``)
    and RandomResizedCrop rectangles seeded by ``seed``, and the first ``resized_crops`` of each
    kind resized. Returns the path written (PNG unless another suffix).
    """
    pics = [to_rgb(im) for im in images]
    heat = torch.as_tensor(heatmaps).detach().float().cpu()  # (B, H, W)
    pred = check_boxes(boxes, "boxes")
    gt = None if gt_boxes is None else check_boxes(gt_boxes, "gt_boxes")
    labels = list(row_labels) if row_labels is not None else [""] * len(pics)
    bad = [False] * len(pics) if degenerate is None else [bool(d) for d in degenerate]
    shown = min(int(resized_crops), int(crops_per_image))
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


@torch.no_grad()
def localization_figure(
    backbone: torch.nn.Module, dataset: Any, indices: Sequence[int], path: str | Path,
    threshold: float = 0.1, mode: str = "fixed", device: torch.device | str | None = None,
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
    gt_boxes: torch.Tensor | None = None, image_size: int | None = None, align: str = "paper",
    region: str = "extent", stages: Sequence[int] | None = None, heatmap: str = "sum",
    polarity: str = "none", center_prior: float = 0.0, min_confidence: float = 0.0, **kw: Any,
) -> Path:
    """Localize ``dataset[indices]`` with ``backbone`` and draw ``plot_localization`` (``**kw``).

    Heat and boxes are exactly ``ccrop.localize.localize``'s for the same settings (``stages``:
    backbone stages, None the last map); the backbone runs in eval mode on the images (resized
    to ``image_size`` squares if given) normalised by ``mean``/``std`` on ``device`` (default:
    its parameters'). ``gt_boxes``: (N, 4) of the whole dataset, default ``dataset.gt_boxes``.
    """
    idx = [int(i) for i in indices]
    features = loc.feature_fn(backbone, stages)
    pics = [to_rgb(unpack_item(dataset[i])[0]) for i in idx]
    if image_size is not None:
        pics = [p.resize((int(image_size),) * 2, Image.BILINEAR) for p in pics]
    if len({p.size for p in pics}) > 1:
        raise ValueError(f"images differ in size {sorted({p.size for p in pics})}; pass "
                         "image_size to resize them to one square size")
    x = TF.normalize(torch.stack([TF.to_tensor(p) for p in pics]), list(mean), list(std))
    if device is None:
        p = next(backbone.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    with eval_mode(backbone):
        fmap = features(x.to(device))  # (B, C, h, w) or a list of stage maps
    heat, bad, _ = loc.heatmap_parts(fmap, tuple(x.shape[-2:]), align, heatmap, polarity,
                                     center_prior)  # (B, H, W), (B,)
    found = loc.boxes_from_heat(heat, bad, threshold, mode, region, min_confidence)
    boxes, bad, fell = found.boxes, found.degenerate, found.fallback  # (B, 4), (B,), (B,)
    gt = gt_boxes if gt_boxes is not None else getattr(dataset, "gt_boxes", None)
    gt = None if gt is None else torch.as_tensor(gt)[torch.tensor(idx)]  # the rows shown
    kw.setdefault("row_labels", [f"index {i}" for i in idx])
    law = f"{mode} threshold {threshold:g}" if mode != "otsu" else "Otsu threshold"
    kw.setdefault("title", f"localization: {heatmap} heatmap, {law}, {region} box"
                  + (f"; {int(fell.sum())}/{len(idx)} fell back to the full image"
                     if min_confidence else ""))
    return plot_localization(pics, heat.cpu(), boxes.cpu(), path, gt_boxes=gt,
                             degenerate=bad.cpu(), **kw)  # fmt: skip


def config_localization_figure(crop: Any, backbone: torch.nn.Module, dataset: Any,
                               indices: Sequence[int], path: str | Path, **kw: Any) -> Path:
    """``localization_figure`` with every crop and localization setting of ``cfg.crop`` (the
    run's figure after each box update and ``ccrop viz``)."""
    return localization_figure(backbone, dataset, indices, path, stages=crop.heatmap_stages,
                               alpha=crop.alpha, scale=tuple(crop.scale),
                               full_box_guard=crop.full_box_guard, placement=crop.placement,
                               **crop.box_rule(), **kw)



def _sample_centres(size: int, box: tuple[float, float, float, float], scale: tuple[float, float],
                    alpha: float, n: int, rng: random.Random) -> np.ndarray:
    """Centres (n, 2) as (x, y) in pixels of ``n`` ContrastiveCrop crops (paper law, no guard)."""
    params = [sample_crop_params(size, size, box, scale, (3 / 4, 4 / 3), alpha, rng)
              for _ in range(n)]
    return np.array([(left + w / 2, top + h / 2) for top, left, h, w in params])


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
    from scipy.stats import beta

    counts, _, _ = ax.hist(x, bins=48, range=(0, 1), density=True, color="#7aa6e0",
                           label="realised crop centres")
    if ref is not None:
        ax.hist(ref, bins=48, range=(0, 1), density=True, histtype="step", color="#444444",
                linewidth=1.2, label="realised, α = 1 (uniform), for reference")
    u = np.linspace(1e-3, 1 - 1e-3, 400)
    ax.plot(lo + (hi - lo) * u, beta.pdf(u, alpha, alpha) / (hi - lo), color="#d62728",
            linewidth=1.8, label=f"drawn centre: Beta({alpha:g}, {alpha:g}) in box")
    for edge in (lo, hi):
        ax.axvline(edge, color="#00a152", linestyle="--", linewidth=1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.6 * max(float(counts.max()), 1.0 / max(hi - lo, 1e-6)))
    ax.set_xlabel("x centre / image width (dashed: box edges)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper center")


def plot_centre_distribution(
    path: str | Path, alphas: Sequence[float] = (0.1, 0.6, 1.0),
    box: Sequence[float] = (0.2, 0.2, 0.8, 0.8), n: int = 4000, size: int = 256, seed: int = 0,
    scale: tuple[float, float] = (0.2, 1.0),
) -> Path:
    """Where ContrastiveCrop puts crop centres for several alphas (centre suppression).

    Top row: ``n`` crop centres per alpha (``ccrop.crop.sample_crop_params``, no guard, area
    fraction ``scale``, seeded by ``seed``) inside ``box`` on a ``size`` x ``size`` image. Bottom
    row: their x histogram with the Beta(alpha, alpha) density of the drawn centre on the box,
    and the alpha = 1 histogram for comparison. Returns the path written.
    """
    alphas, b = [float(a) for a in alphas], check_box(box, "box")
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



def _pixel_boxes(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Normalised (B, 4) boxes -> inclusive integer pixel corners (B, 4) ``(x0, y0, x1, y1)``."""
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)
    last = torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)  # last pixel column, row
    px = boxes.double() * scale  # (B, 4) pixel extent [x0*W, x1*W)
    lo = torch.minimum(px[:, :2].floor().clamp(min=0), last)
    hi = torch.minimum(px[:, 2:].ceil() - 1, last)  # last covered pixel
    hi = torch.maximum(hi, lo)  # a zero-size box is drawn as one line / pixel
    return torch.cat([lo, hi], dim=1).to(torch.int64)


def box_grid(images: torch.Tensor, boxes: torch.Tensor, gt_boxes: torch.Tensor | None = None,
             nrow: int = 8, width: int = 1, upscale: int = 1, padding: int = 2) -> torch.Tensor:
    """Image grid with predicted boxes (green) and true boxes (magenta), for TensorBoard.

    ``images`` (B, 3 or 1, H, W) floats in [0, 1], ``boxes`` and ``gt_boxes`` (B, 4); ``nrow``
    images per row, ``padding`` pixels apart, lines ``width`` pixels wide on images upscaled
    ``upscale`` times (nearest). Returns a (3, H', W') uint8 grid.
    """
    pred = check_boxes(boxes, "boxes")
    gt = None if gt_boxes is None else check_boxes(gt_boxes, "gt_boxes")
    x = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # (B, 3, H, W)
    if upscale > 1:
        x = x.repeat_interleave(upscale, dim=2).repeat_interleave(upscale, dim=3)
    x = x.clone()  # (B, 3, H', W') own memory: drawn on in place
    h, w = x.shape[-2:]
    layers = ([] if gt is None else [(gt, (255, 0, 255))]) + [(pred, (0, 255, 0))]  # pred on top
    # outlines of the inclusive pixel boxes, growing inwards and never leaving the box (PIL's
    # rectangle, in torchvision's draw_bounding_boxes, paints an extra row for 1-px-high boxes)
    for boxes_k, color in layers:
        rgb = torch.tensor(color, dtype=torch.uint8)[:, None]  # (3, 1)
        for img, (x0, y0, x1, y1) in zip(x, _pixel_boxes(boxes_k, h, w).tolist()):
            for t in range(int(width)):
                img[:, min(y0 + t, y1), x0 : x1 + 1] = rgb  # top, bottom rows
                img[:, max(y1 - t, y0), x0 : x1 + 1] = rgb
                img[:, y0 : y1 + 1, min(x0 + t, x1)] = rgb  # left, right columns
                img[:, y0 : y1 + 1, max(x1 - t, x0)] = rgb
    return make_grid(x, nrow=int(nrow), padding=int(padding))  # (3, H', W')


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
    ``groups``: ``{arm: [curve per seed]}``, a curve ``(epoch, top1 %)`` points
    (``ccrop.runs.knn_curve``). Returns the path written."""
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
