"""Tiny ImageNet (200 classes, 64 px) read from the original unzipped layout, no prep step."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DataError, DataPathError
from .base import check_split, fetch_if_missing, missing_data_message
from .folder import FileListDataset, class_samples

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"  # the official archive (CS231n)
FOLDER = "tiny-imagenet-200"
LAYOUT = (f"{FOLDER}/{{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
          "val/val_annotations.txt}")


def _base_folder(root: Path, download: bool) -> Path:
    """``root/tiny-imagenet-200`` (or ``root`` itself if it is that folder), fetched if asked."""
    if (root / "wnids.txt").is_file() and not (root / FOLDER / "wnids.txt").is_file():
        return root  # root is the unpacked folder itself
    fetch_if_missing(download, lambda tv: tv.utils.download_and_extract_archive(URL, str(root)),
                     [root, root / FOLDER], (root / FOLDER / "wnids.txt").is_file,
                     partial(missing_data_message, "tiny-imagenet", root, LAYOUT, URL))
    return root / FOLDER


def read_val_annotations(path: Path, label_of: dict[str, int]) -> list[tuple[str, int]]:
    """``(image path, label)`` pairs of ``val_annotations.txt`` (``file<TAB>wnid<TAB>box``)
    in file order; ``label_of`` maps wnid -> label."""
    if not path.is_file():
        raise DataPathError(f"tiny-imagenet: {path} not found; expected root/{LAYOUT}")
    samples = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or fields[1] not in label_of:
            raise DataError(f"{path}:{n}: expected '<file> <wnid from wnids.txt> ...', "
                            f"got {line!r}")
        samples.append((str(path.parent / "images" / fields[0]), label_of[fields[1]]))
    return samples


class TinyImageNet(FileListDataset):
    """Tiny ImageNet from ``root/tiny-imagenet-200`` (or that folder): 64 x 64 RGB, labels
    0..199 in sorted-wnid order (as an ImageFolder over ``train/``).

    ``split`` is ``"train"`` (100k) or ``"val"`` (10k; ``"test"`` is an alias: the official test
    images have no labels). ``download`` fetches and unzips the CS231n archive if missing."""

    def __init__(self, root: str | Path, split: str = "train", download: bool = False,
                 on_bad_image: str = "error",
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        check_split(split, ("train", "val", "test"), "tiny-imagenet")
        base = _base_folder(Path(root).expanduser(), download)
        classes = sorted((base / "wnids.txt").read_text().split())
        label_of = {w: i for i, w in enumerate(classes)}
        folder = base / ("train" if split == "train" else "val")
        if split == "train":
            samples = class_samples(folder, classes, strict=True, sub="images")
        else:
            samples = read_val_annotations(folder / "val_annotations.txt", label_of)
        super().__init__(samples, classes, folder, on_bad_image, transform)
