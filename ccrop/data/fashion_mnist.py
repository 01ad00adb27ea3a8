"""Fashion-MNIST read from IDX files, plain or gzipped (torchvision's reader takes neither the
gzipped Debian copy nor a flat folder); system copies are found without a root."""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError
from .base import ArrayDataset, check_split, fetch_if_missing, missing_data_message

# Searched in order when root is None; the first is the Debian package dataset-fashion-mnist.
SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist", "/usr/local/share/datasets/fashion-mnist",
               "~/.cache/ccrop/fashion-mnist")
_SUBDIRS = ("", "FashionMNIST/raw", "fashion-mnist")  # root itself, torchvision's layout, a folder
# the official files (github.com/zalandoresearch/fashion-mnist), the mirror torchvision fetches
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` is decompressed) as a writable uint8 array of
    the shape in its header, e.g. (N, 28, 28) images or (N,) labels."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
        dims = struct.unpack(f">{raw[3]}I", raw[4 : 4 + 4 * raw[3]])
        expected = 4 + 4 * len(dims) + math.prod(dims)
        if raw[:3] != b"\x00\x00\x08" or len(raw) != expected:
            raise ValueError(f"header {raw[:4].hex()} (unsigned-byte IDX magic: 000008NN), "
                             f"{len(raw)} bytes, expected {expected} for shape {dims}")
    except (OSError, EOFError, IndexError, struct.error, ValueError) as exc:
        raise DataError(f"{path}: not a complete unsigned-byte IDX file ({exc}); the file is "
                        "truncated or corrupt") from exc
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * len(dims)).reshape(dims).copy()


def _find(dirs: list[Path], stem: str) -> Path | None:
    """First ``stem`` or ``stem.gz`` in ``dirs``."""
    return next((d / n for d in dirs for n in (stem, stem + ".gz") if (d / n).is_file()), None)


def pad_images(images: np.ndarray, pad_to: int | None) -> np.ndarray:
    """Zero-pad uint8 (N, H, W) images to (N, pad_to, pad_to), centred; ``None`` keeps them."""
    if pad_to is None:
        return images
    h, w = images.shape[1:]
    if pad_to < max(h, w):
        raise DataError(f"pad_to={pad_to} must be None or >= the image side {max(h, w)}")
    top, left = (pad_to - h) // 2, (pad_to - w) // 2
    return np.pad(images, ((0, 0), (top, pad_to - h - top), (left, pad_to - w - left)))


def _missing(root: Path | None, layout: str, reason: str | None) -> str:
    """The message for missing files (root None: the system folders) or a failed download."""
    searched = ", ".join(SYSTEM_DIRS)
    if reason is not None:
        return missing_data_message("fashion-mnist", root, layout, URL, reason)
    if root is None:
        return (f"fashion-mnist: {layout} not found in the system folders {searched} (data.root "
                "is unset). Install the Debian package dataset-fashion-mnist, or set "
                f"data.root=<folder> and data.download=true to fetch the files from {URL} into it")
    return missing_data_message("fashion-mnist", root, layout, URL, hint=(
        "On Debian/Ubuntu, apt-get install dataset-fashion-mnist and leave data.root unset "
        f"(searched: {searched})"))


class FashionMNIST(ArrayDataset):
    """Fashion-MNIST: 28 x 28 grayscale returned as RGB, zero-padded (centred) to ``pad_to``
    (``None`` keeps 28); ``data`` uint8 (N, H, W) after the padding, ``targets``.

    ``root`` holds the IDX files (also in ``FashionMNIST/raw``, torchvision's layout); ``None``
    searches ``SYSTEM_DIRS`` (Debian: ``dataset-fashion-mnist``). ``split``: ``"train"`` (60k)
    or ``"test"`` (10k). ``download`` fetches missing files into ``root``."""

    def __init__(self, root: str | Path | None = None, split: str = "train",
                 download: bool = False, pad_to: int | None = 32,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        check_split(split, ("train", "test"), "fashion-mnist")
        if download and root is None:
            raise ConfigError("fashion-mnist: data.download=true needs data.root=<folder> to "
                              "download into (root=None searches the system folders only)")
        prefix = "train" if split == "train" else "t10k"
        bases = [Path(d).expanduser() for d in ([root] if root is not None else SYSTEM_DIRS)]
        dirs = [b / s for b in bases for s in _SUBDIRS]
        stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        layout = (" and ".join(f"{s}[.gz]" for s in stems) + " in the folder itself, in "
                  "FashionMNIST/raw/ (torchvision's) or fashion-mnist/")
        raw = bases[0] / "FashionMNIST" / "raw"
        fetch_if_missing(
            download, lambda tv: tv.FashionMNIST(str(bases[0]), split == "train", download=True),
            [bases[0], raw.parent, raw], lambda: None not in [_find(dirs, s) for s in stems],
            partial(_missing, root and bases[0], layout))
        images, labels = (read_idx(_find(dirs, s)) for s in stems)
        super().__init__(pad_images(images, pad_to), labels.tolist(), CLASSES, transform)
