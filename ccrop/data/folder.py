"""Image files on disk: robust RGB loading and folder datasets (ImageFolder, unlabeled, subsets)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from .base import ImageDataset
from .images import to_rgb

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
    ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
)  # fmt: skip
BAD_IMAGE_MODES = ("error", "skip")
_EXIF_ORIENTATION = 0x0112


class BadImageError(ValueError):
    """An image file that exists but cannot be decoded (corrupt, truncated, empty, unknown)."""


def _exif_upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; keep the image as stored if the EXIF block is malformed."""
    try:
        if img.getexif().get(_EXIF_ORIENTATION, 1) in (None, 1):
            return img
        return ImageOps.exif_transpose(img)
    except Exception as exc:  # malformed EXIF must not make a decodable image unusable
        logger.debug("ignoring unreadable EXIF in %s: %r", getattr(img, "filename", "?"), exc)
        return img


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as an upright 8-bit RGB PIL image.

    Modes are converted by ``ccrop.data.images.to_rgb``: grayscale, 16-bit (rescaled to 8 bit),
    CMYK, palette; alpha is dropped (as torchvision's loader does). The EXIF orientation is
    applied; a malformed EXIF block is ignored rather than failing the image.

    Args:
        path: Image file.

    Returns:
        Fully decoded RGB image; the file is closed.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BadImageError: the file is empty, corrupt, truncated or not an image (a ``ValueError``).
    """
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now: truncated files fail here, inside the try
        return to_rgb(_exif_upright(img), exif=False)
    except FileNotFoundError:
        raise
    except Exception as exc:
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        why = "the file is empty (0 bytes)" if empty else f"{type(exc).__name__}: {exc}"
        raise BadImageError(
            f"{path}: cannot decode image ({why}); expected a readable image file "
            f"({', '.join(e[1:] for e in IMG_EXTENSIONS[:4])}, ...)"
        ) from exc


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_images(folder: str | Path) -> list[str]:
    """All image files under ``folder``, recursively, sorted; hidden files and folders skipped.

    Args:
        folder: Folder to scan.

    Returns:
        Sorted file paths with an image extension (case-insensitive).
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        found += [
            os.path.join(dirpath, f)
            for f in filenames
            if _visible(f) and f.lower().endswith(IMG_EXTENSIONS)
        ]
    return sorted(found)


def split_folder(root: str | Path, split: str, layout: str) -> Path:
    """The folder holding one split: ``root/split`` if it exists, else ``root`` itself.

    Args:
        root: Dataset root.
        split: Split name (``train``, ``val``, ...).
        layout: Expected layout, quoted in errors.

    Returns:
        Folder to scan.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} not found; expected the layout {layout}")
    if (root / split).is_dir():
        return root / split
    present = [s for s in ("train", "val", "test", "unlabeled") if (root / s).is_dir()]
    if present:
        raise FileNotFoundError(f"{root / split} not found; {root} has split folders {present}")
    if split != "train":
        logger.warning(
            "no %r sub-folder in %s; using the folder itself as split %r", split, root, split
        )
    return root


def read_class_list(path: str | Path) -> list[str]:
    """Read a class list: one class folder name (e.g. a WordNet id) per line.

    Only the first word of each line counts; blank lines and lines starting with ``#`` are skipped.

    Args:
        path: Text file.

    Returns:
        Class names in file order (index = label).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"class_list {path} not found; expected a text file, one wnid a line"
        )
    names = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip() and ln[0] != "#"]
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if not names or dupes:
        raise ValueError(
            f"class_list {path}: expected unique class names, got {len(names)}, dupes {dupes}"
        )
    return names


class FileListDataset(ImageDataset):
    """Dataset over a list of ``(image path, label)`` pairs, decoded with ``load_rgb``.

    Args:
        samples: ``(path, label)`` pairs; label -1 where there is none.
        classes: Class names, index = label.
        root: Where the samples came from, named in errors.
        on_bad_image: ``"error"`` raises ``BadImageError`` naming the file; ``"skip"`` logs a
            warning, records the path in ``bad_images`` (this process only) and returns the next
            readable item instead.
        transform: Optional callable applied to each PIL image.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str] = (),
        root: str | Path = "",
        on_bad_image: str = "error",
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        super().__init__(transform)
        if on_bad_image not in BAD_IMAGE_MODES:
            raise ValueError(f"on_bad_image={on_bad_image!r}; allowed: {list(BAD_IMAGE_MODES)}")
        if not samples:
            raise ValueError(f"no images found under {root}; the dataset would be empty")
        self.samples = [(str(p), int(t)) for p, t in samples]
        self.targets = [t for _, t in self.samples]
        self.classes = list(classes)
        self.root = str(root)
        self.on_bad_image = on_bad_image
        self.bad_images: list[str] = []
        self._bad: set[int] = set()
        # shared with DataLoader workers, so the main process can count every skipped file
        self.bad_mask = torch.zeros(len(self.samples), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def skipped_paths(self) -> list[str]:
        """Paths skipped as unreadable so far, by this process or any DataLoader worker."""
        return [self.samples[i][0] for i in torch.nonzero(self.bad_mask).flatten().tolist()]

    def load(self, index: int) -> tuple[Image.Image, int]:
        """Return ``(PIL RGB image, label)``; in skip mode the next readable item if needed."""
        n = len(self.samples)
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            path, target = self.samples[i]
            try:
                return load_rgb(path), target
            except (BadImageError, OSError) as exc:
                if self.on_bad_image == "error":
                    raise
                self._bad.add(i)
                self.bad_mask[i] = True
                self.bad_images.append(path)
                logger.warning("skipping bad image (%d so far): %s", len(self.bad_images), exc)
        raise ValueError(f"no readable image under {self.root}: all {n} files failed to decode")


_FOLDER_LAYOUT = "root/[train|val/]<class>/<images> (e.g. ImageNet: root/train/n01440764/*.JPEG)"


def class_samples(
    folder: Path, classes: Sequence[str], strict: bool, sub: str = ""
) -> list[tuple[str, int]]:
    """Samples of every class folder ``folder/<class>/<sub>``, label = index in ``classes``.

    An empty class folder is skipped with a warning but keeps its label.

    Args:
        folder: Split folder.
        classes: Class folder names.
        strict: Raise ``FileNotFoundError`` if a class folder is missing.
        sub: Optional path inside each class folder (``"images"`` for Tiny ImageNet).

    Returns:
        ``(image path, label)`` pairs.
    """
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        class_dir = folder / name / sub if sub else folder / name
        if strict and not class_dir.is_dir():
            raise FileNotFoundError(f"class {name!r} has no folder {class_dir}")
        files = list_images(class_dir)
        if not files:
            logger.warning(
                "empty class folder %s ignored (label %d has no images)", class_dir, label
            )
        samples += [(f, label) for f in files]
    return samples


class ImageFolder(FileListDataset):
    """Labelled images in class sub-folders, e.g. ImageNet-1K, or ImageNet-200 with a class list.

    Labels follow the sorted class-folder names, or the order of ``class_list`` if given (then
    only the listed classes are read). An empty class folder is ignored with a warning but keeps
    its label, so labels stay the same across splits.

    Args:
        root: Dataset root; the split is ``root/<split>`` if that folder exists, else ``root``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        class_list: Optional text file, one class folder name (wnid) per line.
        on_bad_image: ``"error"`` or ``"skip"`` (see ``FileListDataset``).
        transform: Optional callable applied to each PIL image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        class_list: str | Path | None = None,
        on_bad_image: str = "error",
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        folder = split_folder(root, split, _FOLDER_LAYOUT)
        if class_list is not None:
            classes = read_class_list(class_list)
        else:
            classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and _visible(e.name))
        samples = class_samples(folder, classes, strict=class_list is not None)
        super().__init__(samples, classes, folder, on_bad_image, transform)


class UnlabeledFolder(FileListDataset):
    """Every image under a folder, recursively, with label -1.

    Args:
        root: Folder; the split is ``root/<split>`` if that folder exists, else ``root``.
        split: ``"train"``, ``"unlabeled"``, ``"val"`` or ``"test"``.
        on_bad_image: ``"error"`` or ``"skip"`` (see ``FileListDataset``).
        transform: Optional callable applied to each PIL image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        on_bad_image: str = "error",
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        folder = split_folder(root, split, "root/**/<images> (any nesting)")
        samples = [(f, -1) for f in list_images(folder)]
        super().__init__(samples, [], folder, on_bad_image, transform)
