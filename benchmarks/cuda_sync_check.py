"""On a CUDA device: prove the training loop makes no host sync, with PyTorch's own detector.

``torch.cuda.set_sync_debug_mode("error")`` raises on every synchronising CUDA call. This runs
view generation and optimizer steps of every method (GPU view path, bf16, channels_last) under
it, plus the box update's batches, and writes JSON: for each case ``ok`` or the first error with
its traceback tail. The CPU twin of this check is ``tests/test_syncs.py`` (``ccrop.syncs``).

Usage: python benchmarks/cuda_sync_check.py --out sync_check.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import traceback
from pathlib import Path

import torch

from ccrop.build import build_run
from ccrop.config import load_config
from ccrop.engine import _to_input, _train_step
from ccrop.syncs import LossDisplay

TINY = ["data.dataset=synthetic", "data.dataset_kwargs.num_images=2048", "data.batch_size=256",
        "data.num_workers=0", "data.pipeline=gpu", "model.width=16", "train.epochs=2",
        "crop.warmup_epochs=0", "crop.loc_interval=1", "train.knn_every=0",
        "train.tensorboard=false", "train.progress=false", "train.amp=true",
        "train.channels_last=true", "optim.fused=true"]
PARAMS = {"simclr": [], "moco": ["method.params.queue_size=1024"], "byol": [],
          "simsiam": []}


def steps_without_sync(method: str, steps: int = 6) -> dict:
    """Warm up 2 steps, then run ``steps`` more (views + step) with syncs turned into errors."""
    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(load_config(None, [*TINY, f"method.name={method}",
                                           f"train.out_dir={tmp}", *PARAMS[method]]))
        run.source.set_epoch(0, True)
        params = [p for p in run.method.parameters() if p.requires_grad]
        shown = LossDisplay(run.device)
        batches = iter(run.source)
        for _ in range(2):  # warm-up: cuDNN autotuning, allocator growth
            _, views = next(batches)
            _train_step(run, *(_to_input(v, run.cfg) for v in views), params, 100)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(steps):
                _, views = next(batches)
                loss, _ = _train_step(run, *(_to_input(v, run.cfg) for v in views), params, 100)
                shown.update(loss)
        except RuntimeError as err:
            return {"ok": False, "error": str(err).splitlines()[0],
                    "where": traceback.format_exc().splitlines()[-12:]}
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        shown.update(loss)  # the copy queued above has landed: the bar shows a number
        return {"ok": True, "steps": steps, "loss_shown": shown.text}


def loc_batches_without_sync() -> dict:
    """The localization forward + heatmap -> box of a few batches, syncs as errors."""
    from ccrop.localize import localize

    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(load_config(None, [*TINY, f"train.out_dir={tmp}"]))
        enc = run.method.heatmap_encoder.eval()
        batches = list(run.source.loc_batches())[:3]
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
                for _, images in batches:
                    localize(enc.forward_features(images), images.shape[-2:], 0.1, "fixed",
                             "receptive", heatmap="contrast", polarity="auto", min_confidence=0.1)
        except RuntimeError as err:
            return {"ok": False, "error": str(err).splitlines()[0],
                    "where": traceback.format_exc().splitlines()[-12:]}
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return {"ok": True, "batches": len(batches)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="sync_check.json")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cuda_sync_check: needs a CUDA device")
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    for method in PARAMS:
        result[method] = steps_without_sync(method)
    result["localization"] = loc_batches_without_sync()
    result["all_ok"] = all(v["ok"] for v in result.values() if isinstance(v, dict))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
