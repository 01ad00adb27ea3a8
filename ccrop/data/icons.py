"""Real icons on real photographs (``icons``): Tango icons pasted onto wallpaper crops, true boxes.

One 32 x 32 icon of Debian's ``tango-icon-theme`` per image (its category is the label; the
splits share no icon), side 30-70% of the canvas, on a crop of a ``gnome-backgrounds`` or
``plasma-workspace-wallpapers`` image; the box is the extent of alpha > ``VISIBLE_ALPHA``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.ops import roi_align

from .base import ArrayDataset, check_render_args, check_split
from .synthetic import mask_boxes, render_chunks, rows, take, to_uint8, visible_masks

PACKAGES = ("tango-icon-theme", "gnome-backgrounds", "plasma-workspace-wallpapers")
CLASSES = ("actions", "apps", "categories", "devices", "mimetypes", "places", "status")
ICON_DIR = Path("/usr/share/icons/Tango/32x32")
BACKGROUND_DIRS = (Path("/usr/share/backgrounds"), Path("/usr/share/wallpapers"))
VISIBLE_ALPHA = 0.2  # an icon pixel is visible (in the box) where alpha > this
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}  # independent seed streams per split
_ICON_SPLIT_SEED = 20221  # the icon partition is fixed: the same for every dataset seed
_HELD_OUT = 0.2  # share of each category's icons in val, and again in test (at least 1 each)
_ICON = 32  # icon side (pixels)
_PAD = 2  # zero border around each icon: samples past its edge read transparent pixels
_BG_SCALE = 4  # wallpapers are kept at short side 4 x canvas; crops span 30-100% of it
_CHUNK = 2048  # images rendered together
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _missing(what: str) -> ValueError:
    return ValueError(
        f"dataset 'icons' needs {what}: install the Debian packages {', '.join(PACKAGES)} "
        f"(apt-get install {' '.join(PACKAGES)}), or pass data.root=<folder with "
        "icons/<category>/*.png and backgrounds/*.jpg|png|webp>")


def _icon_files(root: Path | None) -> dict[str, list[Path]]:
    """PNG icons per category, symlinked aliases and byte-identical copies dropped."""
    base = ICON_DIR if root is None else root / "icons"
    seen, out = set(), {}
    for cls in CLASSES:
        files = sorted(p for p in (base / cls).glob("*.png") if not p.is_symlink())
        keep = []
        for p in files:
            digest = hashlib.sha1(p.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                keep.append(p)
        if len(keep) < 3:
            raise _missing(f"at least 3 icons in {base / cls}, found {len(keep)}")
        out[cls] = keep
    return out


def _images(paths: Any) -> list[Path]:
    return sorted(p for p in paths if p.suffix.lower() in _IMAGE_SUFFIXES)


def _background_files(root: Path | None) -> list[Path]:
    """Every image under ``root/backgrounds``, else those of gnome-backgrounds and the smallest
    picture of each plasma wallpaper."""
    if root is not None:
        files = _images((root / "backgrounds").rglob("*"))
    else:
        files = _images(BACKGROUND_DIRS[0].rglob("*"))
        for folder in sorted(BACKGROUND_DIRS[1].glob("*/contents/images")):
            if pics := _images(folder.iterdir()):
                files.append(min(pics, key=lambda p: (p.stat().st_size, p.name)))
    if not files:
        raise _missing("wallpaper images")
    return files


def _load_icon(path: Path) -> np.ndarray:
    """(4, 32, 32) float32 premultiplied RGBA in [0, 1]."""
    with Image.open(path) as img:
        rgba = np.asarray(img.convert("RGBA").resize((_ICON, _ICON), Image.BILINEAR), np.float32)
    rgba = rgba.transpose(2, 0, 1) / 255
    rgba[:3] *= rgba[3:]
    return rgba


def _load_background(path: Path, short: int) -> np.ndarray:
    """(3, h, w) float32 RGB in [0, 1], resized (antialiased) to short side ``short``."""
    with Image.open(path) as img:
        img.draft("RGB", (2 * short, 2 * short))  # JPEG: decode at a reduced size
        img = img.convert("RGB")
        r = short / min(img.size)
        img = img.resize((max(short, round(img.width * r)), max(short, round(img.height * r))),
                         Image.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, np.float32).transpose(2, 0, 1) / 255


def split_icons(files: dict[str, list[Path]], split: str) -> list[list[Path]]:
    """One list per class of the split's icons of ``files`` (``{category: icon files}``): a
    fixed permutation, independent of the seed; the three splits partition each category."""
    rng = np.random.default_rng(_ICON_SPLIT_SEED)
    out = []
    for cls in CLASSES:
        order = rng.permutation(len(files[cls]))
        k = max(1, round(_HELD_OUT * len(order)))
        part = {"val": order[:k], "test": order[k:2 * k], "train": order[2 * k:]}[split]
        out.append([files[cls][i] for i in sorted(part)])
    return out


@dataclass(frozen=True)
class _Sources:
    icons: torch.Tensor  # (M, 4, 36, 36) premultiplied RGBA, zero-padded
    icon_class: np.ndarray  # (M,) label of each icon
    icon_names: list[str]
    walls: torch.Tensor  # (K, 3, Hmax, Wmax), each wallpaper at the top-left, zero-padded
    wall_hw: np.ndarray  # (K, 2) valid height, width of each wallpaper


@functools.cache
def _walls(root: Path | None, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Every wallpaper at short side ``_BG_SCALE * size``, padded into one tensor."""
    walls = [_load_background(p, _BG_SCALE * size) for p in _background_files(root)]
    hw = np.array([w.shape[1:] for w in walls])
    canvas = torch.zeros(len(walls), 3, int(hw[:, 0].max()), int(hw[:, 1].max()))
    for i, w in enumerate(walls):
        canvas[i, :, : w.shape[1], : w.shape[2]] = torch.from_numpy(w)
    return canvas, hw


@functools.cache
def _icons(root: Path | None, split: str) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """The split's icons (M, 4, 36, 36), their labels (M,) and names."""
    per_class = split_icons(_icon_files(root), split)
    paths = [p for files in per_class for p in files]
    icons = torch.from_numpy(np.stack([_load_icon(p) for p in paths]))
    labels = np.concatenate([np.full(len(f), c) for c, f in enumerate(per_class)])
    return (torch.nn.functional.pad(icons, (_PAD,) * 4), labels,
            [f"{p.parent.name}/{p.name}" for p in paths])


def _sample_params(rng: np.random.Generator, n: int, size: int, src: _Sources) -> dict:
    """Per-image parameters: class, icon, icon frame, wallpaper crop and flip."""
    label = rng.integers(0, len(CLASSES), n)
    icon = np.empty(n, np.int64)
    for c in range(len(CLASSES)):  # a uniform icon of the image's class
        pool = np.flatnonzero(src.icon_class == c)
        sel = label == c
        icon[sel] = pool[rng.integers(0, len(pool), int(sel.sum()))]
    side = rng.uniform(0.3, 0.7, n) * size
    wall = rng.integers(0, len(src.wall_hw), n)
    hw = src.wall_hw[wall].astype(np.float64)  # (n, 2)
    crop = rng.uniform(0.3, 1.0, n) * hw.min(1)  # square crop side, wallpaper pixels
    p = dict(side=side, x0=rng.uniform(0, size - side), y0=rng.uniform(0, size - side), crop=crop,
             cx=rng.random(n) * (hw[:, 1] - crop), cy=rng.random(n) * (hw[:, 0] - crop))
    return dict(label=label, icon=icon, wall=wall, flip=rng.random(n) < 0.5,
                **{k: v.astype(np.float32) for k, v in p.items()})


def _icon_layer(src: _Sources, p: dict, size: int) -> torch.Tensor:
    """Premultiplied RGBA (n, 4, H, W) of each image's icon placed in its frame."""
    scale = _ICON / torch.from_numpy(p["side"])  # icon pixels per canvas pixel, (n,)
    x0, y0 = (torch.from_numpy(p[k]) for k in ("x0", "y0"))
    # the whole canvas [0, size]^2 in padded icon coordinates
    rois = torch.stack([torch.from_numpy(p["icon"]).float(),
                        -x0 * scale + _PAD, -y0 * scale + _PAD,
                        (size - x0) * scale + _PAD, (size - y0) * scale + _PAD], 1)
    return roi_align(src.icons, rois, size, 1.0, -1, aligned=True)


def _background_layer(src: _Sources, p: dict, size: int) -> torch.Tensor:
    """RGB (n, 3, H, W): each image's wallpaper crop, area-averaged, mirrored on half."""
    cx, cy, crop = (torch.from_numpy(p[k]) for k in ("cx", "cy", "crop"))
    rois = torch.stack([torch.from_numpy(p["wall"]).float(), cx, cy, cx + crop, cy + crop], 1)
    bg = roi_align(src.walls, rois, size, 1.0, -1, aligned=True)
    flip = torch.from_numpy(p["flip"])
    bg[flip] = bg[flip].flip(-1)
    return bg


def _render(src: _Sources, p: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, H, W, 3) and float32 boxes (n, 4) of parameters ``p``."""
    icon = _icon_layer(src, p, size)  # (n, 4, H, W)
    img = _background_layer(src, p, size).mul_(1 - icon[:, 3:]).add_(icon[:, :3])
    return to_uint8(img), mask_boxes(visible_masks(icon[:, 3], VISIBLE_ALPHA, p))


_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, dict]] = {}


class IconsOnPhotos(ArrayDataset):
    """Tango icons on wallpaper crops, with true boxes; deterministic from the seed.

    ``root``: ``None`` for the Debian packages' files (``PACKAGES``), or a folder holding
    ``icons/<category>/*.png`` and ``backgrounds/`` images; ``download`` is unused. Labels are
    the icon's category (uniform per image). Built sets are cached per (root, split, size, N,
    seed).

    Attributes: ``data`` uint8 (N, H, W, 3); ``targets``; ``gt_boxes`` float32 (N, 4)
    normalised (x0, y0, x1, y1), the extent of the icon's visible pixels; ``params`` per-image
    arrays (``icon``, ``side``, ``x0``, ``y0`` of the icon frame in canvas pixels, ``wall`` and
    crop of the background); ``icon_names`` (``category/file.png``, by ``params["icon"]``).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train",
                 download: bool = False, image_size: int = 32, num_images: int = 2048,
                 seed: int = 0, transform: Callable[[Image.Image], Any] | None = None) -> None:
        check_split(split, tuple(_SPLIT_STREAM), "icons")
        size, n = check_render_args(image_size, num_images)
        root = None if root is None else Path(root).expanduser()
        src = _Sources(*_icons(root, split), *_walls(root, size))
        key = (str(root), split, size, n, seed)
        if key not in _CACHE:
            rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split]]))
            params = _sample_params(rng, n, size, src)
            _CACHE[key] = (*render_chunks(n, size, _CHUNK, lambda sl, _: _render(
                src, take(params, sl), size)), params)
        data, boxes, self.params = _CACHE[key]
        self.image_size = size
        self.icon_names = src.icon_names
        self.gt_boxes = torch.tensor(boxes)  # a copy: callers may edit their boxes
        self._src = src
        super().__init__(data, self.params["label"].tolist(), CLASSES, transform)

    def icon_alpha(self, indices: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Re-rendered icon opacity (K, H, W) float32 in [0, 1] of K indices (None: all)."""
        p = take(self.params, rows(indices, len(self)))
        return _icon_layer(self._src, p, self.image_size)[:, 3].numpy()
