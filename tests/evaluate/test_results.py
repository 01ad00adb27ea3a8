"""Tests for ccrop.evaluate.results: append-only JSON-lines results log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from ccrop.evaluate.results import RESULTS_FILE, append_result, read_results


def record(top1: float = 91.5, **extra) -> dict:
    """A complete result record."""
    base = {
        "protocol": "knn",
        "dataset": "cifar10",
        "split": "test",
        "checkpoint": "ckpt/last.pt",
        "epoch": 500,
        "top1": top1,
    }
    base.update(extra)
    return base


def test_append_creates_dir_and_round_trips(tmp_path: Path):
    run_dir = tmp_path / "runs" / "a"
    path = append_result(run_dir, record(k=200))
    append_result(run_dir, record(top1=50.0, protocol="linear"))
    assert path == run_dir / RESULTS_FILE and path.exists()
    rows = read_results(run_dir)
    assert [r["top1"] for r in rows] == [91.5, 50.0]
    assert rows[0]["k"] == 200 and rows[1]["protocol"] == "linear"
    stamp = datetime.fromisoformat(rows[0]["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=5)


def test_existing_lines_are_never_rewritten(tmp_path: Path):
    path = append_result(tmp_path, record(top1=1.0))
    first = path.read_bytes()
    append_result(tmp_path, record(top1=2.0))
    second = path.read_bytes()
    assert second.startswith(first) and second.count(b"\n") == 2
    assert json.loads(second.splitlines()[1])["top1"] == 2.0


def test_torn_last_line_is_skipped_with_warning_and_survives_appends(tmp_path: Path):
    path = append_result(tmp_path, record(top1=1.0))
    with path.open("ab") as fh:
        fh.write(b'{"protocol": "knn", "top1": 7')  # a writer died mid-line
    with pytest.warns(RuntimeWarning, match=":2:"):
        assert [r["top1"] for r in read_results(tmp_path)] == [1.0]
    torn = path.read_bytes()
    append_result(tmp_path, record(top1=3.0))
    assert path.read_bytes().startswith(torn)
    with pytest.warns(RuntimeWarning):
        assert [r["top1"] for r in read_results(tmp_path)] == [1.0, 3.0]


def test_values_are_converted_to_json(tmp_path: Path):
    append_result(
        tmp_path, record(top1=torch.tensor(12.5), checkpoint=tmp_path / "c.pt", shape=(2, 3))
    )
    row = read_results(tmp_path)[0]
    assert row["top1"] == 12.5 and row["checkpoint"] == str(tmp_path / "c.pt")
    assert row["shape"] == [2, 3]


def test_caller_timestamp_is_kept_and_missing_file_reads_empty(tmp_path: Path):
    assert read_results(tmp_path / "nothing") == []
    append_result(tmp_path, record(timestamp="2024-01-01T00:00:00+00:00"))
    assert read_results(tmp_path)[0]["timestamp"] == "2024-01-01T00:00:00+00:00"


def test_incomplete_record_raises_and_writes_nothing(tmp_path: Path):
    with pytest.raises(ValueError, match="split"):
        append_result(tmp_path, {k: v for k, v in record().items() if k != "split"})
    assert not (tmp_path / RESULTS_FILE).exists()
