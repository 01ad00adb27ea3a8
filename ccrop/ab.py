"""Seeded A/B of named arms (``ccrop ab``): train every arm on the same seeds, report paired stats.

Arms are lists of ``key=value`` overrides applied on top of one base config; seed ``s`` of
every arm trains with ``train.seed=s`` (same data order, same initialisation), so the arms are
compared pair by pair (docs/design.md, "How to run an A/B honestly"). Run folders are
``<out>/<arm>/seed<s>``, each tagged with ``ab_arm.json``; ``report`` (also behind
``ccrop compare``) reads only those folders, so a partial or resumed A/B reports what is done.
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError

#: Built-in arms: overrides on top of the base config.
BUILTIN_ARMS: dict[str, tuple[str, ...]] = {
    "rcrop": ("crop.kind=rcrop",),
    "ccrop": ("crop.kind=ccrop",),  # the base config's ContrastiveCrop settings
    "simccrop": ("crop.kind=simccrop",),
    "oracle": ("crop.kind=ccrop", "crop.box_source=oracle"),  # the dataset's true boxes
    # no-network saliency boxes: for the warm-up only (then the encoder's), or the whole run
    "saliency-warmup": ("crop.kind=ccrop", "crop.warmup_boxes=saliency"),
    "saliency": ("crop.kind=ccrop", "crop.box_source=saliency", "crop.warmup_boxes=saliency"),
    # the paper's localization and law (small-set alpha 0.1, no guard) on the base config
    "ccrop-paper": ("crop.kind=ccrop", "crop.heatmap_stages=[4]", "crop.threshold_mode=fixed",
                    "crop.threshold=0.1", "crop.box_region=extent", "crop.alpha=0.1",
                    "crop.full_box_guard=null", "crop.heatmap_align=paper",
                    "crop.placement=official", "crop.heatmap=sum", "crop.polarity=none",
                    "crop.center_prior=0", "crop.min_confidence=0"),
}

ARM_FILE = "ab_arm.json"  # in every run folder of an A/B: arm, seed, overrides
PLAN_FILE = "ab_plan.json"  # in the A/B folder: the arms in order (baseline first) and seeds
PROBE_FILE = "linear_fast.json"  # in a run folder: the fast linear probe's result
FIGURE_FILE = "ab_knn.png"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_ARM_START_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(:.*)?", re.S)
_KEY_RE = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)+=", re.S)
_SEED_DIR_RE = re.compile(r"seed(\d+)")


@dataclass(frozen=True)
class Arm:
    """One arm of an A/B: a filesystem-safe name and its config overrides."""

    name: str
    overrides: tuple[str, ...]


# ----------------------------------------------------------------------------- arms and seeds


def _split_top(text: str) -> list[str]:
    """Split on commas outside ``[...]`` brackets (list values stay whole)."""
    pieces, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth <= 0:
            pieces.append(cur)
            cur = ""
        else:
            cur += ch
    return [*pieces, cur]


def _arm_error(what: str) -> ConfigError:
    return ConfigError(f"{what}; built-in arms: {', '.join(BUILTIN_ARMS)}; a custom arm is "
                       "name:key=value,key=value")


def parse_arms(spec: str | Sequence[str]) -> list[Arm]:
    """Parse ``--arms``: built-in names and custom ``name:key=value,key=value`` arms.

    Commas separate arms, and the overrides of a custom arm where the next piece looks like
    ``dotted.key=``; commas inside ``[...]`` never split (``crop.scale=[0.2,1.0]``).

    Args:
        spec: e.g. ``"rcrop,ccrop,a01:crop.alpha=0.1,crop.scale=[0.3,1.0]"``, or a list of such.

    Returns:
        The arms in order (the first is the baseline of the paired differences).

    Raises:
        ConfigError: empty spec, unknown built-in, bad name or override, duplicate name.
    """
    text = spec if isinstance(spec, str) else ",".join(spec)
    if not text.strip():
        raise _arm_error("--arms is empty")
    groups: list[list[str]] = []
    for piece in (p.strip() for p in _split_top(text)):
        custom = bool(groups) and ":" in groups[-1][0]  # the last arm takes overrides
        if _KEY_RE.match(piece) and custom:
            groups[-1].append(piece)  # the custom arm's next override
        elif _ARM_START_RE.fullmatch(piece):
            groups.append([piece])  # a new arm
        elif custom and piece and "=" not in piece:
            groups[-1][-1] += "," + piece  # an unbracketed value holding commas
        else:
            raise _arm_error(f"--arms: {piece!r} is not an arm")
    arms = [_parse_arm(g) for g in groups]
    names = [a.name for a in arms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _arm_error(f"--arms: arm name(s) {dup} given more than once")
    return arms


def _parse_arm(pieces: list[str]) -> Arm:
    """One arm from its pieces: ``[name]`` or ``[name:key=value, key=value, ...]``."""
    name, _, first = pieces[0].partition(":")
    if not _NAME_RE.fullmatch(name):
        raise _arm_error(f"--arms: arm name {name!r} must be letters, digits, '-' or '_' "
                         "(at most 64, a folder name)")
    if ":" not in pieces[0]:
        if name not in BUILTIN_ARMS:
            raise _arm_error(f"--arms: unknown arm {name!r}")
        return Arm(name, BUILTIN_ARMS[name])
    if name in BUILTIN_ARMS:
        raise _arm_error(f"--arms: custom arm {name!r} has the name of a built-in arm")
    overrides = tuple(p.strip() for p in [first, *pieces[1:]])
    for o in overrides:
        if not _KEY_RE.match(o):
            raise _arm_error(f"--arms: arm {name!r}: override {o!r} is not dotted.key=value")
        if o.split("=", 1)[0] in ("train.seed", "train.out_dir"):
            raise _arm_error(f"--arms: arm {name!r} sets {o.split('=', 1)[0]}, which the A/B "
                             "sets itself (--seeds, --out)")
    return Arm(name, overrides)


def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """``--seeds``: a count N (seeds ``0..N-1``) or a comma list (``0,1,2``; ``7,`` = seed 7).

    Raises:
        ConfigError: not a count or list of distinct non-negative integers.
    """
    text = str(spec) if isinstance(spec, (str, int)) else ",".join(map(str, spec))
    bad = ConfigError(f"--seeds must be a count N >= 1 (seeds 0..N-1) or a list of distinct "
                      f"seeds >= 0 like 0,1,2; got {text!r}")
    parts = [p.strip() for p in text.split(",")]
    if "," in text:
        parts = [p for p in parts if p]  # a trailing comma makes a one-seed list
    if not parts or not all(p.isdigit() for p in parts):
        raise bad
    seeds = [int(p) for p in parts]
    if "," not in text:
        seeds = list(range(seeds[0]))
    if not seeds or len(set(seeds)) != len(seeds):
        raise bad
    return seeds


# ----------------------------------------------------------------------------- statistics

#: Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30.
T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004,
        2.262157, 2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905,
        2.109816, 2.100922, 2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899,
        2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)  # fmt: skip
_Z975 = 1.959963984540054


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, Hill's (1970) expansion in 1/df beyond
    (error < 1e-7 there; 1.96 as df -> infinity).

    Raises:
        ValueError: df < 1.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = _Z975
    g = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
         (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of ``values``.

    Returns:
        ``{"n", "mean", "std"}``; mean and std are None when there are no values.
    """
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None}
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": math.sqrt(var)}


def paired_stats(base: Mapping[int, float], other: Mapping[int, float]) -> dict[str, Any]:
    """Paired difference ``other - base`` over the seeds both arms finished.

    With differences ``d_1..d_n``: mean ``m``, sample std ``s`` (ddof=1), and the two-sided 95%
    Student-t interval ``m -/+ t_{0.975, n-1} * s / sqrt(n)``.

    Args:
        base: ``{seed: value}`` of the baseline arm.
        other: ``{seed: value}`` of the compared arm.

    Returns:
        ``{"n", "seeds", "diffs", "mean", "std", "t", "ci_low", "ci_high", "wins"}``: ``wins``
        counts differences > 0; values that need more pairs (std and interval for n < 2, the
        mean for n = 0) are None.
    """
    seeds = sorted(set(base) & set(other))
    diffs = [float(other[s]) - float(base[s]) for s in seeds]
    n = len(diffs)
    out: dict[str, Any] = {"n": n, "seeds": seeds, "diffs": diffs, "mean": None, "std": None,
                           "t": None, "ci_low": None, "ci_high": None,
                           "wins": sum(d > 0 for d in diffs)}
    if n == 0:
        return out
    out["mean"] = sum(diffs) / n
    if n >= 2:
        out["std"] = summarise(diffs)["std"]
        out["t"] = t_quantile_975(n - 1)
        half = out["t"] * out["std"] / math.sqrt(n)
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


# ----------------------------------------------------------------------------- reading runs


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; a one-line ConfigError naming the file otherwise."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object, got a JSON "
                          f"{type(data).__name__}")
    return data


def _number(data: Mapping[str, Any], key: str, path: Path, prefix: str = "") -> float | None:
    """``data[key]`` as a float, None when absent; ConfigError naming file and key otherwise."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{str(path)!r}: key {prefix + key!r} must be a number, got {value!r}")
    return float(value)


def _whole(x: float | None) -> float | int | None:
    """``x`` as an int when it is a whole number (epochs read back from JSON)."""
    return int(x) if x is not None and math.isfinite(x) and x.is_integer() else x


def _curve(folder: Path, summary: Mapping[str, Any], final: float | None) -> list[list[float]]:
    """(epoch, kNN top-1) points: ``metrics.jsonl`` monitor epochs, then the final value."""
    path, points = folder / "metrics.jsonl", {}
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a crash: the file is append-only
            continue
        if isinstance(rec, dict) and rec.get("knn_top1") is not None:
            epoch = _whole(_number(rec, "epoch", path))
            if epoch is not None:
                points[epoch] = _number(rec, "knn_top1", path)
    epochs = _whole(_number(summary, "epochs", folder / "summary.json"))
    if final is not None and epochs is not None:
        points[epochs] = final
    return [[e, v] for e, v in sorted(points.items())]


def _seed_of(folder: Path, tag: Mapping[str, Any] | None) -> int | None:
    """The run's seed: ``ab_arm.json``, else a ``seed<N>`` folder name, else config.yaml."""
    if tag is not None and isinstance(tag.get("seed"), int):
        return int(tag["seed"])
    m = _SEED_DIR_RE.fullmatch(folder.name)
    if m:
        return int(m.group(1))
    try:
        import yaml

        seed = yaml.safe_load((folder / "config.yaml").read_text())["train"]["seed"]
        return seed if isinstance(seed, int) else None
    except Exception:  # no or unreadable config: the run cannot be paired
        return None


def load_run(folder: str | Path) -> dict[str, Any]:
    """One run folder's numbers for ``report``.

    Returns:
        ``{"folder", "seed", "epochs", "knn_top1", "knn_k", "knn_temperature", "box_iou_gt",
        "full_box_iou_gt",
        "median_epoch_s", "box_update_s", "box_updates", "linear_fast", "curve"}`` (None where
        the run has no such value; ``curve`` is a list of ``[epoch, top1]``).

    Raises:
        ConfigError: no ``summary.json``, invalid JSON, a non-object, a non-numeric value;
            the message names the file and the key.
    """
    folder = Path(folder)
    path = folder / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} not found: is {str(folder)!r} a finished ccrop run "
                          "or an A/B folder?")
    s = _read_json(path)
    t = s.get("time") or {}
    if not isinstance(t, dict):
        raise ConfigError(f"{str(path)!r}: key 'time' must be an object, got {t!r}")
    updates = s.get("box_updates") or []
    if not isinstance(updates, list):
        raise ConfigError(f"{str(path)!r}: key 'box_updates' must be a list, got {updates!r}")
    tag = _read_json(folder / ARM_FILE) if (folder / ARM_FILE).is_file() else None
    probe = folder / PROBE_FILE
    rec = {"folder": str(folder), "seed": _seed_of(folder, tag),
           "epochs": _whole(_number(s, "epochs", path)),
           **{k: _number(s, k, path) for k in ("knn_top1", "knn_k", "knn_temperature",
                                               "box_iou_gt", "full_box_iou_gt")},
           **{k: _number(t, k, path, "time.") for k in ("median_epoch_s", "box_update_s")},
           "box_updates": len(updates),
           "linear_fast": _number(_read_json(probe), "top1", probe) if probe.is_file() else None,
           "overrides": None if tag is None else tag.get("overrides")}
    rec["curve"] = _curve(folder, s, rec["knn_top1"])
    return rec


def _arm_of(folder: Path, label: str) -> tuple[str, str | None]:
    """(arm name, A/B root or None) of a run folder; ``label`` names a lone run."""
    tag = folder / ARM_FILE
    if tag.is_file():
        arm = _read_json(tag).get("arm")
        if not isinstance(arm, str) or not arm:
            raise ConfigError(f"{str(tag)!r}: key 'arm' must be a non-empty string, got {arm!r}")
        return arm, str(folder.parent.parent)
    if _SEED_DIR_RE.fullmatch(folder.name):
        return folder.parent.name, str(folder.parent.parent)
    return label, None


def _expand(path: Path) -> list[Path]:
    """Run folders of an A/B folder (or of one arm's folder): arms in the plan's order (else by
    name), seeds by number."""
    found = [p.parent for pattern in ("*/seed*/summary.json", "seed*/summary.json")
             for p in path.glob(pattern) if _SEED_DIR_RE.fullmatch(p.parent.name)]
    plan = path / PLAN_FILE
    order = _read_json(plan).get("arms", []) if plan.is_file() else []
    order = order if isinstance(order, list) else []

    def key(f: Path) -> tuple:
        arm = f.parent.name
        rank = order.index(arm) if arm in order else len(order)
        return rank, arm, int(_SEED_DIR_RE.fullmatch(f.name).group(1))

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
        folders = [path] if (path / "summary.json").is_file() else _expand(path)
        if not folders:
            load_run(path)  # raises, naming the missing summary.json
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


# ----------------------------------------------------------------------------- report


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "\u2212")


def _mean_std(s: Mapping[str, Any], digits: int = 2) -> str:
    if not s["n"]:
        return "\u2014"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} \u00b1 {s['std']:.{digits}f}"


def _diff_cells(p: Mapping[str, Any] | None) -> tuple[str, str]:
    """Table cells ``+1.23 [−0.40, +2.86]`` and ``wins 3/3`` of a paired comparison."""
    if p is None:
        return "\u2014", "\u2014"
    if p["n"] == 0:
        return "\u2014 (no pairs)", "\u2014"
    ci = f" [{_signed(p['ci_low'])}, {_signed(p['ci_high'])}]" if p["n"] >= 2 else " (1 pair)"
    return _signed(p["mean"]) + ci, f"wins {p['wins']}/{p['n']}"


def _mean_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r[key] is not None]
    return sum(vals) / len(vals) if vals else None


def _arm_entry(name: str, runs: list[dict[str, Any]], base: dict[str, Any] | None
               ) -> dict[str, Any]:
    """An arm's aggregate numbers and its paired differences to ``base`` (None: the baseline)."""
    def by_seed(rs: list[dict[str, Any]], key: str) -> dict[int, float]:
        return {r["seed"]: r[key] for r in rs if r["seed"] is not None and r[key] is not None}

    times = sorted(r["median_epoch_s"] for r in runs if r["median_epoch_s"] is not None)
    n_upd = sum(r["box_updates"] for r in runs)
    entry = {
        "arm": name, "overrides": next((r["overrides"] for r in runs if r["overrides"]), None),
        "seeds": [r["seed"] for r in runs],
        "epochs": sorted({r["epochs"] for r in runs if r["epochs"] is not None}),
        "knn_top1": summarise([r["knn_top1"] for r in runs if r["knn_top1"] is not None]),
        "linear_fast": summarise([r["linear_fast"] for r in runs if r["linear_fast"] is not None]),
        "box_iou_gt": _mean_of(runs, "box_iou_gt"),
        "full_box_iou_gt": _mean_of(runs, "full_box_iou_gt"),
        "median_epoch_s": times[len(times) // 2] if times else None,
        "s_per_box_update": sum(r["box_update_s"] or 0.0 for r in runs) / n_upd if n_upd else None,
        "vs_baseline": None, "runs": runs,
    }
    if base is not None:
        entry["vs_baseline"] = {k: paired_stats(by_seed(base["runs"], k), by_seed(runs, k))
                                for k in ("knn_top1", "linear_fast")}
    return entry


def _row(e: dict[str, Any], probe: bool) -> str:
    def num(x: float | None, fmt: str) -> str:
        return "\u2014" if x is None else format(x, fmt)

    vs = e["vs_baseline"]
    diff, wins = _diff_cells(None if vs is None else vs["knn_top1"])
    epochs = "\u2013".join(f"{x:g}" for x in e["epochs"]) or "\u2014"
    cells = [e["arm"], str(len(e["runs"])), epochs, _mean_std(e["knn_top1"]), diff, wins,
             num(e["box_iou_gt"], ".3f"), num(e["full_box_iou_gt"], ".3f"),
             num(e["median_epoch_s"], ".2f"), num(e["s_per_box_update"], ".2f")]
    if probe:
        cells.append(_mean_std(e["linear_fast"]))
    return "| " + " | ".join(cells) + " |"


def report(groups: Mapping[str, Sequence[str | Path]], out: str | Path | None = None
           ) -> tuple[str, dict[str, Any]]:
    """Markdown table (one row per arm, in order) and JSON data of an A/B.

    Columns: arm, seeds done, epochs, kNN top-1 mean ± std, paired difference to the FIRST arm
    with its 95% t-interval, wins, box IoU vs truth, full-image IoU, median seconds per epoch,
    seconds per box update, linear-fast top-1 (when any run has it).

    Args:
        groups: ``{arm: [run folder, ...]}`` (``collect_groups`` or ``run_ab``).
        out: when given, ``ab.md``, ``ab.json`` and the kNN band figure are written there.

    Returns:
        ``(markdown, data)``; ``data["arms"]`` holds every per-seed number.

    Raises:
        ConfigError: no groups, or a bad run folder (see ``load_run``).
    """
    if not groups or not any(groups.values()):
        raise ConfigError("nothing to report: no finished runs")
    arms: list[dict[str, Any]] = []
    for name, folders in groups.items():
        arms.append(_arm_entry(name, [load_run(f) for f in folders], arms[0] if arms else None))
    probe = any(e["linear_fast"]["n"] for e in arms)
    head = ["arm", "seeds", "epochs", "kNN top-1 (%)", f"\u0394 kNN vs {arms[0]['arm']} [95% CI]",
            "wins", "box IoU vs truth", "full-image IoU", "s/epoch", "s/box update"]
    head += ["linear-fast (%)"] if probe else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row(e, probe) for e in arms]
    knn = sorted({f"k={r['knn_k']:g}, T={r['knn_temperature']:g}" for e in arms
                  for r in e["runs"] if None not in (r["knn_k"], r["knn_temperature"])})
    lines += ["", "seeds = finished runs; epochs = epochs trained; kNN top-1 = each run's final "
              "kNN accuracy, mean \u00b1 sample std over seeds (protocol 'knn', "
              f"{'; '.join(knn) or 'no kNN'}, on data.test_split"
              + (" \u2014 NOT the same in every run)." if len(knn) > 1 else ")."),
              f"\u0394 = arm \u2212 {arms[0]['arm']}, paired by seed (seeds both arms "
              "finished): mean difference [95% two-sided Student-t interval]; wins = seeds "
              "where the arm is higher.",
              "box IoU vs truth = IoU of each run's final boxes with the true boxes (mean over "
              "images), mean over seeds; full-image IoU = the same for the full-image box.",
              "s/epoch = each run's median epoch time without the first epoch, median over "
              "seeds; s/box update = all box-update seconds / number of updates, pooled over "
              "seeds; linear-fast (when shown) = fast linear probe top-1 on cached features, "
              "mean \u00b1 std over seeds."]
    lines += [f"- {e['arm']}: {' '.join(e['overrides'])}" for e in arms if e["overrides"]]
    data = {"baseline": arms[0]["arm"], "arms": arms}
    markdown = "\n".join(lines) + "\n"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ab.md").write_text(markdown)
        (out / "ab.json").write_text(json.dumps(data, indent=2) + "\n")
        plot_bands(data, out / FIGURE_FILE)
    return markdown, data


def plot_bands(data: Mapping[str, Any], path: str | Path) -> Path:
    """The kNN-per-epoch band figure of ``report``'s data (``viz.plot_knn_bands``)."""
    from .viz import plot_knn_bands

    curves = {e["arm"]: [r["curve"] for r in e["runs"]] for e in data["arms"]}
    return plot_knn_bands(curves, path)


# ----------------------------------------------------------------------------- running


def _say(line: str) -> None:
    print(line, flush=True)


def _plan(config: str | None, base: list[str], arms: list[Arm], seeds: list[int], out: Path
          ) -> list[tuple[Arm, int, Path, Any]]:
    """Every (arm, seed, folder, Config) in seed-major order, all validated before any work.

    Raises:
        ConfigError: an arm's config is invalid, or a folder was run with other overrides.
    """
    from .config import load_config

    plan = []
    for seed in seeds:
        for arm in arms:
            folder = out / arm.name / f"seed{seed}"
            over = [*base, *arm.overrides, f"train.seed={seed}", f"train.out_dir={folder}"]
            try:
                cfg = load_config(config, over)
            except ConfigError as err:
                raise ConfigError(f"arm {arm.name!r}: {err}") from None
            tag = folder / ARM_FILE
            if tag.is_file():
                old = _read_json(tag)
                now = {"overrides": list(arm.overrides), "base_overrides": base, "config": config}
                if any(old.get(k) != v for k, v in now.items()):
                    was = {k: old.get(k) for k in now}
                    raise ConfigError(f"{str(tag)!r}: this run folder was started with other "
                                      f"settings {was}; use another --out or move it away")
            plan.append((arm, seed, folder, cfg))
    return plan


def run_ab(config: str | None, overrides: Sequence[str], arms: Sequence[Arm],
           seeds: Sequence[int], out: str | Path, linear_fast: bool = False,
           progress: Callable[[str], None] = _say) -> dict[str, list[Path]]:
    """Train every arm on every seed in-process, seed-major (a partial A/B has whole pairs).

    Run ``(arm, s)`` trains in ``out/<arm>/seed<s>`` with ``overrides + arm.overrides +
    [train.seed=s, train.out_dir=...]``. A folder with ``summary.json`` is skipped; one with
    checkpoints resumes from the newest valid one. Every arm's config is validated first.
    Under torchrun the caller initialises the process group (``ccrop ab`` does); only the
    main process writes files and progress lines.

    Args:
        config: base YAML config (path or packaged name), or None for the dataclass defaults.
        overrides: base ``key=value`` overrides shared by all arms.
        arms: the arms (``parse_arms``); the first is the baseline of ``report``.
        seeds: distinct seeds (``parse_seeds``).
        out: the A/B folder.
        linear_fast: also run the fast linear probe on each final backbone (``linear_fast.json``).
        progress: called with one line before and one after each run.

    Returns:
        ``{arm: [run folder per seed]}``, the input of ``report``.

    Raises:
        ConfigError: no arms or seeds, a bad arm config (before anything is written).
    """
    from . import dist

    if not arms or not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError("run_ab needs at least one arm and distinct seeds")
    out, base = Path(out), list(overrides)
    plan = _plan(config, base, list(arms), list(seeds), out)
    if dist.is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / PLAN_FILE).write_text(json.dumps(
            {"arms": [a.name for a in arms], "seeds": list(seeds), "config": config,
             "base_overrides": base}, indent=2) + "\n")
    for i, (arm, seed, folder, cfg) in enumerate(plan, 1):
        tag = f"[{i}/{len(plan)}] {arm.name} seed {seed}"
        _run_one(cfg, arm, seed, folder, {"config": config, "base_overrides": base}, tag,
                 progress, linear_fast)
    return {a.name: [f for b, _, f, _ in plan if b is a] for a in arms}


def _run_one(cfg: Any, arm: Arm, seed: int, folder: Path, base: dict[str, Any], tag: str,
             say: Callable[[str], None], linear_fast: bool) -> None:
    """Train (or resume, or skip) one run of the A/B, then its optional fast probe."""
    from . import dist
    from .build import build_run
    from .checkpoint import list_checkpoints
    from .engine import fit

    main = dist.is_main_process()
    run = None
    if (folder / "summary.json").is_file():
        summary = _read_json(folder / "summary.json")
        note = "done already"
    else:
        resuming = bool(list_checkpoints(folder))
        if main:
            say(f"{tag} ..." + (" (resuming)" if resuming else ""))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ARM_FILE).write_text(json.dumps(
                {"arm": arm.name, "seed": seed, "overrides": list(arm.overrides), **base},
                indent=2) + "\n")
        from .runtime import bars_enabled

        with bars_enabled(cfg.train.progress):
            run = build_run(cfg, "auto")
            summary, note = fit(run), "done"
    probe = None
    if linear_fast and main and not (folder / PROBE_FILE).is_file():
        probe = _linear_fast(cfg, folder, run)
    if main:
        say(f"{tag}: {note}, " + _result_text(summary, probe))
    del run
    _free_memory()


def _result_text(summary: Mapping[str, Any], probe: float | None) -> str:
    parts = []
    if isinstance(summary.get("knn_top1"), (int, float)):
        parts.append(f"kNN {summary['knn_top1']:.2f}%")
    if isinstance(summary.get("box_iou_gt"), (int, float)):
        parts.append(f"box IoU {summary['box_iou_gt']:.3f}")
    if probe is not None:
        parts.append(f"linear-fast {probe:.2f}%")
    t = summary.get("time")
    if isinstance(t, dict) and isinstance(t.get("train_s"), (int, float)):
        parts.append(f"{t['train_s']:.1f} s")
    return ", ".join(parts) or "no metrics"


def _free_memory() -> None:
    """Release the finished run's tensors before the next run (GPU memory, image caches)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _linear_fast(cfg: Any, folder: Path, run: Any = None) -> float | None:
    """Fast linear probe of the run's final backbone (``run``'s, else the newest checkpoint's),
    written to ``linear_fast.json`` and ``results.jsonl``; its top-1, None without labels."""
    from .build import build_data, build_evaluator, config_backbone, resolve_device
    from .checkpoint import (
        CheckpointError,
        ckpt_path,
        latest_valid_checkpoint,
        load_backbone_state,
    )
    from .evaluate.linear import run_fast_probe
    from .evaluate.results import append_result

    if run is not None:
        backbone, data, device, epoch = run.method.backbone, run.data, run.device, run.epoch
    else:
        found = latest_valid_checkpoint(folder)
        if found is None:
            raise CheckpointError(f"no readable checkpoint in {str(folder / 'checkpoints')!r} "
                                  "for the linear-fast probe")
        device = resolve_device(cfg.train.device)
        backbone = config_backbone(cfg)
        load_backbone_state(backbone, found[1]["model"])
        backbone, data, epoch = backbone.to(device), build_data(cfg), int(found[1]["epoch"])
    if not (data.num_classes and data.has_labels):
        return None
    d, t, evaluator = cfg.data, cfg.train, build_evaluator(data)
    res = run_fast_probe(backbone, evaluator.eval_batches(d.eval_train_split, device),
                         evaluator.eval_batches(d.test_split, device), data.num_classes, device,
                         amp=t.amp, channels_last=t.channels_last)
    rec = {**res, "dataset": d.dataset, "split": d.test_split,
           "checkpoint": str(ckpt_path(folder, epoch)), "epoch": epoch}
    append_result(folder, rec)
    (folder / PROBE_FILE).write_text(json.dumps(rec, indent=2, default=str) + "\n")
    return float(res["top1"])
