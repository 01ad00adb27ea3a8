"""Icon identity retrieval on the icons set: does an encoder's feature find the same object on
another background?

The icons set labels images by icon category, which an encoder trained on 116 icons does not
learn to generalise to unseen icons (kNN near chance). This asks something narrower of the
same test split: each of its images shows one of 39 held-out icons at a random position and
scale on a random wallpaper crop; for every image, is its nearest other image (cosine
similarity of the backbone's pooled features) an image of the **same icon**? An encoder whose
features describe the background scores near chance; one that describes the object scores
high. Leave-one-out 1-NN top-1 (%), every finished run of an A/B folder (final checkpoint),
beside raw pixels and a randomly initialised encoder; Δ paired by seed against ``rcrop``.

    python benchmarks/icon_retrieval.py AB/icons --out icon_retrieval.json

Writes JSON (every run) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ccrop.ab import paired_stats, summarise
from ccrop.build import config_backbone
from ccrop.checkpoint import list_checkpoints, load_backbone_state, load_checkpoint
from ccrop.config import load_config
from ccrop.data.run_data import build_data
from ccrop.data.sources import loc_loader
from ccrop.evaluate.features import extract_features


def nn_top1(feats: torch.Tensor, labels: torch.Tensor, chunk: int = 1024) -> float:
    """Leave-one-out 1-NN top-1 (%) of (N, D) ``feats`` (cosine) for (N,) ``labels``."""
    z = F.normalize(feats.float(), dim=1)
    hits = 0
    for s in range(0, len(z), chunk):
        sim = z[s:s + chunk] @ z.T  # (c, N)
        sim[torch.arange(len(sim)), torch.arange(s, s + len(sim))] = -2.0  # not itself
        hits += int((labels[sim.argmax(1)] == labels[s:s + chunk]).sum())
    return 100.0 * hits / len(z)


def chance(labels: torch.Tensor) -> float:
    """Top-1 (%) of a neighbour drawn at random: the sum of squared label frequencies."""
    p = torch.bincount(labels).double() / len(labels)
    return float(100 * (p * p).sum())


@torch.no_grad()
def test_images(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's test split as normalised images (N, 3, H, W) and icon ids (N,)."""
    data = build_data(cfg)
    ds = data.make_split(cfg.data.test_split)
    images = torch.cat([x for _, x in loc_loader(ds, data.mean, data.std, 512, 0)])
    return images, torch.as_tensor(ds.params["icon"]).long()


def features(backbone: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pooled features (N, D) of the backbone (eval mode, no grad) on the CPU."""
    loader = DataLoader(TensorDataset(images, torch.zeros(len(images))), batch_size=512)
    return extract_features(backbone, loader, "cpu")[0]


def main() -> None:
    """Score every finished run of the A/B folder, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ab", help="an icons A/B --out folder (ARM/seedN/checkpoints)")
    p.add_argument("--out", help="JSON file")
    args = p.parse_args()
    runs = sorted(r for r in Path(args.ab).glob("*/seed*") if (r / "summary.json").is_file())
    if not runs:
        raise SystemExit(f"no finished runs under {args.ab}")
    cfg = load_config(runs[0] / "config.yaml")
    images, icons = test_images(cfg)
    torch.manual_seed(0)
    ref = {"chance": chance(icons), "pixels": nn_top1(images.flatten(1), icons),
           "random encoder": nn_top1(features(config_backbone(cfg), images), icons)}
    scores: dict[str, dict[int, float]] = {}
    for run in runs:
        state = load_checkpoint(list_checkpoints(run)[-1])
        backbone = config_backbone(load_config(None, base=state["config"]))
        load_backbone_state(backbone, state["model"])
        seed = int(run.name.removeprefix("seed"))
        scores.setdefault(run.parent.name, {})[seed] = nn_top1(features(backbone, images), icons)
        print(f"{run.parent.name} seed {seed}: {scores[run.parent.name][seed]:.2f}", flush=True)
    print(f"\n{len(icons)} test images, {len(icons.unique())} icons\n")
    print("| encoder | seeds | identity 1-NN top-1 (%) | Δ vs rcrop [95% CI] | wins |")
    print("|---|---|---|---|---|")
    for name, value in ref.items():
        print(f"| {name} | — | {value:.2f} | — | — |")
    table = {}
    for arm, by_seed in scores.items():
        s = summarise(list(by_seed.values()))
        d = paired_stats(scores["rcrop"], by_seed) if arm != "rcrop" and "rcrop" in scores else None
        table[arm] = {"by_seed": by_seed, "summary": s, "vs_rcrop": d}
        cells = ("—", "—") if d is None or d["ci_low"] is None else (
            f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]", f"{d['wins']}/{d['n']}")
        print(f"| {arm} | {len(by_seed)} | {s['mean']:.2f} ± {s['std']:.2f} | {cells[0]} | "
              f"{cells[1]} |")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"images": len(icons), "icons": len(icons.unique()), "references": ref,
             "arms": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
