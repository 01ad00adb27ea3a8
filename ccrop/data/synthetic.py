"""Procedural object-centric images with exact ground-truth boxes, generated fast with numpy.

Each image holds one object (its class is its shape, with a class-dependent colour tendency)
at a random position and scale over a cluttered background: a colour gradient, optional stripes,
a few low-contrast distractor blobs and pixel noise. Useful to test localization (the true box
is known) and to train tiny models in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .base import ArrayDataset, check_split

SHAPES = (
    "disc", "square", "triangle", "ring", "cross", "diamond", "star", "bar", "ellipse", "L-shape"
)  # fmt: skip
_ELONGATED = (SHAPES.index("bar"), SHAPES.index("ellipse"))
_SPLIT_STREAM = {"train": 0, "test": 1, "val": 2}  # independent seed streams per split
_BLOBS = 4  # distractor blobs per image
_CHUNK_PIXELS = 1 << 21  # images rendered together: bounds float32 temporaries (~25 MB each)


@dataclass
class _Params:
    """Per-image drawing parameters, each an array with N rows (pixels unless stated)."""

    labels: np.ndarray  # (N,) int
    cx: np.ndarray  # (N,) object box centre x
    cy: np.ndarray  # (N,)
    hw: np.ndarray  # (N,) object box half width
    hh: np.ndarray  # (N,) object box half height
    flip: np.ndarray  # (N, 2) +-1 mirror of the shape in u and v
    color: np.ndarray  # (N, 3) object RGB in [0, 1]
    shade: np.ndarray  # (N, 2) linear shading across the object
    bg0: np.ndarray  # (N, 3) background colour at one end of the gradient
    bg1: np.ndarray  # (N, 3) ... and at the other
    grad: np.ndarray  # (N, 2) gradient direction x strength, normalised coordinates
    stripe_amp: np.ndarray  # (N,) 0 for images without stripes
    stripe_wave: np.ndarray  # (N, 2) wave vector, radians per normalised unit
    stripe_phase: np.ndarray  # (N,)
    blob_xy: np.ndarray  # (N, K, 2) blob centres
    blob_r: np.ndarray  # (N, K) blob radii
    blob_color: np.ndarray  # (N, K, 3)
    noise: np.ndarray  # (N,) pixel noise standard deviation

    def take(self, idx: slice | np.ndarray) -> _Params:
        """Rows ``idx`` of every field."""
        return _Params(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all inputs in [0, 1] of the same shape (...,); output (..., 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0  # (..., 3)
    return v[..., None] * (1.0 - s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def _object_geometry(rng: np.random.Generator, labels: np.ndarray, size: int) -> dict:
    """Object box (10%-50% of the image area, random aspect) and mirroring per image."""
    n = len(labels)
    area = rng.uniform(0.10, 0.50, n) * size * size
    log_ratio = rng.uniform(math.log(3 / 4), math.log(4 / 3), n)
    log_long = rng.uniform(math.log(2.0), math.log(3.0), n) * rng.choice([-1.0, 1.0], n)
    ratio = np.exp(np.where(np.isin(labels, _ELONGATED), log_long, log_ratio))  # width / height
    w = np.clip(np.sqrt(area * ratio), 2.0, 0.95 * size)
    h = np.clip(np.sqrt(area / ratio), 2.0, 0.95 * size)
    cx = rng.uniform(w / 2, size - w / 2)
    cy = rng.uniform(h / 2, size - h / 2)
    flip = rng.choice([-1.0, 1.0], (n, 2))
    return dict(cx=cx, cy=cy, hw=w / 2, hh=h / 2, flip=flip)


def _colors(rng: np.random.Generator, labels: np.ndarray, num_classes: int) -> dict:
    """Object colour (hue tends to the class, 25% random) and a darker, duller background."""
    n = len(labels)
    hue = labels / num_classes + rng.normal(0.0, 0.4 / num_classes, n)
    hue = np.where(rng.random(n) < 0.25, rng.random(n), hue) % 1.0
    color = _hsv_to_rgb(hue, rng.uniform(0.45, 1.0, n), rng.uniform(0.6, 1.0, n))
    bg_hsv = rng.random((2, n)), rng.uniform(0.0, 0.5, (2, n)), rng.uniform(0.15, 0.55, (2, n))
    bg = _hsv_to_rgb(*bg_hsv)  # (2, N, 3)
    shade = rng.normal(0.0, 0.1, (n, 2))
    return dict(color=color, shade=shade, bg0=bg[0], bg1=bg[1])


def _clutter(rng: np.random.Generator, bg0: np.ndarray, size: int) -> dict:
    """Gradient, stripes (half of the images), distractor blobs and noise level per image."""
    n = len(bg0)
    angle = rng.uniform(0, 2 * math.pi, (3, n))
    grad = rng.uniform(0.0, 1.0, n)[:, None] * np.stack([np.cos(angle[0]), np.sin(angle[0])], 1)
    wave = 2 * math.pi * rng.uniform(1.5, 5.0, n)[:, None]  # 1.5-5 cycles across the image
    stripe_wave = wave * np.stack([np.cos(angle[1]), np.sin(angle[1])], 1)
    stripe_amp = rng.uniform(0.04, 0.12, n) * (rng.random(n) < 0.5)
    blob_xy = rng.uniform(0, size, (n, _BLOBS, 2))
    blob_r = rng.uniform(0.04, 0.09, (n, _BLOBS)) * size
    blob_color = bg0[:, None, :] + rng.normal(0.0, 0.1, (n, _BLOBS, 3))  # low contrast
    return dict(
        grad=grad, stripe_amp=stripe_amp, stripe_wave=stripe_wave, stripe_phase=angle[2],
        blob_xy=blob_xy, blob_r=blob_r, blob_color=blob_color, noise=rng.uniform(0.02, 0.07, n),
    )  # fmt: skip


def _sample_params(rng: np.random.Generator, n: int, size: int, num_classes: int) -> _Params:
    """Draw every per-image parameter (balanced classes, shuffled)."""
    labels = rng.permutation(np.arange(n) % num_classes)
    geometry = _object_geometry(rng, labels, size)
    colors = _colors(rng, labels, num_classes)
    clutter = _clutter(rng, colors["bg0"], size)
    arrays = {k: np.asarray(v, np.float32) for k, v in {**geometry, **colors, **clutter}.items()}
    return _Params(labels=labels, **arrays)


def _box_coords(p: _Params, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in object-box units: u (n, 1, W), v (n, H, 1); the box is [-1, 1]^2."""
    px = np.arange(size, dtype=np.float32) + 0.5
    u = (px[None, None, :] - p.cx[:, None, None]) / p.hw[:, None, None] * p.flip[:, 0, None, None]
    v = (px[None, :, None] - p.cy[:, None, None]) / p.hh[:, None, None] * p.flip[:, 1, None, None]
    return u, v


def _shape(c: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask (n, H, W) of shape ``SHAPES[c]`` from box coordinates u (n,1,W), v (n,H,1)."""
    au, av = np.abs(u), np.abs(v)
    inside = (au <= 1) & (av <= 1)
    r2 = u * u + v * v
    name = SHAPES[c]
    if name in ("disc", "ellipse"):
        return r2 <= 1
    if name in ("square", "bar"):
        return inside
    if name == "triangle":
        return inside & (au <= (v + 1) / 2)
    if name == "ring":
        return (r2 <= 1) & (r2 >= 0.55**2)
    if name == "cross":
        return inside & ((au <= 1 / 3) | (av <= 1 / 3))
    if name == "diamond":
        return au + av <= 1
    if name == "star":
        spikes = ((1 + np.cos(5 * np.arctan2(v, u))) / 2) ** 2
        return np.sqrt(r2) <= 0.45 + 0.55 * spikes
    return inside & ((u <= -1 / 3) | (v >= 1 / 3))  # L-shape


def _render_masks(p: _Params, size: int) -> np.ndarray:
    """Object masks (n, H, W) bool; never empty (a degenerate one gets its centre pixel)."""
    u, v = _box_coords(p, size)
    mask = np.zeros((len(p.labels), size, size), bool)
    for c in np.unique(p.labels):
        sel = p.labels == c
        mask[sel] = _shape(int(c), u[sel], v[sel])
    empty = np.flatnonzero(~mask.any(axis=(1, 2)))
    cy = np.clip(p.cy[empty].astype(int), 0, size - 1)
    cx = np.clip(p.cx[empty].astype(int), 0, size - 1)
    mask[empty, cy, cx] = True
    return mask


def _background(p: _Params, size: int) -> np.ndarray:
    """Cluttered background (n, 3, H, W) float32, roughly in [0, 1] (channel-first is faster)."""
    xs = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5  # normalised, centred
    x, y = xs[None, None, :], xs[None, :, None]
    ramp = np.clip(0.5 + x * p.grad[:, 0, None, None] + y * p.grad[:, 1, None, None], 0, 1)
    # stripes amp * sin(a x + b y + c), computed separably from (n, 1, W) and (n, H, 1) factors
    ax = x * p.stripe_wave[:, 0, None, None]
    by = y * p.stripe_wave[:, 1, None, None] + p.stripe_phase[:, None, None]
    amp = p.stripe_amp[:, None, None]
    stripes = (amp * np.sin(ax)) * np.cos(by) + (amp * np.cos(ax)) * np.sin(by)  # (n, H, W)
    bg = ramp[:, None] * (p.bg1 - p.bg0)[:, :, None, None]  # (n, 3, H, W)
    bg += p.bg0[:, :, None, None]
    bg += stripes[:, None]
    px = np.arange(size, dtype=np.float32) + 0.5
    for k in range(_BLOBS):  # later blobs on top
        dx = px[None, None, :] - p.blob_xy[:, k, 0, None, None]  # (n, 1, W)
        dy = px[None, :, None] - p.blob_xy[:, k, 1, None, None]  # (n, H, 1)
        inside = dx * dx + dy * dy <= (p.blob_r[:, k] ** 2)[:, None, None]  # (n, H, W)
        np.copyto(bg, p.blob_color[:, k, :, None, None], where=inside[:, None])
    return bg


def _render(p: _Params, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render images for parameters ``p`` (n rows).

    Args:
        p: Per-image parameters.
        size: Image side in pixels.
        rng: Generator for the pixel noise.

    Returns:
        ``(images, masks)``: uint8 (n, H, W, 3) and the object masks bool (n, H, W).
    """
    mask = _render_masks(p, size)
    u, v = _box_coords(p, size)
    shading = 1 + p.shade[:, 0, None, None] * u + p.shade[:, 1, None, None] * v  # (n, H, W)
    img = _background(p, size)  # (n, 3, H, W)
    np.copyto(img, p.color[:, :, None, None] * shading[:, None], where=mask[:, None])
    noise = rng.random(img.shape, dtype=np.float32)  # uniform, std = noise level below
    noise -= 0.5
    noise *= p.noise[:, None, None, None] * math.sqrt(12)
    img += noise
    img *= 255
    np.clip(img, 0, 255, out=img)
    img += 0.5  # round to nearest on the cast below
    return np.ascontiguousarray(img.astype(np.uint8).transpose(0, 2, 3, 1)), mask


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Tight boxes of non-empty masks, in the normalised (x0, y0, x1, y1) convention.

    Args:
        mask: bool array (n, H, W), every mask non-empty.

    Returns:
        float32 array (n, 4); the pixel extent of mask i is ``[x0*W, x1*W) x [y0*H, y1*H)``.
    """
    h, w = mask.shape[1:]
    cols, rows = mask.any(axis=1), mask.any(axis=2)  # (n, W), (n, H)
    x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
    y0, y1 = rows.argmax(1), h - rows[:, ::-1].argmax(1)
    return (np.stack([x0, y0, x1, y1], 1) / np.array([w, h, w, h])).astype(np.float32)


def visible_masks(
    alpha: torch.Tensor, threshold: float, frames: Mapping[str, np.ndarray], size: int
) -> np.ndarray:
    """Masks of the pixels more opaque than ``threshold``, none empty (for ``mask_boxes``).

    Args:
        alpha: float opacity (n, H, W) of each image's object, H = W = ``size``.
        threshold: A pixel is visible where its alpha exceeds this.
        frames: Per-image arrays ``x0``, ``y0`` (corner) and ``side`` of the object's square
            frame in canvas pixels (n rows each).
        size: Canvas side.

    Returns:
        bool array (n, H, W); an empty mask gets the pixel at its frame's centre.
    """
    mask = (alpha > threshold).numpy()
    empty = np.flatnonzero(~mask.any(axis=(1, 2)))
    half = frames["side"][empty] / 2
    cx = np.clip((frames["x0"][empty] + half).astype(int), 0, size - 1)
    cy = np.clip((frames["y0"][empty] + half).astype(int), 0, size - 1)
    mask[empty, cy, cx] = True
    return mask


class SyntheticObjects(ArrayDataset):
    """Synthetic one-object images with exact ground-truth boxes; deterministic from the seed.

    Attributes: ``data`` uint8 (N, H, W, 3), ``targets`` list[int], ``gt_boxes`` float32 tensor
    (N, 4) normalised (x0, y0, x1, y1) equal to the object's pixel extent, ``classes`` shape names,
    ``params`` the per-image drawing parameters (e.g. ``params.color`` (N, 3) in [0, 1]).

    Args:
        num_images: N, number of images.
        image_size: Side H = W in pixels (>= 8).
        num_classes: Number of shape classes, 1..10 (first ``num_classes`` of ``SHAPES``).
        seed: Random seed; the same seed gives identical bytes.
        split: ``"train"``, ``"val"`` (for choosing settings) or ``"test"``: independent
            streams of the same law, so the splits differ for one seed.
        transform: Optional callable applied to each PIL image.
    """

    def __init__(
        self,
        num_images: int = 5000,
        image_size: int = 32,
        num_classes: int = 10,
        seed: int = 0,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        check_split(split, tuple(_SPLIT_STREAM), "synthetic")
        if num_images < 1 or image_size < 8 or not 1 <= num_classes <= len(SHAPES):
            raise DataError(
                f"need num_images >= 1 (got {num_images}), image_size >= 8 (got {image_size}), "
                f"1 <= num_classes <= {len(SHAPES)} (got {num_classes})"
            )
        param_seq, pixel_seq = np.random.SeedSequence([seed, _SPLIT_STREAM[split]]).spawn(2)
        param_rng = np.random.default_rng(param_seq)
        self.params = _sample_params(param_rng, num_images, image_size, num_classes)
        self.image_size = image_size
        chunk = max(1, _CHUNK_PIXELS // (image_size * image_size))
        starts = range(0, num_images, chunk)
        data = np.empty((num_images, image_size, image_size, 3), np.uint8)
        boxes = np.empty((num_images, 4), np.float32)
        for start, seq in zip(starts, pixel_seq.spawn(len(starts))):
            sl = slice(start, start + chunk)
            data[sl], mask = _render(self.params.take(sl), image_size, np.random.default_rng(seq))
            boxes[sl] = mask_boxes(mask)
        self.gt_boxes = torch.from_numpy(boxes)
        super().__init__(data, self.params.labels.tolist(), SHAPES[:num_classes], transform)

    def object_masks(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Re-render the object masks (the pixels the object was drawn on).

        Args:
            indices: K image indices, or ``None`` for all N images.

        Returns:
            bool array (K, H, W).
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices)
        return _render_masks(self.params.take(idx), self.image_size)
