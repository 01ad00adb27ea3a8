"""Append-only JSON-lines log of evaluation results (`<run_dir>/results.jsonl`)."""

from __future__ import annotations

import json
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
    """Paths, tensors, numpy values, sets and tuples as plain JSON values (json `default`)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # torch.Tensor, numpy array or scalar
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"record: value of type {type(value).__name__} is not JSON serialisable")


def append_result(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Append `record` (with the `REQUIRED_KEYS`; paths, tensors and numpy values converted; a
    UTC ISO-8601 "timestamp" added unless present) as one JSON line to the results file of
    `run_dir` (created if needed) and return the file's path.

    Existing lines are never rewritten: one ``O_APPEND`` write, then fsync. After a torn last
    line (a writer died mid-line) a newline goes first, so `read_results` can skip it.
    """
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record: missing required keys {missing}; required: "
                         f"{list(REQUIRED_KEYS)}")
    line = dict(record)
    line.setdefault("timestamp", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    data = (json.dumps(line, default=_jsonable) + "\n").encode("utf-8")
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_results(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of `run_dir`'s results file, oldest first ([] without the file); lines that
    are not a JSON object (a torn write) are skipped with a `RuntimeWarning` naming the line."""
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
                warnings.warn(f"{path}:{lineno}: skipping a line that is not a JSON object "
                              "(torn write?)", RuntimeWarning, stacklevel=2)
                continue
            records.append(record)
    return records
