"""Fashion-MNIST items pasted onto cluttered backgrounds, with the true box of every item.

Each RGB image holds one Fashion-MNIST item (its class is the label) at a random position and
scale, in a random colour, alpha-composited from its intensity onto a procedural background: a
colour gradient, low-frequency colour noise, stripes on half of the images and 2-3 faint,
background-tinted fragments of other items of the same split. The true box is the tight extent of
the item's visible pixels (resampled alpha > ``VISIBLE_ALPHA``). Rendering is vectorised (torch
``grid_sample`` for all items at once, in chunks) and deterministic from the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError
from .base import ArrayDataset, check_render_args, check_split
from .fashion_mnist import _SUBDIRS, CLASSES, SYSTEM_DIRS, FashionMNIST, _find
from .synthetic import _hsv_to_rgb, mask_boxes, visible_masks

VISIBLE_ALPHA = 0.2  # an item pixel is visible (in the mask and the box) where alpha > this
_ALPHA_GAIN = 1.4  # alpha = min(1, gain * intensity / 255): slightly bolder strokes
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}  # independent seed streams per split
_SRC = 28  # side of a Fashion-MNIST item
_FRAGMENTS = 3  # distractor slots per image; the third is shown on half of the images
_TEXTURE_GRID = 4  # low-frequency colour noise: a 4 x 4 grid per image, upsampled
_CHUNK_PIXELS = 1 << 21  # images rendered together: bounds float32 temporaries (~25 MB each)

Params = dict[str, np.ndarray]  # per-image drawing parameters, each with N rows


@dataclass(frozen=True)
class _Rendered:
    """One rendered split, shared by every dataset built with the same arguments."""

    data: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int
    boxes: np.ndarray  # (N, 4) float32, normalised (x0, y0, x1, y1)
    params: Params
    pool: np.ndarray  # (M, 28, 28) uint8, every item of the split; image i shows pool[i]
    source_indices: np.ndarray  # (N,) int64, index of each item in its Fashion-MNIST file


# (resolved images file, split, image_size, num_images, seed) -> rendered split
_CACHE: dict[tuple, _Rendered] = {}


def split_rows(split: str, file_len: int) -> np.ndarray:
    """Indices, within their Fashion-MNIST file, of the items of one split.

    ``test`` is the whole t10k file. The train file is cut in two: ``val`` is its last
    ``max(1, file_len // 6)`` items and ``train`` the rest, i.e. [0, 50000) and [50000, 60000)
    for the real 60k file (the same rule gives a 1-item val split for tiny test files).

    Args:
        split: ``train``, ``val`` or ``test``.
        file_len: Number of items in the file the split is read from.

    Returns:
        int64 array (M,), increasing.
    """
    if split == "test":
        return np.arange(file_len, dtype=np.int64)
    num_val = max(1, file_len // 6)
    if file_len - num_val < 1:
        raise DataError(f"the train file has {file_len} items; need >= 2 to carve out val")
    start, stop = (0, file_len - num_val) if split == "train" else (file_len - num_val, file_len)
    return np.arange(start, stop, dtype=np.int64)


def _take(params: Params, idx: slice | np.ndarray) -> Params:
    """Rows ``idx`` of every parameter."""
    return {k: v[idx] for k, v in params.items()}


def _colors(rng: np.random.Generator, n: int) -> Params:
    """Background gradient ends, and an item colour of another hue and contrasting brightness."""
    hue, val = rng.random(n), rng.uniform(0.2, 0.8, n)
    bg_hue = (hue + rng.normal(0.0, 0.08, (2, n))) % 1.0
    bg_val = np.clip(val + rng.normal(0.0, 0.1, (2, n)), 0.05, 0.95)
    bg = _hsv_to_rgb(bg_hue, rng.uniform(0.1, 0.6, (2, n)), bg_val)  # (2, N, 3)
    item_hue = (hue + rng.uniform(0.25, 0.75, n)) % 1.0
    step = rng.uniform(0.35, 0.6, n)  # brightness contrast, away from the background
    item_val = np.where(val < 0.5, np.minimum(val + step, 1.0), np.maximum(val - step, 0.05))
    color = _hsv_to_rgb(item_hue, rng.uniform(0.5, 1.0, n), item_val)
    return dict(bg0=bg[0], bg1=bg[1], color=color)


def _clutter(rng: np.random.Generator, n: int) -> Params:
    """Gradient direction, colour noise, stripes (half of the images) and pixel noise level."""
    angle = rng.uniform(0, 2 * math.pi, (3, n))
    grad = rng.uniform(0.3, 1.0, n)[:, None] * np.stack([np.cos(angle[0]), np.sin(angle[0])], 1)
    g = _TEXTURE_GRID
    texture = rng.normal(0.0, 1.0, (n, 3, g, g)) * rng.uniform(0.04, 0.12, (n, 1, 1, 1))
    wave = 2 * math.pi * rng.uniform(2.0, 6.0, n)[:, None]  # 2-6 cycles across the image
    stripe_wave = wave * np.stack([np.cos(angle[1]), np.sin(angle[1])], 1)
    stripe_amp = rng.uniform(0.03, 0.09, n) * (rng.random(n) < 0.5)
    return dict(
        grad=grad, texture=texture, stripe_amp=stripe_amp, stripe_wave=stripe_wave,
        stripe_phase=angle[2], noise=rng.uniform(0.01, 0.03, n),
    )  # fmt: skip


def _fragments(rng: np.random.Generator, n: int, size: int, bg_mean: np.ndarray) -> Params:
    """Distractors: a window of another item of the split, small, faint, background-tinted."""
    k = (n, _FRAGMENTS)
    other = (np.arange(n)[:, None] + rng.integers(1, max(n, 2), k)) % n  # itself only if n == 1
    win = rng.uniform(14.0, 24.0, k)  # source window side, item pixels
    present = np.ones(k)
    present[:, -1] = rng.random(n) < 0.5
    return dict(
        frag_item=other, frag_win=win,
        frag_wx=rng.uniform(0.0, _SRC - win), frag_wy=rng.uniform(0.0, _SRC - win),
        frag_side=rng.uniform(0.25, 0.5, k) * size,  # canvas pixels
        frag_cx=rng.uniform(0, size, k), frag_cy=rng.uniform(0, size, k),
        frag_flip=rng.choice([-1.0, 1.0], k),
        frag_opacity=rng.uniform(0.3, 0.5, k) * present,
        frag_color=np.clip(bg_mean[:, None] + rng.normal(0.0, 0.2, (*k, 3)), 0, 1),
    )  # fmt: skip


def _sample_params(rng: np.random.Generator, n: int, size: int) -> Params:
    """Every per-image parameter of a split of n images on a ``size`` canvas."""
    side = rng.uniform(0.3, 0.7, n) * size  # of the 28 x 28 item frame, canvas pixels
    geometry = dict(side=side, x0=rng.uniform(0, size - side), y0=rng.uniform(0, size - side))
    colors = _colors(rng, n)
    params = {**geometry, **colors, **_clutter(rng, n)}
    params.update(_fragments(rng, n, size, (colors["bg0"] + colors["bg1"]) / 2))
    return {k: v if v.dtype.kind == "i" else v.astype(np.float32) for k, v in params.items()}


def _resample(src: torch.Tensor, a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinearly sample 28 x 28 maps onto a canvas, zero outside, axis-aligned per image.

    Args:
        src: float (n, 28, 28) source maps.
        a: (n, 2) source pixels per canvas pixel along x and y (negative mirrors).
        b: (n, 2) offsets: source coordinate = a * canvas coordinate + b (pixel edges at ints).
        size: Canvas side H = W.

    Returns:
        float (n, H, W).
    """
    px = torch.arange(size, dtype=torch.float32) + 0.5  # canvas pixel centres
    src_xy = (a[:, :, None] * px + b[:, :, None]) * (2 / _SRC) - 1  # normalised, (n, 2, W)
    coarse = a.abs().amax(1) > 2  # shrunk over 2x: sample a 2x2-averaged copy (less aliasing)
    out = torch.empty(len(src), 1, size, size)
    for sel, shrink in ((~coarse, False), (coarse, True)):
        if not sel.any():
            continue
        level = src[sel, None]  # (m, 1, 28, 28)
        if shrink:
            level = F.avg_pool2d(level, 2)  # (m, 1, 14, 14): same normalised coordinates
        grid = torch.empty(len(level), size, size, 2)  # (x, y) per pixel, as F.affine_grid gives
        grid[..., 0] = src_xy[sel, 0, None, :]
        grid[..., 1] = src_xy[sel, 1, :, None]
        out[sel] = F.grid_sample(level, grid, align_corners=False)
    return out[:, 0]


def _alpha_source(items: torch.Tensor) -> torch.Tensor:
    """uint8 items (n, 28, 28) -> alpha (n, 28, 28) in [0, 1], slightly boosted."""
    return (items.float() * (_ALPHA_GAIN / 255)).clamp_(max=1.0)


def _item_alpha(items: torch.Tensor, p: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Alpha (n, H, W) of the items (n, 28, 28) uint8 placed at ``p``'s x0, y0, side."""
    a = (_SRC / p["side"])[:, None].expand(-1, 2)  # (n, 2)
    b = -torch.stack([p["x0"], p["y0"]], 1) * a
    return _resample(_alpha_source(items), a, b, size)


def _fragment_alpha(
    pool: torch.Tensor, p: dict[str, torch.Tensor], k: int, size: int
) -> torch.Tensor:
    """Alpha (n, H, W) of distractor slot k: a source window, mirrored or not, soft-edged."""
    side = p["frag_side"][:, k]
    scale = p["frag_win"][:, k] / side  # source pixels per canvas pixel
    a = torch.stack([p["frag_flip"][:, k] * scale, scale], 1)  # (n, 2)
    centre = torch.stack([p["frag_cx"][:, k], p["frag_cy"][:, k]], 1)  # canvas, (n, 2)
    corner = torch.stack([p["frag_wx"][:, k], p["frag_wy"][:, k]], 1)  # source window, (n, 2)
    src_centre = corner + p["frag_win"][:, k, None] / 2
    alpha = _resample(_alpha_source(pool[p["frag_item"][:, k]]), a, src_centre - a * centre, size)
    # soft-edged square window, separable: min over x and y of the edge ramps (times opacity)
    px = torch.arange(size, dtype=torch.float32) + 0.5
    ramp = 1 - (px - centre[:, :, None]).abs() / (side[:, None, None] / 2)  # (n, 2, W)
    ramp = (ramp / 0.3).clamp_(0, 1) * p["frag_opacity"][:, k, None, None]
    return alpha.mul_(torch.minimum(ramp[:, 0, None, :], ramp[:, 1, :, None]))


def _upsampler(size: int) -> torch.Tensor:
    """Matrix (size, G) of 1-D bicubic upsampling (align_corners=False) from the texture grid."""
    g = _TEXTURE_GRID
    basis = torch.eye(g)[:, None, :, None]  # (G, 1, G, 1): one unit impulse per row
    up = F.interpolate(basis, size=(size, 1), mode="bicubic", align_corners=False)  # (G,1,S,1)
    return up[:, 0, :, 0].T.contiguous()


def _background(p: dict[str, torch.Tensor], pool: torch.Tensor, size: int) -> torch.Tensor:
    """Background (n, 3, H, W) float, roughly in [0, 1]: gradient, noise, stripes, fragments.

    Args:
        p: Parameters of n images, as tensors.
        pool: uint8 (M, 28, 28), every item of the split (``p["frag_item"]`` indexes it).
        size: Canvas side H = W.
    """
    xs = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5  # normalised, centred
    x, y = xs[None, None, :], xs[None, :, None]
    ramp = (0.5 + x * p["grad"][:, 0, None, None] + y * p["grad"][:, 1, None, None]).clamp_(0, 1)
    bg = ramp[:, None] * (p["bg1"] - p["bg0"])[:, :, None, None]  # (n, 3, H, W)
    bg += p["bg0"][:, :, None, None]
    up = _upsampler(size)  # (H, G): bicubic upsampling is separable
    bg += up @ p["texture"] @ up.T  # (n, 3, G, G) -> (n, 3, H, W)
    # stripes amp * sin(a x + b y + c), computed separably from (n, 1, W) and (n, H, 1) factors
    ax = x * p["stripe_wave"][:, 0, None, None]
    by = y * p["stripe_wave"][:, 1, None, None] + p["stripe_phase"][:, None, None]
    amp = p["stripe_amp"][:, None, None]
    bg += ((amp * ax.sin()) * by.cos() + (amp * ax.cos()) * by.sin())[:, None]
    for k in range(_FRAGMENTS):  # later fragments on top
        alpha = _fragment_alpha(pool, p, k, size)[:, None]  # (n, 1, H, W)
        bg.lerp_(p["frag_color"][:, k, :, None, None].expand_as(bg), alpha)
    return bg


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """float (n, 3, H, W) in [0, 1] -> uint8 (n, H, W, 3), rounded and clipped (in place)."""
    img.mul_(255).clamp_(0, 255).add_(0.5)  # round to nearest on the cast below
    out = torch.empty(img.shape[0], *img.shape[2:], 3, dtype=torch.uint8)
    return out.copy_(img.permute(0, 2, 3, 1)).numpy()


def _tensors(p: Params) -> dict[str, torch.Tensor]:
    """Parameters as tensors sharing memory with the arrays."""
    return {k: torch.from_numpy(v) for k, v in p.items()}


def _render_all(
    pool: np.ndarray, params: Params, size: int, pixel_seq: np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray]:
    """Render the first N items of the pool, in chunks with one pixel-noise stream each.

    Args:
        pool: uint8 (M, 28, 28) items of the split; image i shows ``pool[i]``.
        params: Parameters of N <= M images.
        size: Canvas side H = W.
        pixel_seq: Seed of the pixel noise.

    Returns:
        ``(images, boxes)``: uint8 (N, H, W, 3) and float32 (N, 4) normalised (x0, y0, x1, y1).
    """
    n = len(params["side"])
    pool_t = torch.from_numpy(pool)
    data = np.empty((n, size, size, 3), np.uint8)
    boxes = np.empty((n, 4), np.float32)
    chunk = max(1, _CHUNK_PIXELS // (size * size))
    starts = range(0, n, chunk)
    for start, seq in zip(starts, pixel_seq.spawn(len(starts))):
        sl = slice(start, min(start + chunk, n))  # the pool may hold more than n items
        p_np = _take(params, sl)
        p = _tensors(p_np)
        alpha = _item_alpha(pool_t[sl], p, size)  # (n, H, W)
        img = _background(p, pool_t, size)  # (n, 3, H, W)
        img.lerp_(p["color"][:, :, None, None].expand_as(img), alpha[:, None])
        noise = torch.from_numpy(np.random.default_rng(seq).random(img.shape, np.float32))
        noise -= 0.5  # uniform noise with standard deviation p["noise"]
        img += noise.mul_(p["noise"][:, None, None, None] * math.sqrt(12))
        data[sl] = _to_uint8(img)
        boxes[sl] = mask_boxes(visible_masks(alpha, VISIBLE_ALPHA, p_np, size))
    return data, boxes


def _images_file(root: str | Path | None, split: str, download: bool) -> Path:
    """Resolved path of the IDX images file a split is read from (downloaded if asked)."""
    file_split = "test" if split == "test" else "train"
    stem = f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte"
    bases = [Path(d).expanduser() for d in ([root] if root is not None else SYSTEM_DIRS)]
    dirs = [b / s for b in bases for s in _SUBDIRS]  # searched as FashionMNIST does
    if _find(dirs, stem) is None:  # the reader downloads, or raises its helpful error
        FashionMNIST(root, file_split, download, pad_to=None)
    return _find(dirs, stem).resolve()


def _build(
    root: str | Path | None, split: str, size: int, num_images: int | None, seed: int
) -> _Rendered:
    """Read the split's items and render the first ``num_images`` (None: all)."""
    source = FashionMNIST(root, "test" if split == "test" else "train", pad_to=None)
    rows = split_rows(split, len(source))
    n = len(rows) if num_images is None else num_images
    if n > len(rows):
        raise DataError(
            f"num_images={num_images} is larger than split {split!r} ({len(rows)} images)"
        )
    param_seq, pixel_seq = np.random.SeedSequence([seed, _SPLIT_STREAM[split]]).spawn(2)
    # drawn for the whole split: the first n images do not depend on num_images
    params = _take(_sample_params(np.random.default_rng(param_seq), len(rows), size), slice(n))
    pool = source.data[rows]
    data, boxes = _render_all(pool, params, size, pixel_seq)
    labels = np.asarray(source.targets)[rows[:n]]
    return _Rendered(data, labels, boxes, params, pool, rows[:n])


class ClutteredFashionMNIST(ArrayDataset):
    """Fashion-MNIST items on cluttered RGB backgrounds, with true boxes; deterministic.

    Splits: ``train`` = items [0, 50000) of the Fashion-MNIST train file, ``val`` = [50000,
    60000) (for choosing settings), ``test`` = the t10k file (rule for other file sizes:
    ``split_rows``). Distractor fragments come from other items of the same split. Built
    splits are cached in memory per (file, split, image_size, num_images, seed), so building
    one twice shares its arrays. Rendering the 50k train split takes ~4 s at 32 px and ~12 s
    at 64 px of one CPU core (measured with OMP_NUM_THREADS=1, file reading included).

    Attributes: ``data`` uint8 (N, H, W, 3); ``targets`` list[int] (the item's class);
    ``classes`` Fashion-MNIST's class names; ``gt_boxes`` float32 tensor (N, 4), normalised
    (x0, y0, x1, y1) with pixel extent ``[x0*W, x1*W) x [y0*H, y1*H)``, the tight extent of the
    item's visible pixels (see ``item_masks``); ``source_indices`` int64 (N,), each item's index
    in its file; ``params`` dict of per-image arrays with N rows, e.g. ``side`` (canvas pixels
    of the item's 28 x 28 frame, 30-70% of H), ``x0``/``y0`` (frame corner), ``color`` (N, 3).

    Args:
        root: Folder of the Fashion-MNIST IDX files; ``None`` uses the system copies.
        split: ``"train"``, ``"val"`` or ``"test"``.
        download: Fetch missing files with torchvision into ``root``.
        image_size: Side H = W in pixels, >= 16 (32 and 64 are the documented sizes).
        num_images: Keep the first N images of the split (``None``: all). They are the same
            images as the first N of the full split.
        seed: Random seed; the same arguments give identical bytes. Splits use independent
            streams.
        transform: Optional callable applied to each PIL image.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        download: bool = False,
        image_size: int = 32,
        num_images: int | None = None,
        seed: int = 0,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        check_split(split, tuple(_SPLIT_STREAM), "fashion-mnist-cluttered")
        size, n = check_render_args(image_size, num_images, none_means_all=True)
        key = (str(_images_file(root, split, download)), split, size, n, seed)
        if key not in _CACHE:
            _CACHE[key] = _build(root, split, size, n, seed)
        rendered = _CACHE[key]
        self.image_size = size
        self.params = rendered.params
        self.source_indices = rendered.source_indices
        self.gt_boxes = torch.tensor(rendered.boxes)  # a copy: callers may edit their boxes
        self._pool = torch.from_numpy(rendered.pool)
        super().__init__(rendered.data, rendered.labels.tolist(), CLASSES, transform)

    def _indices(self, indices: np.ndarray | list[int] | None) -> np.ndarray:
        return np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)

    def item_alpha(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Re-render the items' opacity, exactly as composited.

        Args:
            indices: K image indices, or ``None`` for all N images.

        Returns:
            float32 array (K, H, W) in [0, 1].
        """
        idx = self._indices(indices)
        p = _tensors(_take(self.params, idx))
        return _item_alpha(self._pool[idx], p, self.image_size).numpy()

    def item_masks(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """The item's visible pixels, alpha > ``VISIBLE_ALPHA``; ``gt_boxes`` is their extent.

        A blank item (nothing visible) gets the pixel at the centre of its frame, so every
        mask and box is defined.

        Args:
            indices: K image indices, or ``None`` for all N images.

        Returns:
            bool array (K, H, W), every mask non-empty.
        """
        idx = self._indices(indices)
        alpha = torch.from_numpy(self.item_alpha(idx))
        return visible_masks(alpha, VISIBLE_ALPHA, _take(self.params, idx), self.image_size)

    def backgrounds(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Re-render the images without the item and without pixel noise.

        Args:
            indices: K image indices, or ``None`` for all N images.

        Returns:
            uint8 array (K, H, W, 3).
        """
        p = _tensors(_take(self.params, self._indices(indices)))
        return _to_uint8(_background(p, self._pool, self.image_size))
