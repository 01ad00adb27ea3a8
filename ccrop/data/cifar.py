"""CIFAR-10 / CIFAR-100 read from the original python pickle batches."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import (
    ArrayDataset,
    DatasetMissingError,
    check_split,
    download_or_fail,
    missing_data_message,
)

_IMAGE_BYTES = 3 * 32 * 32


@dataclass(frozen=True)
class _CifarSpec:
    """Where one CIFAR variant keeps its files and labels."""

    name: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    meta: tuple[str, str]  # (file, key of the class names)
    url: str  # the official archive (what torchvision fetches)
    archive: str  # its file name, downloaded into root

    @property
    def layout(self) -> str:
        """The expected files below root, e.g. ``cifar-10-batches-py/{data_batch_1..5, ...}``."""
        train = (
            f"data_batch_1..{len(self.train)}" if len(self.train) > 1 else ", ".join(self.train)
        )
        return f"{self.folder}/{{{train}, {', '.join(self.test)}, {self.meta[0]}}}"


_CIFAR10 = _CifarSpec(
    "cifar10",
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "labels",
    ("batches.meta", "label_names"),
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar-10-python.tar.gz",
)
_CIFAR100 = _CifarSpec(
    "cifar100",
    "cifar-100-python",
    ("train",),
    ("test",),
    "fine_labels",
    ("meta", "fine_label_names"),
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "cifar-100-python.tar.gz",
)


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, so a tampered batch file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # bytes inside protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core.") :]  # numpy 2 renamed the module
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[str, Any]:
    """Load a CIFAR pickle (Python 2 or 3) as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            entry = _NumpyUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # truncated pickles fail in many ways (EOFError, UnpicklingError, ...)
        raise DataError(
            f"{path}: truncated or corrupt CIFAR pickle ({exc!r}); expected a python pickle "
            "dict holding 'data' (N x 3072 uint8) and the labels"
        ) from exc
    if not isinstance(entry, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(entry).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def read_cifar_batch(path: str | Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    """Read one CIFAR python batch.

    Args:
        path: Batch file, e.g. ``cifar-10-batches-py/data_batch_1``.
        label_key: ``"labels"`` (CIFAR-10) or ``"fine_labels"`` (CIFAR-100).

    Returns:
        ``(images, labels)``: uint8 array (N, 32, 32, 3) and N integer labels.
    """
    path = Path(path)
    entry = _load_pickle(path)
    if "data" not in entry or label_key not in entry:
        raise DataError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(entry)}")
    labels = [int(t) for t in entry[label_key]]
    data = np.asarray(entry["data"])
    n = len(labels)
    if data.dtype != np.uint8 or data.size != n * _IMAGE_BYTES:
        raise DataError(
            f"{path}: 'data' is {data.dtype} with {data.size} values; expected uint8 with "
            f"{n} x {_IMAGE_BYTES} = {n * _IMAGE_BYTES} values for {n} labels"
        )
    images = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 3, H, W) -> (N, H, W, 3)
    return images, labels


def _class_names(folder: Path, spec: _CifarSpec) -> list[str]:
    """Class names from the meta file, or an empty list if it is missing."""
    meta = folder / spec.meta[0]
    if not meta.is_file():
        return []
    return [str(n) for n in _load_pickle(meta).get(spec.meta[1], [])]


def _download(spec: _CifarSpec, root: Path, files: list[Path]) -> None:
    """Fetch the archive with torchvision (read afterwards with our own reader); on failure
    remove what the attempt created and raise ``DatasetMissingError``."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if spec.name == "cifar10" else datasets.CIFAR100
    download_or_fail(
        lambda: cls(str(root), train=True, download=True),
        watch=[root, root / spec.folder],
        complete=lambda: all(f.is_file() for f in files),
        message=lambda reason: missing_data_message(
            spec.name, root, spec.layout, spec.url, reason
        ),
    )


class CIFAR10(ArrayDataset):
    """CIFAR-10 from ``root/cifar-10-batches-py`` (the python version of the archive).

    Attributes ``data`` (N, 32, 32, 3) uint8 and ``targets`` list[int] follow torchvision.

    Args:
        root: Folder containing ``cifar-10-batches-py``.
        split: ``"train"`` (data_batch_1..5) or ``"test"`` (test_batch).
        download: Fetch the archive with torchvision if files are missing (a failed download
            leaves nothing behind and raises ``DatasetMissingError``).
        transform: Optional callable applied to each PIL image.

    Raises:
        DatasetMissingError: files missing with ``download=False``, or the download failed.
    """

    spec = _CIFAR10

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        download: bool = False,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        check_split(split, ("train", "test"), self.spec.name)
        root = Path(root).expanduser()
        folder = root / self.spec.folder
        files = [folder / f for f in (self.spec.train if split == "train" else self.spec.test)]
        if not all(f.is_file() for f in files):
            if not download:
                raise DatasetMissingError(
                    missing_data_message(self.spec.name, root, self.spec.layout, self.spec.url)
                )
            _download(self.spec, root, files)
        parts = [read_cifar_batch(f, self.spec.label_key) for f in files]
        data = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))  # (N, 32, 32, 3)
        targets = [t for p in parts for t in p[1]]
        super().__init__(data, targets, _class_names(folder, self.spec), transform)


class CIFAR100(CIFAR10):
    """CIFAR-100 (fine labels) from ``root/cifar-100-python``; same arguments as ``CIFAR10``."""

    spec = _CIFAR100
