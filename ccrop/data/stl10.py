"""STL-10 read from the original binary files, memory-mapped (torchvision only fetches the
archive: its reader hashes all 2.6 GB on every construction and loads the images in memory)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import NCHW, ImageDataset, check_split, fetch_if_missing, missing_data_message

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
SPLITS = ("train", "test", "unlabeled", "train+unlabeled")
_FILES = {"train": [("train_X.bin", "train_y.bin")], "test": [("test_X.bin", "test_y.bin")],
          "unlabeled": [("unlabeled_X.bin", None)]}
_FILES["train+unlabeled"] = _FILES["train"] + _FILES["unlabeled"]
FOLDER = "stl10_binary"
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"  # the official archive
LAYOUT = (f"{FOLDER}/{{train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin, "
          "class_names.txt}")


def open_stl_images(path: str | Path) -> np.ndarray:
    """Memory-map an STL-10 ``*_X.bin`` file (per image and channel, column-major uint8) as a
    read-only upright uint8 view (N, 3, H, W)."""
    size = Path(path).stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise DataError(f"{path}: size {size} bytes is not a positive multiple of {IMAGE_BYTES} "
                        f"(3 x {SIDE} x {SIDE} uint8 per image): truncated or not STL-10")
    raw = np.memmap(path, np.uint8, "r", shape=(size // IMAGE_BYTES, 3, SIDE, SIDE))  # (N, C, W, H)
    return raw.transpose(0, 1, 3, 2)


def read_stl_labels(path: str | Path, count: int) -> list[int]:
    """Read a ``*_y.bin`` file of ``count`` label bytes 1..10 as labels 0..9."""
    raw = np.fromfile(path, np.uint8)
    if len(raw) != count or (count and (raw.min() < 1 or raw.max() > 10)):
        raise DataError(f"{path}: {len(raw)} bytes, expected {count} (one label byte 1..10 each)")
    return (raw.astype(np.int64) - 1).tolist()


class STL10(ImageDataset):
    """STL-10 from ``root/stl10_binary``: 96 x 96 RGB, labels 0..9 (-1 for unlabeled images).

    ``split``: ``"train"`` (5k), ``"test"`` (8k), ``"unlabeled"`` (100k) or ``"train+unlabeled"``
    (train first). ``download`` fetches the archive (2.5 GB) if files are missing."""

    data_layout = NCHW

    def __init__(self, root: str | Path, split: str = "train", download: bool = False,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        super().__init__(transform)
        check_split(split, SPLITS, "stl10")
        root = Path(root).expanduser()
        pairs = [(root / FOLDER / x, y and root / FOLDER / y) for x, y in _FILES[split]]
        needed = [p for pair in pairs for p in pair if p]
        fetch_if_missing(download, lambda tv: tv.STL10(str(root), split="train", download=True),
                         [root, root / FOLDER], lambda: all(p.is_file() for p in needed),
                         partial(missing_data_message, "stl10", root, LAYOUT, URL))
        self._paths = [x for x, _ in pairs]
        self.targets = []
        for part, (_, y) in zip(self.data_parts, pairs):
            self.targets += read_stl_labels(y, len(part)) if y else [-1] * len(part)
        self._starts = np.cumsum([0] + [len(p) for p in self.data_parts[:-1]]).tolist()
        names = root / FOLDER / "class_names.txt"
        self.classes = names.read_text().split() if names.is_file() else []

    @cached_property
    def data_parts(self) -> list[np.ndarray]:
        """Memory-mapped uint8 arrays (N_i, 3, H, W), one per file, in index order."""
        return [open_stl_images(p) for p in self._paths]

    @property
    def data(self) -> np.ndarray:
        """All images as uint8 (N, 3, H, W); a file-backed view for one file, a copy for two."""
        parts = self.data_parts
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __len__(self) -> int:
        return len(self.targets)

    def __getstate__(self) -> dict[str, Any]:
        # never pickle memory maps (copied in full): the copy re-opens the files
        return {k: v for k, v in self.__dict__.items() if k != "data_parts"}

    def load(self, index: int) -> tuple[Image.Image, int]:
        """Return ``(PIL RGB image 96 x 96, label)`` for one index."""
        part = bisect.bisect_right(self._starts, index) - 1
        chw = self.data_parts[part][index - self._starts[part]]  # (3, H, W)
        return Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))), self.targets[index]
