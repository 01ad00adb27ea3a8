"""Fashion-MNIST items pasted onto cluttered backgrounds, with the true box of every item.

One item per image (its class is the label), randomly placed, scaled and coloured, composited by
its intensity onto a gradient, colour noise, stripes (half of the images) and 2-3 faint fragments
of other items; the box is the extent of alpha > ``VISIBLE_ALPHA``. Deterministic from the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError
from .base import ArrayDataset, check_render_args, check_split
from .fashion_mnist import _SUBDIRS, CLASSES, SYSTEM_DIRS, FashionMNIST, _find
from .synthetic import (
    CHUNK_PIXELS,
    Params,
    gradient_and_stripes,
    hsv_to_rgb,
    mask_boxes,
    noisy_uint8,
    render_chunks,
    rows,
    take,
    to_uint8,
    unit,
    visible_masks,
)

VISIBLE_ALPHA = 0.2  # an item pixel is visible (in the mask and the box) where alpha > this
_ALPHA_GAIN = 1.4  # alpha = min(1, gain * intensity / 255): slightly bolder strokes
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}  # independent seed streams per split
_SRC = 28  # side of a Fashion-MNIST item
_FRAGMENTS = 3  # distractor slots per image; the third is shown on half of the images
_TEXTURE_GRID = 4  # low-frequency colour noise: a 4 x 4 grid per image, upsampled


# (resolved images file, split, image_size, num_images, seed) -> _build's rendered split
_CACHE: dict[tuple, tuple] = {}


def split_rows(split: str, file_len: int) -> np.ndarray:
    """Increasing int64 indices (M,), within their file, of the items of one split: ``test`` is
    the t10k file; ``val`` the last ``max(1, file_len // 6)`` items of the train file (items
    [50000, 60000) of the real one) and ``train`` the rest."""
    if split == "test":
        return np.arange(file_len, dtype=np.int64)
    num_val = max(1, file_len // 6)
    if file_len - num_val < 1:
        raise DataError(f"the train file has {file_len} items; need >= 2 to carve out val")
    start, stop = (0, file_len - num_val) if split == "train" else (file_len - num_val, file_len)
    return np.arange(start, stop, dtype=np.int64)


def _sample_params(rng: np.random.Generator, n: int, size: int) -> Params:
    """Every per-image parameter of a split of n images on a ``size`` canvas."""
    side = rng.uniform(0.3, 0.7, n) * size  # of the 28 x 28 item frame, canvas pixels
    p = dict(side=side, x0=rng.uniform(0, size - side), y0=rng.uniform(0, size - side))
    # background gradient ends, and an item of another hue and contrasting brightness
    hue, val = rng.random(n), rng.uniform(0.2, 0.8, n)
    bg_hue = (hue + rng.normal(0.0, 0.08, (2, n))) % 1.0
    bg_val = np.clip(val + rng.normal(0.0, 0.1, (2, n)), 0.05, 0.95)
    bg = hsv_to_rgb(bg_hue, rng.uniform(0.1, 0.6, (2, n)), bg_val)  # (2, N, 3)
    item_hue = (hue + rng.uniform(0.25, 0.75, n)) % 1.0
    step = rng.uniform(0.35, 0.6, n)  # brightness contrast, away from the background
    item_val = np.where(val < 0.5, np.minimum(val + step, 1.0), np.maximum(val - step, 0.05))
    p.update(bg0=bg[0], bg1=bg[1], color=hsv_to_rgb(item_hue, rng.uniform(0.5, 1.0, n), item_val))
    # gradient direction, colour noise, stripes (half of the images), pixel noise level
    angle = rng.uniform(0, 2 * math.pi, (3, n))
    p["grad"] = rng.uniform(0.3, 1.0, n)[:, None] * unit(angle[0])
    g = _TEXTURE_GRID
    p["texture"] = rng.normal(0.0, 1.0, (n, 3, g, g)) * rng.uniform(0.04, 0.12, (n, 1, 1, 1))
    wave = 2 * math.pi * rng.uniform(2.0, 6.0, n)[:, None] * unit(angle[1])  # 2-6 cycles
    p.update(stripe_amp=rng.uniform(0.03, 0.09, n) * (rng.random(n) < 0.5), stripe_wave=wave,
             stripe_phase=angle[2], noise=rng.uniform(0.01, 0.03, n))
    # distractors: a window of another item of the split, small, faint, background-tinted
    k = (n, _FRAGMENTS)
    other = (np.arange(n)[:, None] + rng.integers(1, max(n, 2), k)) % n  # itself only if n == 1
    win = rng.uniform(14.0, 24.0, k)  # source window side, item pixels
    present = np.ones(k)
    present[:, -1] = rng.random(n) < 0.5
    p.update(
        frag_item=other, frag_win=win,
        frag_wx=rng.uniform(0.0, _SRC - win), frag_wy=rng.uniform(0.0, _SRC - win),
        frag_side=rng.uniform(0.25, 0.5, k) * size,  # canvas pixels
        frag_cx=rng.uniform(0, size, k), frag_cy=rng.uniform(0, size, k),
        frag_flip=rng.choice([-1.0, 1.0], k),
        frag_opacity=rng.uniform(0.3, 0.5, k) * present,
        frag_color=np.clip((bg[0] + bg[1])[:, None] / 2 + rng.normal(0.0, 0.2, (*k, 3)), 0, 1),
    )  # fmt: skip
    return {k: v if v.dtype.kind == "i" else v.astype(np.float32) for k, v in p.items()}


def _resample(src: torch.Tensor, a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinearly sample maps (n, 28, 28) onto canvases (n, H, W), zero outside: source
    coordinate = ``a * canvas + b`` per axis ((n, 2) each; pixel edges at integers)."""
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


def _fragment_alpha(pool: torch.Tensor, p: dict[str, torch.Tensor], k: int,
                    size: int) -> torch.Tensor:
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
    """Background (n, 3, H, W) float, roughly in [0, 1], of n images whose fragments come from
    ``pool`` (M, 28, 28) uint8, every item of the split."""
    bg, stripes = gradient_and_stripes(torch, p, size)
    up = _upsampler(size)  # (H, G): bicubic upsampling is separable
    bg += up @ p["texture"] @ up.T  # (n, 3, G, G) -> (n, 3, H, W)
    bg += stripes[:, None]
    for k in range(_FRAGMENTS):  # later fragments on top
        alpha = _fragment_alpha(pool, p, k, size)[:, None]  # (n, 1, H, W)
        bg.lerp_(p["frag_color"][:, k, :, None, None].expand_as(bg), alpha)
    return bg


def _tensors(p: Params) -> dict[str, torch.Tensor]:
    """Parameters as tensors sharing memory with the arrays."""
    return {k: torch.from_numpy(v) for k, v in p.items()}


def _render(pool: torch.Tensor, items: torch.Tensor, params: Params, size: int,
            seq: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, H, W, 3) and float32 boxes (n, 4) of ``items`` (n, 28, 28)."""
    p = _tensors(params)
    alpha = _item_alpha(items, p, size)  # (n, H, W)
    img = _background(p, pool, size)  # (n, 3, H, W)
    img.lerp_(p["color"][:, :, None, None].expand_as(img), alpha[:, None])
    boxes = mask_boxes(visible_masks(alpha, VISIBLE_ALPHA, params))
    return noisy_uint8(img, p["noise"], seq), boxes


def _images_file(root: str | Path | None, split: str, download: bool) -> Path:
    """Resolved path of the IDX images file a split is read from (downloaded if asked)."""
    stem = f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte"
    bases = [Path(d).expanduser() for d in ([root] if root is not None else SYSTEM_DIRS)]
    dirs = [b / s for b in bases for s in _SUBDIRS]  # searched as FashionMNIST does
    if _find(dirs, stem) is None:  # the reader downloads, or raises its helpful error
        FashionMNIST(root, "test" if split == "test" else "train", download, pad_to=None)
    return _find(dirs, stem).resolve()


def _build(root: str | Path | None, split: str, size: int, num_images: int | None,
           seed: int) -> tuple:
    """The first ``num_images`` (None: all) of a split: uint8 images (N, H, W, 3), labels (N,),
    float32 boxes (N, 4), params, the split's items (M, 28, 28) uint8 (image i shows item i)
    and their int64 indices (N,) in the file."""
    source = FashionMNIST(root, "test" if split == "test" else "train", pad_to=None)
    split_idx = split_rows(split, len(source))
    n = len(split_idx) if num_images is None else num_images
    if n > len(split_idx):
        raise DataError(f"num_images={num_images} is larger than split {split!r} "
                        f"({len(split_idx)} images)")
    param_seq, pixel_seq = np.random.SeedSequence([seed, _SPLIT_STREAM[split]]).spawn(2)
    # drawn for the whole split: the first n images do not depend on num_images
    params = take(_sample_params(np.random.default_rng(param_seq), len(split_idx), size),
                  slice(n))
    pool = source.data[split_idx]
    pool_t = torch.from_numpy(pool)
    data, boxes = render_chunks(n, size, max(1, CHUNK_PIXELS // (size * size)), lambda sl, seq: (
        _render(pool_t, pool_t[sl], take(params, sl), size, seq)), pixel_seq)
    labels = np.asarray(source.targets)[split_idx[:n]]
    return data, labels, boxes, params, pool, split_idx[:n]


class ClutteredFashionMNIST(ArrayDataset):
    """Fashion-MNIST items on cluttered RGB backgrounds, with true boxes; deterministic.

    ``root``: folder of the IDX files (``None``: the system copies; ``download`` fetches them).
    Splits (``split_rows``): ``train`` = items [0, 50000) of the train file, ``val`` = [50000,
    60000), ``test`` = the t10k file; ``num_images`` keeps the first N (``None``: all); canvas
    side ``image_size`` >= 16. Built splits are cached per (file, split, size, N, seed).

    Attributes: ``data`` uint8 (N, H, W, 3); ``targets``; ``gt_boxes`` float32 (N, 4)
    normalised (x0, y0, x1, y1), the extent of ``item_masks``; ``source_indices`` int64 (N,),
    index in the file; ``params`` per-image arrays, e.g. ``side``, ``x0``, ``y0`` of the item's
    28 x 28 frame in canvas pixels, ``color`` (N, 3).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train",
                 download: bool = False, image_size: int = 32, num_images: int | None = None,
                 seed: int = 0, transform: Callable[[Image.Image], Any] | None = None) -> None:
        check_split(split, tuple(_SPLIT_STREAM), "fashion-mnist-cluttered")
        size, n = check_render_args(image_size, num_images, none_means_all=True)
        key = (str(_images_file(root, split, download)), split, size, n, seed)
        if key not in _CACHE:
            _CACHE[key] = _build(root, split, size, n, seed)
        data, labels, boxes, self.params, pool, self.source_indices = _CACHE[key]
        self.image_size = size
        self.gt_boxes = torch.tensor(boxes)  # a copy: callers may edit their boxes
        self._pool = torch.from_numpy(pool)
        super().__init__(data, labels.tolist(), CLASSES, transform)

    def item_alpha(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Re-rendered item opacity (K, H, W) float32 in [0, 1] of K indices (None: all)."""
        idx = rows(indices, len(self))
        return _item_alpha(self._pool[idx], _tensors(take(self.params, idx)),
                           self.image_size).numpy()

    def item_masks(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """The item's visible pixels (K, H, W) bool, alpha > ``VISIBLE_ALPHA``, whose extent is
        ``gt_boxes``; a blank item gets the centre pixel of its frame."""
        idx = rows(indices, len(self))
        alpha = torch.from_numpy(self.item_alpha(idx))
        return visible_masks(alpha, VISIBLE_ALPHA, take(self.params, idx))

    def backgrounds(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Re-rendered images (K, H, W, 3) uint8 without the item and the pixel noise."""
        p = _tensors(take(self.params, rows(indices, len(self))))
        return to_uint8(_background(p, self._pool, self.image_size))
