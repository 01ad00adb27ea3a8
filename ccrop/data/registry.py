"""Dataset names -> readers (``build_dataset``) and per-dataset defaults (``DATASET_INFO``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from .base import check_split
from .cifar import CIFAR10, CIFAR100
from .cluttered import ClutteredFashionMNIST
from .fashion_mnist import FashionMNIST
from .folder import ImageFolder, UnlabeledFolder
from .icons import IconsOnPhotos
from .stl10 import SPLITS as STL10_SPLITS
from .stl10 import STL10
from .synthetic import SyntheticObjects
from .tiny_imagenet import TinyImageNet

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _info(mean: tuple, std: tuple, image_size: int, num_classes: int, small: bool) -> dict:
    return dict(mean=mean, std=std, image_size=image_size, num_classes=num_classes, small=small)


# Per-dataset defaults, overridable: channel mean/std of the training images in [0, 1], native
# (small sets) or training side, class count, "small" (CIFAR-style stem, native-size localization)
DATASET_INFO: dict[str, dict[str, Any]] = {
    "cifar10": _info((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32, 10, True),
    "cifar100": _info((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32, 100, True),
    "stl10": _info((0.4408, 0.4279, 0.3867), (0.2683, 0.2610, 0.2686), 96, 10, True),
    "tiny-imagenet": _info((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), 64, 200, True),
    # ImageNet statistics; num_classes is ImageNet-1K's, use len(dataset.classes) for other folders
    "imagefolder": _info(_IMAGENET_MEAN, _IMAGENET_STD, 224, 1000, False),
    "imagenet": _info(_IMAGENET_MEAN, _IMAGENET_STD, 224, 1000, False),
    "imagenet200": _info(_IMAGENET_MEAN, _IMAGENET_STD, 224, 200, False),
    "unlabeled-folder": _info(_IMAGENET_MEAN, _IMAGENET_STD, 224, 0, False),
    # measured on the 60k training images zero-padded to 32 px (the default pad_to=32)
    "fashion-mnist": _info((0.2190,) * 3, (0.3318,) * 3, 32, 10, True),
    # measured on ClutteredFashionMNIST(split="train", image_size=32, seed=0), pixels in [0, 1]
    "fashion-mnist-cluttered": _info((0.4035, 0.4043, 0.4036), (0.2018, 0.2025, 0.2023), 32, 10,
                                     True),
    # measured on IconsOnPhotos(split="train", image_size=32, num_images=2048, seed=0)
    "icons": _info((0.4512, 0.4584, 0.4758), (0.2820, 0.2440, 0.2553), 32, 7, True),
    # measured on SyntheticObjects(50000, 32, seed=0)
    "synthetic": _info((0.3515, 0.3416, 0.3449), (0.1830, 0.1747, 0.1786), 32, 10, True),
}


def _folder(root: Any, split: str, download: bool, **kw: Any) -> Dataset:
    return ImageFolder(root, split, **kw)


def _imagenet200(root: Any, split: str, download: bool, class_list: Any = None,
                 **kw: Any) -> Dataset:
    if class_list is None:
        raise DataError("imagenet200 needs class_list=<text file, one wnid per line (200 lines)>")
    return ImageFolder(root, split, class_list=class_list, **kw)


@dataclass(frozen=True)
class _Entry:
    """``build(root, split, download, **kwargs)`` and the splits of one dataset."""

    build: Callable[..., Dataset]
    splits: tuple[str, ...]
    needs_root: bool = True
    downloadable: bool = True


_FOLDER_SPLITS = ("train", "val", "test")
_REGISTRY: dict[str, _Entry] = {
    "cifar10": _Entry(CIFAR10, ("train", "test")),
    "cifar100": _Entry(CIFAR100, ("train", "test")),
    "stl10": _Entry(STL10, STL10_SPLITS),
    "tiny-imagenet": _Entry(TinyImageNet, ("train", "val", "test")),
    "imagefolder": _Entry(_folder, _FOLDER_SPLITS, downloadable=False),
    "imagenet": _Entry(_folder, _FOLDER_SPLITS, downloadable=False),
    "imagenet200": _Entry(_imagenet200, _FOLDER_SPLITS, downloadable=False),
    "unlabeled-folder": _Entry(lambda root, split, _, **kw: UnlabeledFolder(root, split, **kw),
                               ("train", "unlabeled", "val", "test"), downloadable=False),
    "fashion-mnist": _Entry(FashionMNIST, ("train", "test"), needs_root=False),
    # reads the fashion-mnist files (system copies or root, downloadable); val is carved from train
    "fashion-mnist-cluttered": _Entry(ClutteredFashionMNIST, ("train", "val", "test"),
                                      needs_root=False),
    # Tango icons on wallpapers, from Debian packages (root optional); val/test hold other icons
    "icons": _Entry(IconsOnPhotos, ("train", "val", "test"), needs_root=False,
                    downloadable=False),
    "synthetic": _Entry(lambda _, split, __, **kw: SyntheticObjects(split=split, **kw),
                        ("train", "val", "test"), needs_root=False, downloadable=False),
}


def build_dataset(name: str, root: str | Path | None = None, split: str = "train",
                  download: bool = False, **kwargs: Any) -> Dataset:
    """Build a dataset of ``DATASET_INFO`` by name: items ``(PIL RGB image, int label)``, label
    -1 if none, with ``targets`` (list[int]) and ``classes``.

    ``root`` is optional for fashion-mnist, fashion-mnist-cluttered and icons (system copies)
    and unused by synthetic; imagenet200 needs ``class_list=``; ``kwargs`` go to the reader
    (``on_bad_image``, ``pad_to``, ``transform``, ``num_images``, ``image_size``, ``seed``, ...)."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise DataError(f"unknown dataset name={name!r}; allowed: {sorted(_REGISTRY)}")
    check_split(split, entry.splits, name)
    if entry.needs_root and root is None:
        raise DataError(f"dataset {name!r} needs root=<data folder>")
    if download and not entry.downloadable:
        raise DataError(f"download=True is not supported for {name!r}; put the files under root")
    return entry.build(root, split, download, **kwargs)
