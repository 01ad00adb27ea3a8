"""End-to-end tests of the ``ccrop`` command line on a tiny synthetic run."""

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch

from ccrop.checkpoint import ckpt_path, load_checkpoint
from ccrop.cli import main

TINY = ["data.dataset_kwargs.num_images=48", "data.batch_size=16", "data.num_workers=0",
        "model.width=8", "train.epochs=2", "crop.warmup_epochs=1", "crop.loc_interval=1",
        "train.knn_every=0", "train.tensorboard=false", "train.progress=false",
        "method.params.proj_hidden=32", "method.params.proj_dim=16", "crop.loc_batch_size=32",
        "crop.threshold_mode=quantile", "crop.threshold=0.5"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, str]:
    """A finished tiny run and what ``ccrop pretrain`` printed."""
    out = tmp_path_factory.mktemp("run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["pretrain", *TINY, f"train.out_dir={out}"]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def run_dir(pretrained) -> Path:
    return pretrained[0]


def _records(capsys) -> list[dict]:
    """The JSON lines printed since the last read."""
    return [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]


def test_pretrain_writes_a_complete_run_folder(pretrained, capsys):
    run_dir, printed = pretrained
    for name in ("config.yaml", "metrics.jsonl", "results.jsonl", "summary.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["box_updates"] == [1]
    assert summary["knn_k"] == 200 and summary["knn_temperature"] == 0.1
    t = summary["time"]
    assert 0 < t["median_epoch_s"] <= t["train_s"] and t["box_update_s"] > 0
    # one kNN result of the final model: printed, in summary.json and in results.jsonl alike
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    first = json.loads(lines[0])  # the run's own line; the eval commands append theirs
    assert (first["protocol"], first["epoch"], first["top1"]) == ("knn", 2, summary["knn_top1"])
    assert first["checkpoint"] == str(ckpt_path(run_dir, 2))
    assert f"protocol 'knn'): {summary['knn_top1']:.2f}%" in printed
    assert f"box IoU vs ground truth: {summary['box_iou_gt']:.3f}" in printed
    # the same numbers again from the saved checkpoints; another model gives another kNN
    knn = {}
    for epoch in (1, 2):
        assert main(["knn", "--checkpoint", str(ckpt_path(run_dir, epoch))]) == 0
        knn[epoch] = _records(capsys)[-1]["top1"]
    assert knn[2] == summary["knn_top1"] and knn[1] != knn[2], knn
    # the final boxes came from the epoch-1 encoder (the one box update, after epoch 1)
    assert main(["boxes", "--checkpoint", str(ckpt_path(run_dir, 1))]) == 0
    assert _records(capsys)[-1]["iou_gt"] == summary["box_iou_gt"]


def test_eval_commands_on_a_checkpoint(run_dir, tmp_path, capsys):
    ckpt = str(run_dir / "checkpoints" / "ckpt-epoch00002.pt")
    assert main(["knn", "--checkpoint", ckpt]) == 0
    assert main(["linear", "--checkpoint", ckpt, "--fast"]) == 0
    assert main(["linear", "--checkpoint", ckpt, "eval.linear_epochs=1"]) == 0
    assert main(["boxes", "--checkpoint", ckpt, "--out", str(tmp_path / "b.pt")]) == 0
    assert main(["viz", "--checkpoint", ckpt, "--out", str(tmp_path / "fig"), "--num", "2"]) == 0
    assert (tmp_path / "fig" / "localization.png").stat().st_size > 1000
    assert main(["compare", str(run_dir), "--out", str(tmp_path / "knn.png")]) == 0
    protocols = [json.loads(x)["protocol"] for x in
                 (run_dir / "results.jsonl").read_text().splitlines()]
    assert protocols[-3:] == ["knn", "linear-fast (cached features, no augmentation)", "linear"]
    lines = capsys.readouterr().out.splitlines()
    stats = json.loads(next(x for x in lines if x.startswith('{"seconds"')))
    assert stats["images"] == 48 and "iou_gt" in stats


def test_eval_protocols_agree_on_both_pipelines(run_dir, capsys):
    """kNN and the fast probe see the same un-augmented images on the device path as through
    the PIL transforms; on one device (CPU: bit for bit) the features, and so the results, are
    identical. The official protocol runs there with batched augmentation."""
    from ccrop.build import build_data, build_evaluator
    from ccrop.config import load_config

    ckpt = str(run_dir / "checkpoints" / "ckpt-epoch00002.pt")
    saved, cpu = load_checkpoint(ckpt)["config"], torch.device("cpu")
    images = {}
    for pipe in ("cpu", "gpu"):
        protocols = build_evaluator(build_data(load_config(None, [f"data.pipeline={pipe}"],
                                                           base=saved)))
        images[pipe] = torch.cat([b[-2] for b in protocols.eval_batches("test", cpu)])
    assert images["cpu"].shape[0] == 48 and torch.equal(images["cpu"], images["gpu"])
    out = {}
    for pipe in ("cpu", "gpu"):
        capsys.readouterr()
        args = ["--checkpoint", ckpt, f"data.pipeline={pipe}", "train.device=cpu"]
        assert main(["knn", *args]) == 0
        assert main(["linear", *args, "--fast"]) == 0
        out[pipe] = [r["top1"] for r in _records(capsys)]
    assert out["cpu"] == out["gpu"]  # kNN, probe: same features, same seeded probe
    assert main(["linear", "--checkpoint", ckpt, "eval.linear_epochs=2", "data.pipeline=gpu"]) == 0
    rec = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rec["protocol"] == "linear" and len(rec["history"]) == 2


def test_bench_runs_on_a_tiny_config(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", *TINY, f"train.out_dir={tmp_path}", "--steps", "1", "--out",
                 str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"] == {"dataset": "synthetic", "images": 48, "method": "simclr",
                                "arch": "resnet18", "width": 8, "crop": "ccrop",
                                "pipeline": "cpu", "batch_size": 16}
    v, e = result["views"], result["epoch"]
    assert v["batched_cpu_over_pil"] == pytest.approx(
        v["batched_cpu_views_per_s"] / v["pil_views_per_s"])
    # 48 images in batches of 16, drop_last: 3 steps, all measured (cap 20); time adds up
    assert (e["epoch_steps_full"], e["epoch_steps_measured"], e["localization_images"]) == \
        (3, 3, 48)
    assert e["epoch_total_s"] == pytest.approx(e["epoch_data_s"] + e["epoch_step_s"])
    timings = [v["pil_views_per_s"], v["batched_cpu_views_per_s"], result["step"]["step_ms_fp32"],
               e["localization_s"], e["checkpoint_s"]]
    assert all(math.isfinite(x) and x > 0 for x in timings), timings
    assert result["syncs"]["host_syncs_per_step"] == 0, result["syncs"]["sites"]
    # per epoch: the loss and finiteness reads, and the DataLoader's seed draw (a CPU tensor)
    assert 0 < result["syncs"]["host_syncs_per_epoch"] <= 3
    assert result["views"]["ops_per_view_call"] > 50


@pytest.mark.parametrize("args,needle", [
    (["train.epochz=3"], "train.epochz"),
    (["crop.alpha=0"], "crop.alpha"),
    (["crop.threshold=1.5"], "crop.threshold"),
    (["crop.warmup_epochs=9"], "crop.warmup_epochs"),
    (["data.batch_size=4096"], "data.batch_size"),
    (["data.dataset=nope"], "data.dataset"),
    (["train.epochs=abc"], "train.epochs"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys, args, needle):
    code = main(["pretrain", *TINY, f"train.out_dir={tmp_path / 'x'}", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_existing_run_is_not_overwritten(run_dir, capsys):
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert main(["pretrain", *TINY, f"train.out_dir={run_dir}"]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


def test_checkpoint_of_another_architecture_names_the_keys(run_dir, capsys):
    ckpt = str(run_dir / "checkpoints" / "ckpt-epoch00002.pt")
    assert main(["knn", "--checkpoint", ckpt, "model.width=16"]) == 2
    err = capsys.readouterr().err
    assert "shape mismatch" in err and "conv1.weight" in err and "Traceback" not in err


def test_tensorboard_scalars_and_box_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb_run"
    args = [a for a in TINY if a != "train.tensorboard=false"]
    assert main(["pretrain", *args, "train.tensorboard=true", f"train.out_dir={out}"]) == 0
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert {"train/loss", "boxes/mean_area", "boxes/full_share", "boxes/iou_gt"} <= set(
        acc.Tags()["scalars"])
    assert "boxes/grid" in acc.Tags()["images"]


def test_missing_config_and_checkpoint(tmp_path, capsys):
    assert main(["pretrain", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err
    assert main(["knn", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt" in capsys.readouterr().err


def test_boxes_honours_train_progress(run_dir, tmp_path, capsys, monkeypatch):
    """``train.progress=false`` (the run's config) draws no bar in ``ccrop boxes``; the same
    command with ``train.progress=true`` draws the localization bar."""
    import tqdm.auto

    from ccrop import runtime

    bars = []

    class Recorder(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            bars.append(kwargs.get("desc"))
            super().__init__(*args, **{**kwargs, "disable": True})

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    ckpt = str(ckpt_path(run_dir, 2))
    assert main(["boxes", "--checkpoint", ckpt, "--out", str(tmp_path / "b.json")]) == 0
    assert bars == []
    assert main(["boxes", "--checkpoint", ckpt, "train.progress=true"]) == 0
    assert bars == ["localize"]
    # the command-wide switch also silences helpers that are asked for a bar
    with runtime.bars_enabled(False):
        assert list(runtime.progress(range(3), "x", on=True)) == [0, 1, 2]
        with runtime.bars_enabled(True):  # cannot re-enable inside a silenced block
            runtime.progress(range(3), "y", on=True)
    assert bars == ["localize"]
    runtime.progress(range(3), "z", on=True)
    assert bars == ["localize", "z"]
    capsys.readouterr()
