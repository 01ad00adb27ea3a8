"""Index-carrying dataset wrappers: ``index -> image -> box -> views`` and ``index -> image``."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset

from ..boxes import BoxStore
from .images import to_rgb

_IMAGE_KEYS = ("image", "img", "pixel_values", "input")
_LABEL_KEYS = ("label", "target", "labels", "class")


def unpack_item(item: Any) -> tuple[Any, int]:
    """``(image, label)`` of a base dataset's item, label -1 when there is none: an
    ``(image, label, ...)`` tuple/list, a dict with an image key (``image``, ``img``, ...) and
    an optional label key (``label``, ``target``, ...), or a bare image."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError("dataset item is an empty tuple; expected (image, label)")
        return item[0], _as_label(item[1] if len(item) > 1 else -1)
    if isinstance(item, dict):
        key = next((k for k in _IMAGE_KEYS if k in item), None)
        if key is None:
            raise ValueError(f"dataset item dict has no image key; expected one of {_IMAGE_KEYS},"
                             f" got {sorted(item)}")
        return item[key], _as_label(next((item[k] for k in _LABEL_KEYS if k in item), -1))
    return item, -1


def _as_label(label: Any) -> int:
    if isinstance(label, torch.Tensor):
        return int(label.reshape(-1)[0]) if label.numel() else -1
    try:
        return int(label)
    except (TypeError, ValueError):
        return -1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A distinct 64-bit seed for each ``(seed, epoch, index)``."""
    return ((seed * 0x9E3779B1 + epoch) * 0x85EBCA77 + index) & 0xFFFFFFFFFFFFFFFF


class BoxedDataset(Dataset):
    """Wrap any map-style dataset (of images or ``unpack_item`` tuples/dicts) to return
    ``(index, [view_1, ..., view_V], label)``, each view ``view_transform(img, box, rng)``
    (3, S, S) of the item's box, read from the shared-memory ``store`` at access time (persistent
    workers see every update). With a ``seed`` the views depend only on ``(seed, epoch, index)``
    (``set_epoch``), else on the worker's ``random`` state; ``plain_transform`` (default
    ``view_transform``) is used while boxes are off (warm-up)."""

    def __init__(self, base: Dataset, store: BoxStore, view_transform: Callable,
                 num_views: int = 2, seed: int | None = None,
                 plain_transform: Callable | None = None) -> None:
        if len(store) != len(base) or int(num_views) < 1:
            raise ValueError(f"need num_views >= 1 (got {num_views}) and one box per item: the "
                             f"store has {len(store)} boxes, the dataset {len(base)} items")
        self.base, self.store, self.transform = base, store, view_transform
        self.num_views, self.seed = int(num_views), seed
        self.plain_transform = plain_transform or view_transform
        # [epoch, use_boxes] in shared memory: persistent workers see changes
        self._state = torch.tensor([0, 1], dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int, use_boxes: bool = True) -> None:
        """Epoch of the per-sample seeds and whether boxes are used (seen by all workers)."""
        self._state[0] = int(epoch)
        self._state[1] = int(bool(use_boxes))

    def __getitem__(self, index: int) -> tuple[int, list[torch.Tensor], int]:
        img, label = unpack_item(self.base[index])
        img = to_rgb(img)
        box = self.store.boxes[index].tolist()  # read now: sees the latest update
        epoch, use_boxes = self._state.tolist()
        rng: Any = random
        if self.seed is not None:
            rng = random.Random(sample_seed(self.seed, epoch, int(index)))
        transform = self.transform if use_boxes else self.plain_transform
        views = [transform(img, box, rng) for _ in range(self.num_views)]
        return int(index), views, label


class _Transformed(Dataset):
    def __init__(self, base: Dataset, transform: Callable) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)


class IndexedImages(_Transformed):
    """``index -> (index, transform(image))``, e.g. with ``EvalTransform``: the localization
    pass's input."""

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        img, _ = unpack_item(self.base[index])
        return int(index), self.transform(to_rgb(img))


class LabeledImages(_Transformed):
    """``index -> (transform(image), label)``: input of kNN and linear evaluation."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img, label = unpack_item(self.base[index])
        return self.transform(to_rgb(img)), label
