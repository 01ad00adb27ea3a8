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


def _hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``image_size`` as ``(H, W)``."""
    if image_size is None:
        return None
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h < 1 or w < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    return int(h), int(w)


def _infer_layout(arr: np.ndarray) -> str | None:
    """Guess the layout of a uint8 image array from its shape (torchvision datasets)."""
    if arr.ndim == 3:
        return NHW
    if arr.ndim == 4 and arr.shape[3] == 3:
        return NHWC
    if arr.ndim == 4 and arr.shape[1] == 3:
        return NCHW
    return None


def _array_parts(dataset: Any) -> tuple[list[np.ndarray], str] | None:
    """The dataset's image arrays and their layout if its items are exactly those arrays."""
    if getattr(dataset, "transform", None) is not None:
        return None  # items are transformed: read them one by one
    parts = getattr(dataset, "data_parts", None)
    if parts is None:
        data = getattr(dataset, "data", None)
        parts = [data.numpy() if isinstance(data, torch.Tensor) else data]
    if not all(isinstance(p, np.ndarray) and p.dtype == np.uint8 for p in parts):
        return None
    layout = getattr(dataset, "data_layout", None) or _infer_layout(parts[0])
    if layout is None or sum(len(p) for p in parts) != len(dataset):
        return None
    return parts, layout


def _chw_block(block: np.ndarray, layout: str) -> torch.Tensor:
    """One block of images in ``layout`` as uint8 (n, 3, H, W)."""
    t = torch.from_numpy(np.array(block))  # copy: memmaps are read-only
    if layout == NHWC:
        return t.permute(0, 3, 1, 2)  # (n, H, W, 3) -> (n, 3, H, W)
    if layout == NHW:
        return t[:, None].expand(-1, 3, -1, -1)  # grayscale repeated to 3 channels
    return t


def _from_arrays(parts: list[np.ndarray], layout: str, progress: bool) -> torch.Tensor:
    """Copy image arrays into one (N, 3, H, W) tensor, chunk by chunk (memmaps stay lazy)."""
    first = _chw_block(parts[0][:1], layout)
    out = torch.empty((sum(len(p) for p in parts), *first.shape[1:]), dtype=torch.uint8)
    done = 0
    bar = progress_bar(None, "to uint8", progress, len(out))
    for arr in parts:
        for i in range(0, len(arr), _CHUNK):
            block = _chw_block(arr[i : i + _CHUNK], layout)
            out[done : done + len(block)] = block
            done += len(block)
            if bar is not None:
                bar.update(len(block))
    if bar is not None:
        bar.close()
    return out


def pil_to_uint8(img: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """PIL image -> uint8 tensor (3, H, W), bilinearly resized to ``size`` = (H, W) if given.

    Args:
        img: PIL image (converted to RGB if needed).
        size: Optional output (H, W).

    Returns:
        uint8 tensor (3, H, W).
    """
    if not isinstance(img, Image.Image):
        raise TypeError(f"dataset items must be (PIL image, label), got {type(img).__name__}")
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
    if len(items) == 0:
        raise DataError("dataset is empty; nothing to convert")
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
    """Stack all images of a dataset into one uint8 tensor.

    Fast path: a dataset without a transform whose ``.data`` (or ``.data_parts``) is a uint8
    array (N, H, W, 3), (N, H, W) grayscale (repeated to 3 channels) or (N, 3, H, W) (STL-10) is
    copied directly. Otherwise (or to change the size) every item is decoded and, if
    ``image_size`` is given, bilinearly resized.

    Args:
        dataset: Map-style dataset of ``(PIL image, label)``.
        image_size: Optional output side or (H, W); required if images differ in size.
        progress: Show a progress bar.
        num_workers: DataLoader workers for the item path (decoding image files).

    Returns:
        uint8 tensor (N, 3, H, W), in dataset order.
    """
    size = _hw(image_size)
    found = _array_parts(dataset)
    if found is not None:
        parts, layout = found
        native = parts[0].shape[2:] if layout == NCHW else parts[0].shape[1:3]
        if size is None or tuple(native) == size:
            return _from_arrays(parts, layout, progress)
    return _from_items(dataset, size, progress, num_workers)


def dataset_labels(dataset: Any) -> torch.Tensor:
    """All labels of a dataset as one tensor, in dataset order.

    Reads ``dataset.targets`` when it has one (every ccrop dataset does); otherwise loads every
    item once and takes its label.

    Args:
        dataset: map-style dataset of ``(image, label)`` (label -1 where there is none).

    Returns:
        (N,) int64.
    """
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) != len(dataset):
        targets = [int(dataset[i][-1]) for i in range(len(dataset))]
    return torch.as_tensor(np.asarray(targets, dtype=np.int64))
