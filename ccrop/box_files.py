"""Import and export per-image object boxes: CSV, COCO-style JSON and torch ``.pt`` files.

Every format holds at most one box per dataset image, in the ccrop convention of
``ccrop.boxes`` (``(x0, y0, x1, y1)`` normalised to [0, 1]). Rows are addressed by dataset index
or, for folder datasets (``dataset.samples[i][0]``), by image path. Export then import gives the
same float32 boxes bit for bit.

``.csv``
    A header row, then one row per image. Columns, in any order: ``index`` and/or ``path``, plus
    ``x0,y0,x1,y1`` normalised. Other columns (a score, a label) are ignored; blank lines too.
    With both ``index`` and ``path`` the index is used and a non-empty path must name the same
    image. Values are checked after rounding to float32. The writer prints ``repr`` of each
    float32 value, which reads back exactly.
``.json`` (COCO-style)
    ``{"images": [{"id", "file_name"?, "width", "height"}],
    "annotations": [{"image_id", "bbox": [x, y, w, h]}]}`` with ``bbox`` in pixels. An image's
    dataset index is found by ``file_name`` when the dataset has paths and the entry has a
    ``file_name``; otherwise ``id`` is the dataset index (``file_name`` is then ignored). Every
    image entry needs a positive ``width`` and ``height``. The writer emits a file that
    ``pycocotools`` loads and evaluates: image ``id`` = dataset index (from 0), ``file_name`` =
    the image path (the index as text for a dataset without paths), ``width``/``height`` in
    pixels (1 when no sizes are given: the bbox is then normalised); annotation ``id`` = index + 1
    (COCOeval treats id 0 as "unmatched"), ``category_id`` 1, ``iscrowd`` 0, ``area`` in square
    pixels, and ``categories`` ``[{"id": 1, "name": "object"}]``. The reader needs none of
    these extra keys, so files of older versions (annotation ids from 0) read the same.
    Several annotations on one image give their union (the smallest box enclosing all of
    them): ccrop keeps one box per image, and cropping around every object is the safe choice.
    Float overshoot up to 1e-6 outside [0, 1] is clamped; more is an error.
``.pt``
    ``torch.load(weights_only=True)`` of an (N, 4) float tensor or of a dict
    ``{"boxes": (N, 4), "paths": [str, ...] or None}``; N must equal the number of images. When
    both the file and the dataset have paths, rows are matched to images by path (exact, else
    suffix, as for CSV), so a file written with another image order is reordered; every image
    must appear exactly once. Stored paths are ignored for a dataset without paths.

Path matching (CSV ``path``, JSON ``file_name``, ``.pt`` paths): the exact path (after
normalising ``/`` and ``\\``, ``.`` and ``..``), else a relative path matches a dataset path that
ends with it on a component boundary (``n01440764/x.JPEG`` matches
``/data/train/n01440764/x.JPEG`` but not ``/data/train/an01440764/x.JPEG``). A suffix shared by
several images is an error; an absolute path must match exactly.

Degenerate boxes of zero width or height are accepted (the crop code handles them). Images
without a box get the full image ``(0, 0, 1, 1)`` and are counted as missing.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import posixpath
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from .boxes import check_boxes
from .crop import FULL_BOX

SUFFIXES = (".csv", ".json", ".pt")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
CLAMP_TOL = 1e-6  # float overshoot of a pixel bbox outside [0, 1] that is clamped, not rejected
_PT_LAYOUT = "an (N, 4) float tensor or a dict {'boxes': (N, 4) tensor, 'paths': [str] or None}"
_COCO_LAYOUT = '{"images": [{"id", "width", "height", ...}], "annotations": [...]}'

Box = tuple[float, float, float, float]


class BoxFileError(ValueError):
    """A box file that cannot be read or written; the message names the file and the row."""


def _fmt(v: float) -> str:
    """Short text of a value for messages (float32 precision)."""
    return f"{v:.7g}"


def _f32(v: float) -> float:
    """Round a Python float to the nearest float32 value (beyond float32 range: +-inf)."""
    return float(np.float32(v))


def _check_box(values: Sequence[float], where: str) -> Box:
    """Round ``values`` (x0, y0, x1, y1) to float32 and validate them; ``where`` prefixes errors."""
    box = tuple(_f32(float(v)) for v in values)
    for name, v in zip(BOX_COLUMNS, box):
        if not math.isfinite(v):
            raise BoxFileError(f"{where}: value '{_fmt(v)}' is not a finite number (column {name})")
        if not 0.0 <= v <= 1.0:
            raise BoxFileError(f"{where}: {name}={_fmt(v)} is outside [0, 1] (normalised)")
    for lo, hi in ((0, 2), (1, 3)):
        if box[hi] < box[lo]:
            raise BoxFileError(
                f"{where}: {BOX_COLUMNS[hi]}={_fmt(box[hi])} is less than "
                f"{BOX_COLUMNS[lo]}={_fmt(box[lo])}"
            )
    return box  # type: ignore[return-value]


def _norm(path: str) -> str:
    return posixpath.normpath(str(path).replace("\\", "/"))


class _PathIndex:
    """Dataset index of a path named in a box file: exact match, else a component suffix."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [str(p) for p in paths]
        self._tails: dict[int, dict[tuple[str, ...], list[int]]] = {}

    @cached_property
    def _exact(self) -> dict[str, int]:
        exact: dict[str, int] = {}
        for i, p in enumerate(self.paths):
            exact.setdefault(_norm(p), i)
        return exact

    def _tail(self, k: int) -> dict[tuple[str, ...], list[int]]:
        """Dataset images keyed by their last ``k`` path components (built once per ``k``)."""
        if k not in self._tails:
            table: dict[tuple[str, ...], list[int]] = {}
            for i, p in enumerate(self.paths):
                parts = [c for c in _norm(p).split("/") if c]
                if len(parts) >= k:
                    table.setdefault(tuple(parts[-k:]), []).append(i)
            self._tails[k] = table
        return self._tails[k]

    def find(self, path: str, where: str) -> int:
        """Index of the dataset image ``path`` names; ``BoxFileError`` prefixed by ``where``."""
        norm = _norm(path)
        if norm in self._exact:
            return self._exact[norm]
        parts = tuple(c for c in norm.split("/") if c)
        hits = [] if norm.startswith("/") or not parts else self._tail(len(parts)).get(parts, [])
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise BoxFileError(f"{where}: path {path!r} is not an image of this dataset")
        examples = ", ".join(repr(self.paths[i]) for i in hits[:2])
        raise BoxFileError(
            f"{where}: path {path!r} is ambiguous: it ends {len(hits)} image paths of this "
            f"dataset ({examples}, ...); give more of the path"
        )


def _check_index(value: Any, where: str, num_images: int, what: str = "index") -> int:
    """A dataset index from a file value (int, or text of one); range-checked."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise BoxFileError(f"{where}: {what} {value!r} is not a whole number") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BoxFileError(f"{where}: {what} {value!r} is not a whole number (dataset index)")
    if not 0 <= value < num_images:
        raise BoxFileError(f"{where}: {what} {value} is out of range for {num_images} images")
    return value


def _assemble(rows: dict[int, Box], num_images: int) -> tuple[torch.Tensor, int]:
    """(N, 4) float32 boxes from ``{index: box}``; absent images get the full box."""
    boxes = torch.tensor(FULL_BOX, dtype=torch.float32).repeat(num_images, 1)  # (N, 4)
    if rows:
        boxes[torch.tensor(list(rows))] = torch.tensor(list(rows.values()), dtype=torch.float32)
    return boxes, num_images - len(rows)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BoxFileError(f"{path}: not UTF-8 text; expected a {path.suffix} file") from None
    except OSError as exc:
        raise BoxFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


# ---------------------------------------------------------------- CSV


def _csv_columns(header: list[str], where: str, has_paths: bool) -> dict[str, int]:
    """Column positions from the header row (names stripped, lower-cased)."""
    names = [h.strip().lower() for h in header]
    dupes = sorted({n for n in names if names.count(n) > 1 and n})
    expected = "expected columns index and/or path, and x0,y0,x1,y1"
    if dupes:
        raise BoxFileError(f"{where}: header names column(s) {dupes} twice; {expected}")
    cols = {n: i for i, n in enumerate(names)}
    lacking = [c for c in BOX_COLUMNS if c not in cols]
    if lacking:
        raise BoxFileError(f"{where}: header lacks column(s) {','.join(lacking)}; {expected}")
    if "index" not in cols and "path" not in cols:
        raise BoxFileError(f"{where}: header names neither an index nor a path column; {expected}")
    if "index" not in cols and not has_paths:
        raise BoxFileError(
            f"{where}: rows are given by path, but this dataset has no image paths "
            "(an array dataset such as CIFAR); give an index column instead"
        )
    return cols


def _csv_index(
    row: list[str], cols: dict[str, int], where: str, num_images: int, lookup: _PathIndex | None
) -> int:
    """Dataset index of one CSV row: the index column, checked against the path if both."""
    path = row[cols["path"]].strip() if "path" in cols else ""
    if "index" not in cols:
        if not path:
            raise BoxFileError(f"{where}: empty path (and no index column)")
        assert lookup is not None  # _csv_columns made sure
        return lookup.find(path, where)
    index = _check_index(row[cols["index"]], where, num_images)
    if path and lookup is not None:
        found = lookup.find(path, where)
        if found != index:
            raise BoxFileError(
                f"{where}: path {path!r} is image {found} of this dataset, but index says {index}"
            )
    return index


def _csv_number(text: str, where: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BoxFileError(
            f"{where}: value {text.strip()!r} is not a number (column {name})"
        ) from None


def _read_csv(path: Path, num_images: int, lookup: _PathIndex | None) -> dict[int, Box]:
    """``{index: box}`` from a CSV file (see the module docstring)."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    cols: dict[str, int] | None = None
    seen: dict[int, int] = {}  # dataset index -> line number
    rows: dict[int, Box] = {}
    try:
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue  # blank line
            if cols is None:
                cols, header = _csv_columns(row, where, lookup is not None), row
                continue
            if len(row) != len(header):
                names = ",".join(h.strip() for h in header)
                raise BoxFileError(
                    f"{where}: expected {len(header)} values ({names}), got {len(row)}"
                )
            index = _csv_index(row, cols, where, num_images, lookup)
            if index in seen:
                raise BoxFileError(
                    f"{where}: image {index} appears twice (lines {seen[index]} and "
                    f"{reader.line_num})"
                )
            values = [_csv_number(row[cols[c]], where, c) for c in BOX_COLUMNS]
            rows[index], seen[index] = _check_box(values, where), reader.line_num
    except csv.Error as exc:
        raise BoxFileError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None
    if cols is None:
        raise BoxFileError(
            f"{path}: the file is empty; expected a header row such as "
            "index,x0,y0,x1,y1 and one row per image"
        )
    return rows


# ---------------------------------------------------------------- COCO-style JSON


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _load_coco(path: Path) -> tuple[list[Any], list[Any]]:
    """The ``images`` and ``annotations`` lists of a COCO-style file."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise BoxFileError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"expected a COCO-style object {_COCO_LAYOUT}"
        ) from None
    if not isinstance(data, dict):
        raise BoxFileError(
            f"{path}: expected a COCO-style object {_COCO_LAYOUT}, got a JSON {type(data).__name__}"
        )
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise BoxFileError(f"{path}: has no {key!r} list; expected {_COCO_LAYOUT}")
    return data["images"], data["annotations"]


def _coco_images(
    images: list[Any], path: Path, num_images: int, lookup: _PathIndex | None
) -> dict[Any, tuple[int, float, float]]:
    """``{image id: (dataset index, width, height)}`` from the ``images`` list."""
    out: dict[Any, tuple[int, float, float]] = {}
    pos_of: dict[Any, int] = {}  # image id -> position in images
    index_of: dict[int, int] = {}  # dataset index -> position in images
    for pos, img in enumerate(images):
        where = f"{path} images[{pos}]"
        if not isinstance(img, dict) or "id" not in img:
            raise BoxFileError(f"{where}: expected an object with 'id', 'width' and 'height'")
        iid, where = img["id"], f"{where} (id {img['id']!r})"
        if not isinstance(iid, int | str):
            raise BoxFileError(f"{where}: expected an int or string image id")
        if iid in pos_of:
            raise BoxFileError(
                f"{where}: image id appears twice (images[{pos_of[iid]}] and images[{pos}])"
            )
        w, h = img.get("width"), img.get("height")
        if not (_is_number(w) and _is_number(h) and w > 0 and h > 0):
            raise BoxFileError(
                f"{where}: expected positive 'width' and 'height' in pixels, "
                f"got width={w!r}, height={h!r}"
            )
        name = img.get("file_name")
        if lookup is not None and isinstance(name, str) and name:
            index = lookup.find(name, where)
        else:
            index = _check_index(iid, where, num_images, "id")
        if index in index_of:
            raise BoxFileError(
                f"{where}: dataset image {index} is listed twice "
                f"(images[{index_of[index]}] and images[{pos}])"
            )
        pos_of[iid], index_of[index], out[iid] = pos, pos, (index, float(w), float(h))
    return out


def _coco_bbox(ann: Any, where: str, width: float, height: float) -> list[float]:
    """Normalised float64 (x0, y0, x1, y1) of one annotation's pixel ``bbox``."""
    bbox = ann.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
        raise BoxFileError(
            f"{where}: expected 'bbox' [x, y, w, h] of 4 finite numbers in pixels, got {bbox!r}"
        )
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise BoxFileError(f"{where}: bbox {bbox} has a negative width or height")
    # x1 as (x + w) / W in float64: the writer's bbox then reads back to the same float32
    box = [x / width, y / height, (x + w) / width, (y + h) / height]
    for k, v in enumerate(box):
        if not -CLAMP_TOL <= v <= 1 + CLAMP_TOL:
            raise BoxFileError(
                f"{where}: bbox {bbox} leaves the {_fmt(width)}x{_fmt(height)} image "
                f"({BOX_COLUMNS[k]}={_fmt(v)} normalised, outside [0, 1])"
            )
        box[k] = min(max(v, 0.0), 1.0)
    return box


def _read_json(path: Path, num_images: int, lookup: _PathIndex | None) -> dict[int, Box]:
    """``{index: box}`` from a COCO-style file; several annotations of an image -> union box."""
    images, annotations = _load_coco(path)
    known = _coco_images(images, path, num_images, lookup)
    union: dict[Any, list[float]] = {}  # image id -> float64 (x0, y0, x1, y1)
    for k, ann in enumerate(annotations):
        where = f"{path} annotations[{k}]"
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        if not isinstance(iid, int | str) or iid not in known:
            raise BoxFileError(f"{where}: image_id {iid!r} is not an id listed in 'images'")
        _, width, height = known[iid]
        box = _coco_bbox(ann, f"{where} (image {iid!r})", width, height)
        if iid in union:
            old = union[iid]
            box = [
                min(old[0], box[0]),
                min(old[1], box[1]),
                max(old[2], box[2]),
                max(old[3], box[3]),
            ]
        union[iid] = box
    return {known[i][0]: _check_box(b, f"{path} image {i!r}") for i, b in union.items()}


# ---------------------------------------------------------------- .pt


def _load_pt(path: Path) -> tuple[Any, Any]:
    """``(boxes, stored paths or None)`` from a torch file, loaded with ``weights_only=True``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors alike
        # torch's own text may recommend unsafe loading; name the error type only
        raise BoxFileError(
            f"{path}: cannot load it as a box file saved by torch.save "
            f"({type(exc).__name__}); expected {_PT_LAYOUT}"
        ) from None
    if isinstance(obj, torch.Tensor):
        return obj, None
    if isinstance(obj, dict) and "boxes" in obj:
        return obj["boxes"], obj.get("paths")
    what = (
        f"a dict with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else type(obj).__name__
    )
    raise BoxFileError(f"{path}: expected {_PT_LAYOUT}, got {what}")


def _pt_order(stored: Any, path: Path, num_images: int, lookup: _PathIndex) -> torch.Tensor:
    """Dataset index of each stored row, matched by path; every image exactly once."""
    if not (isinstance(stored, list | tuple) and all(isinstance(p, str) for p in stored)):
        raise BoxFileError(f"{path}: 'paths' must be a list of strings, got {type(stored)}")
    if len(stored) != num_images:
        raise BoxFileError(f"{path}: holds {len(stored)} paths for {num_images} boxes")
    if list(stored) == lookup.paths:
        return torch.arange(num_images)
    row_of: dict[int, int] = {}  # dataset index -> row
    for r, p in enumerate(stored):
        index = lookup.find(p, f"{path} row {r}")
        if index in row_of:
            raise BoxFileError(
                f"{path} row {r}: path {p!r} is image {index}, as is row {row_of[index]}"
            )
        row_of[index] = r
    return torch.tensor([row_of[i] for i in range(num_images)])


def _read_pt(path: Path, num_images: int, lookup: _PathIndex | None) -> torch.Tensor:
    """(N, 4) float32 boxes from a ``.pt`` file, reordered by path when both sides have paths."""
    boxes, stored = _load_pt(path)
    if not (
        isinstance(boxes, torch.Tensor)
        and boxes.dim() == 2
        and boxes.shape[1] == 4
        and boxes.is_floating_point()
    ):
        what = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise BoxFileError(f"{path}: expected boxes as an (N, 4) float tensor, got {what}")
    if boxes.shape[0] != num_images:
        raise BoxFileError(
            f"{path}: holds {boxes.shape[0]} boxes, but the dataset has {num_images} images"
        )
    boxes = boxes.to(torch.float32)  # (N, 4)
    bad = ~torch.isfinite(boxes).all(dim=1) | ((boxes < 0) | (boxes > 1)).any(dim=1)
    bad |= (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])  # (N,)
    if bad.any():
        row = int(bad.nonzero()[0])
        _check_box(boxes[row].tolist(), f"{path} row {row}")  # raises, naming the problem
    if stored is not None and lookup is not None:
        boxes = boxes[_pt_order(stored, path, num_images, lookup)]
    return boxes.clone()


# ---------------------------------------------------------------- public API


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise BoxFileError(
            f"{path}: unknown suffix {path.suffix or '(none)'!r}; expected one of "
            f"{', '.join(SUFFIXES)}"
        )
    return suffix


def read_boxes(
    path: str | Path, num_images: int, paths: Sequence[str] | None = None
) -> tuple[torch.Tensor, int]:
    """Read per-image boxes from a ``.csv``, COCO-style ``.json`` or ``.pt`` file.

    Args:
        path: Box file; the format is chosen by its suffix (see the module docstring).
        num_images: Number of images N in the dataset.
        paths: N image paths of a folder dataset (``dataset.samples[i][0]``), or None for an
            array dataset, whose rows are addressed by index only.

    Returns:
        ``(boxes, missing)``: (N, 4) float32 normalised ``(x0, y0, x1, y1)`` boxes, and how many
        images had no box in the file (they get the full box ``(0, 0, 1, 1)``).

    Raises:
        BoxFileError: unknown suffix, unreadable file, or any bad row (named in the message).
    """
    path = Path(path).expanduser()
    suffix = _suffix(path)
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if paths is not None and len(paths) != num_images:
        raise ValueError(f"got {len(paths)} paths for {num_images} images")
    if not path.exists():
        raise BoxFileError(f"{path}: file not found; expected a box file ({', '.join(SUFFIXES)})")
    if path.is_dir():
        raise BoxFileError(f"{path} is a folder, not a box file")
    lookup = _PathIndex(paths) if paths is not None else None
    if suffix == ".pt":
        return _read_pt(path, num_images, lookup), 0
    read = _read_csv if suffix == ".csv" else _read_json
    return _assemble(read(path, num_images, lookup), num_images)


def check_output_path(path: str | Path) -> Path:
    """Check that a box file can be written at ``path``, before any expensive work.

    Args:
        path: Output file ending in ``.csv``, ``.json`` or ``.pt``.

    Returns:
        The path, with ``~`` expanded.

    Raises:
        BoxFileError: unknown suffix, ``path`` is a folder, a parent is a file, or the parent
            folder does not exist or is not writable.
    """
    path = Path(path).expanduser()
    _suffix(path)
    if path.is_dir():
        raise BoxFileError(f"{path} is a folder; expected a file name ending in .csv/.json/.pt")
    parent = path.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise BoxFileError(f"cannot write {path}: {existing} is a file, not a folder")
    if existing != parent:
        raise BoxFileError(f"cannot write {path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BoxFileError(f"cannot write {path}: folder {parent} is not writable")
    return path


@contextmanager
def _atomic_open(path: Path, binary: bool) -> Iterator[IO[Any]]:
    """A temp file next to ``path`` that replaces ``path`` only once fully written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        text = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, "wb" if binary else "w", **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_csv(
    f: IO[str], boxes: torch.Tensor, paths: list[str] | None, sizes: list[list[float]] | None
) -> None:
    writer = csv.writer(f, lineterminator="\n")
    with_paths = paths is not None
    writer.writerow(["index", *(["path"] if with_paths else []), *BOX_COLUMNS])
    for i, box in enumerate(boxes.tolist()):  # exact float32 values as Python floats
        name = [paths[i]] if with_paths else []
        writer.writerow([i, *name, *(repr(float(v)) for v in box)])


def _write_json(
    f: IO[str], boxes: torch.Tensor, paths: list[str] | None, sizes: list[list[float]] | None
) -> None:
    """COCO-style JSON that pycocotools loads and evaluates (see the module docstring)."""
    images, annotations = [], []
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        h, w = sizes[i] if sizes is not None else (1, 1)
        # image id = dataset index (0 is a valid COCO image id); without paths, file_name is the
        # index as text, which the reader ignores for a dataset without paths
        name = paths[i] if paths is not None else str(i)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        bbox = [x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h]  # float64 pixels
        # annotation ids from 1: COCOeval records a match by the ground truth's id, so id 0
        # would count a perfect detection as a false positive
        ann = {"id": i + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": bbox}
        annotations.append({**ann, "area": bbox[2] * bbox[3]})
    categories = [{"id": 1, "name": "object"}]
    f.write(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def _write_pt(
    f: IO[bytes], boxes: torch.Tensor, paths: list[str] | None, sizes: list[list[float]] | None
) -> None:
    torch.save({"boxes": boxes.clone(), "paths": paths}, f)


_WRITERS = {".csv": _write_csv, ".json": _write_json, ".pt": _write_pt}


def _check_sizes(sizes: Any, n: int, path: Path) -> list[list[float]]:
    """(N, 2) ``(h, w)`` pixel sizes as lists; whole numbers stay ints."""
    sizes = torch.as_tensor(sizes)
    if sizes.shape != (n, 2) or not (torch.isfinite(sizes).all() and (sizes > 0).all()):
        raise BoxFileError(
            f"cannot write {path}: sizes must be (N, 2) = ({n}, 2) positive "
            f"(h, w), got shape {tuple(sizes.shape)}"
        )
    return [[int(v) if float(v).is_integer() else float(v) for v in hw] for hw in sizes.tolist()]


def write_boxes(
    path: str | Path, boxes: torch.Tensor, paths: Sequence[str] | None = None, sizes: Any = None
) -> Path:
    """Write per-image boxes atomically as ``.csv``, COCO-style ``.json`` or ``.pt``.

    ``read_boxes`` gives the same float32 boxes back, bit for bit. An existing file is replaced
    only once the new one is complete.

    Args:
        path: Output file; its suffix picks the format (see the module docstring).
        boxes: (N, 4) normalised ``(x0, y0, x1, y1)`` boxes, row i for dataset index i.
        paths: N image paths (folder datasets), written as ``path`` / ``file_name`` / ``paths``.
        sizes: (N, 2) image sizes ``(h, w)`` in pixels, used by ``.json`` only: its ``bbox`` is in
            pixels of these sizes. None writes width = height = 1 (normalised units).

    Returns:
        The written path, with ``~`` expanded.

    Raises:
        BoxFileError: bad output path (see ``check_output_path``), bad boxes, paths or sizes, or
            a write error.
    """
    path = check_output_path(path)
    try:
        boxes = check_boxes(boxes)  # (N, 4) float32
    except ValueError as exc:
        raise BoxFileError(f"cannot write {path}: {exc}") from None
    n = boxes.shape[0]
    if paths is not None and len(paths) != n:
        raise BoxFileError(f"cannot write {path}: {len(paths)} paths for {n} boxes")
    plist = [str(p) for p in paths] if paths is not None else None
    hw = _check_sizes(sizes, n, path) if sizes is not None else None
    suffix = _suffix(path)
    try:
        with _atomic_open(path, binary=suffix == ".pt") as f:
            _WRITERS[suffix](f, boxes, plist, hw)
    except OSError as exc:
        raise BoxFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
