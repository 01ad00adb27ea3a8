"""Base classes of the dataset readers and the missing-files / failed-download error."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ccrop.errors import ConfigError, DataError

# Layout names of a dataset's ``.data`` array, read by ``dataset_to_uint8``.
NHWC = "NHWC"  # (N, H, W, 3) uint8, e.g. CIFAR, synthetic
NHW = "NHW"  # (N, H, W) uint8 grayscale, e.g. Fashion-MNIST
NCHW = "NCHW"  # (N, 3, H, W) uint8, e.g. STL-10


def check_choice(key: str, value: Any, allowed: Sequence[Any], where: str = "") -> None:
    """``DataError`` (a ``ValueError``) naming ``key`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise DataError(f"{key}={value!r} is not valid{where}; allowed: {list(allowed)}")


def check_split(split: str, allowed: Sequence[str], name: str) -> None:
    """``DataError`` unless ``split`` is one of the ``allowed`` splits of dataset ``name``."""
    check_choice("split", split, allowed, f" for dataset {name!r}")


def check_render_args(image_size: Any, num_images: Any, none_means_all: bool = False
                      ) -> tuple[int, int | None]:
    """Check the sizes of a rendered dataset: ``image_size`` an integer >= 16, ``num_images`` an
    integer >= 1 (or ``None`` with ``none_means_all``). Returns them as ints."""
    bad = []
    if int(image_size) != image_size or image_size < 16:
        bad.append(f"image_size={image_size} must be an integer >= 16")
    all_images = num_images is None and none_means_all
    if not all_images and (num_images is None or int(num_images) != num_images or num_images < 1):
        allowed = "None or an integer >= 1" if none_means_all else "an integer >= 1"
        bad.append(f"num_images={num_images} must be {allowed}")
    if bad:
        raise DataError("; ".join(bad))
    return int(image_size), None if num_images is None else int(num_images)


class ImageDataset(Dataset):
    """Map-style dataset of ``(PIL RGB image, int label)`` items, label -1 if none.

    Subclasses implement ``__len__`` and ``load(index)``; ``__getitem__`` applies ``transform``.
    Defaults of what training reads: ``gt_boxes`` (N, 4) normalised x0, y0, x1, y1 where known,
    ``image_size`` of generated sets, ``data_layout`` of an in-memory ``data`` array."""

    targets: list[int]
    classes: list[str]
    gt_boxes: Any = None
    image_size: int | None = None
    data_layout: str | None = None

    def __init__(self, transform: Callable[[Image.Image], Any] | None = None) -> None:
        self.transform = transform

    def __getitem__(self, index: int) -> tuple[Any, int]:
        img, target = self.load(range(len(self))[index])  # negative indices, IndexError
        return (img if self.transform is None else self.transform(img)), target

    def skipped_paths(self) -> list[str]:
        """Image files skipped as unreadable (only folder datasets skip any)."""
        return []

    def report_skipped(self, split: str | None = None) -> list[str]:
        """Log one line if files were skipped since the last call; returns ``skipped_paths()``."""
        return []


class ArrayDataset(ImageDataset):
    """Dataset held in memory as a uint8 array ``data`` (N, H, W, 3) RGB or (N, H, W) grayscale,
    with N ``targets`` (-1 where there is none) and ``classes`` (index = label)."""

    def __init__(self, data: np.ndarray, targets: Sequence[int], classes: Sequence[str] = (),
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        super().__init__(transform)
        if (data.dtype != np.uint8 or data.ndim not in (3, 4) or data.shape[3:] not in ((), (3,))
                or len(targets) != len(data)):
            raise DataError(f"data must be uint8 (N,H,W,3) or (N,H,W) with N targets, got "
                            f"{data.dtype} {tuple(data.shape)} and {len(targets)} targets")
        self.data = data
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.data_layout = NHWC if data.ndim == 4 else NHW

    def __len__(self) -> int:
        return len(self.data)

    def load(self, index: int) -> tuple[Image.Image, int]:
        """Return ``(PIL RGB image, label)`` for one index."""
        return Image.fromarray(self.data[index]).convert("RGB"), self.targets[index]


#: What a failed download raises: no network (``URLError``) or disk (``OSError``), torchvision's
#: checks (``RuntimeError``), a zip that does not unpack.
DOWNLOAD_ERRORS = (OSError, RuntimeError, zipfile.BadZipFile)


class DatasetMissingError(DataError, ConfigError, FileNotFoundError):
    """Dataset files are missing and download is off, or the download failed (one CLI line)."""


def missing_data_message(name: str, folder: Path | str, layout: str, url: str,
                         reason: str | None = None, hint: str = "") -> str:
    """One line naming the dataset, the ``data.root`` folder, the expected ``layout`` and the
    official ``url``; ``reason`` is why a download failed (None: download was off)."""
    yourself = "and set data.root=<folder> to the folder that holds that layout (unpacked)"
    if reason is None:
        text = (f"{name}: dataset files not found in {folder} (data.root); expected {layout} "
                f"there. Set data.download=true (download=True in Python) to fetch {url} into "
                f"it, or fetch it yourself {yourself}")
    else:
        text = (f"{name}: downloading {url} into {folder} (data.root) failed "
                f"({' '.join(reason.split())}); nothing was kept. Expected {layout} there. "
                "Check the network and retry with data.download=true, or fetch it on a machine "
                f"with internet {yourself} and data.download=false")
    return f"{text}. {hint}" if hint else text


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fetch_if_missing(download: bool, fetch: Callable[[Any], Any], watch: Sequence[Path],
                     present: Callable[[], bool], message: Callable[[str | None], str]) -> None:
    """Unless ``present()``: ``DatasetMissingError(message(None))`` without ``download``, else
    ``fetch(torchvision.datasets)`` into the ``watch`` folders; if that fails (or an interrupt or
    bug propagates) remove what it created and raise ``DatasetMissingError(message(reason))``."""
    if present():
        return
    if not download:
        raise DatasetMissingError(message(None))
    from torchvision import datasets

    before = {f: set(os.listdir(f)) for f in watch if f.is_dir()}
    created = set()
    for top in watch:
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        if not top.exists():
            created.add(top)
    done, failure = False, None
    try:
        fetch(datasets)
        done = present()
    except DOWNLOAD_ERRORS as exc:
        failure = exc
    finally:
        if not done:
            for path in created:
                _remove(path)
            for folder, names in before.items():
                for name in set(os.listdir(folder)) - names if folder.is_dir() else ():
                    _remove(folder / name)
    if not done:
        reason = "the downloaded archive lacks the expected files" if failure is None else \
            f"{type(failure).__name__}: {failure}"
        raise DatasetMissingError(message(reason)) from failure
