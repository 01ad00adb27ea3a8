"""Multi-process training through torchrun (CPU, gloo): the same engine, boxes for every image."""

import json
import subprocess
import sys

import torch


def test_torchrun_two_processes_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "ccrop.cli", "pretrain",
           "data.dataset_kwargs.num_images=66", "data.batch_size=16", "data.num_workers=0",
           "model.width=8", "train.epochs=2", "crop.warmup_epochs=1", "crop.loc_interval=1",
           "train.progress=false", "train.tensorboard=false", "crop.threshold_mode=quantile",
           "crop.threshold=0.5", f"train.out_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run folder:") == 1  # printed by rank 0 only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["box_updates"] == [1] and summary["epochs"] == 2
    # 16 per step = 8 per rank; 66 images -> 33 per rank -> 4 steps per epoch
    assert summary["steps"] == 8
    state = torch.load(out / "checkpoints" / "ckpt-epoch00002.pt", weights_only=True)
    boxes = state["boxes"]["boxes"]  # every image localized, incl. the padded shard's
    assert boxes.shape == (66, 4) and ((boxes[:, 2] - boxes[:, 0]) < 1).all()
