"""Import and export per-image object boxes: CSV, COCO-style JSON and torch ``.pt`` files.

At most one box per dataset image, ``(x0, y0, x1, y1)`` normalised as in ``ccrop.boxes``, named by
dataset index or, for folder datasets (``dataset.samples[i][0]``), by image path. Export then
import gives the same float32 boxes bit for bit. A file is read whole and its boxes are checked at
once; one ``BoxFileError`` names the file, its first bad row and what is wrong. Images without a
box get the full image ``(0, 0, 1, 1)`` and count as missing; zero-size boxes are kept.

- ``.csv``: a header, then a row per image; columns ``index`` and/or ``path``, and ``x0,y0,x1,y1``
  in any order (other columns, blank lines ignored). With both, the index is used and a non-empty
  path must name the same image. Values are checked as float32; the writer prints their ``repr``.
- ``.json``, COCO-style: ``{"images": [{"id", "file_name"?, "width", "height"}], "annotations":
  [{"image_id", "bbox": [x, y, w, h]}]}`` in pixels. An image is found by ``file_name`` if it has
  one and the dataset has paths, else ``id`` is the dataset index. An image's annotations give
  their union box; overshoot up to 1e-6 outside [0, 1] is clamped. The writer also writes what
  pycocotools needs: image ``id`` = index, ``file_name`` = path (or the index), ``width`` /
  ``height`` = the sizes (else 1: normalised bbox), annotation ``id`` = index + 1 (COCOeval takes
  0 as unmatched), ``category_id`` 1, ``iscrowd`` 0, ``area`` and ``categories``.
- ``.pt``: ``torch.load(weights_only=True)`` of an (N, 4) float tensor or a dict ``{"boxes": (N,
  4), "paths": [str] or None}``; rows are matched to images by path if both sides have paths.

Paths match exactly (after normalising ``/`` and ``\\``, ``.`` and ``..``), else a relative path
matches the one dataset path that ends with it on a component boundary (``n01/x.JPEG`` matches
``/data/n01/x.JPEG``, not ``/data/an01/x.JPEG``); an absolute path must match exactly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import posixpath
import secrets
from collections.abc import Callable, Iterator, Sequence
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


class BoxFileError(ValueError):
    """A box file that cannot be read or written; the message names the file and the row."""


def _rows(got: list, label: Callable[[int], str], box_label: Any = None, **kw: Any) -> Any:
    """Dataset indices and (M, 4) boxes of rows read as ``(index, box)`` or what is wrong. The
    boxes of all rows before the first wrong one are checked at once (``check_boxes``), so the
    one ``BoxFileError`` names whichever row is first bad; ``label(r)`` names row r."""
    bad = next((r for r, g in enumerate(got) if isinstance(g, str)), len(got))
    try:
        boxes = check_boxes(np.array([g[1] for g in got[:bad]], np.float64).reshape(-1, 4),
                            where=box_label or label, **kw)
    except ValueError as exc:
        raise BoxFileError(str(exc)) from None
    if bad < len(got):
        raise BoxFileError(f"{label(bad)}: {got[bad]}")
    return [g[0] for g in got], boxes


def _index(value: Any, num_images: int, what: str = "index") -> int | str:
    """A dataset index from a file value (an int, or the text of one), or what is wrong."""
    try:
        i = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        i = None
    if isinstance(i, bool) or not isinstance(i, int):
        return f"{what} {value!r} is not a whole number (dataset index)"
    return i if 0 <= i < num_images else f"{what} {i} is out of range for {num_images} images"


def _matcher(paths: Sequence[str]) -> Callable[[str], int | str]:
    """``match(path)``: the dataset index of the image a file's path names, or what is wrong."""
    tables: dict[int, dict] = {}  # 0: exact path, k: last k path components -> indices

    def table(k: int) -> dict:  # built on first use
        if k not in tables:
            tables[k] = {}
            for i, p in enumerate(posixpath.normpath(str(p).replace("\\", "/")) for p in paths):
                tail = tuple(c for c in p.split("/") if c)[-k:] if k else p
                if not k or len(tail) == k:
                    tables[k].setdefault(tail, []).append(i)
        return tables[k]

    def match(path: str) -> int | str:
        norm = posixpath.normpath(str(path).replace("\\", "/"))
        if exact := table(0).get(norm):
            return exact[0]
        parts = () if norm.startswith("/") else tuple(c for c in norm.split("/") if c)
        hits = table(len(parts)).get(parts, []) if parts else []
        if len(hits) == 1:
            return hits[0]
        return f"path {path!r} is not an image of this dataset" if not hits else (
            f"path {path!r} is ambiguous: it ends {len(hits)} image paths of this dataset "
            f"({', '.join(repr(paths[i]) for i in hits[:2])}, ...); give more of the path")

    return match


def _read_csv(path: Path, text: str, num_images: int, match: Callable | None) -> Any:
    """Dataset indices and float32 boxes (M, 4) of a CSV file."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:  # rows are parsed as they are read: a list of them all would keep the GC busy
        return _parse_csv(path, ((reader.line_num, row) for row in reader
                                 if any(map(str.strip, row))), num_images, match)
    except csv.Error as exc:
        raise BoxFileError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None


def _parse_csv(path: Path, rows: Iterator, num_images: int, match: Callable | None) -> Any:
    """Dataset indices and boxes of the non-blank ``(line number, row)`` of a CSV file."""
    head, header = next(rows, (0, None))
    if header is None:
        raise BoxFileError(f"{path}: the file is empty; expected a header row such as "
                           "index,x0,y0,x1,y1 and one row per image")
    names = [h.strip().lower() for h in header]
    cols = {n: i for i, n in enumerate(names)}
    twice = sorted({n for n in names if n and names.count(n) > 1})
    lacking = ",".join(c for c in BOX_COLUMNS if c not in cols)
    if twice or lacking or not {"index", "path"} & cols.keys():
        what = (f"names column(s) {twice} twice" if twice else f"lacks column(s) {lacking}"
                if lacking else "names neither an index nor a path column")
        raise BoxFileError(f"{path} line {head}: header {what}; expected columns index and/or "
                           "path, and x0,y0,x1,y1")
    if "index" not in cols and match is None:
        raise BoxFileError(f"{path} line {head}: rows are given by path, but this dataset has no "
                           "image paths (an array dataset such as CIFAR); give an index column")
    seen: dict[int, int] = {}  # dataset index -> line
    at = [cols[c] for c in BOX_COLUMNS]  # positions of x0, y0, x1, y1

    def parse(line: int, row: list[str]) -> tuple[int, tuple] | str:  # or what is wrong
        if len(row) != len(header):
            names = ",".join(h.strip() for h in header)
            return f"expected {len(header)} values ({names}), got {len(row)}"
        name = row[cols["path"]].strip() if "path" in cols else ""
        if "index" not in cols:
            index = match(name) if name else "empty path (and no index column)"
        else:  # the path, if any, must name the same image
            index = _index(row[cols["index"]], num_images)
            found = match(name) if isinstance(index, int) and name and match else index
            if found != index:
                index = found if isinstance(found, str) else (
                    f"path {name!r} is image {found} of this dataset, but index says {index}")
        if isinstance(index, str):
            return index
        if index in seen:
            return f"image {index} appears twice (lines {seen[index]} and {line})"
        try:
            box = tuple([float(row[k]) for k in at])
        except ValueError:  # name the first value that is not a number
            for c, k in zip(BOX_COLUMNS, at):
                try:
                    float(row[k])
                except ValueError:
                    return f"value {row[k].strip()!r} is not a number (column {c})"
        seen[index] = line
        return index, box

    lines: list[int] = []
    got: list[Any] = []
    for line, row in rows:
        lines.append(line)
        got.append(parse(line, row))
    return _rows(got, lambda r: f"{path} line {lines[r]}")


def _number(v: Any) -> float:
    """A finite JSON number as a float, else NaN."""
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else math.nan


def _read_json(path: Path, text: str, num_images: int, match: Callable | None) -> Any:
    """Dataset indices and float32 boxes (M, 4) of a COCO-style file: each image's union box."""
    try:
        data = json.loads(text)
        problem = f"got a JSON {type(data).__name__}" if not isinstance(data, dict) else next(
            (f"has no {k!r} list" for k in ("images", "annotations")
             if not isinstance(data.get(k), list)), "")
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if problem:
        raise BoxFileError(f"{path}: {problem}; expected a COCO-style object {_COCO_LAYOUT}")
    images, anns = data["images"], data["annotations"]
    known: dict[Any, tuple[int, float, float]] = {}  # image id -> dataset index, width, height
    at: dict[Any, int] = {}  # image id, and ("index", dataset index) -> position in images

    def image(p: int, im: Any) -> str:  # what is wrong with images[p], if anything
        iid = im.get("id") if isinstance(im, dict) else None
        if not isinstance(iid, int | str):
            return "expected an object with an int or string 'id', 'width' and 'height'"
        if iid in at:
            return f"image id appears twice (images[{at[iid]}] and images[{p}])"
        w, h = _number(im.get("width")), _number(im.get("height"))
        if not (w > 0 and h > 0):  # NaN unless a finite number
            return ("expected positive 'width' and 'height' in pixels, got "
                    f"width={im.get('width')!r}, height={im.get('height')!r}")
        name = im.get("file_name")
        index = (match(name) if match is not None and isinstance(name, str) and name else
                 _index(iid, num_images, "id"))
        if isinstance(index, str) or ("index", index) in at:
            return index if isinstance(index, str) else (
                f"dataset image {index} is listed twice (images[{at['index', index]}] and "
                f"images[{p}])")
        at[iid], at["index", index], known[iid] = p, p, (index, w, h)
        return ""

    for p, im in enumerate(images):
        if problem := image(p, im):
            where = f" (id {im['id']!r})" if isinstance(im, dict) and "id" in im else ""
            raise BoxFileError(f"{path} images[{p}]{where}: {problem}")

    def annotation(a: Any) -> tuple[int, tuple] | str:  # or what is wrong
        iid, bbox = (a.get("image_id"), a.get("bbox")) if isinstance(a, dict) else (None, None)
        if not isinstance(iid, int | str) or iid not in known:
            return f"image_id {iid!r} is not an id listed in 'images'"
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) == v for v in bbox)):
            return f"expected 'bbox' [x, y, w, h] of 4 finite numbers in pixels, got {bbox!r}"
        if bbox[2] < 0 or bbox[3] < 0:
            return f"bbox {bbox} has a negative width or height"
        (index, w, h), (x, y, bw, bh) = known[iid], map(float, bbox)
        return index, (x / w, y / h, (x + bw) / w, (y + bh) / h)  # float64: exact round trip

    def label(k: int) -> str:
        iid = anns[k].get("image_id") if isinstance(anns[k], dict) else None
        known_id = isinstance(iid, int | str) and iid in known
        return f"{path} annotations[{k}]" + (f" (image {iid!r})" if known_id else "")

    index, norm = _rows([annotation(a) for a in anns], label, lambda k: (
        f"{label(k)}: bbox {anns[k]['bbox']} in the {known[anns[k]['image_id']][1]:g}x"
        f"{known[anns[k]['image_id']][2]:g} image"), dtype=torch.float64, tol=CLAMP_TOL)
    union = np.tile([np.inf, np.inf, -np.inf, -np.inf], (num_images, 1))  # (N, 4)
    np.minimum.at(union[:, :2], index, norm[:, :2].numpy())  # over each image's boxes
    np.maximum.at(union[:, 2:], index, norm[:, 2:].numpy())
    return sorted(set(index)), torch.from_numpy(union[sorted(set(index))]).to(torch.float32)


def _read_pt(path: Path, num_images: int, match: Callable | None, paths: Any) -> torch.Tensor:
    """(N, 4) float32 boxes of a ``.pt`` file, reordered by path when both sides have paths."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any; torch's own text may recommend unsafe loading: not shown
        raise BoxFileError(f"{path}: cannot load it as a box file saved by torch.save "
                           f"({type(exc).__name__}); expected {_PT_LAYOUT}") from None
    if not (isinstance(obj, torch.Tensor) or isinstance(obj, dict) and "boxes" in obj):
        what = f"a dict with keys {sorted(map(str, obj))}" if isinstance(obj, dict) else (
            type(obj).__name__)
        raise BoxFileError(f"{path}: expected {_PT_LAYOUT}, got {what}")
    boxes, stored = (obj["boxes"], obj.get("paths")) if isinstance(obj, dict) else (obj, None)
    if not (isinstance(boxes, torch.Tensor) and boxes.dim() == 2 and boxes.shape[1] == 4
            and boxes.is_floating_point()):
        what = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise BoxFileError(f"{path}: expected boxes as an (N, 4) float tensor, got {what}")
    if len(boxes) != num_images:
        raise BoxFileError(f"{path}: holds {len(boxes)} boxes, but the dataset has {num_images} "
                           "images")
    try:
        boxes = check_boxes(boxes, where=lambda r: f"{path} row {r}").clone()  # (N, 4) float32
    except ValueError as exc:
        raise BoxFileError(str(exc)) from None
    if stored is None or match is None:
        return boxes
    if not (isinstance(stored, list | tuple) and all(isinstance(p, str) for p in stored)
            and len(stored) == num_images):
        raise BoxFileError(f"{path}: 'paths' must be a list of {num_images} strings, one per box")
    if list(stored) == list(map(str, paths)):
        return boxes
    row_of: dict[int, int] = {}  # dataset index -> row
    for r, p in enumerate(stored):
        got = match(p)
        if isinstance(got, str) or got in row_of:
            raise BoxFileError(f"{path} row {r}: " + (got if isinstance(got, str) else
                               f"path {p!r} is image {got}, as is row {row_of[got]}"))
        row_of[got] = r
    return boxes[[row_of[i] for i in range(num_images)]]


def _suffix(path: Path) -> str:
    if path.suffix.lower() not in SUFFIXES:
        raise BoxFileError(f"{path}: unknown suffix {path.suffix or '(none)'!r}; expected one "
                           f"of {', '.join(SUFFIXES)}")
    return path.suffix.lower()


def read_boxes(
    path: str | Path, num_images: int, paths: Sequence[str] | None = None
) -> tuple[torch.Tensor, int]:
    """Read the boxes of ``num_images`` images from a ``.csv``, COCO ``.json`` or ``.pt`` file (by
    suffix); ``paths``: the image paths of a folder dataset (``dataset.samples[i][0]``), or None
    (rows by index only). Returns ``(boxes, missing)``: (N, 4) float32 normalised boxes, and how
    many images had none (they get the full box). ``BoxFileError`` names the file and bad row.
    """
    path = Path(path).expanduser()
    suffix = _suffix(path)
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if paths is not None and len(paths) != num_images:
        raise ValueError(f"got {len(paths)} paths for {num_images} images")
    if not path.exists() or path.is_dir():
        raise BoxFileError(f"{path} is a folder, not a box file" if path.exists() else
                           f"{path}: file not found; expected a box file ({', '.join(SUFFIXES)})")
    match = _matcher(paths) if paths is not None else None
    if suffix == ".pt":
        return _read_pt(path, num_images, match, paths), 0
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BoxFileError(f"{path}: not UTF-8 text; expected a {path.suffix} file") from None
    except OSError as exc:
        raise BoxFileError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    idx, found = (_read_csv if suffix == ".csv" else _read_json)(path, text, num_images, match)
    boxes = torch.tensor(FULL_BOX, dtype=torch.float32).repeat(num_images, 1)  # (N, 4)
    boxes[torch.tensor(idx, dtype=torch.int64)] = found
    return boxes, num_images - len(idx)


def check_output_path(path: str | Path) -> Path:
    """Check, before any expensive work, that a box file can be written at ``path`` (``.csv``,
    ``.json`` or ``.pt``) and return it with ``~`` expanded; ``BoxFileError`` for an unknown
    suffix, a folder, a parent that is a file or missing, or a folder that is not writable."""
    path = Path(path).expanduser()
    _suffix(path)
    if path.is_dir():
        raise BoxFileError(f"{path} is a folder; expected a file name ending in .csv/.json/.pt")
    parent = existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = (f"{existing} is a file, not a folder" if existing.exists() and not
               existing.is_dir() else f"folder {parent} does not exist; create it first" if
               existing != parent else "" if os.access(parent, os.W_OK | os.X_OK) else
               f"folder {parent} is not writable")
    if problem:
        raise BoxFileError(f"cannot write {path}: {problem}")
    return path


def _write_csv(f: IO[str], boxes: torch.Tensor, paths: list[str] | None, sizes: Any) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["index", *(["path"] if paths is not None else []), *BOX_COLUMNS])
    writer.writerows([i, *(paths[i:i + 1] if paths is not None else []), *map(repr, b)]
                     for i, b in enumerate(boxes.tolist()))  # exact float32 values as floats


def _write_json(f: IO[str], boxes: torch.Tensor, paths: list[str] | None, sizes: Any) -> None:
    hw = sizes if sizes is not None else [(1, 1)] * len(boxes)  # see the module docstring
    bbs = [[x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h]  # float64 pixels
           for (x0, y0, x1, y1), (h, w) in zip(boxes.tolist(), hw)]
    f.write(json.dumps({"images": [{"id": i, "file_name": str(i) if paths is None else paths[i],
                                    "width": w, "height": h} for i, (h, w) in enumerate(hw)],
                        "annotations": [{"id": i + 1, "image_id": i, "category_id": 1,
                                         "iscrowd": 0, "bbox": b, "area": b[2] * b[3]}
                                        for i, b in enumerate(bbs)],
                        "categories": [{"id": 1, "name": "object"}]}))


_WRITERS: dict[str, Callable[..., Any]] = {".csv": _write_csv, ".json": _write_json, ".pt": (
    lambda f, boxes, paths, sizes: torch.save({"boxes": boxes.clone(), "paths": paths}, f))}


def write_boxes(
    path: str | Path, boxes: torch.Tensor, paths: Sequence[str] | None = None, sizes: Any = None
) -> Path:
    """Write (N, 4) normalised ``boxes`` (row i: dataset index i) to ``path``, as ``.csv``, COCO
    ``.json`` or ``.pt`` by suffix, with the N image ``paths`` if given and, for ``.json``, the
    (N, 2) ``(h, w)`` pixel ``sizes`` (None: normalised units). The file is replaced only once the
    new one is complete; ``read_boxes`` gives the same float32 boxes back. Returns the path, ``~``
    expanded; ``BoxFileError`` for a bad path (``check_output_path``) or input, or a write error.
    """
    path = check_output_path(path)
    try:
        boxes = check_boxes(boxes)  # (N, 4) float32
    except ValueError as exc:
        raise BoxFileError(f"cannot write {path}: {exc}") from None
    n = boxes.shape[0]
    if paths is not None and len(paths) != n:
        raise BoxFileError(f"cannot write {path}: {len(paths)} paths for {n} boxes")
    if sizes is not None:  # (N, 2) (h, w) as lists; whole numbers stay ints
        sizes = torch.as_tensor(sizes)
        if sizes.shape != (n, 2) or not (torch.isfinite(sizes).all() and (sizes > 0).all()):
            raise BoxFileError(f"cannot write {path}: sizes must be (N, 2) = ({n}, 2) positive "
                               f"(h, w), got shape {tuple(sizes.shape)}")
        sizes = [[int(v) if float(v).is_integer() else v for v in hw] for hw in sizes.tolist()]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    pt, plist = path.suffix.lower() == ".pt", None if paths is None else [str(p) for p in paths]
    try:  # a new temp file next to path ("x": exclusive; umask applies) replaces it when whole
        with open(tmp, "xb" if pt else "x", encoding=None if pt else "utf-8",
                  newline=None if pt else "") as f:
            _WRITERS[path.suffix.lower()](f, boxes, plist, sizes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise BoxFileError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
    return path
