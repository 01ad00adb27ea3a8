"""Per-image boxes from and to files: CSV (``index`` and/or ``path``, ``x0,y0,x1,y1``), COCO
JSON (images by ``file_name`` or ``id``, pixel ``bbox``, an image's union box) and ``.pt``. Export
then import is bit-exact; images without a box get the full box; a bad file is one
``BoxFileError`` naming file and row."""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import posixpath
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .boxes import FULL_BOX, check_boxes
from .errors import BoxFileError
from .files import atomic_write, output_problem

SUFFIXES = (".csv", ".json", ".pt")
BOX_COLUMNS = ("x0", "y0", "x1", "y1")
_PT_LAYOUT = "an (N, 4) float tensor or a dict {'boxes': (N, 4) tensor, 'paths': [str] or None}"
_COCO_LAYOUT = '{"images": [{"id", "width", "height", ...}], "annotations": [...]}'


def _first_error(path: Path, got: list, where: Callable[[int], str]) -> None:
    """Raise for the first entry of ``got`` that is a string: what is wrong with entry r."""
    bad = next((r for r, g in enumerate(got) if isinstance(g, str)), None)
    if bad is not None:
        raise BoxFileError(f"{path} {where(bad)}: {got[bad]}")


def _rows(path: Path, got: list, where: Callable[[int], str], box_where: Any = None,
          **kw: Any) -> Any:
    """Indices and (M, 4) boxes of ``(index, box)`` rows, checked at once up to the first bad."""
    bad = next((r for r, g in enumerate(got) if isinstance(g, str)), len(got))
    boxes = check_boxes(np.array([g[1] for g in got[:bad]], np.float64).reshape(-1, 4),
                        where=lambda r: f"{path} {(box_where or where)(r)}", error=BoxFileError,
                        **kw)
    _first_error(path, got, where)
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
    given = {p: i for i, p in reversed(list(enumerate(map(str, paths))))}  # as written: fast

    @functools.cache
    def table(k: int) -> dict:  # 0: exact path, k: last k path components -> indices
        out: dict = {}
        for i, p in enumerate(posixpath.normpath(str(p).replace("\\", "/")) for p in paths):
            if len(tail := tuple(c for c in p.split("/") if c)[-k:] if k else p) == k or not k:
                out.setdefault(tail, []).append(i)
        return out

    def match(path: str) -> int | str:
        if path in given:
            return given[path]
        norm = posixpath.normpath(str(path).replace("\\", "/"))
        parts = () if norm.startswith("/") else tuple(c for c in norm.split("/") if c)
        hits = table(0).get(norm) or (table(len(parts)).get(parts, []) if parts else [])
        if len(hits) == 1 or norm in table(0):
            return hits[0]
        return f"path {path!r} is not an image of this dataset" if not hits else (
            f"path {path!r} is ambiguous: it ends {len(hits)} image paths of this dataset "
            f"({', '.join(repr(paths[i]) for i in hits[:2])}, ...); give more of the path")

    return match


def _read_csv(path: Path, text: str, num_images: int, match: Callable | None) -> Any:
    """Dataset indices and float32 boxes (M, 4) of a CSV file."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = ((reader.line_num, row) for row in reader if any(map(str.strip, row)))
    try:  # rows are parsed as they are read: a list of them all would keep the GC busy
        head, header = next(rows, (0, None))
        names = [h.strip().lower() for h in header or []]
        cols = {n: i for i, n in enumerate(names)}
        twice = sorted({n for n in names if n and names.count(n) > 1})
        lacking = ",".join(c for c in BOX_COLUMNS if c not in cols)
        problem = (
            "the file is empty" if header is None else f"header names column(s) {twice} twice"
            if twice else f"header lacks column(s) {lacking}" if lacking else
            "header names neither an index nor a path column" if not {"index", "path"} & cols.keys()
            else "rows are given by path, but this dataset has no image paths (an array dataset "
            "such as CIFAR); give an index column" if "index" not in cols and match is None else "")
        if problem:
            raise BoxFileError(f"{path} line {head}: {problem}; expected columns index and/or "
                               "path, and x0,y0,x1,y1")
        seen: dict[int, int] = {}  # dataset index -> line
        at = [cols[c] for c in BOX_COLUMNS]  # positions of x0, y0, x1, y1

        def parse(line: int, row: list[str]) -> tuple[int, list] | str:  # or what is wrong
            if len(row) != len(header):
                names = ",".join(h.strip() for h in header)
                return f"expected {len(header)} values ({names}), got {len(row)}"
            name = row[cols["path"]].strip() if "path" in cols else ""
            index = _index(row[cols["index"]], num_images) if "index" in cols else None
            found = (match(name) if name and match and not isinstance(index, str) else
                     "empty path (and no index column)" if index is None else index)
            if isinstance(found, str) or found in seen:
                return found if isinstance(found, str) else (
                    f"image {found} appears twice (lines {seen[found]} and {line})")
            if index not in (None, found):  # the path, if any, must name the indexed image
                return f"path {name!r} is image {found} of this dataset, but index says {index}"
            try:
                box = tuple([float(row[k]) for k in at])  # a tuple of floats: GC-untracked
            except ValueError as exc:  # "could not convert string to float: 'zero'"
                return f"value {str(exc).partition(': ')[2]} is not a number"
            seen[found] = line
            return found, box

        got = [(line, parse(line, row)) for line, row in rows]
    except csv.Error as exc:
        raise BoxFileError(f"{path} line {reader.line_num}: malformed CSV ({exc})") from None
    return _rows(path, [g for _, g in got], lambda r: f"line {got[r][0]}")


def _finite(v: Any) -> float:
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
    known: dict[Any, tuple[int, int, float, float]] = {}  # id -> position, index, width, height

    def image(p: int, im: Any) -> str | None:  # what is wrong with images[p], if anything
        iid = im.get("id") if isinstance(im, dict) else None
        if not isinstance(iid, int | str):
            return "expected an object with an int or string 'id', 'width' and 'height'"
        w, h, name = _finite(im.get("width")), _finite(im.get("height")), im.get("file_name")
        index = (match(name) if match is not None and isinstance(name, str) and name else
                 _index(iid, num_images, "id"))
        problem = (
            f"image id appears twice (images[{known[iid][0]}] and images[{p}])" if iid in known
            else "expected positive 'width' and 'height' in pixels, got width="
            f"{im.get('width')!r}, height={im.get('height')!r}" if not (w > 0 and h > 0) else
            index if isinstance(index, str) else None)
        if problem is None:
            known[iid] = p, index, w, h
        return problem

    _first_error(path, [image(p, im) for p, im in enumerate(images)], lambda p: f"images[{p}]")

    def annotation(a: Any) -> tuple[int, tuple] | str:  # or what is wrong
        iid, bbox = (a.get("image_id"), a.get("bbox")) if isinstance(a, dict) else (None, None)
        if not isinstance(iid, int | str) or iid not in known:
            return f"image_id {iid!r} is not an id listed in 'images'"
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) == v for v in bbox)):
            return f"expected 'bbox' [x, y, w, h] of 4 finite numbers in pixels, got {bbox!r}"
        if bbox[2] < 0 or bbox[3] < 0:
            return f"bbox {bbox} has a negative width or height"
        (_, index, w, h), (x, y, bw, bh) = known[iid], map(float, bbox)
        return index, (x / w, y / h, (x + bw) / w, (y + bh) / h)  # float64: exact round trip

    where = "annotations[{}]".format
    index, norm = _rows(path, [annotation(a) for a in anns], where, lambda k: (
        f"{where(k)}: bbox {anns[k]['bbox']} in the {known[anns[k]['image_id']][2]:g}x"
        f"{known[anns[k]['image_id']][3]:g} image"), dtype=torch.float64, tol=1e-6)  # clamped
    union = np.tile([np.inf, np.inf, -np.inf, -np.inf], (num_images, 1))  # (N, 4)
    np.minimum.at(union[:, :2], index, norm[:, :2].numpy())  # over each image's boxes
    np.maximum.at(union[:, 2:], index, norm[:, 2:].numpy())
    return sorted(set(index)), torch.from_numpy(union[sorted(set(index))]).to(torch.float32)


def _read_pt(path: Path, raw: bytes, num_images: int, match: Callable | None) -> Any:
    """Indices and (N, 4) boxes of a ``.pt`` file: by path when both sides have paths."""
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file fails in many ways; torch's text may recommend
        raise BoxFileError(f"{path}: cannot load it as a box file saved by torch.save "  # unsafe
                           f"({type(exc).__name__}); expected {_PT_LAYOUT}") from None  # loading
    boxes, stored = (obj.get("boxes"), obj.get("paths")) if isinstance(obj, dict) else (obj, None)
    if not (isinstance(boxes, torch.Tensor) and boxes.dim() == 2 and boxes.shape[1] == 4
            and boxes.is_floating_point()):
        got = (tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
               if boxes is not None else f"a dict with keys {sorted(map(str, obj))}")
        raise BoxFileError(f"{path}: expected {_PT_LAYOUT}; got {got}")
    if len(boxes) != num_images:
        raise BoxFileError(f"{path}: holds {len(boxes)} boxes, but the dataset has {num_images} "
                           "images")
    boxes = check_boxes(boxes, where=lambda r: f"{path} row {r}", error=BoxFileError)
    if stored is None or match is None:
        return range(num_images), boxes
    if not (isinstance(stored, list | tuple) and len(stored) == num_images
            and all(isinstance(p, str) for p in stored)):
        raise BoxFileError(f"{path}: 'paths' must be a list of {num_images} strings, one per box")
    row_of: dict[int, int] = {}  # dataset index -> first row naming it
    index = [match(p) for p in stored]
    for r, i in enumerate(index):
        if not isinstance(i, str) and row_of.setdefault(i, r) != r:
            index[r] = f"path {stored[r]!r} is image {i}, as is row {row_of[i]}"
    _first_error(path, index, lambda r: f"row {r}")
    return index, boxes


def _suffix(path: Path) -> str:
    if path.suffix.lower() not in SUFFIXES:
        raise BoxFileError(f"{path}: unknown suffix {path.suffix or '(none)'!r}; expected one "
                           f"of {', '.join(SUFFIXES)}")
    return path.suffix.lower()


def read_boxes(path: str | Path, num_images: int,
               paths: Sequence[str] | None = None) -> tuple[torch.Tensor, int]:
    """(N, 4) float32 boxes of ``num_images`` images from a ``.csv``, ``.json`` or ``.pt`` file,
    and how many had none; ``paths``: the N image paths of a folder dataset, else None."""
    path = Path(path).expanduser()
    suffix = _suffix(path)
    try:
        raw = path.read_bytes()
        data = raw if suffix == ".pt" else raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = ("file not found" if isinstance(exc, FileNotFoundError) else "not UTF-8 text"
               if isinstance(exc, UnicodeError) else f"cannot read it ({exc.strerror or exc})")
        raise BoxFileError(f"{path}: {why}; expected a box file ({', '.join(SUFFIXES)})") from None
    reader = {".csv": _read_csv, ".json": _read_json, ".pt": _read_pt}[suffix]
    idx, found = reader(path, data, num_images, None if paths is None else _matcher(paths))
    boxes = torch.tensor(FULL_BOX, dtype=torch.float32).repeat(num_images, 1)  # (N, 4)
    boxes[torch.tensor(idx, dtype=torch.int64)] = found
    return boxes, num_images - len(idx)


def check_output_path(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, once checked that a box file can be written there."""
    path = Path(path).expanduser()
    _suffix(path)
    if problem := output_problem(path):
        raise BoxFileError(f"cannot write {path}: {problem}")
    return path


def _encode(suffix: str, boxes: torch.Tensor, paths: list[str] | None, sizes: Any) -> bytes:
    """The file content of (N, 4) float32 ``boxes`` (see ``write_boxes``)."""
    if suffix == ".pt":
        torch.save({"boxes": boxes.clone(), "paths": paths}, buf := io.BytesIO())
        return buf.getvalue()
    if suffix == ".csv":  # exact float32 values as floats
        csv.writer(text := io.StringIO(), lineterminator="\n").writerows(
            [["index", *(["path"] if paths is not None else []), *BOX_COLUMNS]] +
            [[i, *(paths[i:i + 1] if paths is not None else []), *map(repr, b)]
             for i, b in enumerate(boxes.tolist())])
        return text.getvalue().encode()
    hw = [(1, 1)] * len(boxes) if sizes is None else [  # (1, 1): normalised; ints stay ints
        [int(v) if float(v).is_integer() else v for v in r]
        for r in torch.as_tensor(sizes).tolist()]
    bbs = [[x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h]  # float64 pixels
           for (x0, y0, x1, y1), (h, w) in zip(boxes.tolist(), hw)]
    return json.dumps({
        "images": [{"id": i, "file_name": str(i) if paths is None else paths[i], "width": w,
                    "height": h} for i, (h, w) in enumerate(hw)],
        "annotations": [{"id": i + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "bbox": b,
                         "area": b[2] * b[3]} for i, b in enumerate(bbs)],  # COCOeval: 0 unmatched
        "categories": [{"id": 1, "name": "object"}]}).encode()


def write_boxes(path: str | Path, boxes: torch.Tensor, paths: Sequence[str] | None = None,
                sizes: Any = None) -> Path:
    """Write (N, 4) ``boxes`` (row i: image i) to ``path`` (by suffix) with the N image ``paths``
    if given and, for ``.json``, (N, 2) ``(h, w)`` pixel ``sizes``; atomic. Returns the path."""
    path = check_output_path(path)
    boxes = check_boxes(boxes, f"cannot write {path}: boxes", error=BoxFileError)  # float32
    data = _encode(path.suffix.lower(), boxes, None if paths is None else list(map(str, paths)),
                   sizes)
    try:  # through a temp file next to path: a failed write leaves the old file as it was
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(data))
    except OSError as exc:
        raise BoxFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
