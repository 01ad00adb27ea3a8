"""Base classes shared by the dataset readers: index checks, transforms and in-memory arrays."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

# Layout names of a dataset's ``.data`` array, read by ``dataset_to_uint8``.
NHWC = "NHWC"  # (N, H, W, 3) uint8, e.g. CIFAR, synthetic
NHW = "NHW"  # (N, H, W) uint8 grayscale, e.g. Fashion-MNIST
NCHW = "NCHW"  # (N, 3, H, W) uint8, e.g. STL-10


def check_split(split: str, allowed: Sequence[str], name: str) -> None:
    """Raise ``ValueError`` unless ``split`` is one of ``allowed``.

    Args:
        split: Requested split name.
        allowed: Splits the dataset supports.
        name: Dataset name, used in the message.
    """
    if split not in allowed:
        raise ValueError(
            f"split={split!r} is not valid for dataset {name!r}; allowed: {list(allowed)}"
        )


class ImageDataset(Dataset):
    """Map-style dataset whose items are ``(PIL RGB image, int label)``; label -1 if none.

    Subclasses implement ``__len__`` and ``load(index)``. ``__getitem__`` checks the index
    (negative indices count from the end) and applies the optional ``transform`` to the image.

    Args:
        transform: Optional callable applied to the PIL image of every item.
    """

    def __init__(self, transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.transform = transform

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> tuple[Image.Image, int]:
        """Return the untransformed item ``(PIL RGB image, label)`` at a valid index."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, int]:
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for dataset of size {n}")
        img, target = self.load(i)
        if self.transform is not None:
            img = self.transform(img)
        return img, target


class ArrayDataset(ImageDataset):
    """Dataset held in memory as a uint8 array, (N, H, W, 3) RGB or (N, H, W) grayscale.

    Args:
        data: uint8 array (N, H, W, 3) or (N, H, W).
        targets: N integer labels (-1 where there is none).
        classes: Class names, index = label.
        transform: Optional callable applied to the PIL image of every item.
    """

    def __init__(
        self,
        data: np.ndarray,
        targets: Sequence[int],
        classes: Sequence[str] = (),
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        super().__init__(transform)
        if (
            data.dtype != np.uint8
            or data.ndim not in (3, 4)
            or (data.ndim == 4 and data.shape[3] != 3)
        ):
            raise ValueError(
                f"data must be uint8 (N,H,W,3) or (N,H,W), got {data.dtype} {tuple(data.shape)}"
            )
        if len(targets) != len(data):
            raise ValueError(f"got {len(targets)} targets for {len(data)} images; they must match")
        self.data = data
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.data_layout = NHWC if data.ndim == 4 else NHW

    def __len__(self) -> int:
        return len(self.data)

    def load(self, index: int) -> tuple[Image.Image, int]:
        """Return ``(PIL RGB image, label)`` for one index."""
        img = Image.fromarray(self.data[index])
        if img.mode != "RGB":
            img = img.convert("RGB")
        return img, self.targets[index]
