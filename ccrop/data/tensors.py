"""Whole datasets as one uint8 tensor (N, 3, H, W), e.g. to keep a small dataset on the GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..runtime import progress as progress_bar
from .base import NCHW, NHW, NHWC

_CHUNK = 4096  # images copied per step on the array path


def _array_parts(dataset: Any) -> tuple[list[np.ndarray], str] | None:
    """The dataset's uint8 image arrays and their layout if its items are exactly those arrays
    (ccrop's in-memory datasets, or torchvision-style ones with a ``.data`` array)."""
    if getattr(dataset, "transform", None) is not None:
        return None  # items are transformed: read them one by one
    parts = getattr(dataset, "data_parts", None) or [getattr(dataset, "data", None)]
    parts = [p.numpy() if isinstance(p, torch.Tensor) else p for p in parts]
    if not all(isinstance(p, np.ndarray) and p.dtype == np.uint8 for p in parts):
        return None
    shape = parts[0].shape
    layout = getattr(dataset, "data_layout", None) or (
        NHW if len(shape) == 3 else NHWC if shape[3:] == (3,) else NCHW if shape[1:2] == (3,)
        else None)
    if layout is None or sum(len(p) for p in parts) != len(dataset):
        return None
    return parts, layout


def _from_arrays(parts: list[np.ndarray], layout: str, progress: bool) -> torch.Tensor:
    """Copy image arrays into one (N, 3, H, W) tensor, chunk by chunk (memmaps stay lazy)."""
    out, done = None, 0
    bar = progress_bar(None, "to uint8", progress, sum(len(p) for p in parts))
    for arr in parts:
        for i in range(0, len(arr), _CHUNK):
            t = torch.from_numpy(np.array(arr[i : i + _CHUNK]))  # a copy: memmaps are read-only
            t = t.permute(0, 3, 1, 2) if layout == NHWC else t[:, None].expand(-1, 3, -1, -1) \
                if layout == NHW else t  # -> (n, 3, H, W), grayscale repeated
            if out is None:
                out = torch.empty((sum(len(p) for p in parts), *t.shape[1:]), dtype=torch.uint8)
            out[done : done + len(t)] = t
            done += len(t)
            if bar is not None:
                bar.update(len(t))
    if bar is not None:
        bar.close()
    return out


def pil_to_uint8(img: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """PIL image -> uint8 tensor (3, H, W), bilinearly resized to ``size`` = (H, W) if given."""
    img = img.convert("RGB") if img.mode != "RGB" else img
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


class _Uint8Items(Dataset):
    """Items of ``dataset`` as uint8 tensors (3, H, W), decoded in DataLoader workers."""

    def __init__(self, dataset: Any, size: tuple[int, int] | None) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        return pil_to_uint8(self.dataset[i][0], self.size)


def _as_list(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    return batch


def _from_items(
    dataset: Any, size: tuple[int, int] | None, progress: bool, num_workers: int
) -> torch.Tensor:
    """Decode every item into one (N, 3, H, W) tensor; all images must share one size."""
    items = _Uint8Items(dataset, size)
    out = torch.empty((len(items), *items[0].shape), dtype=torch.uint8)
    loader = DataLoader(items, batch_size=64, num_workers=num_workers, collate_fn=_as_list)
    i = 0
    for batch in progress_bar(loader, "to uint8", progress):
        for img in batch:
            if img.shape != out.shape[1:]:
                raise DataError(
                    f"item {i} has shape {tuple(img.shape)} but item 0 has {tuple(out.shape[1:])}; "
                    "pass image_size to resize all images to one size"
                )
            out[i] = img
            i += 1
    return out


def dataset_to_uint8(
    dataset: Any,
    image_size: int | Sequence[int] | None = None,
    progress: bool = False,
    num_workers: int = 0,
) -> torch.Tensor:
    """Stack all images of a map-style dataset of ``(PIL image, label)`` into one uint8 tensor
    (N, 3, H, W), in dataset order.

    A dataset without a transform whose ``.data`` (or ``.data_parts``) is a uint8 array
    (N, H, W, 3), (N, H, W) grayscale (repeated to 3 channels) or (N, 3, H, W) is copied
    directly; otherwise (or to change the size) every item is decoded, with ``num_workers``
    DataLoader workers, and bilinearly resized to ``image_size`` (a side or (H, W); required
    if the images differ in size).
    """
    size = None if image_size is None else (
        (int(image_size),) * 2 if isinstance(image_size, int) else tuple(map(int, image_size)))
    found = _array_parts(dataset)
    if found is not None:
        parts, layout = found
        native = parts[0].shape[2:] if layout == NCHW else parts[0].shape[1:3]
        if size is None or tuple(native) == size:
            return _from_arrays(parts, layout, progress)
    return _from_items(dataset, size, progress, num_workers)


def dataset_labels(dataset: Any) -> torch.Tensor:
    """All labels of a dataset as (N,) int64, in dataset order: ``dataset.targets`` where it
    has them (every ccrop dataset), else the label of every item."""
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) != len(dataset):
        targets = [int(dataset[i][-1]) for i in range(len(dataset))]
    return torch.as_tensor(np.asarray(targets, dtype=np.int64))
