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

from ccrop.config import ConfigError

from ..errors import DataError
from .base import (
    ArrayDataset,
    DatasetMissingError,
    check_split,
    download_or_fail,
    missing_data_message,
)

# Searched in order when root is None; the first is the Debian package dataset-fashion-mnist.
SYSTEM_DIRS = (
    "/usr/share/datasets/fashion-mnist",
    "/usr/local/share/datasets/fashion-mnist",
    "~/.cache/ccrop/fashion-mnist",
)
_SUBDIRS = ("", "FashionMNIST/raw", "fashion-mnist")  # root itself, torchvision's layout, a folder
# the official files (github.com/zalandoresearch/fashion-mnist), the mirror torchvision fetches
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_DEBIAN = (
    "On Debian/Ubuntu, apt-get install dataset-fashion-mnist and leave data.root unset "
    f"(searched: {', '.join(SYSTEM_DIRS)})"
)


def _layout(stems: tuple[str, ...]) -> str:
    """Where the IDX files of one split may lie below a root folder."""
    names = " and ".join(f"{s}[.gz]" for s in stems)
    return f"{names} in the folder itself, in FashionMNIST/raw/ (torchvision's) or fashion-mnist/"
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
        raise DataError(f"{path}: cannot read IDX file ({exc}); the file is corrupt") from exc
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(
            f"{path}: header {raw[:4].hex()} is not an unsigned-byte IDX magic 000008NN"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    expected = header + math.prod(dims)
    if len(dims) != ndim or len(raw) != expected:
        raise DataError(
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
        raise DataError(f"pad_to={pad_to} must be None or >= the image side {max(h, w)}")
    top, left = (pad_to - h) // 2, (pad_to - w) // 2
    return np.pad(images, ((0, 0), (top, pad_to - h - top), (left, pad_to - w - left)))


def _download(
    folder: Path, dirs: list[Path], stems: tuple[str, ...], layout: str, train: bool
) -> None:
    """Fetch the IDX files with torchvision into ``folder/FashionMNIST/raw``; on failure remove
    what the attempt created and raise ``DatasetMissingError``."""
    from torchvision import datasets

    raw = folder / "FashionMNIST" / "raw"
    download_or_fail(
        lambda: datasets.FashionMNIST(str(folder), train=train, download=True),
        watch=[folder, raw.parent, raw],
        complete=lambda: None not in [_find(dirs, s) for s in stems],
        message=lambda reason: missing_data_message("fashion-mnist", folder, layout, URL, reason),
    )


class FashionMNIST(ArrayDataset):
    """Fashion-MNIST: 28 x 28 grayscale, returned as RGB, zero-padded to ``pad_to`` by default.

    ``data`` is uint8 (N, H, W) after padding, ``targets`` list[int].

    Args:
        root: Folder holding the IDX files (also ``root/FashionMNIST/raw``, torchvision's
            layout). ``None`` searches ``SYSTEM_DIRS`` (Debian: ``dataset-fashion-mnist``).
        split: ``"train"`` (60k) or ``"test"`` (10k).
        download: Fetch with torchvision into ``root`` if missing (needs a root; a failed
            download leaves nothing behind and raises ``DatasetMissingError``).
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
            raise ConfigError(
                "fashion-mnist: data.download=true needs data.root=<folder> to download into "
                "(root=None in Python searches the system folders only)"
            )
        prefix = "train" if split == "train" else "t10k"
        bases = [Path(d).expanduser() for d in ([root] if root is not None else SYSTEM_DIRS)]
        dirs = [b / s for b in bases for s in _SUBDIRS]
        stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
        if None in [_find(dirs, s) for s in stems]:
            if root is None:
                raise DatasetMissingError(
                    f"fashion-mnist: {_layout(stems)} not found in the system folders "
                    f"{', '.join(SYSTEM_DIRS)} (data.root is unset). Install the Debian package "
                    f"dataset-fashion-mnist, or set data.root=<folder> and data.download=true to "
                    f"fetch the files from {URL} into it"
                )
            folder = bases[0]
            layout, hint = _layout(stems), "" if download else _DEBIAN
            if not download:
                raise DatasetMissingError(
                    missing_data_message("fashion-mnist", folder, layout, URL, hint=hint)
                )
            _download(folder, dirs, stems, layout, split == "train")
        images_path, labels_path = (_find(dirs, s) for s in stems)
        assert images_path is not None and labels_path is not None  # found or downloaded
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{images_path} / {labels_path}: expected (N, H, W) images and (N,) labels, got "
                f"{images.shape} and {labels.shape}"
            )
        super().__init__(pad_images(images, pad_to), labels.tolist(), CLASSES, transform)
