"""Multi-process training through torchrun (CPU, gloo): the same engine, boxes for every image."""

import json
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # torchrun subprocesses


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_torchrun_two_processes_on_cpu(tmp_path, pipeline):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "ccrop.cli", "pretrain",
           "data.dataset_kwargs.num_images=66", "data.batch_size=16", "data.num_workers=0",
           "model.width=8", "train.epochs=2", "crop.warmup_epochs=1", "crop.loc_interval=1",
           "train.progress=false", "train.tensorboard=false", "crop.threshold_mode=quantile",
           "train.device=cpu",
           "crop.threshold=0.5", f"data.pipeline={pipeline}", f"train.out_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run folder:") == 1  # printed by rank 0 only
    summary = json.loads((out / "summary.json").read_text())
    assert summary["box_updates"] == [1] and summary["epochs"] == 2
    # 16 per step = 8 per rank; 66 images -> 33 per rank -> 4 steps per epoch
    assert summary["steps"] == 8
    # the boxes written by the two ranks (each localized its shard; 66 = 2 x 33, padded
    # sampler) equal a one-process localization with the epoch-1 weights, index by index
    ddp_boxes = torch.load(out / "checkpoints" / "ckpt-epoch00002.pt",
                           weights_only=True)["boxes"]["boxes"]
    assert torch.allclose(ddp_boxes, _one_process_boxes(out), atol=1e-6)
    # the final kNN: each rank embedded half of the bank and queries with rank 0's BN
    # statistics; gathered in order, it equals a one-process kNN of the saved weights
    assert abs(summary["knn_top1"] - _one_process_knn(out)) < 1e-6


def _one_process_knn(out):
    from ccrop.build import build_data, build_evaluator, config_backbone
    from ccrop.checkpoint import load_backbone_state, load_checkpoint
    from ccrop.config import load_config

    cfg = load_config(out / "config.yaml")
    backbone = config_backbone(cfg)
    load_backbone_state(backbone, load_checkpoint(out / "checkpoints" / "ckpt-epoch00002.pt")[
        "model"])
    return build_evaluator(cfg, build_data(cfg)).knn(backbone, torch.device("cpu"))["top1"]


def _one_process_boxes(out):
    from torch.utils.data import DataLoader

    from ccrop import BoxStore
    from ccrop.build import build_data, config_backbone
    from ccrop.checkpoint import load_backbone_state, load_checkpoint
    from ccrop.config import load_config
    from ccrop.data.boxed import IndexedImages
    from ccrop.data.views import EvalTransform
    from ccrop.localize import localize_dataset

    cfg = load_config(out / "config.yaml")
    data = build_data(cfg)
    backbone = config_backbone(cfg)
    load_backbone_state(backbone, load_checkpoint(out / "checkpoints" / "ckpt-epoch00001.pt")[
        "model"])
    loader = DataLoader(IndexedImages(data.train, EvalTransform(data.mean, data.std)), 20)
    store = BoxStore(len(data.train))
    localize_dataset(cfg.crop, backbone, loader, store)  # the run's rule (stages, threshold...)
    return store.boxes


def test_torchrun_resume_auto_loads_the_file_rank_0_picked(tmp_path):
    """Two ranks resume together: rank 0 chooses the newest checkpoint and both load it (the
    run ends where a one-step-longer run from scratch would be, with every rank in step)."""
    out = tmp_path / "ddp"
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "-m", "ccrop.cli", "pretrain", "data.dataset_kwargs.num_images=32",
            "data.batch_size=16", "data.num_workers=0", "model.width=4", "train.device=cpu",
            "crop.warmup_epochs=1", "crop.loc_interval=1", "train.progress=false",
            "train.tensorboard=false", "train.knn_every=0", f"train.out_dir={out}"]
    first = subprocess.run(base + ["train.epochs=1"], capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(base + ["train.epochs=2", "--resume", "auto"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 4  # 8 per rank per step: 2 a epoch
    assert summary["box_updates"] == [1]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(x)["epoch"] for x in lines if json.loads(x)["event"] == "epoch"]
    assert epochs == [1, 2]  # epoch 1 was not trained again
