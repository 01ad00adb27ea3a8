"""The paper-reproduction table (``docs/reproduce.md``): commands, cost, paper and our numbers.

One row per packaged ``<set>/<method>_rcrop.yaml`` / ``_ccrop.yaml`` pair. ``ccrop compare
--paper RUN ...`` fills "ours" from run folders, matched by the config they started from
(``command.json`` or ``ab_arm.json``): the newest ``linear`` top-1, else ``knn`` (marked); runs
started with overrides are marked too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import PACKAGED_CONFIGS, ConfigError
from .evaluate.results import read_results
from .runs import ARM_FILE, read_json

COMMAND_FILE = "command.json"  # in a run folder: the config file and overrides it started with
#: Paper numbers we hold. None: not known to us (we do not copy numbers we cannot check);
#: the abstract reports +0.4 to +2.0 points over RandomResizedCrop on the small sets.
PAPER_TOP1: dict[str, tuple[float, float] | None] = {}
#: Measured: one H100, SimCLR + ContrastiveCrop, ResNet-18 width 64, CIFAR size (50k x 32 px),
#: GPU view path, bf16 + channels_last (benchmarks/results/h100-2026-11-26).
H100_CIFAR_EPOCH_S = 1.885
_SMALL = {"cifar10": (50_000, 32), "cifar100": (50_000, 32), "stl10": (105_000, 96),
          "tiny-imagenet": (100_000, 64)}


def paper_pairs() -> list[tuple[str, str, str]]:
    """``(setting, rcrop config, ccrop config)`` of every packaged pair but the laptop sets,
    e.g. ``("cifar10/simclr", "cifar10/simclr_rcrop.yaml", "cifar10/simclr_ccrop.yaml")``."""
    pairs = []
    for ccrop in sorted(PACKAGED_CONFIGS.rglob("*_ccrop.yaml")):
        rcrop = ccrop.with_name(ccrop.name.replace("_ccrop", "_rcrop"))
        folder = ccrop.parent.name
        if folder in ("synthetic", "cluttered", "icons") or not rcrop.is_file():
            continue
        setting = f"{folder}/{ccrop.stem.replace('_ccrop', '')}"
        pairs.append((setting, f"{folder}/{rcrop.name}", f"{folder}/{ccrop.name}"))
    return pairs


def gpu_hours(setting: str) -> str:
    """H100 hours of a 500-epoch small-set pretraining, scaled from the measured CIFAR epoch by
    images x pixels."""
    folder = setting.split("/")[0]
    if folder not in _SMALL:
        return "not measured"
    n, side = _SMALL[folder]
    hours = H100_CIFAR_EPOCH_S * (n / 50_000) * (side / 32) ** 2 * 500 / 3600
    return f"~{hours:.1f} (est.)" if folder not in ("cifar10", "cifar100") else \
        f"~{hours:.2f} (measured epoch)"


def run_origin(folder: Path) -> tuple[str | None, list[str]]:
    """The config file a run started from (normalised ``set/name.yaml``) and its overrides
    (``train.out_dir``/``train.seed`` left out: they do not change the setting)."""
    for name in (COMMAND_FILE, ARM_FILE):
        path = folder / name
        if path.is_file():
            data = read_json(path)
            config = data.get("config")
            over = [*data.get("base_overrides", []), *data.get("overrides", [])]
            over = [o for o in over if not o.startswith(("train.out_dir=", "train.seed="))]
            parts = None if config is None else Path(str(config)).with_suffix(".yaml").parts
            return (None if parts is None else "/".join(parts[-2:])), over
    return None, []


def run_top1(folder: Path) -> tuple[float, str] | None:
    """Newest ``linear`` top-1 of a run folder, else its newest ``knn`` (protocol named)."""
    records = read_results(folder)
    for protocol in ("linear", "knn"):
        found = [r for r in records if r.get("protocol") == protocol and r.get("top1") is not None]
        if found:
            return float(found[-1]["top1"]), protocol
    return None


def _last_checkpoint(config: str) -> str:
    """The final checkpoint a packaged config writes (``train.out_dir``, ``train.epochs``)."""
    from .checkpoint import ckpt_path
    from .config import load_config

    t = load_config(config).train
    return str(ckpt_path(t.out_dir, t.epochs))


def _ours(runs: dict[str, list[tuple[float, str, bool]]], config: str) -> str:
    return ", ".join(f"{top1:.2f}{'' if protocol == 'linear' else ' (kNN)'}{' *' * changed}"
                     for top1, protocol, changed in runs.get(config, [])) or " "


def collect(folders: list[str | Path]) -> dict[str, list[tuple[float, str, bool]]]:
    """``{config: [(top1, protocol, started with overrides), ...]}`` of finished runs."""
    out: dict[str, list[tuple[float, str, bool]]] = {}
    for folder in map(Path, folders):
        config, over = run_origin(folder)
        result = run_top1(folder)
        if config is None or result is None:
            why = "no command.json/ab_arm.json" if config is None else "no linear or knn result"
            raise ConfigError(f"{str(folder)!r}: cannot place this run in the table ({why})")
        out.setdefault(config, []).append((*result, bool(over)))
    return out


def reproduce_table(folders: list[str | Path] = ()) -> str:
    """The markdown table of ``docs/reproduce.md``; "ours" filled from ``folders``."""
    runs = collect(list(folders))
    lines = ["| setting | pretrain (rcrop, then ccrop) | linear | H100 hours per run | "
             "paper rcrop → ccrop | ours rcrop | ours ccrop |", "|---" * 7 + "|"]
    for setting, rcrop, ccrop in paper_pairs():
        paper = PAPER_TOP1.get(setting)
        paper_cell = "not known to us" if paper is None else f"{paper[0]:.2f} → {paper[1]:.2f}"
        lines.append(
            f"| {setting} | `ccrop pretrain --config {rcrop}`<br>`ccrop pretrain --config "
            f"{ccrop}` | `ccrop linear --checkpoint {_last_checkpoint(ccrop)}` (same for the "
            f"rcrop run) | "
            f"{gpu_hours(setting)} | {paper_cell} | {_ours(runs, rcrop)} | "
            f"{_ours(runs, ccrop)} |")
    return "\n".join(lines) + "\n"


def write_command(run_dir: Path, config: str | None, overrides: list[str],
                  argv: list[str]) -> Any:
    """Record how a run was started (``command.json``), once: a resume keeps the original."""
    path = Path(run_dir) / COMMAND_FILE
    if not path.exists():
        path.write_text(json.dumps({"config": config, "overrides": overrides, "argv": argv},
                                   indent=2) + "\n")
    return path
