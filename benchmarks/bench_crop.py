"""Benchmark: CPU view pipeline (torchvision RRC vs ContrastiveCrop) and batched localization.

Writes JSON (default ``benchmarks/results/bench_crop.json``):
- views/s of the full CPU view pipeline (crop, flip, jitter p=0.8, grayscale p=0.2, tensor,
  normalise) with torchvision's ``RandomResizedCrop`` vs ccrop's ``ContrastiveCrop``, at 32 px
  (synthetic 32 px images) and 224 px (synthetic 256 px images), one process, one thread;
- boxes/s of ``boxes_from_features`` vs a per-image loop in the style of the official code
  (channel sum, min-max, upsample, threshold, ``nonzero`` extents image by image), for
  CIFAR-like (512 x 4 x 4 -> 32 px) and ImageNet-like (2048 x 7 x 7 -> 224 px) feature maps.

Usage: ``python benchmarks/bench_crop.py [--out PATH] [--device cuda]``
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as T

from ccrop.data.synthetic import SyntheticObjects
from ccrop.data.views import build_view_transform
from ccrop.localize import boxes_from_features

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def torchvision_pipeline(size: int) -> T.Compose:
    """The paper's CIFAR recipe with torchvision's RandomResizedCrop (the RRC baseline)."""
    return T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                      T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                      T.RandomGrayscale(p=0.2), T.ToTensor(), T.Normalize(MEAN, STD)])


def views_per_s(fn, images, seconds: float) -> float:
    """Views/s of ``fn(img)`` cycling over ``images`` for about ``seconds`` (after warm-up)."""
    for img in images[:8]:
        fn(img)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for img in images:
            fn(img)
        n += len(images)
    return n / (time.perf_counter() - start)


def bench_views(size: int, source: int, seconds: float) -> dict[str, float]:
    """RRC vs ContrastiveCrop through the full pipeline; repeated alternately, best of 3."""
    ds = SyntheticObjects(num_images=64, image_size=source, seed=1)
    images = [ds[i][0] for i in range(len(ds))]
    tv = torchvision_pipeline(size)
    ours = build_view_transform("cifar", "ccrop", size, MEAN, STD, alpha=0.1,
                                full_box_guard=None)
    rng = random.Random(0)
    box = (0.2, 0.15, 0.8, 0.9)
    rrc, cc = [], []
    for _ in range(3):  # alternate to share any drift in machine load
        rrc.append(views_per_s(tv, images, seconds))
        cc.append(views_per_s(lambda img: ours(img, box, rng), images, seconds))
    return {"rrc_torchvision_views_per_s": max(rrc), "contrastive_crop_views_per_s": max(cc),
            "ccrop_over_rrc": max(cc) / max(rrc)}


def loop_boxes(fmap: torch.Tensor, size: int, k: float) -> torch.Tensor:
    """Per-image localization as in the official code (one sync per image via ``nonzero``)."""
    out = []
    for f in fmap:
        heat = f.sum(0)
        heat = (heat - heat.min()) / (heat.max() - heat.min())
        heat = F.interpolate(heat[None, None], size=(size, size), mode="bilinear",
                             align_corners=False)[0, 0]
        ys, xs = (heat > k).nonzero(as_tuple=True)
        out.append(torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() / size)
    return torch.stack(out)


def bench_boxes(channels: int, hw: int, size: int, batch: int, device: str) -> dict[str, float]:
    """boxes/s of the batched step vs the per-image loop, and their agreement."""
    g = torch.Generator().manual_seed(0)
    fmap = torch.rand(batch, channels, hw, hw, generator=g).to(device)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def rate(fn, reps: int) -> float:
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return reps * batch / (time.perf_counter() - start)

    batched = rate(lambda: boxes_from_features(fmap, (size, size), 0.1), 5)
    loop = rate(lambda: loop_boxes(fmap, size, 0.1), 1)
    agree = torch.allclose(boxes_from_features(fmap, (size, size), 0.1).cpu(),
                           loop_boxes(fmap, size, 0.1).cpu())
    return {"batched_boxes_per_s": batched, "loop_boxes_per_s": loop,
            "batched_over_loop": batched / loop, "same_boxes": bool(agree)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/bench_crop.json")
    parser.add_argument("--device", default="cpu", help="device of the localization benchmark")
    parser.add_argument("--seconds", type=float, default=1.5, help="per view measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "threads": 1, "device": args.device,
                        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda")
                        else None},
        "views_32px": bench_views(32, 32, args.seconds),
        "views_224px": bench_views(224, 256, args.seconds),
        "boxes_cifar_512x4x4_to_32": bench_boxes(512, 4, 32, 512, args.device),
        "boxes_imagenet_2048x7x7_to_224": bench_boxes(2048, 7, 224, 256, args.device),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
