"""Procedural one-object images with exact ground-truth boxes (the class is the shape, with a
class-dependent colour tendency, over a gradient, stripes, faint blobs and noise), and the
rendering helpers the generated sets (``cluttered``, ``icons``) share."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import ModuleType
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
CHUNK_PIXELS = 1 << 21  # images rendered together: bounds float32 temporaries (~25 MB each)

Params = dict[str, np.ndarray]  # per-image drawing parameters, each with N rows


# ----------------------------------------------------------------------------- shared helpers


def take(params: Params, idx: Any) -> Params:
    """Rows ``idx`` of every parameter."""
    return {k: v[idx] for k, v in params.items()}


def rows(indices: Any, n: int) -> np.ndarray:
    """Image indices as int64, ``None`` meaning all ``n``."""
    return np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, inputs in [0, 1] of one shape (...,); output (..., 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[..., None] * 6.0) % 6.0  # (..., 3)
    return v[..., None] * (1.0 - s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))


def unit(angle: np.ndarray) -> np.ndarray:
    """(N,) angles -> (N, 2) unit vectors."""
    return np.stack([np.cos(angle), np.sin(angle)], 1)


def gradient_and_stripes(xp: ModuleType, p: Mapping[str, Any], size: int) -> tuple[Any, Any]:
    """Gradient background (n, 3, H, W) from ``bg0`` to ``bg1`` along ``grad``, and stripes
    ``stripe_amp * sin(wave . xy + phase)`` (n, H, W), in numpy or torch (``xp``)."""
    xs = (xp.arange(size, dtype=xp.float32) + 0.5) / size - 0.5  # normalised, centred
    x, y = xs[None, None, :], xs[None, :, None]
    ramp = xp.clip(0.5 + x * p["grad"][:, 0, None, None] + y * p["grad"][:, 1, None, None], 0, 1)
    bg = ramp[:, None] * (p["bg1"] - p["bg0"])[:, :, None, None]  # (n, 3, H, W)
    bg += p["bg0"][:, :, None, None]
    # computed separably from (n, 1, W) and (n, H, 1) factors
    ax = x * p["stripe_wave"][:, 0, None, None]
    by = y * p["stripe_wave"][:, 1, None, None] + p["stripe_phase"][:, None, None]
    amp = p["stripe_amp"][:, None, None]
    return bg, (amp * xp.sin(ax)) * xp.cos(by) + (amp * xp.cos(ax)) * xp.sin(by)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float (n, 3, H, W) in [0, 1] -> uint8 (n, H, W, 3), rounded and clipped (in place)."""
    img.mul_(255).clamp_(0, 255).add_(0.5)  # round to nearest on the cast below
    out = torch.empty(img.shape[0], *img.shape[2:], 3, dtype=torch.uint8)
    return out.copy_(img.permute(0, 2, 3, 1)).numpy()


def noisy_uint8(img: torch.Tensor, level: torch.Tensor, seq: np.random.SeedSequence) -> np.ndarray:
    """``to_uint8`` after adding uniform noise of standard deviation ``level`` (n,) to ``img``."""
    noise = torch.from_numpy(np.random.default_rng(seq).random(img.shape, np.float32))
    noise -= 0.5
    img += noise.mul_(level[:, None, None, None] * math.sqrt(12))
    return to_uint8(img)


def render_chunks(n: int, size: int, chunk: int, render: Callable,
                  seq: np.random.SeedSequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W, 3) and float32 boxes (N, 4) from ``render(rows, seq)``, ``chunk``
    images at a time, each chunk with its own seed spawned from ``seq``."""
    data = np.empty((n, size, size, 3), np.uint8)
    boxes = np.empty((n, 4), np.float32)
    starts = range(0, n, chunk)
    seqs = seq.spawn(len(starts)) if seq is not None else [None] * len(starts)
    for start, s in zip(starts, seqs):
        sl = slice(start, min(start + chunk, n))
        data[sl], boxes[sl] = render(sl, s)
    return data, boxes


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Tight boxes (n, 4) float32 normalised (x0, y0, x1, y1) of non-empty bool masks
    (n, H, W): mask i spans ``[x0*W, x1*W) x [y0*H, y1*H)``."""
    h, w = mask.shape[1:]
    cols, rows_ = mask.any(axis=1), mask.any(axis=2)  # (n, W), (n, H)
    x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
    y0, y1 = rows_.argmax(1), h - rows_[:, ::-1].argmax(1)
    return (np.stack([x0, y0, x1, y1], 1) / np.array([w, h, w, h])).astype(np.float32)


def visible_masks(alpha: torch.Tensor, threshold: float,
                  frames: Mapping[str, np.ndarray]) -> np.ndarray:
    """Masks (n, H, W) bool of ``alpha`` (n, H, W) > ``threshold``; an empty one gets the centre
    pixel of its object's square frame (``frames``: ``x0``, ``y0``, ``side``, canvas pixels)."""
    half = frames["side"] / 2
    return _fill_empty((alpha > threshold).numpy(), frames["x0"] + half, frames["y0"] + half)


def _fill_empty(mask: np.ndarray, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
    """Set pixel (cx, cy) (n,) each (clipped) of every empty mask of ``mask`` (n, H, W)."""
    empty = np.flatnonzero(~mask.any(axis=(1, 2)))
    size = mask.shape[-1]
    mask[empty, np.clip(cy[empty].astype(int), 0, size - 1),
         np.clip(cx[empty].astype(int), 0, size - 1)] = True
    return mask


# ----------------------------------------------------------------------------- synthetic objects


def _sample_params(rng: np.random.Generator, n: int, size: int, num_classes: int) -> Params:
    """Every per-image parameter (balanced classes, shuffled)."""
    labels = rng.permutation(np.arange(n) % num_classes)
    # object box (10%-50% of the image area, random aspect) and mirroring
    area = rng.uniform(0.10, 0.50, n) * size * size
    log_ratio = rng.uniform(math.log(3 / 4), math.log(4 / 3), n)
    log_long = rng.uniform(math.log(2.0), math.log(3.0), n) * rng.choice([-1.0, 1.0], n)
    ratio = np.exp(np.where(np.isin(labels, _ELONGATED), log_long, log_ratio))  # width / height
    w = np.clip(np.sqrt(area * ratio), 2.0, 0.95 * size)
    h = np.clip(np.sqrt(area / ratio), 2.0, 0.95 * size)
    cx = rng.uniform(w / 2, size - w / 2)
    cy = rng.uniform(h / 2, size - h / 2)
    p = dict(cx=cx, cy=cy, hw=w / 2, hh=h / 2, flip=rng.choice([-1.0, 1.0], (n, 2)))
    # object colour (hue tends to the class, 25% random) and a darker, duller background
    hue = labels / num_classes + rng.normal(0.0, 0.4 / num_classes, n)
    hue = np.where(rng.random(n) < 0.25, rng.random(n), hue) % 1.0
    color = hsv_to_rgb(hue, rng.uniform(0.45, 1.0, n), rng.uniform(0.6, 1.0, n))
    bg_hsv = rng.random((2, n)), rng.uniform(0.0, 0.5, (2, n)), rng.uniform(0.15, 0.55, (2, n))
    bg = hsv_to_rgb(*bg_hsv)  # (2, N, 3)
    p.update(color=color, shade=rng.normal(0.0, 0.1, (n, 2)), bg0=bg[0], bg1=bg[1])
    # gradient, stripes (half of the images, 1.5-5 cycles), distractor blobs, noise level
    angle = rng.uniform(0, 2 * math.pi, (3, n))
    p.update(
        grad=rng.uniform(0.0, 1.0, n)[:, None] * unit(angle[0]),
        stripe_wave=2 * math.pi * rng.uniform(1.5, 5.0, n)[:, None] * unit(angle[1]),
        stripe_amp=rng.uniform(0.04, 0.12, n) * (rng.random(n) < 0.5), stripe_phase=angle[2],
        blob_xy=rng.uniform(0, size, (n, _BLOBS, 2)),
        blob_r=rng.uniform(0.04, 0.09, (n, _BLOBS)) * size,
        blob_color=bg[0][:, None, :] + rng.normal(0.0, 0.1, (n, _BLOBS, 3)),  # low contrast
        noise=rng.uniform(0.02, 0.07, n),
    )  # fmt: skip
    return {"labels": labels, **{k: np.asarray(v, np.float32) for k, v in p.items()}}


def _box_coords(p: Params, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in object-box units: u (n, 1, W), v (n, H, 1); the box is [-1, 1]^2."""
    px = np.arange(size, dtype=np.float32) + 0.5
    u = (px[None, None, :] - p["cx"][:, None, None]) / p["hw"][:, None, None] \
        * p["flip"][:, 0, None, None]
    v = (px[None, :, None] - p["cy"][:, None, None]) / p["hh"][:, None, None] \
        * p["flip"][:, 1, None, None]
    return u, v


def _shape(c: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask (n, H, W) of shape ``SHAPES[c]`` from box coordinates u (n, 1, W), v (n, H, 1)."""
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


def _render_masks(p: Params, size: int) -> np.ndarray:
    """Object masks (n, H, W) bool; never empty (a degenerate one gets its centre pixel)."""
    u, v = _box_coords(p, size)
    labels = p["labels"]
    mask = np.zeros((len(labels), size, size), bool)
    for c in np.unique(labels):
        sel = labels == c
        mask[sel] = _shape(int(c), u[sel], v[sel])
    return _fill_empty(mask, p["cx"], p["cy"])


def _background(p: Params, size: int) -> np.ndarray:
    """Background (n, 3, H, W) float32, roughly in [0, 1]: gradient, stripes, blobs on top."""
    bg, stripes = gradient_and_stripes(np, p, size)
    bg += stripes[:, None]
    px = np.arange(size, dtype=np.float32) + 0.5
    for k in range(_BLOBS):  # later blobs on top
        dx = px[None, None, :] - p["blob_xy"][:, k, 0, None, None]  # (n, 1, W)
        dy = px[None, :, None] - p["blob_xy"][:, k, 1, None, None]  # (n, H, 1)
        inside = dx * dx + dy * dy <= (p["blob_r"][:, k] ** 2)[:, None, None]  # (n, H, W)
        np.copyto(bg, p["blob_color"][:, k, :, None, None], where=inside[:, None])
    return bg


def _render(p: Params, size: int, seq: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, H, W, 3) and float32 boxes (n, 4) of parameters ``p``."""
    mask = _render_masks(p, size)
    u, v = _box_coords(p, size)
    shading = 1 + p["shade"][:, 0, None, None] * u + p["shade"][:, 1, None, None] * v
    img = _background(p, size)  # (n, 3, H, W)
    np.copyto(img, p["color"][:, :, None, None] * shading[:, None], where=mask[:, None])
    return noisy_uint8(torch.from_numpy(img), torch.from_numpy(p["noise"]), seq), mask_boxes(mask)


class SyntheticObjects(ArrayDataset):
    """N synthetic one-object images of side ``image_size`` >= 8 with exact ground-truth boxes,
    classes the first ``num_classes`` of ``SHAPES``; the same seed gives identical bytes, the
    splits (``train``, ``val``, ``test``) independent streams of the same law.

    Attributes: ``data`` uint8 (N, H, W, 3), ``targets``, ``gt_boxes`` float32 (N, 4)
    normalised (x0, y0, x1, y1), the object's pixel extent; ``params`` per-image drawing
    parameters (e.g. ``params["color"]`` (N, 3) in [0, 1]).
    """

    def __init__(self, num_images: int = 5000, image_size: int = 32, num_classes: int = 10,
                 seed: int = 0, split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        check_split(split, tuple(_SPLIT_STREAM), "synthetic")
        if num_images < 1 or image_size < 8 or not 1 <= num_classes <= len(SHAPES):
            raise DataError(f"need num_images >= 1 (got {num_images}), image_size >= 8 (got "
                            f"{image_size}), 1 <= num_classes <= {len(SHAPES)} (got {num_classes})")
        param_seq, pixel_seq = np.random.SeedSequence([seed, _SPLIT_STREAM[split]]).spawn(2)
        self.params = _sample_params(np.random.default_rng(param_seq), num_images, image_size,
                                     num_classes)
        self.image_size = image_size
        chunk = max(1, CHUNK_PIXELS // (image_size * image_size))
        data, boxes = render_chunks(num_images, image_size, chunk, lambda sl, seq: _render(
            take(self.params, sl), image_size, seq), pixel_seq)
        self.gt_boxes = torch.from_numpy(boxes)
        super().__init__(data, self.params["labels"].tolist(), SHAPES[:num_classes], transform)

    def object_masks(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Re-rendered object masks (K, H, W) bool of K indices (None: all)."""
        return _render_masks(take(self.params, rows(indices, len(self))), self.image_size)
