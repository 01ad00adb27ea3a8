"""Whole datasets as one uint8 tensor (N, 3, H, W), e.g. to keep a small dataset on the GPU."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

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
    guesses = [(NHW, len(shape) == 3), (NHWC, shape[3:] == (3,)), (NCHW, shape[1:2] == (3,))]
    layout = getattr(dataset, "data_layout", None) or next((k for k, ok in guesses if ok), None)
    if layout is None or sum(len(p) for p in parts) != len(dataset):
        return None
    return parts, layout


def _from_arrays(parts: list[np.ndarray], layout: str, hw: tuple[int, int], progress: bool
                 ) -> torch.Tensor:
    """Copy image arrays of side ``hw`` into one (N, 3, H, W) tensor, chunk by chunk (memmaps
    stay lazy)."""
    out = torch.empty((sum(len(p) for p in parts), 3, *hw), dtype=torch.uint8)
    chunks = [(arr, i) for arr in parts for i in range(0, len(arr), _CHUNK)]
    done = 0
    for arr, i in progress_bar(chunks, "to uint8", progress):
        t = torch.from_numpy(np.array(arr[i : i + _CHUNK]))  # a copy: memmaps are read-only
        if layout == NHWC:
            t = t.permute(0, 3, 1, 2)
        elif layout == NHW:
            t = t[:, None]  # grayscale: broadcast to 3 channels
        out[done : done + len(t)] = t
        done += len(t)
    return out


def _to_uint8(items: list[tuple[Any, ...]], size: tuple[int, int] | None) -> list[torch.Tensor]:
    """The images of dataset items as uint8 (3, H, W), bilinearly resized to ``size`` = (H, W)
    if given (a DataLoader collate_fn: runs in the workers)."""
    out = []
    for img, *_ in items:
        img = img.convert("RGB") if img.mode != "RGB" else img
        if size is not None and img.size != size[::-1]:
            img = img.resize(size[::-1], Image.Resampling.BILINEAR)
        out.append(torch.from_numpy(np.array(img)).permute(2, 0, 1))  # (H, W, 3) -> (3, H, W)
    return out


def _from_items(dataset: Any, size: tuple[int, int] | None, progress: bool, num_workers: int
                ) -> torch.Tensor:
    """Decode every item into one (N, 3, H, W) tensor; all images must share one size."""
    collate = partial(_to_uint8, size=size)
    out = torch.empty((len(dataset), *collate([dataset[0]])[0].shape), dtype=torch.uint8)
    loader = DataLoader(dataset, batch_size=64, num_workers=num_workers, collate_fn=collate)
    i = 0
    for batch in progress_bar(loader, "to uint8", progress):
        for img in batch:
            if img.shape != out.shape[1:]:
                raise DataError(f"item {i} has shape {tuple(img.shape)} but item 0 has "
                                f"{tuple(out.shape[1:])}; pass image_size to resize all images "
                                "to one size")
            out[i] = img
            i += 1
    return out


def dataset_to_uint8(dataset: Any, image_size: int | Sequence[int] | None = None,
                     progress: bool = False, num_workers: int = 0) -> torch.Tensor:
    """All images of a map-style dataset of ``(PIL image, label)`` as one uint8 tensor
    (N, 3, H, W), in dataset order.

    A dataset without a transform whose ``.data`` (or ``.data_parts``) is a uint8 array
    (N, H, W, 3), (N, H, W) grayscale or (N, 3, H, W) is copied directly; otherwise (or to
    change the size) every item is decoded, in ``num_workers`` DataLoader workers, and
    bilinearly resized to ``image_size`` (a side or (H, W); required if sizes differ)."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    size = None if image_size is None else tuple(map(int, image_size))
    found = _array_parts(dataset)
    if found is not None:
        parts, layout = found
        native = tuple(parts[0].shape[2:] if layout == NCHW else parts[0].shape[1:3])
        if size is None or native == size:
            return _from_arrays(parts, layout, native, progress)
    return _from_items(dataset, size, progress, num_workers)


def dataset_labels(dataset: Any) -> torch.Tensor:
    """All labels of a dataset as (N,) int64, in dataset order: ``dataset.targets`` where it
    has them (every ccrop dataset), else the label of every item."""
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) != len(dataset):
        targets = [int(dataset[i][-1]) for i in range(len(dataset))]
    return torch.as_tensor(np.asarray(targets, dtype=np.int64))
