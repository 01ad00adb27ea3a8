"""Base classes shared by the dataset readers: index checks, transforms, in-memory arrays, and
the missing-files / failed-download error of the downloadable datasets."""

from __future__ import annotations

import operator
import os
import shutil
import urllib.error
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


def check_split(split: str, allowed: Sequence[str], name: str) -> None:
    """Raise ``DataError`` (a ``ValueError``) unless ``split`` is one of ``allowed``.

    Args:
        split: Requested split name.
        allowed: Splits the dataset supports.
        name: Dataset name, used in the message.
    """
    if split not in allowed:
        raise DataError(
            f"split={split!r} is not valid for dataset {name!r}; allowed: {list(allowed)}"
        )


def check_render_args(
    image_size: Any, num_images: Any, none_means_all: bool = False
) -> tuple[int, int | None]:
    """Check the size arguments of a rendered dataset (icons, cluttered Fashion-MNIST).

    Args:
        image_size: Side H = W in pixels; an integer >= 16.
        num_images: Number of images; an integer >= 1, or ``None`` with ``none_means_all``.
        none_means_all: Accept ``num_images=None`` (all images of the split).

    Returns:
        ``(image_size, num_images)`` as ints (``num_images`` stays ``None`` where accepted).
    """
    if int(image_size) != image_size or image_size < 16:
        raise DataError(f"image_size={image_size} must be an integer >= 16")
    if num_images is None and none_means_all:
        return int(image_size), None
    if num_images is None or int(num_images) != num_images or num_images < 1:
        allowed = "None or an integer >= 1" if none_means_all else "an integer >= 1"
        raise DataError(f"num_images={num_images} must be {allowed}")
    return int(image_size), int(num_images)


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
            raise DataError(
                f"data must be uint8 (N,H,W,3) or (N,H,W), got {data.dtype} {tuple(data.shape)}"
            )
        if len(targets) != len(data):
            raise DataError(f"got {len(targets)} targets for {len(data)} images; they must match")
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


# ----------------------------------------------------------------------------- missing data

#: What a failed download raises: no network (``URLError`` is an ``OSError``), a disk error, or
#: torchvision's checks (``RuntimeError``: bad checksum, every mirror failed), or an archive
#: that does not unpack (``zipfile.BadZipFile``: Tiny ImageNet's zip has no checksum).
DOWNLOAD_ERRORS = (urllib.error.URLError, OSError, RuntimeError, zipfile.BadZipFile)


class DatasetMissingError(DataError, ConfigError, FileNotFoundError):
    """Dataset files are missing and download is off, or the download failed.

    A ``DataError`` and a ``ConfigError`` (both ``ValueError``: the CLI prints one line and
    exits with code 2) and a ``FileNotFoundError``, so code catching any of them keeps working.
    The message names the dataset, the folder searched, the expected layout, the official URL
    and the config keys to set.
    """


def missing_data_message(
    name: str,
    folder: Path | str,
    layout: str,
    url: str,
    reason: str | None = None,
    hint: str = "",
) -> str:
    """One-line message for dataset files that are missing or could not be downloaded.

    Args:
        name: Dataset name, e.g. ``"cifar10"``.
        folder: The ``data.root`` folder that was searched.
        layout: Expected file layout below that folder.
        url: Official download URL.
        reason: Why the download failed (the network error), or None when download was off.
        hint: Optional last sentence (another way to get the files).

    Returns:
        The message, on one line.
    """
    yourself = "and set data.root=<folder> to the folder that holds that layout (unpacked)"
    if reason is None:
        text = (
            f"{name}: dataset files not found in {folder} (data.root); expected {layout} there. "
            f"Set data.download=true (download=True in Python) to fetch {url} into it, or "
            f"fetch it yourself {yourself}"
        )
    else:
        reason = " ".join(reason.split())  # torchvision's texts span several lines
        text = (
            f"{name}: downloading {url} into {folder} (data.root) failed ({reason}); nothing "
            f"was kept. Expected {layout} there. Check the network and retry with "
            f"data.download=true, or fetch it on a machine with internet {yourself} and "
            "data.download=false"
        )
    return f"{text}. {hint}" if hint else text


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree; a path already gone is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class _NewPaths:
    """What a download creates in ``watch`` folders, so that a failed one can be undone.

    A watched folder that does not exist yet is removed whole afterwards, up to its highest
    missing ancestor; one that exists keeps its entries and loses only those added since.
    """

    def __init__(self, watch: Sequence[Path]) -> None:
        self.before: dict[Path, set[str]] = {}
        self.created: set[Path] = set()
        for folder in watch:
            if folder.is_dir():
                self.before[folder] = set(os.listdir(folder))
                continue
            top = folder
            while not top.parent.exists() and top.parent != top:
                top = top.parent
            if not top.exists():
                self.created.add(top)

    def undo(self) -> None:
        """Remove the folders and files created since the snapshot."""
        for top in self.created:
            _remove(top)
        for folder, names in self.before.items():
            if folder.is_dir():
                for name in set(os.listdir(folder)) - names:
                    _remove(folder / name)


def download_or_fail(
    fetch: Callable[[], Any],
    watch: Sequence[Path],
    complete: Callable[[], bool],
    message: Callable[[str], str],
) -> None:
    """Run a download; if it fails, remove what it created and raise one clear error.

    Args:
        fetch: The download (torchvision's helpers); may create folders and archives.
        watch: Folders the download writes into (``root`` first, then the dataset's own
            folders). Those that do not exist yet are removed on failure; the others keep
            their former entries and lose only the new ones (partial archives, half-unpacked
            folders).
        complete: True once the dataset's files are all present.
        message: The error message for a failure reason (see ``missing_data_message``).

    Raises:
        DatasetMissingError: ``fetch`` raised a network, disk or checksum error
            (``DOWNLOAD_ERRORS``), or the files are still missing after it.
    """
    new = _NewPaths(watch)
    try:
        fetch()
    except DOWNLOAD_ERRORS as exc:
        new.undo()
        raise DatasetMissingError(message(f"{type(exc).__name__}: {exc}")) from exc
    except BaseException:  # interrupted (Ctrl-C) or a bug: still leave nothing half-written
        new.undo()
        raise
    if not complete():
        new.undo()
        raise DatasetMissingError(message("the downloaded archive lacks the expected files"))
