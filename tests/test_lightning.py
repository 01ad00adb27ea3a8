"""ccrop.lightning's ContrastiveCropCallback in a Lightning Trainer, and the Lightning example."""

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")  # ImportError (lightning missing): skip

from ccrop import BoxStore  # noqa: E402
from ccrop.data import SyntheticObjects  # noqa: E402
from ccrop.data.boxed import IndexedImages  # noqa: E402
from ccrop.data.views import EvalTransform  # noqa: E402
from ccrop.lightning import ContrastiveCropCallback, shard_loader  # noqa: E402
from ccrop.models import build_backbone  # noqa: E402
from ccrop.schedule import box_update_epochs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lightning_simclr.py"
MEAN, STD = (0.3515, 0.3416, 0.3449), (0.1830, 0.1747, 0.1786)
FULL = torch.tensor([0.0, 0.0, 1.0, 1.0])


def _load_example():
    spec = importlib.util.spec_from_file_location("lightning_simclr_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Tiny(pl.LightningModule):
    """A width-8 ccrop ResNet-18 trained on a toy loss: enough to drive the callback."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = build_backbone("resnet18", "cifar", width=8)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.backbone(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(callback, epochs, tmp_path):
    torch.manual_seed(0)
    train = DataLoader(TensorDataset(torch.randn(16, 3, 32, 32)), 8)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[callback],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(_Tiny(), train)
    return trainer


def _plain(n):
    ds = SyntheticObjects(n, image_size=32, seed=0)
    return ds, DataLoader(IndexedImages(ds, EvalTransform(MEAN, STD)), 64)


@pytest.mark.slow  # trains the example
def test_example_updates_boxes_and_logs(tmp_path, capsys):
    pytest.importorskip("lightly.loss")  # the example's head and loss
    pytest.importorskip("lightly.models.modules")
    store, callback = _load_example().main([
        "--epochs", "2", "--num-images", "256", "--max-steps", "2", "--out", str(tmp_path),
        "--warmup", "1", "--interval", "1", "--batch-size", "64", "--width", "8",
        "--workers", "0"])
    text = capsys.readouterr().out
    # one update, after epoch 1 (never after the last epoch, 2)
    assert store.version == 1 and [e for e, _ in callback.history] == [1]
    moved = (store.boxes != FULL).any(dim=1).float().mean()
    assert moved > 0.8, f"only {moved:.2f} of the boxes left the full image"
    stats = callback.history[0][1]
    assert {"mean_area", "full_share", "degenerate", "iou_gt"} <= set(stats)
    assert 0.0 < stats["mean_area"] < 1.0 and 0.0 <= stats["iou_gt"] <= 1.0
    iou = float(re.search(r"box IoU with the true boxes after training: (\S+) ", text).group(1))
    assert iou == pytest.approx(stats["iou_gt"], abs=1e-3), text
    header = next((tmp_path / "logs").rglob("metrics.csv")).read_text().splitlines()[0]
    for key in ("mean_area", "full_share", "degenerate", "iou_gt"):
        assert f"ccrop/{key}" in header.split(","), header
    saved = torch.load(tmp_path / "boxes.pt", weights_only=True)
    assert torch.equal(saved["boxes"], store.boxes)
    ckpt = next((tmp_path / "logs").rglob("*.ckpt"))  # the boxes travel in the checkpoint
    state = torch.load(ckpt, weights_only=False)["callbacks"]["ContrastiveCropCallback"]
    assert torch.equal(state["store"]["boxes"], store.boxes)


def test_update_and_logged_stats_in_tiny_trainer(tmp_path):
    ds, plain = _plain(64)
    store = BoxStore(len(ds))
    cb = ContrastiveCropCallback(store, plain, warmup_epochs=1, interval=1,
                                 gt_boxes=ds.gt_boxes)
    trainer = _fit(cb, 3, tmp_path)
    assert [e for e, _ in cb.history] == box_update_epochs(3, 1, 1) == [1, 2]
    assert store.version == 2
    assert (store.boxes != FULL).any(dim=1).float().mean() > 0.8
    for key in ("mean_area", "full_share", "degenerate", "iou_gt"):
        assert f"ccrop/{key}" in trainer.callback_metrics
    assert float(trainer.callback_metrics["ccrop/mean_area"]) == pytest.approx(
        cb.history[-1][1]["mean_area"])


def test_warmup_leaves_full_boxes(tmp_path):
    ds, plain = _plain(32)
    store = BoxStore(len(ds))
    calls = []

    class Recorder:  # stands in for BoxedDataset
        def set_epoch(self, epoch, use_boxes=True):
            calls.append((epoch, use_boxes))

    cb = ContrastiveCropCallback(store, plain, warmup_epochs=2, interval=1,
                                 train_dataset=Recorder())
    trainer = _fit(cb, 2, tmp_path)
    assert store.version == 0 and cb.history == []
    assert torch.equal(store.boxes, FULL.expand(len(ds), 4))
    assert not any(k.startswith("ccrop/") for k in trainer.callback_metrics)
    assert calls == [(0, False), (1, False)]


def test_warns_when_warmup_would_read_object_boxes(tmp_path):
    ds, plain = _plain(16)
    store = BoxStore(len(ds))
    store.update(torch.tensor([0]), torch.tensor([[0.2, 0.2, 0.6, 0.6]]))
    cb = ContrastiveCropCallback(store, plain, warmup_epochs=2, interval=1)
    with pytest.warns(UserWarning, match="warm-up"):
        _fit(cb, 1, tmp_path)


def test_schedule_matches_ccrop():
    cb = ContrastiveCropCallback(BoxStore(4), [], warmup_epochs=100, interval=100)
    assert [e for e in range(1, 600) if cb.due(e, 500)] == box_update_epochs(500, 100, 100)
    assert cb.due(500, None) and cb.due(500, -1) and not cb.due(500, 500)
    assert cb.uses_boxes(100) and not cb.uses_boxes(99)


def test_state_dict_restores_boxes():
    a = BoxStore(3)
    cb = ContrastiveCropCallback(a, [], warmup_epochs=1, interval=1)
    a.update(torch.tensor([1]), torch.tensor([[0.1, 0.2, 0.5, 0.6]]))
    cb.history.append((1, {"mean_area": 0.5}))
    state = cb.state_dict()
    b = BoxStore(3)
    cb2 = ContrastiveCropCallback(b, [], warmup_epochs=1, interval=1)
    cb2.load_state_dict(state)
    assert torch.equal(b.boxes, a.boxes) and cb2.history == cb.history


def test_bad_arguments():
    with pytest.raises(ValueError, match="interval"):
        ContrastiveCropCallback(BoxStore(2), [], interval=0)
    with pytest.raises(ValueError, match="gt_boxes"):
        ContrastiveCropCallback(BoxStore(2), [], gt_boxes=torch.zeros(3, 4))
    with pytest.raises(TypeError, match="set_epoch"):
        ContrastiveCropCallback(BoxStore(2), [], train_dataset=object())


def test_shard_loader_splits_evenly():
    loader = DataLoader(IndexedImages(SyntheticObjects(5, image_size=32, seed=0),
                                      EvalTransform(MEAN, STD)), 2)
    seen = [torch.cat([i for i, _ in shard_loader(loader, r, 2)]) for r in range(2)]
    assert [len(s) for s in seen] == [3, 3]  # padded: equal counts for the all-gather
    assert set(torch.cat(seen).tolist()) == set(range(5))
    with pytest.raises(TypeError, match="DataLoader"):
        shard_loader([(torch.arange(2), torch.zeros(2, 3, 8, 8))], 0, 2)


DDP_SCRIPT = """
import sys, torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset
from ccrop import BoxStore
from ccrop.data import SyntheticObjects
from ccrop.data.boxed import IndexedImages
from ccrop.data.views import EvalTransform
from ccrop.lightning import ContrastiveCropCallback
from ccrop.localize import feature_fn
from ccrop.models import build_backbone

torch.set_num_threads(1)
seen = []

def features(encoder):
    fn = feature_fn(encoder, (3,))
    def counted(x):
        seen.append(x.shape[0])
        return fn(x)
    counted.__self__ = encoder
    return counted

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.backbone = build_backbone("resnet18", "cifar", width=8)
    def training_step(self, batch, batch_idx):
        return self.backbone(batch[0]).pow(2).mean()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

pl.seed_everything(0, verbose=False)
ds = SyntheticObjects(50, image_size=32, seed=0)
store = BoxStore(len(ds))
plain = DataLoader(IndexedImages(ds, EvalTransform({mean}, {std})), 16)
cb = ContrastiveCropCallback(store, plain, features=features, warmup_epochs=1, interval=1)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2,
                     callbacks=[cb], logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(8, 3, 32, 32)), 2))
torch.save({{"boxes": store.boxes.clone(), "seen": sum(seen), "version": store.version,
            "history": cb.history}}, sys.argv[1] + f"/rank{{trainer.global_rank}}.pt")
"""


@pytest.mark.slow  # DDP in a subprocess
def test_ddp_two_cpu_processes_share_boxes(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(mean=MEAN, std=STD)))
    env = {k: v for k, v in os.environ.items()
           if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                        "NODE_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2))
    assert r0["version"] == r1["version"] == 1  # one update, after epoch 1 of 2
    assert r0["seen"] == r1["seen"] == 25  # each rank localized its half of the 50 images
    assert torch.equal(r0["boxes"], r1["boxes"])  # and every rank holds every box
    assert (r0["boxes"] != FULL).any(dim=1).float().mean() > 0.8
    s0, s1 = ({k: v for k, v in r["history"][0][1].items() if k != "seconds"} for r in (r0, r1))
    assert s0["images"] == 50 and s0 == s1  # equal statistics on every rank
