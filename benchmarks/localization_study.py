"""Box IoU of heatmap -> box rules against true boxes, per checkpoint, on a held-out split.

Reads the checkpoints of finished runs (keep them: ``train.keep_last`` large), builds each run's
dataset on ``--split`` (``val``: a split carved from train, never the test split) and scores a
grid of localization rules with the checkpoint's encoder: heatmap stages x threshold mode x
box region, plus the paper's rule and full-image boxes. Writes JSON and prints a markdown table
(rows: rules, columns: checkpoints, then the mean).

    python benchmarks/localization_study.py runs/a runs/b --epochs 3,6,9 --split val \
        --num 1024 --out benchmarks/results/localization_synthetic.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from ccrop.boxes import box_area, box_iou
from ccrop.build import config_backbone
from ccrop.checkpoint import ckpt_path, load_backbone_state, load_checkpoint
from ccrop.config import load_config
from ccrop.data import DATASET_INFO, build_dataset
from ccrop.data.sources import loc_loader
from ccrop.localize import localize

#: (name, stages, mode, threshold, region, align); the first is the paper's rule
PAPER = ("paper: layer4, k 0.1, extent", (4,), "fixed", 0.1, "extent", "paper")
THRESHOLDS = (("fixed", 0.1), ("fixed", 0.3), ("fixed", 0.5), ("quantile", 0.7),
              ("quantile", 0.8), ("otsu", 0.0))


def rules() -> list[tuple]:
    """The grid: the paper's rule, then stages x thresholds x regions (receptive alignment)."""
    out = [PAPER]
    for stages, (mode, k), region in itertools.product(((4,), (3,), (3, 4)), THRESHOLDS,
                                                       ("extent", "peak")):
        name = f"layer{'+'.join(map(str, stages))}, " + (
            "otsu" if mode == "otsu" else f"{'k' if mode == 'fixed' else 'q'} {k:g}") + \
            f", {region}"
        out.append((name, stages, mode, k, region, "receptive"))
    return out


@torch.no_grad()
def score(ckpt: Path, split: str, num: int | None) -> dict[str, dict[str, float]]:
    """IoU with the truth and mean box area of every rule for one checkpoint."""
    state = load_checkpoint(ckpt)
    cfg = load_config(None, base=state["config"])
    d = cfg.data
    kwargs = dict(d.dataset_kwargs)
    if num is not None:
        kwargs["num_images"] = num
    ds = build_dataset(d.dataset, d.root, split, d.download, **kwargs)
    gt = torch.as_tensor(ds.gt_boxes).float()
    info = DATASET_INFO[d.dataset]
    backbone = config_backbone(cfg)
    load_backbone_state(backbone, state["model"])
    backbone.eval()
    boxes: dict[str, list[torch.Tensor]] = {r[0]: [] for r in rules()}
    order = []
    for idx, x in loc_loader(ds, d.mean or info["mean"], d.std or info["std"], 256, 0,
                             d.loc_image_size):
        order.append(idx)
        l3, l4 = backbone.stage_maps(x, (3, 4))
        maps = {(4,): l4, (3,): l3, (3, 4): [l3, l4]}
        for name, stages, mode, k, region, align in rules():
            boxes[name].append(localize(maps[stages], x.shape[-2:], k, mode, align, region)[0])
    truth = gt[torch.cat(order)]
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand_as(truth)
    out = {"full image": {"iou": float(box_iou(full, truth).mean()), "area": 1.0}}
    for name, parts in boxes.items():
        b = torch.cat(parts)
        out[name] = {"iou": float(box_iou(b, truth).mean()), "area": float(box_area(b).mean())}
    return out


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per rule (best mean IoU first after the references), one column per
    checkpoint, then the mean; cells are IoU (mean box area)."""
    cols = list(results)
    names = list(next(iter(results.values())))
    mean = {n: sum(results[c][n]["iou"] for c in cols) / len(cols) for n in names}
    head = ["full image", PAPER[0]]
    ranked = head + sorted((n for n in names if n not in head), key=lambda n: -mean[n])
    lines = ["| rule | " + " | ".join(cols) + " | mean IoU |",
             "|---|" + "---|" * (len(cols) + 1)]
    for n in ranked:
        cells = [f"{results[c][n]['iou']:.3f} ({results[c][n]['area']:.2f})" for c in cols]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | **{mean[n]:.3f}** |")
    return "\n".join(lines)


def main() -> None:
    """Score every checkpoint and print/write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--epochs", required=True, help="checkpoint epochs, e.g. 3,6,9")
    p.add_argument("--split", default="val", help="held-out split with true boxes")
    p.add_argument("--num", type=int, default=None, help="images of the split (default all)")
    p.add_argument("--out", help="JSON file")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for run in args.runs:
        for e in (int(v) for v in args.epochs.split(",")):
            results[f"{Path(run).name} ep{e}"] = score(ckpt_path(run, e), args.split, args.num)
    text = table(results)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"split": args.split, "num": args.num,
                                              "results": results, "markdown": text},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
