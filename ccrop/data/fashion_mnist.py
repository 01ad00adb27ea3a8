"""Fashion-MNIST read from IDX files (plain or gzipped); system copies are found without a root."""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .base import ArrayDataset, check_split

# Searched in order when root is None; the first is the Debian package dataset-fashion-mnist.
SYSTEM_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    "/usr/local/share/datasets/fashion-mnist",
    "~/.cache/ccrop/fashion-mnist",
)
_SUBDIRS = ("", "FashionMNIST/raw", "fashion-mnist")  # root itself, torchvision's layout, a folder
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def read_idx(path: str | Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` is decompressed).

    Args:
        path: IDX file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        uint8 array of the shape in the header, e.g. (N, 28, 28) images or (N,) labels.
    """
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # bad or truncated gzip stream
        raise ValueError(f"{path}: cannot read IDX file ({exc}); the file is corrupt") from exc
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(
            f"{path}: header {raw[:4].hex()} is not an unsigned-byte IDX magic 000008NN"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    expected = header + math.prod(dims)
    if len(dims) != ndim or len(raw) != expected:
        raise ValueError(
            f"{path}: {len(raw)} bytes (uncompressed), expected {expected} for shape {dims}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims).copy()  # writable


def _find(dirs: list[Path], stem: str) -> Path | None:
    """First ``stem`` or ``stem.gz`` in ``dirs``."""
    for d in dirs:
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def pad_images(images: np.ndarray, pad_to: int | None) -> np.ndarray:
    """Zero-pad (N, H, W) images to (N, pad_to, pad_to), centred; ``None`` keeps them.

    Args:
        images: uint8 array (N, H, W).
        pad_to: Target side, at least max(H, W), or ``None``.

    Returns:
        uint8 array (N, pad_to, pad_to), or ``images`` unchanged.
    """
    if pad_to is None:
        return images
    h, w = images.shape[1:]
    if pad_to < max(h, w):
        raise ValueError(f"pad_to={pad_to} must be None or >= the image side {max(h, w)}")
    top, left = (pad_to - h) // 2, (pad_to - w) // 2
    return np.pad(images, ((0, 0), (top, pad_to - h - top), (left, pad_to - w - left)))


class FashionMNIST(ArrayDataset):
    """Fashion-MNIST: 28 x 28 grayscale, returned as RGB, zero-padded to ``pad_to`` by default.

    ``data`` is uint8 (N, H, W) after padding, ``targets`` list[int].

    Args:
        root: Folder holding the IDX files (also ``root/FashionMNIST/raw``, torchvision's
            layout). ``None`` searches ``SYSTEM_DIRS`` (Debian: ``dataset-fashion-mnist``).
        split: ``"train"`` (60k) or ``"test"`` (10k).
        download: Fetch with torchvision into ``root`` if missing (needs a root).
        pad_to: Output side (default 32, centred zero padding); ``None`` keeps 28.
        transform: Optional callable applied to each PIL image.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        split: str = "train",
        download: bool = False,
        pad_to: int | None = 32,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        check_split(split, ("train", "test"), "fashion-mnist")
        if download and root is None:
            raise ValueError("fashion-mnist: download=True needs a root folder to download into")
        prefix = "train" if split == "train" else "t10k"
        bases = [Path(d).expanduser() for d in ([root] if root is not None else SYSTEM_DIRS)]
        dirs = [b / s for b in bases for s in _SUBDIRS]
        stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        if download and None in [_find(dirs, s) for s in stems]:
            from torchvision import datasets

            datasets.FashionMNIST(str(bases[0]), train=split == "train", download=True)
        images_path, labels_path = (_find(dirs, s) for s in stems)
        if images_path is None or labels_path is None:
            raise FileNotFoundError(
                f"fashion-mnist: {stems[0]}[.gz] and {stems[1]}[.gz] not found in "
                f"{[str(d) for d in dirs]} (install the Debian package dataset-fashion-mnist, "
                "or pass root=<folder with the IDX files> and download=True)"
            )
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{images_path} / {labels_path}: expected (N, H, W) images and (N,) labels, got "
                f"{images.shape} and {labels.shape}"
            )
        super().__init__(pad_images(images, pad_to), labels.tolist(), CLASSES, transform)
