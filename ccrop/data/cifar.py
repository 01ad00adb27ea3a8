"""CIFAR-10 / CIFAR-100 read from the original python pickle batches, unpickling nothing but
numpy arrays (torchvision only fetches the archive: its reader unpickles without restriction)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import ArrayDataset, check_split, fetch_if_missing, missing_data_message

#: What a truncated or corrupt pickle raises (``KeyError`` is a ``LookupError``; a non-dict).
_CORRUPT = (EOFError, pickle.UnpicklingError, ValueError, TypeError, LookupError, AttributeError)


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, so a tampered batch file cannot run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")}  # _codecs.encode: bytes in protocol-2 pickles

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core.") :]  # numpy 2 renamed the module
        return super().find_class(module, name)


def _read(path: Path, parse: Callable[[dict[str, Any]], Any]) -> Any:
    """``parse`` of a CIFAR pickle (Python 2 or 3) as a dict with str keys; ``DataError`` naming
    the file if it is truncated or not what ``parse`` expects."""
    try:
        with open(path, "rb") as f:
            entry = _NumpyUnpickler(f, encoding="latin1").load()
        return parse({k.decode("latin1") if isinstance(k, bytes) else k: v
                      for k, v in entry.items()})
    except _CORRUPT as exc:
        raise DataError(f"{path}: truncated or corrupt CIFAR pickle ({exc!r}); expected a python "
                        "pickle dict holding 'data' (N x 3072 uint8) and the labels") from exc


def read_cifar_batch(path: str | Path, label_key: str) -> tuple[np.ndarray, list[int]]:
    """Read one CIFAR python batch, e.g. ``cifar-10-batches-py/data_batch_1``, with labels under
    ``label_key`` (``"labels"``, CIFAR-100: ``"fine_labels"``): uint8 (N, 32, 32, 3), N labels."""
    def parse(entry: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
        labels = [int(t) for t in entry[label_key]]  # a wrong size fails the reshape
        images = np.asarray(entry["data"]).reshape(len(labels), 3, 32, 32)
        return images.transpose(0, 2, 3, 1), labels

    return _read(Path(path), parse)


class CIFAR10(ArrayDataset):
    """CIFAR-10 from ``root/cifar-10-batches-py``: ``data`` uint8 (N, 32, 32, 3), ``targets``.

    ``split``: ``"train"`` (data_batch_1..5) or ``"test"``. ``download`` fetches the archive if
    files are missing (``DatasetMissingError`` if off or failed; a failure leaves nothing)."""

    name, folder = "cifar10", "cifar-10-batches-py"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # what torchvision fetches
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    label_key, meta = "labels", ("batches.meta", "label_names")
    layout = "cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}"

    def __init__(self, root: str | Path, split: str = "train", download: bool = False,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        check_split(split, ("train", "test"), self.name)
        root = Path(root).expanduser()
        folder = root / self.folder
        files = [folder / f for f in self.files[split]]
        fetch_if_missing(
            download,
            lambda tv: getattr(tv, self.name.upper())(str(root), train=True, download=True),
            [root, folder], lambda: all(f.is_file() for f in files),
            partial(missing_data_message, self.name, root, self.layout, self.url))
        parts = [read_cifar_batch(f, self.label_key) for f in files]
        meta = folder / self.meta[0]
        classes = []
        if meta.is_file():
            classes = _read(meta, lambda e: [str(n) for n in e[self.meta[1]]])
        data = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))  # (N, 32, 32, 3)
        super().__init__(data, [t for p in parts for t in p[1]], classes, transform)


class CIFAR100(CIFAR10):
    """CIFAR-100 (fine labels) from ``root/cifar-100-python``; same arguments as ``CIFAR10``."""

    name, folder = "cifar100", "cifar-100-python"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    files = {"train": ["train"], "test": ["test"]}
    label_key, meta = "fine_labels", ("meta", "fine_label_names")
    layout = "cifar-100-python/{train, test, meta}"
