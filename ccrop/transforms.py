"""torchvision v2 pipelines: the crop transforms (from ``ccrop.crop``) and a BoxStore dataset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from .boxes import BoxStore
from .crop import BOX_KEY, BoxCrop, ContrastiveCrop, SimCCrop, object_box
from .data.boxed import unpack_item
from .data.images import to_rgb

__all__ = ["BOX_KEY", "BoxCrop", "BoxedSamples", "ContrastiveCrop", "SimCCrop", "object_box"]


class BoxedSamples(Dataset):
    """``(image, BoundingBoxes)`` samples from a ``BoxStore``, for any v2 transform.

    Item ``i`` reads ``store[i]`` at access time (shared memory: persistent workers see every
    update) as a one-box XYXY ``BoundingBoxes`` in pixels and returns
    ``(i, [view_1, ..., view_V], label)`` with ``view = transform((image, boxes))[0]`` (or the
    whole output when it is not a tuple) and label -1 when the dataset has none.

    Args:
        dataset: map-style images or ``(image, label, ...)`` items (PIL, tensor,
            ``tv_tensors.Image``; numpy arrays become RGB PIL).
        store: ``BoxStore`` with ``len(dataset)`` normalised boxes.
        transform: v2 transform of ``(image, BoundingBoxes)``, e.g. a ``v2.Compose`` starting
            with ``ContrastiveCrop``.
        num_views: V >= 1 independent views of the same box.
    """

    def __init__(self, dataset: Dataset, store: BoxStore, transform: Callable,
                 num_views: int = 2) -> None:
        if len(store) != len(dataset) or int(num_views) < 1:
            raise ValueError(f"BoxedSamples needs one box per item and num_views >= 1, got "
                             f"{len(store)} boxes, {len(dataset)} items, {num_views} views")
        self.dataset, self.store, self.transform = dataset, store, transform
        self.num_views = int(num_views)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int) -> tuple[Any, tv_tensors.BoundingBoxes, int]:
        """``(image, boxes (1, 4), label)`` of item ``index`` before the transform."""
        img, label = unpack_item(self.dataset[index])
        if isinstance(img, np.ndarray):
            img = to_rgb(img)
        h, w = F.get_size(img)
        box = self.store.boxes[index]  # (4,) read now: sees the latest update
        pixels = box * torch.tensor([w, h, w, h], dtype=box.dtype)  # normalised -> pixels
        boxes = tv_tensors.BoundingBoxes(pixels[None], format="XYXY", canvas_size=(h, w))
        return img, boxes, label

    def __getitem__(self, index: int) -> tuple[int, list[Any], int]:
        img, boxes, label = self.sample(index)
        views = []
        for _ in range(self.num_views):
            out = self.transform((img, boxes))
            views.append(out[0] if isinstance(out, (tuple, list)) else out)
        return int(index), views, label
