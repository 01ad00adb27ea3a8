"""The one reader of ccrop's run folders (``ccrop compare``, ``ccrop ab``, ``ccrop.reproduce``).

A run folder holds ``summary.json`` (when finished), ``metrics.jsonl`` (``epoch`` and
``box_update`` event lines), ``config.yaml`` and, from ``ccrop ab``, ``ab_arm.json`` and
``linear_fast.json``. A file that is missing or not a JSON object is a one-line ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
ARM_FILE = "ab_arm.json"  # in every run folder of an A/B: arm, seed, overrides
PLAN_FILE = "ab_plan.json"  # in the A/B folder: the arms in order (baseline first) and seeds
PROBE_FILE = "linear_fast.json"  # in a run folder: the fast linear probe's result
_SEED_DIR = re.compile(r"seed(\d+)")


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON file holding an object; a one-line ConfigError naming the file otherwise."""
    try:
        data = json.loads(Path(path).read_text())
        problem = "" if isinstance(data, dict) else (
            f"must hold a JSON object, got a JSON {type(data).__name__}")
    except FileNotFoundError:
        problem = "not found"
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        problem = f"is not valid JSON: {err}"
    if problem:
        raise ConfigError(f"{str(path)!r} {problem}")
    return data


def read_summary(folder: str | Path) -> dict[str, Any]:
    """``summary.json`` of a finished run; ConfigError naming the folder when there is none."""
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} not found: is {str(folder)!r} a finished ccrop run "
                          "or an A/B folder?")
    return read_json(path)


def read_events(folder: str | Path, event: str = "epoch") -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` lines of one event kind (``"epoch"`` or ``"box_update"``), in
    order; none without the file. A line torn by a crash is skipped."""
    path = Path(folder) / METRICS_FILE
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else ():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return [r for r in rows if r.get("event") == event]


def knn_curve(folder: str | Path, summary: Mapping[str, Any] | None = None) -> list[list[float]]:
    """``[epoch, kNN top-1]`` points: the monitor epochs of ``metrics.jsonl``, then the final
    value of ``summary`` (which wins at its epoch)."""
    points = {r["epoch"]: float(r["knn_top1"]) for r in read_events(folder)
              if r.get("knn_top1") is not None}
    if summary is not None and summary.get("knn_top1") is not None:
        points[summary["epochs"]] = float(summary["knn_top1"])
    return [[e, v] for e, v in sorted(points.items())]


def run_seed(folder: str | Path, tag: Mapping[str, Any] | None = None) -> int | None:
    """A run's seed: ``ab_arm.json``'s (``tag``), else ``train.seed`` of the saved
    ``config.yaml``; None when the run has neither (it cannot be paired)."""
    if tag is not None and tag.get("seed") is not None:
        return int(tag["seed"])
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        return None
    import yaml

    return yaml.safe_load(path.read_text())["train"]["seed"]


def _number(data: Mapping[str, Any], key: str, path: Path, prefix: str = "") -> float | None:
    """``data[key]`` as a float or None; a ConfigError naming file and key if not a number."""
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{str(path)!r}: key {prefix + key!r} must be a number, got {value!r}")
    return None if value is None else float(value)


def load_run(folder: str | Path) -> dict[str, Any]:
    """One run folder's numbers for ``ccrop.ab.report`` (None where the run has no value):
    folder, seed, epochs, kNN top-1, k and T, box IoUs, epoch and box-update seconds, number of
    box updates, linear-fast top-1, overrides and ``knn_curve``."""
    folder = Path(folder)
    path, s = folder / SUMMARY_FILE, read_summary(folder)
    t = s.get("time") or {}
    tag = read_json(folder / ARM_FILE) if (folder / ARM_FILE).is_file() else None
    probe = folder / PROBE_FILE
    return {"folder": str(folder), "seed": run_seed(folder, tag), "epochs": s.get("epochs"),
            **{k: _number(s, k, path) for k in ("knn_top1", "knn_k", "knn_temperature",
                                                "box_iou_gt", "full_box_iou_gt")},
            **{k: _number(t, k, path, "time.") for k in ("median_epoch_s", "box_update_s")},
            "box_updates": len(s.get("box_updates") or []),
            "linear_fast": float(read_json(probe)["top1"]) if probe.is_file() else None,
            "overrides": None if tag is None else tag.get("overrides"),
            "curve": knn_curve(folder, s)}  # knn_top1 is checked above


def _arm_of(folder: Path, label: str) -> tuple[str, str | None]:
    """(arm name, A/B root or None) of a run folder; ``label`` names a lone run."""
    if (folder / ARM_FILE).is_file():
        return read_json(folder / ARM_FILE)["arm"], str(folder.parent.parent)
    if _SEED_DIR.fullmatch(folder.name):
        return folder.parent.name, str(folder.parent.parent)
    return label, None


def _expand(path: Path) -> list[Path]:
    """Run folders of an A/B folder (or of one arm's folder): arms in the plan's order (else by
    name), seeds by number."""
    found = [p.parent for pattern in (f"*/seed*/{SUMMARY_FILE}", f"seed*/{SUMMARY_FILE}")
             for p in path.glob(pattern) if _SEED_DIR.fullmatch(p.parent.name)]
    order = read_json(path / PLAN_FILE)["arms"] if (path / PLAN_FILE).is_file() else []

    def key(f: Path) -> tuple:
        arm = f.parent.name
        rank = order.index(arm) if arm in order else len(order)
        return rank, arm, int(_SEED_DIR.fullmatch(f.name).group(1))

    return sorted(found, key=key)


def collect_groups(paths: Iterable[str | Path]) -> dict[str, list[Path]]:
    """Group run folders by arm, in the order given (the first group is the baseline).

    A path is a run folder, an A/B folder (``*/seed*/``) or one arm's folder (``seed*/``). A
    run's arm is its ``ab_arm.json`` arm, else the parent's name for a ``seed<N>`` folder, else
    the folder itself; one arm name from two A/B folders becomes ``<A/B folder>/<arm>``.
    """
    runs: list[tuple[Path, str, str | None]] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        folders = [path] if (path / SUMMARY_FILE).is_file() else _expand(path)
        if not folders:
            read_summary(path)  # raises, naming the missing summary.json
        for f in folders:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                runs.append((f, *_arm_of(f, str(given).rstrip("/") or str(given))))
    roots: dict[str, set] = {}
    for _, arm, root in runs:
        roots.setdefault(arm, set()).add(root)
    groups: dict[str, list[Path]] = {}
    for f, arm, root in runs:
        label = arm if len(roots[arm]) == 1 or root is None else f"{root}/{arm}"
        groups.setdefault(label, []).append(f)
    return groups
