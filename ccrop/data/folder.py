"""Image files on disk: robust RGB loading and folder datasets (ImageFolder, unlabeled, subsets)."""

from __future__ import annotations

import logging
import os
import struct
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..config import CHOICES
from ..errors import DataError, DataPathError
from .base import ImageDataset, check_choice
from .images import orientation, to_rgb, upright

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm", ".pnm")
BAD_IMAGE_MODES = CHOICES["data.on_bad_image"]


class BadImageError(DataError):
    """An image file that exists but cannot be decoded (corrupt, truncated, empty, unknown)."""


#: ``(height, width) -> (h, w)``: the size an upright image of ``height x width`` is resized to.
SizeRule = Callable[[int, int], tuple[int, int]]
#: What decoding a bad file raises (``UnidentifiedImageError`` and truncation are ``OSError``s).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, LookupError,
                  struct.error, Image.DecompressionBombError)
#: EXIF orientations that exchange width and height (transpose, rotations by 90 degrees).
_TURNED = (5, 6, 7, 8)


def _upright_region(region: Sequence[float], size: tuple[int, int], turn: int) -> tuple[float, ...]:
    """Map a region ``(x0, y0, x1, y1)`` of a stored image of ``size`` (W, H) to the upright
    image that EXIF orientation ``turn`` makes of it (as ``exif_transpose``)."""
    x0, y0, x1, y1 = region
    w, h = size
    if turn in _TURNED:  # exchange x and y first
        x0, y0, x1, y1, w, h = y0, x0, y1, x1, h, w
    if turn in (2, 3, 6, 7):  # then mirror x
        x0, x1 = w - x1, w - x0
    if turn in (3, 4, 7, 8):  # then mirror y
        y0, y1 = h - y1, h - y0
    return x0, y0, x1, y1


def _target(fit: SizeRule, size: tuple[int, int], turn: int) -> tuple[int, int]:
    """``fit`` of the upright original as ``(h, w)``; ``size`` is the stored (W, H)."""
    w, h = size
    return fit(w, h) if turn in _TURNED else fit(h, w)


def _draft(img: Image.Image, fit: SizeRule) -> tuple[float, ...] | None:
    """Set a JPEG decoder to the largest DCT reduction (1/2, 1/4, 1/8) that keeps ``fit``'s target;
    the region of the reduced image that holds the original, None if nothing was reduced."""
    full, turn = img.size, orientation(img)
    th, tw = _target(fit, full, turn)
    drafted = img.draft(None, (th, tw) if turn in _TURNED else (tw, th))  # stored frame
    return None if drafted is None or img.size == full else drafted[1]


def _decode_jpeg(data: bytes, turn: int, size: tuple[int, int]) -> torch.Tensor | None:
    """A JPEG's bytes decoded upright by torchvision to (3, H, W) uint8; None if that fails or
    gives another size than the stored (W, H) ``size`` turned by ``turn``."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():  # torchvision 0.29 deprecates it for TorchCodec
            warnings.simplefilter("ignore", DeprecationWarning)
            x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                            mode=ImageReadMode.RGB, apply_exif_orientation=True)
    except (ImportError, RuntimeError, *_DECODE_ERRORS):
        return None
    upright_hw = size if turn in _TURNED else size[::-1]
    return x if tuple(x.shape[1:]) == upright_hw else None


def _open(path: str | Path, fit: SizeRule | None = None, draft: bool = False,
          torchvision: bool = False) -> tuple[Any, tuple[int, int], tuple[float, ...]]:
    """``path`` decoded upright (RGB PIL image, DCT-reduced if ``fit`` and ``draft`` allow; with
    ``torchvision`` an unreduced RGB or gray JPEG as (3, H, W) uint8), ``fit``'s target ``(h, w)``
    (else the image's size) and the region ``(x0, y0, x1, y1)`` that holds the original."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            full = img.size  # stored (W, H) of the original
            reduced = _draft(img, fit) if fit is not None and draft else None
            jpeg = img.format == "JPEG" and img.mode in ("RGB", "L")
            if torchvision and jpeg and reduced is None:
                turn = orientation(img)
                f.seek(0)
                x = _decode_jpeg(f.read(), turn, full)
                if x is not None:
                    return x, _target(fit, full, turn), (0, 0, x.shape[2], x.shape[1])
            img.load()  # decode now: truncated files fail here, inside the try
        stored = img.size  # of the decoded (maybe reduced) image
        img, turn = upright(img)
        img = to_rgb(img, exif=False)
    except FileNotFoundError as exc:  # a sample listed but gone: a missing data path
        raise DataPathError(f"{path}: image file not found ({exc.strerror or exc})") from exc
    except _DECODE_ERRORS as exc:
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        why = "the file is empty (0 bytes)" if empty else f"{type(exc).__name__}: {exc}"
        raise BadImageError(f"{path}: cannot decode image ({why}); expected a readable image "
                            "file (jpg, jpeg, png, bmp, ...)") from exc
    target = _target(fit, full, turn) if fit is not None else img.size[::-1]
    region = (0, 0, *img.size) if reduced is None else _upright_region(reduced, stored, turn)
    return img, target, region


def load_rgb(path: str | Path) -> Image.Image:
    """An image file as an upright 8-bit RGB PIL image (modes as ``images.to_rgb``), fully
    decoded; ``DataPathError`` (a ``FileNotFoundError``) if missing, ``BadImageError`` if
    empty, corrupt, truncated or no image."""
    return _open(path)[0]


def decode_fitted(path: str | Path, fit: SizeRule, draft: bool = True,
                  decoder: str = "auto") -> torch.Tensor:
    """Decode an image file straight to ``(3, h, w)`` uint8 RGB, ``(h, w) = fit(height, width)``
    of the upright original; errors as ``load_rgb``.

    ``load_rgb(path).resize((w, h), Image.BILINEAR)`` up to resampling, in about half the time:
    a JPEG at least twice the target is decoded at a reduced DCT scale (``Image.draft``, if
    ``draft``), other RGB or grayscale JPEGs by torchvision (``decoder="auto"``; ``"pil"``: PIL
    decodes all), then resized at the exact scale of the region the original covers."""
    img, (h, w), (_, _, x1, y1) = _open(path, fit, draft, torchvision=decoder == "auto")
    if isinstance(img, Image.Image):
        img = torch.from_numpy(np.array(img)).permute(2, 0, 1)  # (3, H, W) channels-last view
    if (h, w) == tuple(img.shape[1:]) and (x1, y1) == (w, h):
        return img.contiguous()
    return _resize_region(img, h, w, x1, y1)


def _resize_region(x: torch.Tensor, h: int, w: int, x1: float, y1: float) -> torch.Tensor:
    """Antialiased bilinear resize of the region ``[0, x1) x [0, y1)`` of ``x`` (3, H, W) uint8
    onto (3, h, w), as Pillow's ``resize(box=...)``: one pass per side (width first), to the
    size where the region is the whole side, else at the exact scale ``n / extent``."""
    x = x[None]
    for dim, n, extent in ((3, w, x1), (2, h, y1)):
        if extent == x.shape[dim]:
            size = [n if d == dim else x.shape[d] for d in (2, 3)]
            x = F.interpolate(x, size, mode="bilinear", antialias=True)
        else:
            scale = [n / extent if d == dim else 1.0 for d in (2, 3)]
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True)
            x = x.narrow(dim, 0, n)
    return x[0]


def square_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Size rule ``(size, size)`` (the official square localization input), for ``partial``."""
    return size, size


def list_images(folder: str | Path) -> list[str]:
    """Sorted paths of the files with an image extension (any case) under ``folder``,
    recursively; hidden files and folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames
                  if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]
    return sorted(found)


def split_folder(root: str | Path, split: str, layout: str) -> Path:
    """``root/split`` if it exists, else ``root`` unless it has other split folders; ``layout``
    is quoted in errors."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataPathError(f"dataset root {root} not found; expected the layout {layout}")
    if (root / split).is_dir():
        return root / split
    present = [s for s in ("train", "val", "test", "unlabeled") if (root / s).is_dir()]
    if present:
        raise DataPathError(f"{root / split} not found; {root} has split folders {present}")
    if split != "train":
        logger.warning("no %r sub-folder in %s; using the folder itself as split %r",
                       split, root, split)
    return root


def read_class_list(path: str | Path) -> list[str]:
    """Class names (index = label): the first word of each line of a text file (e.g. a wnid),
    blank lines and ``#`` comments skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataPathError(f"class_list {path} not found; expected a text file, one wnid a line")
    names = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if not names or dupes:
        raise DataError(f"class_list {path}: expected unique class names, got {len(names)}, "
                        f"dupes {dupes}")
    return names


class FileListDataset(ImageDataset):
    """Dataset over ``(image path, label)`` pairs (label -1 if none) decoded by ``load_rgb``;
    ``root`` is named in errors. ``on_bad_image="error"`` raises ``BadImageError``; ``"skip"``
    records the path (``bad_images``, ``skipped_paths()``) and returns the next readable item."""

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str] = (),
                 root: str | Path = "", on_bad_image: str = "error",
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        super().__init__(transform)
        check_choice("on_bad_image", on_bad_image, BAD_IMAGE_MODES)
        if not samples:
            raise DataError(f"no images found under {root}; the dataset would be empty")
        self.samples = [(str(p), int(t)) for p, t in samples]
        self.targets = [t for _, t in self.samples]
        self.classes = list(classes)
        self.root = str(root)
        self.on_bad_image = on_bad_image
        self.bad_images: list[str] = []  # skipped by this process
        self._reported = 0  # skipped files already counted in a report_skipped line
        # shared with DataLoader workers, so the main process can count every skipped file
        self.bad_mask = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def skipped_paths(self) -> list[str]:
        """Paths skipped as unreadable so far, by this process or any DataLoader worker."""
        return [self.samples[i][0] for i in torch.nonzero(self.bad_mask).flatten().tolist()]

    def report_skipped(self, split: str | None = None) -> list[str]:
        """Log ONE warning line (count so far, first path, ``split``) if files were skipped
        since the last call, in the main process after a pass; returns ``skipped_paths()``."""
        paths = self.skipped_paths()
        if len(paths) > self._reported:
            self._reported = len(paths)
            where = self.root if split is None else f"split {split!r} ({self.root})"
            logger.warning("%s: skipped %d unreadable image file(s) (data.on_bad_image=skip); "
                           "first: %s", where, len(paths), paths[0])
        return paths

    def load(self, index: int, read: Callable[[str], Any] = load_rgb) -> tuple[Any, int]:
        """``(read(path), label)`` of a valid index (``read``: ``load_rgb``, or a partial of
        ``decode_fitted``); in skip mode the next readable item if needed."""
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            if self.bad_mask[i]:
                continue
            path, target = self.samples[i]
            try:
                return read(path), target
            except (BadImageError, OSError) as exc:
                if self.on_bad_image == "error":
                    raise
                self.bad_mask[i] = True
                self.bad_images.append(path)
                logger.debug("skipping bad image (%d so far): %s", len(self.bad_images), exc)
        raise DataError(f"no readable image under {self.root}: all {n} files failed to decode")


def decodes_to_size(dataset: Any) -> bool:
    """Whether ``dataset`` is a folder dataset without a transform (``decode_fitted`` applies)."""
    return isinstance(dataset, FileListDataset) and dataset.transform is None


class FittedImages(Dataset):
    """``index -> (index, transform(image))`` of a folder dataset without a transform, the
    image decoded by ``decode_fitted`` to the size of the picklable rule ``fit`` (3, h, w)."""

    def __init__(self, base: FileListDataset, fit: SizeRule,
                 transform: Callable[[torch.Tensor], Any], draft: bool = True) -> None:
        self.base, self.transform = base, transform
        self.read = partial(decode_fitted, fit=fit, draft=bool(draft))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        img, _ = self.base.load(int(index), self.read)  # (3, h, w) uint8
        return int(index), self.transform(img)


_FOLDER_LAYOUT = "root/[train|val/]<class>/<images> (e.g. ImageNet: root/train/n01440764/*.JPEG)"


def class_samples(folder: Path, classes: Sequence[str], strict: bool, sub: str = ""
                  ) -> list[tuple[str, int]]:
    """``(image path, label)`` pairs of the class folders ``folder/<class>/<sub>``, label = index
    in ``classes``; an empty one warns but keeps its label, a missing one fails if ``strict``."""
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        class_dir = folder / name / sub  # sub "": the class folder itself
        if strict and not class_dir.is_dir():
            raise DataPathError(f"class {name!r} has no folder {class_dir}")
        files = list_images(class_dir)
        if not files:
            logger.warning("empty class folder %s ignored (label %d has no images)",
                           class_dir, label)
        samples += [(f, label) for f in files]
    return samples


class ImageFolder(FileListDataset):
    """Labelled images in class sub-folders of ``root/<split>`` (or ``root``), e.g. ImageNet-1K.

    Labels follow the sorted class-folder names, or the order of the ``class_list`` text file
    (one wnid a line; only those classes, e.g. ImageNet-200); an empty class keeps its label."""

    def __init__(self, root: str | Path, split: str = "train",
                 class_list: str | Path | None = None, on_bad_image: str = "error",
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        folder = split_folder(root, split, _FOLDER_LAYOUT)
        if class_list is not None:
            classes = read_class_list(class_list)
        else:
            classes = sorted(e.name for e in os.scandir(folder)
                             if e.is_dir() and not e.name.startswith("."))
        samples = class_samples(folder, classes, strict=class_list is not None)
        super().__init__(samples, classes, folder, on_bad_image, transform)


class UnlabeledFolder(FileListDataset):
    """Every image under ``root/<split>`` (or ``root``), recursively, with label -1."""

    def __init__(self, root: str | Path, split: str = "train", on_bad_image: str = "error",
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        folder = split_folder(root, split, "root/**/<images> (any nesting)")
        samples = [(f, -1) for f in list_images(folder)]
        super().__init__(samples, [], folder, on_bad_image, transform)
