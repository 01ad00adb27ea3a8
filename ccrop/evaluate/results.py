"""Append-only JSON-lines log of evaluation results (`<run_dir>/results.jsonl`)."""

from __future__ import annotations

import json
import math
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["REQUIRED_KEYS", "RESULTS_FILE", "append_result", "read_results"]

RESULTS_FILE = "results.jsonl"
#: Keys every record must carry (values may be None where they do not apply, e.g. no checkpoint).
REQUIRED_KEYS = ("protocol", "dataset", "split", "checkpoint", "epoch", "top1")


def _jsonable(value: Any) -> Any:
    """Convert paths, tensors and numpy scalars/arrays to plain JSON values (json `default`)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or scalar
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"record: value of type {type(value).__name__} is not JSON serialisable")


def _encode(record: dict[str, Any]) -> bytes:
    """One record as a UTF-8 JSON line (ending with a newline)."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(
            f"record: missing required keys {missing}; required: {list(REQUIRED_KEYS)}"
        )
    top1 = record["top1"]
    try:
        top1_ok = top1 is None or math.isfinite(float(top1))
    except (TypeError, ValueError):
        top1_ok = False
    if not top1_ok:
        raise ValueError(f"record: top1 must be a finite number or None, got {top1!r}")
    line = dict(record)
    line.setdefault("timestamp", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return (json.dumps(line, default=_jsonable, sort_keys=False) + "\n").encode("utf-8")


def _ends_with_newline(fd: int) -> bool:
    """True if the open file is empty or its last byte is a newline."""
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def append_result(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Append one result record as a JSON line to `<run_dir>/results.jsonl`.

    The directory is created if needed. Existing lines are never rewritten: the line is written
    with a single `O_APPEND` write, then flushed and fsynced. If a previous writer died mid-line
    (the file does not end with a newline), a newline is written first so the torn line stays
    on its own and `read_results` can skip it. A UTC ISO-8601 "timestamp" is added unless the
    record has one.

    Args:
        run_dir: run folder.
        record: must contain the keys in `REQUIRED_KEYS` ("protocol", "dataset", "split",
            "checkpoint", "epoch", "top1"); other keys are kept. Paths, tensors and numpy values
            are converted to JSON.

    Returns:
        Path of the results file.

    Raises:
        ValueError: a required key is missing, or top1 is not a finite number (or None).
        TypeError: a value cannot be converted to JSON.
    """
    if not isinstance(record, dict):
        raise ValueError(f"record: expected a dict, got {type(record).__name__}")
    data = _encode(record)
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if not _ends_with_newline(fd):
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_results(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Read every record of `<run_dir>/results.jsonl`, oldest first.

    Lines that are not a JSON object (a torn write from a crash, typically the last line) are
    skipped with a `RuntimeWarning` naming the line number; blank lines are ignored.

    Args:
        run_dir: run folder.

    Returns:
        List of record dicts; empty if the file does not exist.
    """
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                warnings.warn(
                    f"{path}:{lineno}: skipping a line that is not a JSON object "
                    "(torn write?)", RuntimeWarning, stacklevel=2,
                )
                continue
            records.append(record)
    return records
