"""Reading ccrop's run folders: the one reader behind ``ccrop compare``, ``ccrop ab``, the
paper table (``ccrop.reproduce``) and the kNN figures (``ccrop.viz``).

A run folder holds ``summary.json`` (written when the run finished), ``metrics.jsonl`` (one
``{"event": "epoch", ...}`` or ``{"event": "box_update", ...}`` line each, append-only),
``config.yaml`` (the resolved config) and, when ``ccrop ab`` trained it, ``ab_arm.json`` (arm,
seed, overrides) and ``linear_fast.json`` (the fast probe). These are ccrop's own files and are
read as written; a file that is missing or not a JSON object is a one-line ``ConfigError``.
"""

from __future__ import annotations

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
    except FileNotFoundError:
        raise ConfigError(f"{str(path)!r} not found") from None
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise ConfigError(f"{str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object, got a JSON "
                          f"{type(data).__name__}")
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
    order; none without the file. A line torn by a crash (not JSON) is skipped."""
    path = Path(folder) / METRICS_FILE
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else ():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
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
    """``data[key]`` as a float (None when absent); ConfigError naming file and key if it is
    not a number (a hand-edited summary)."""
    value = data.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{str(path)!r}: key {prefix + key!r} must be a number, got {value!r}")
    return None if value is None else float(value)


def load_run(folder: str | Path) -> dict[str, Any]:
    """One run folder's numbers for ``ccrop.ab.report``.

    Returns:
        ``{"folder", "seed", "epochs", "knn_top1", "knn_k", "knn_temperature", "box_iou_gt",
        "full_box_iou_gt", "median_epoch_s", "box_update_s", "box_updates", "linear_fast",
        "overrides", "curve"}`` (None where the run has no such value; ``curve`` is
        ``knn_curve``'s).

    Raises:
        ConfigError: no ``summary.json``, invalid JSON, a non-numeric value (names the file).
    """
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


# ----------------------------------------------------------------------------- grouping


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

    Each path is a run folder (holds ``summary.json``), an A/B folder (its
    ``*/seed*/summary.json`` are expanded) or one arm's folder (``seed*/summary.json``). A
    run's arm is its ``ab_arm.json`` arm, else the parent's name for a ``seed<N>`` folder, else
    the folder itself (a one-run arm). The same arm name from two A/B folders is told apart as
    ``<A/B folder>/<arm>``.

    Raises:
        ConfigError: a path that is neither (names the missing ``summary.json``).
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
