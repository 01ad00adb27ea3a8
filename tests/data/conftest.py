"""Fixtures writing tiny datasets in their real on-disk formats (nothing is downloaded).

Each writer follows the published file format, independently of the readers under test, and
returns the arrays it wrote so tests can check exact round trips.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

KNOWN_PIXEL = (3, 5)  # (row, col) of a pixel with a known value in the first CIFAR image
KNOWN_RGB = (10, 200, 30)


@dataclass
class Written:
    """What a fixture wrote: its root and the expected images / labels per split."""

    root: Path
    images: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (N, H, W, 3) or (N,H,W)
    labels: dict[str, list[int]] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)


def _cifar_row_major(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072): the red plane, then green, then blue, each row by row."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def _dump(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """CIFAR-10 (5 train batches of 2 images, test batch of 3; str keys, as unpickled from the
    Python 2 originals with latin1) and CIFAR-100 (bytes keys, fine + coarse labels)."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    out = Written(root)
    c10 = root / "cifar-10-batches-py"
    c10.mkdir()
    train = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    train[0][KNOWN_PIXEL] = KNOWN_RGB
    train_labels = [int(x) for x in rng.integers(0, 10, 10)]
    for b in range(5):
        sl = slice(2 * b, 2 * b + 2)
        _dump(c10 / f"data_batch_{b + 1}", {
            "batch_label": f"training batch {b + 1} of 5", "labels": train_labels[sl],
            "data": _cifar_row_major(train[sl]), "filenames": [f"img_{i}.png" for i in range(2)],
        })  # fmt: skip
    test = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    test_labels = [9, 0, 4]
    _dump(c10 / "test_batch", {"labels": test_labels, "data": _cifar_row_major(test)})
    names = [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    ]  # fmt: skip
    _dump(c10 / "batches.meta", {"label_names": names, "num_vis": 3072})
    out.images.update(train=train, test=test)
    out.labels.update(train=train_labels, test=test_labels)
    out.extra.update(known_pixel=KNOWN_PIXEL, known_rgb=KNOWN_RGB)

    c100 = root / "cifar-100-python"
    c100.mkdir()
    for split, n in (("train", 4), ("test", 2)):
        imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = [int(x) for x in rng.integers(0, 100, n)]
        _dump(c100 / split, {
            b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
            b"data": _cifar_row_major(imgs),
        })  # fmt: skip
        out.images[f"100-{split}"], out.labels[f"100-{split}"] = imgs, fine
    _dump(c100 / "meta", {b"fine_label_names": [f"class{i}" for i in range(100)]})
    return out


def _stl_pattern(seed: int) -> np.ndarray:
    """An upright 96 x 96 RGB image with an asymmetric marker: red bar top-left, green dot."""
    img = np.random.default_rng(seed).integers(0, 100, (96, 96, 3), dtype=np.uint8)
    img[0:10, 0:30] = (255, 0, 0)  # wide, short bar at the top-left
    img[80, 10] = (0, 255, 0)  # lower-left dot
    return img


def _stl_column_major(images: np.ndarray) -> bytes:
    """(N, 96, 96, 3) upright -> STL bytes: per image, per channel, column by column."""
    return images.transpose(0, 3, 2, 1).tobytes()  # (N, C, W, H): row index fastest


@pytest.fixture(scope="session")
def stl_root(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """STL-10 binaries: 3 train, 2 test, 4 unlabeled images; labels stored as 1..10."""
    root = tmp_path_factory.mktemp("stl")
    folder = root / "stl10_binary"
    folder.mkdir()
    out = Written(root)
    counts = {"train": 3, "test": 2, "unlabeled": 4}
    seed = 0
    for split, n in counts.items():
        imgs = np.stack([_stl_pattern(seed + i) for i in range(n)])
        seed += n
        (folder / f"{split}_X.bin").write_bytes(_stl_column_major(imgs))
        out.images[split] = imgs
        if split != "unlabeled":
            labels = [0, 9, 4][:n]
            (folder / f"{split}_y.bin").write_bytes(bytes(t + 1 for t in labels))
            out.labels[split] = labels
    (folder / "class_names.txt").write_text("airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\n"
                                            "ship\ntruck\n")  # fmt: skip
    return out


TINY_WNIDS = ["n03000000", "n01000000", "n02000000"]  # deliberately not sorted
TINY_COLORS = {"n01000000": (250, 10, 10), "n02000000": (10, 250, 10), "n03000000": (10, 10, 250)}


def _solid_jpeg(path: Path, color: tuple[int, int, int], gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (64, 64), color)
    (img.convert("L") if gray else img).save(path, quality=95)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Tiny ImageNet tree: 3 classes x 2 train JPEGs (one grayscale), 4 val images, test/."""
    root = tmp_path_factory.mktemp("tiny")
    base = root / "tiny-imagenet-200"
    base.mkdir()
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in TINY_WNIDS))
    for w in TINY_WNIDS:
        for i in range(2):
            gray = w == "n02000000" and i == 1  # Tiny ImageNet has grayscale JPEGs
            _solid_jpeg(base / "train" / w / "images" / f"{w}_{i}.JPEG", TINY_COLORS[w], gray)
        (base / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t63\t63\n")
    val = [("val_0.JPEG", "n02000000"), ("val_1.JPEG", "n03000000"), ("val_2.JPEG", "n01000000"),
           ("val_3.JPEG", "n02000000")]  # fmt: skip
    for name, w in val:
        _solid_jpeg(base / "val" / "images" / name, TINY_COLORS[w])
    (base / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{w}\t1\t2\t60\t61\n" for name, w in val)
    )
    _solid_jpeg(base / "test" / "images" / "test_0.JPEG", (128, 128, 128))
    out = Written(root, extra=dict(wnids=TINY_WNIDS, colors=TINY_COLORS))
    out.labels["val"] = [sorted(TINY_WNIDS).index(w) for _, w in val]
    return out


def _png(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _rgb_image(seed: int, size: tuple[int, int] = (12, 10)) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Clean ImageFolder with split folders: train/{cat,dog} 3 + 2 PNGs, val/{cat,dog} 1 + 1."""
    root = tmp_path_factory.mktemp("folder")
    out = Written(root)
    seed = 100
    for split, counts in (("train", {"cat": 3, "dog": 2}), ("val", {"cat": 1, "dog": 1})):
        for cls, n in counts.items():
            for i in range(n):
                _png(root / split / cls / f"{i:03d}.png", _rgb_image(seed))
                seed += 1
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / ".hidden").mkdir()
    return out


def _exif_jpeg(path: Path) -> None:
    """Stored 40 wide x 20 high, red block at the stored top-left, EXIF orientation 6 (the viewer
    rotates it 90 degrees clockwise: displayed 20 wide x 40 high, block at the top-right)."""
    arr = np.full((20, 40, 3), 40, np.uint8)
    arr[0:8, 0:8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, quality=95, exif=exif)


@pytest.fixture(scope="session")
def messy_root(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """ImageFolder of every awkward kind of file: modes, EXIF, corrupt, empty, truncated."""
    root = tmp_path_factory.mktemp("messy")
    a, b = root / "a", root / "b"
    _png(a / "01_rgb.png", _rgb_image(1))
    _png(a / "02_gray.png", Image.new("L", (9, 7), 77))
    rgba = Image.new("RGBA", (6, 6), (200, 100, 50, 0))  # fully transparent
    _png(a / "03_rgba.png", rgba)
    pal = Image.new("P", (5, 5), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(0, (0, 0, 1, 5))  # left column: entry 0, the transparent one
    pal.info["transparency"] = 0
    _png(a / "04_palette.png", pal)
    deep = np.array([[0, 32896, 65535]], np.uint16).repeat(4, 0)  # 0, half, full scale
    _png(a / "05_deep16.png", Image.fromarray(deep))
    a.mkdir(exist_ok=True)
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(a / "06_cmyk.jpg", quality=95)  # white
    _exif_jpeg(a / "07_exif.jpg")
    b.mkdir()
    (b / "01_corrupt.jpg").write_bytes(b"this is not a JPEG at all" * 4)
    (b / "02_empty.png").write_bytes(b"")
    good = _png(b / "03_good.png", _rgb_image(3))
    jpg = b / "04_truncated.jpg"
    _rgb_image(4, (64, 64)).save(jpg, quality=90)
    jpg.write_bytes(jpg.read_bytes()[:300])
    _png(b / "05_good.png", _rgb_image(5))
    (root / "empty").mkdir()
    out = Written(root)
    out.extra["bad"] = [str(b / "01_corrupt.jpg"), str(b / "02_empty.png"), str(jpg)]
    out.extra["good_after_bad"] = str(good)
    return out


def _idx_bytes(arr: np.ndarray) -> bytes:
    """IDX: two zero bytes, type 0x08 (ubyte), ndim, big-endian int32 dims, then the data."""
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """Fashion-MNIST IDX files: train gzipped (5 images), t10k plain (3 images)."""
    root = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    out = Written(root)
    for prefix, split, n, gz in (("train", "train", 5, True), ("t10k", "test", 3, False)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3", imgs), ("labels-idx1", labels)):
            data = _idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        out.images[split], out.labels[split] = imgs, labels.tolist()
    return out


def _edges_touch_mask(mask: np.ndarray, box: np.ndarray) -> bool:
    """Every edge of the pixel box (x0, y0, x1, y1) has a mask pixel on it, none outside."""
    x0, y0, x1, y1 = box
    inside = np.zeros_like(mask)
    inside[y0:y1, x0:x1] = True
    sub = mask[y0:y1, x0:x1]
    return not (mask & ~inside).any() and all(
        e.any() for e in (sub[0], sub[-1], sub[:, 0], sub[:, -1])
    )


@pytest.fixture(scope="session")
def edges_touch_mask():
    """The check that a pixel box is the tight extent of a bool mask (H, W): ``f(mask, box)``.
    A fixture, since conftest modules cannot be imported by path (tests are not packages)."""
    return _edges_touch_mask
