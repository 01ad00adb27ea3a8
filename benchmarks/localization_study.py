"""Box IoU of heatmap -> box rules against true boxes, per checkpoint, on a held-out split.

Reads the checkpoints of finished runs (keep them: ``train.keep_last`` large), builds each run's
dataset on ``--split`` (``val``: never the test split) and scores a grid of localization rules
with the checkpoint's encoder: heatmap stages x cell score (channel sum or border contrast) x
polarity x centre prior x threshold x box region. Beside them: full-image boxes, the fixed
centre box (0.25-0.75), the no-network saliency box and the paper's rule. For every rule it
also reports how well the label-free box confidence ranks boxes (AUROC for IoU >= 0.5) and
the IoU after falling back to the full image below each ``--min-confidence`` level.

    python benchmarks/localization_study.py /work/ab/synthetic/rcrop/seed0:3,6,9 \\
        /work/ab/icons/rcrop/seed0:6,12,18,24 --split val --num 1024 --out study.json

Writes JSON (every number) and prints a markdown table per dataset (rows: rules, best first;
columns: checkpoints, mean IoU, worst margin over full-image boxes, AUROC).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import torch
from scipy.stats import rankdata

from ccrop.boxes import box_area, box_iou
from ccrop.build import config_backbone
from ccrop.checkpoint import ckpt_path, load_backbone_state, load_checkpoint
from ccrop.config import load_config
from ccrop.data import DATASET_INFO, build_dataset
from ccrop.data.sources import loc_loader
from ccrop.localize import box_confidence, boxes_from_heatmaps, heatmap_parts, saliency_heatmaps

STAGES = ((3,), (4,), (3, 4))
HEATMAPS = ("sum", "contrast")
POLARITIES = ("none", "auto")
PRIORS = (0.0, 1.0)
THRESHOLDS = (("otsu", 0.0), ("quantile", 0.7), ("fixed", 0.5))
REGIONS = ("peak", "extent")
MIN_CONFIDENCE = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
PAPER = "paper: layer4, sum, k 0.1, extent"
OLD_DEFAULT = "layer3, sum, none, prior 0, otsu, peak"
REFERENCES = ("full image", "centre box", "saliency (mean)", "saliency (nearest)")


def rule_name(stages: tuple, heatmap: str, polarity: str, prior: float, mode: str, k: float,
              region: str) -> str:
    """A readable rule name, e.g. ``layer3, contrast, auto, prior 1, otsu, peak``."""
    law = "otsu" if mode == "otsu" else f"{'k' if mode == 'fixed' else 'q'} {k:g}"
    return (f"layer{'+'.join(map(str, stages))}, {heatmap}, {polarity}, prior {prior:g}, "
            f"{law}, {region}")


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float | None:
    """Area under the ROC curve of ``score`` for the ``positive`` labels (ties averaged)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = torch.from_numpy(rankdata(score.numpy()))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _score_boxes(boxes: torch.Tensor, conf: torch.Tensor, truth: torch.Tensor) -> dict:
    """IoU, area, AUROC and IoU after each fallback level of one rule's boxes (N, 4)."""
    iou = box_iou(boxes, truth)
    full_iou = box_iou(torch.tensor([[0.0, 0, 1, 1]]).expand_as(truth), truth)
    out = {"iou": float(iou.mean()), "area": float(box_area(boxes).mean()),
           "auroc": auroc(conf, iou >= 0.5)}
    for m in MIN_CONFIDENCE[1:]:
        low = conf < m
        out[f"iou@{m:g}"] = float(torch.where(low, full_iou, iou).mean())
        out[f"fallback@{m:g}"] = float(low.float().mean())
    return out


@torch.no_grad()
def score(ckpt: Path, split: str, num: int | None, grid: str = "full") -> dict[str, dict]:
    """Every rule's numbers for one checkpoint on ``split`` (``grid="defaults"``: only the
    layer3 Otsu peak rules, ccrop's default and its earlier default among them)."""
    state = load_checkpoint(ckpt)
    cfg = load_config(None, base=state["config"])
    d = cfg.data
    kwargs = dict(d.dataset_kwargs)
    if num is not None:
        kwargs["num_images"] = num
    ds = build_dataset(d.dataset, d.root, split, d.download, **kwargs)
    info = DATASET_INFO[d.dataset]
    backbone = config_backbone(cfg)
    load_backbone_state(backbone, state["model"])
    backbone.eval()
    axes = (STAGES, POLARITIES, THRESHOLDS, REGIONS)  # "defaults": the first of each
    all_stages, polarities, thresholds, regions = (
        axes if grid == "full" else tuple(a[:1] for a in axes))
    parts: dict[str, list] = defaultdict(list)
    order = []
    for idx, x in loc_loader(ds, d.mean or info["mean"], d.std or info["std"], 256, 0,
                             d.loc_image_size):
        order.append(idx)
        size = x.shape[-2:]
        l3, l4 = backbone.stage_maps(x, (3, 4))
        maps = {(4,): l4, (3,): l3, (3, 4): [l3, l4]}
        for ref in ("mean", "nearest"):
            heat, _ = saliency_heatmaps(x, ref)
            boxes, _ = boxes_from_heatmaps(heat, 0.0, "otsu", "peak")
            parts[f"saliency ({ref})"].append((boxes, box_confidence(heat, boxes)))
        heat, _, _ = heatmap_parts(l4, size, "paper")
        boxes, _ = boxes_from_heatmaps(heat, 0.1, "fixed", "extent")
        parts[PAPER].append((boxes, box_confidence(heat, boxes)))
        for stages, hm, pol, prior in itertools.product(all_stages, HEATMAPS, polarities, PRIORS):
            heat, _, _ = heatmap_parts(maps[stages], size, "receptive", hm, pol, prior)
            for (mode, k), region in itertools.product(thresholds, regions):
                boxes, _ = boxes_from_heatmaps(heat, k, mode, region)
                name = rule_name(stages, hm, pol, prior, mode, k, region)
                parts[name].append((boxes, box_confidence(heat, boxes)))
    truth = torch.as_tensor(ds.gt_boxes).float()[torch.cat(order)]
    n = len(truth)
    fixed = {"full image": [0.0, 0.0, 1.0, 1.0], "centre box": [0.25, 0.25, 0.75, 0.75]}
    out = {name: _score_boxes(torch.tensor([box]).expand(n, 4), torch.zeros(n), truth)
           for name, box in fixed.items()}
    for name, chunks in parts.items():
        boxes, conf = (torch.cat(t) for t in zip(*chunks))
        out[name] = _score_boxes(boxes, conf, truth)
    return out


def summarise(results: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per rule: mean IoU, worst margin over full-image boxes and over the centre box, mean
    AUROC, and the best fallback level (by mean IoU) with its IoU and worst margin."""
    cols = list(results)
    out = {}
    for name in results[cols[0]]:
        rows = [results[c][name] for c in cols]
        keys = ["iou"] + [f"iou@{m:g}" for m in MIN_CONFIDENCE[1:]]
        best = max(keys, key=lambda k: sum(r.get(k, r["iou"]) for r in rows))
        aucs = [r["auroc"] for r in rows if r["auroc"] is not None]
        out[name] = {
            "mean_iou": sum(r["iou"] for r in rows) / len(rows),
            "min_margin_full": min(r["iou"] - results[c]["full image"]["iou"]
                                   for r, c in zip(rows, cols)),
            "min_margin_centre": min(r["iou"] - results[c]["centre box"]["iou"]
                                     for r, c in zip(rows, cols)),
            "auroc": sum(aucs) / len(aucs) if aucs else None,
            "best_fallback": best,
            "best_fallback_iou": sum(r.get(best, r["iou"]) for r in rows) / len(rows),
            "best_fallback_min_margin_full": min(
                r.get(best, r["iou"]) - results[c]["full image"]["iou"]
                for r, c in zip(rows, cols)),
        }
    return out


def table(results: dict[str, dict[str, dict]], top: int = 25) -> str:
    """Markdown: references, the paper's rule and ccrop's earlier default, then the ``top``
    rules by mean IoU; cells are IoU (mean box area)."""
    cols = list(results)
    summary = summarise(results)
    fixed = [*REFERENCES, PAPER, OLD_DEFAULT]
    ranked = fixed + sorted((n for n in summary if n not in fixed),
                            key=lambda n: -summary[n]["mean_iou"])[:top]
    lines = ["| rule | " + " | ".join(cols) + " | mean IoU | worst vs full | AUROC |",
             "|---|" + "---|" * (len(cols) + 3)]
    for n in ranked:
        s = summary[n]
        cells = [f"{results[c][n]['iou']:.3f} ({results[c][n]['area']:.2f})" for c in cols]
        auc = "—" if s["auroc"] is None else f"{s['auroc']:.2f}"
        lines.append(f"| {n} | " + " | ".join(cells) +
                     f" | **{s['mean_iou']:.3f}** | {s['min_margin_full']:+.3f} | {auc} |")
    return "\n".join(lines)


def main() -> None:
    """Score every checkpoint, print one table per dataset and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="RUN_FOLDER:EPOCH,EPOCH,... (checkpoint epochs)")
    p.add_argument("--split", default="val", help="held-out split with true boxes")
    p.add_argument("--num", type=int, default=None, help="images of the split (default all)")
    p.add_argument("--grid", choices=("full", "defaults"), default="full",
                   help="every rule, or only the layer3 Otsu peak rules (sum/contrast x prior)")
    p.add_argument("--out", help="JSON file")
    args = p.parse_args()
    by_set: dict[str, dict] = defaultdict(dict)
    for spec in args.runs:
        run, _, epochs = spec.rpartition(":")
        dataset = load_config(Path(run) / "config.yaml").data.dataset
        for e in (int(v) for v in epochs.split(",")):
            col = f"{Path(run).parent.name}/{Path(run).name} ep{e}"
            by_set[dataset][col] = score(ckpt_path(run, e), args.split, args.num, args.grid)
            print(f"scored {dataset} {col}", flush=True)
    for dataset, results in by_set.items():
        print(f"\n### {dataset} ({args.split} split)\n\n{table(results)}")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"split": args.split, "num": args.num, "grid": args.grid, "results": by_set,
             "summary": {k: summarise(v) for k, v in by_set.items()}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
