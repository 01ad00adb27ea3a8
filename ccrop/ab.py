"""Seeded A/B of named arms (``ccrop ab``): train every arm on the same seeds, report paired stats.

Arms are ``key=value`` overrides on one base config; seed ``s`` of every arm trains with
``train.seed=s`` (same data order and initialisation), so arms are compared pair by pair
(docs/design.md, "How to run an A/B honestly"). Runs go to ``<out>/<arm>/seed<s>``, tagged with
``ab_arm.json``; ``report`` (also ``ccrop compare``) reads what is done (``ccrop.runs``).
"""

from __future__ import annotations

import gc
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .config import ConfigError
from .runs import ARM_FILE, PLAN_FILE, PROBE_FILE, load_run, read_json
from .runs import collect_groups as collect_groups  # ``ccrop compare`` groups through ab

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
FIGURE_FILE = "ab_knn.png"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # an arm name: a folder name
_OVERRIDE_RE = re.compile(r"[A-Za-z_][\w-]*(\.[\w-]+)+=")  # ``dotted.key=``
_SPLIT_RE = re.compile(r",(?![^\[]*\])")  # a comma outside [...] (lists are not nested)


@dataclass(frozen=True)
class Arm:
    """One arm of an A/B: a filesystem-safe name and its config overrides."""

    name: str
    overrides: tuple[str, ...]


def parse_arms(spec: str | Sequence[str]) -> list[Arm]:
    """``--arms``: the arms in order (the first is the baseline of the paired differences).

    Split on commas outside ``[...]``; a piece starting ``dotted.key=`` is one more override of
    the custom arm before it, any other starts an arm: a built-in name or ``name:key=value``. So
    ``rcrop,a01:crop.alpha=0.1,crop.scale=[0.3,1.0],ccrop`` is rcrop, a01 (two overrides), ccrop.
    ConfigError names what is wrong.
    """
    text = spec if isinstance(spec, str) else ",".join(spec)
    pieces: list[tuple[str, list[str] | None]] = []  # (name, overrides; None: a built-in)
    problem = "" if text.strip() else "the spec is empty"
    for piece in (p.strip() for p in _SPLIT_RE.split(text)):
        if not _OVERRIDE_RE.match(piece):
            name, colon, first = piece.partition(":")
            pieces.append((name.strip(), [first.strip()] if colon else None))
        elif pieces and pieces[-1][1] is not None:
            pieces[-1][1].append(piece)
        else:
            problem = problem or f"{piece!r} is not an arm (overrides follow name:)"
    names = [n for n, _ in pieces]
    dup = sorted({n for n in names if names.count(n) > 1})
    problem = problem or next(filter(None, (_arm_problem(*p) for p in pieces)), "") or (
        f"arm name(s) {dup} given more than once" if dup else "")
    if problem:
        raise ConfigError(f"--arms: {problem}; built-in arms: {', '.join(BUILTIN_ARMS)}; a custom "
                          "arm is name:key=value,key=value")
    return [Arm(n, BUILTIN_ARMS[n] if o is None else tuple(o)) for n, o in pieces]


def _arm_problem(name: str, overrides: list[str] | None) -> str:
    """What is wrong with a built-in arm (``overrides`` None) or a custom one, if anything."""
    bad = next((o for o in overrides or () if not _OVERRIDE_RE.match(o)), None)
    fixed = [k for o in overrides or () if (k := o.split("=", 1)[0]) in ("train.seed",
                                                                         "train.out_dir")]
    return (
        f"arm name {name!r} must be letters, digits, '-' or '_' (at most 64, a folder name)"
        if not _NAME_RE.fullmatch(name) else ("" if name in BUILTIN_ARMS else
                                             f"unknown arm {name!r}") if overrides is None
        else f"custom arm {name!r} has the name of a built-in arm" if name in BUILTIN_ARMS
        else f"arm {name!r}: override {bad!r} is not dotted.key=value" if bad is not None
        else f"arm {name!r} sets {fixed[0]}, which the A/B sets itself (--seeds, --out)"
        if fixed else "")


def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """``--seeds``: a count N (seeds ``0..N-1``) or a comma list (``0,1,2``; ``7,`` = seed 7);
    ConfigError for anything else (distinct non-negative integers only)."""
    text = str(spec) if isinstance(spec, (str, int)) else ",".join(map(str, spec))
    parts = [p.strip() for p in text.split(",")]
    parts = [p for p in parts if p] if "," in text else parts  # "7," is a one-seed list
    seeds = [int(p) for p in parts] if parts and all(p.isdigit() for p in parts) else []
    if "," not in text and seeds:
        seeds = list(range(seeds[0]))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be a count N >= 1 (seeds 0..N-1) or a list of "
                          f"distinct seeds >= 0 like 0,1,2; got {text!r}")
    return seeds


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """``{"n", "mean", "std"}``: sample std (ddof=1; 0 for one value); None without values."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None}
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": math.sqrt(var)}


def paired_stats(base: Mapping[int, float], other: Mapping[int, float]) -> dict[str, Any]:
    """Paired difference ``other - base`` (``{seed: value}`` each) over the seeds both have:
    ``{"n", "seeds", "diffs", "mean", "std", "t", "ci_low", "ci_high", "wins"}``, the two-sided
    95% Student-t interval ``mean -/+ t * std / sqrt(n)`` (None below 2 pairs), wins = diffs > 0.
    """
    seeds = sorted(set(base) & set(other))
    diffs = [float(other[s]) - float(base[s]) for s in seeds]
    n, m = len(diffs), summarise(diffs)
    out = {"n": n, "seeds": seeds, "diffs": diffs, "mean": m["mean"], "std": None, "t": None,
           "ci_low": None, "ci_high": None, "wins": sum(d > 0 for d in diffs)}
    if n >= 2:
        from scipy.stats import t as student_t

        t = float(student_t.ppf(0.975, n - 1))
        half = t * m["std"] / math.sqrt(n)
        out.update(std=m["std"], t=t, ci_low=m["mean"] - half, ci_high=m["mean"] + half)
    return out


_DASH = "\u2014"


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "\u2212")


def _mean_std(s: Mapping[str, Any]) -> str:
    if not s["n"]:
        return _DASH
    return f"{s['mean']:.2f}" + (f" \u00b1 {s['std']:.2f}" if s["n"] > 1 else "")


def _diff_cells(p: Mapping[str, Any] | None) -> tuple[str, str]:
    """Table cells ``+1.23 [−0.40, +2.86]`` and ``wins 3/3`` of a paired comparison."""
    if p is None or p["n"] == 0:
        return (_DASH if p is None else f"{_DASH} (no pairs)"), _DASH
    ci = f" [{_signed(p['ci_low'])}, {_signed(p['ci_high'])}]" if p["n"] >= 2 else " (1 pair)"
    return _signed(p["mean"]) + ci, f"wins {p['wins']}/{p['n']}"


def _arm_entry(name: str, runs: list[dict[str, Any]], base: dict[str, Any] | None
               ) -> dict[str, Any]:
    """An arm's aggregate numbers and its paired differences to ``base`` (None: the baseline)."""
    def values(key: str) -> list[Any]:
        return [r[key] for r in runs if r[key] is not None]

    def by_seed(rs: list[dict[str, Any]], key: str) -> dict[int, float]:
        return {r["seed"]: r[key] for r in rs if r["seed"] is not None and r[key] is not None}

    times, n_upd = sorted(values("median_epoch_s")), sum(r["box_updates"] for r in runs)
    return {
        "arm": name, "overrides": next((r["overrides"] for r in runs if r["overrides"]), None),
        "seeds": [r["seed"] for r in runs], "epochs": sorted(set(values("epochs"))),
        "knn_top1": summarise(values("knn_top1")), "linear_fast": summarise(values("linear_fast")),
        "box_iou_gt": summarise(values("box_iou_gt"))["mean"],
        "full_box_iou_gt": summarise(values("full_box_iou_gt"))["mean"],
        "median_epoch_s": times[len(times) // 2] if times else None,
        "s_per_box_update": sum(r["box_update_s"] or 0.0 for r in runs) / n_upd if n_upd else None,
        "vs_baseline": None if base is None else {
            k: paired_stats(by_seed(base["runs"], k), by_seed(runs, k))
            for k in ("knn_top1", "linear_fast")},
        "runs": runs,
    }


def _row(e: dict[str, Any], probe: bool) -> str:
    def num(x: float | None, fmt: str) -> str:
        return _DASH if x is None else format(x, fmt)

    diff, wins = _diff_cells(e["vs_baseline"] and e["vs_baseline"]["knn_top1"])
    cells = [e["arm"], str(len(e["runs"])), "\u2013".join(f"{x:g}" for x in e["epochs"]) or _DASH,
             _mean_std(e["knn_top1"]), diff, wins, num(e["box_iou_gt"], ".3f"),
             num(e["full_box_iou_gt"], ".3f"), num(e["median_epoch_s"], ".2f"),
             num(e["s_per_box_update"], ".2f")] + ([_mean_std(e["linear_fast"])] if probe else [])
    return "| " + " | ".join(cells) + " |"


def report(groups: Mapping[str, Sequence[str | Path]], out: str | Path | None = None
           ) -> tuple[str, dict[str, Any]]:
    """Markdown table (one row per arm; the footnote defines every column) and JSON data (every
    per-seed number) of ``groups`` (``{arm: [run folder, ...]}``), differences paired with the
    FIRST arm. With ``out``, ``ab.md``, ``ab.json`` and the kNN band figure are written there.
    """
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
        (out := Path(out)).mkdir(parents=True, exist_ok=True)
        (out / "ab.md").write_text(markdown)
        (out / "ab.json").write_text(json.dumps(data, indent=2) + "\n")
        plot_bands(data, out / FIGURE_FILE)
    return markdown, data


def plot_bands(data: Mapping[str, Any], path: str | Path) -> Path:
    """The kNN-per-epoch band figure of ``report``'s data (``viz.plot_knn_bands``)."""
    from .viz import plot_knn_bands

    return plot_knn_bands({e["arm"]: [r["curve"] for r in e["runs"]] for e in data["arms"]}, path)


_say = partial(print, flush=True)  # run_ab's progress lines, shown at once


def run_ab(config: str | None, overrides: Sequence[str], arms: Sequence[Arm],
           seeds: Sequence[int], out: str | Path, linear_fast: bool = False,
           progress: Callable[[str], None] = _say) -> dict[str, list[Path]]:
    """Train every arm on every seed in-process, seed-major (a partial A/B has whole pairs).

    Run ``(arm, s)`` trains in ``out/<arm>/seed<s>`` with ``overrides + arm.overrides +
    [train.seed=s, train.out_dir=...]`` on ``config``. Done folders are skipped, others resume;
    every config is checked before anything is written (also against the overrides a folder was
    started with). Only the main process writes. ``linear_fast`` also probes each final
    backbone. Returns ``{arm: [folder per seed]}``.
    """
    from . import dist
    from .config import load_config

    out, base, plan = Path(out), list(overrides), []
    for seed in seeds:
        for arm in arms:
            folder = out / arm.name / f"seed{seed}"
            over = [*base, *arm.overrides, f"train.seed={seed}", f"train.out_dir={folder}"]
            try:
                cfg = load_config(config, over)
            except ConfigError as err:
                raise ConfigError(f"arm {arm.name!r}: {err}") from None
            tag = folder / ARM_FILE
            now = {"overrides": list(arm.overrides), "base_overrides": base, "config": config}
            old = read_json(tag) if tag.is_file() else now
            if any(old.get(k) != v for k, v in now.items()):
                raise ConfigError(f"{str(tag)!r}: this run folder was started with other "
                                  f"settings {({k: old.get(k) for k in now})}; use another "
                                  "--out or move it away")
            plan.append((arm, seed, folder, cfg))
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
    import torch

    from . import dist
    from .build import build_run
    from .checkpoint import list_checkpoints
    from .engine import fit
    from .runtime import bars_enabled

    main, run = dist.is_main_process(), None
    if (folder / "summary.json").is_file():
        summary, note = read_json(folder / "summary.json"), "done already"
    else:
        if main:
            say(f"{tag} ..." + (" (resuming)" if list_checkpoints(folder) else ""))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ARM_FILE).write_text(json.dumps(
                {"arm": arm.name, "seed": seed, "overrides": list(arm.overrides), **base},
                indent=2) + "\n")
        with bars_enabled(cfg.train.progress):
            run = build_run(cfg, "auto")
            summary, note = fit(run), "done"
    probe = None
    if linear_fast and main and not (folder / PROBE_FILE).is_file():
        probe = _linear_fast(cfg, folder, run)
    if main:
        shown = [("kNN {:.2f}%", summary.get("knn_top1")), ("box IoU {:.3f}",
                 summary.get("box_iou_gt")), ("linear-fast {:.2f}%", probe),
                 ("{:.1f} s", (summary.get("time") or {}).get("train_s"))]
        parts = [fmt.format(v) for fmt, v in shown if v is not None]
        say(f"{tag}: {note}, " + (", ".join(parts) or "no metrics"))
    del run
    gc.collect()  # release the finished run's tensors (GPU memory, image caches) first
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _linear_fast(cfg: Any, folder: Path, run: Any = None) -> float | None:
    """Fast linear probe of the run's final backbone (``run``'s, else the newest checkpoint's),
    written to ``linear_fast.json`` and ``results.jsonl``; its top-1, None without labels."""
    from .build import build_data, build_evaluator, config_backbone, resolve_device
    from .checkpoint import CheckpointError, ckpt_path, latest_valid_checkpoint, load_backbone_state
    from .evaluate.linear import run_fast_probe
    from .evaluate.results import append_result

    if run is not None:
        backbone, data, device, epoch = run.method.backbone, run.data, run.device, run.epoch
    else:
        found = latest_valid_checkpoint(folder)
        if found is None:
            raise CheckpointError(f"no readable checkpoint in {str(folder / 'checkpoints')!r} "
                                  "for the linear-fast probe")
        device, backbone = resolve_device(cfg.train.device), config_backbone(cfg)
        load_backbone_state(backbone, found[1]["model"])
        backbone, data, epoch = backbone.to(device), build_data(cfg), int(found[1]["epoch"])
    if not (data.num_classes and data.has_labels):
        return None
    d, t, evaluator = cfg.data, cfg.train, build_evaluator(cfg, data)
    res = run_fast_probe(backbone, evaluator.eval_batches(d.eval_train_split, device),
                         evaluator.eval_batches(d.test_split, device), data.num_classes, device,
                         amp=t.amp, channels_last=t.channels_last)
    rec = {**res, "dataset": d.dataset, "split": d.test_split,
           "checkpoint": str(ckpt_path(folder, epoch)), "epoch": epoch}
    append_result(folder, rec)
    (folder / PROBE_FILE).write_text(json.dumps(rec, indent=2, default=str) + "\n")
    return float(res["top1"])
