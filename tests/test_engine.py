"""Tests of the engine: localization schedule, learning, exact resume."""

import json

import pytest
import torch

import ccrop.engine as engine
import ccrop.localize
from ccrop.build import build_run
from ccrop.config import load_config
from ccrop.methods import METHODS


def tiny(tmp_path, *extra):
    # CPU even where CUDA exists: resume tests compare bit for bit (cuDNN is not deterministic)
    return load_config(None, [
        "train.device=cpu",
        "data.dataset=synthetic", "data.dataset_kwargs.num_images=48", "data.batch_size=16",
        "data.num_workers=0", "model.width=8", "train.epochs=5", "crop.warmup_epochs=1",
        "crop.loc_interval=2", "train.knn_every=0", "train.tensorboard=false",
        "train.progress=false", "method.params.proj_hidden=32", "method.params.proj_dim=16",
        "crop.loc_batch_size=32", f"train.out_dir={tmp_path}", *extra])


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
@pytest.mark.parametrize("kind,warmup,expected", [
    ("ccrop", 1, [2, 4]), ("ccrop", 3, [4]), ("ccrop", 0, [2, 4]), ("rcrop", 5, []),
    ("simccrop", 0, []),
])
@pytest.mark.slow  # trains
def test_localization_schedule_calls_update_boxes_at_right_epochs(tmp_path, monkeypatch, kind,
                                                                  warmup, expected, pipeline):
    """Box updates after the right epochs, and each epoch's views told to use the boxes (or the
    warm-up RRC) through the source's public ``set_epoch``; the same on both view pipelines."""
    calls, law, used = [], {}, []
    real_update, real_train = ccrop.localize.update_boxes, engine.train_epoch

    def spy_update(*args, **kwargs):
        calls.append(run.epoch)
        return real_update(*args, **kwargs)

    def spy_train(r, epoch):
        used.append((epoch, r.store.boxes.clone()))
        return real_train(r, epoch)

    monkeypatch.setattr(ccrop.localize, "update_boxes", spy_update)
    monkeypatch.setattr(engine, "train_epoch", spy_train)
    run = build_run(tiny(tmp_path, f"crop.kind={kind}", f"crop.warmup_epochs={warmup}",
                         "train.max_steps_per_epoch=1", f"data.pipeline={pipeline}"))
    real_set_epoch = run.source.set_epoch

    def spy_set_epoch(epoch, use_boxes):
        law[epoch] = use_boxes
        return real_set_epoch(epoch, use_boxes)

    monkeypatch.setattr(run.source, "set_epoch", spy_set_epoch)
    summary = engine.fit(run)
    assert calls == expected and summary["box_updates"] == expected
    assert law == {e: kind == "simccrop" or (kind == "ccrop" and e >= warmup) for e in range(5)}
    assert [e for e, _ in used] == list(range(5))
    for epoch, boxes in used:
        if kind == "simccrop":
            assert torch.allclose(boxes, torch.tensor([0.25, 0.25, 0.75, 0.75]).expand(48, 4))
        if kind == "rcrop" or (kind == "ccrop" and epoch < (expected or [99])[0]):
            assert torch.equal(boxes, torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(48, 4))
        elif kind == "ccrop":  # a box update changed at least one box
            assert not torch.equal(boxes, torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(48, 4))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_few_steps_lower_the_loss_on_synthetic_views(tmp_path, name):
    extra = ["method.params.queue_size=4096"] if name == "moco" else []  # few self-negatives
    if name == "simsiam":
        extra = ["method.params.proj_dim=32", "method.params.pred_hidden=8"]
    cfg = tiny(tmp_path, f"method.name={name}", "optim.lr=0.05", *extra)
    if name == "simsiam":
        cfg.method.params.pop("proj_hidden")
    run = build_run(cfg)
    run.source.set_epoch(0, True)
    _, (x1, x2) = next(iter(run.source))
    losses = []
    # MoCo: keep the initial queue, else this batch's own keys become its negatives
    frozen = {k: v.clone() for k, v in run.method.named_buffers() if "queue" in k}
    for _ in range(8):
        loss = run.model(x1, x2)["loss"]
        run.optimizer.zero_grad()
        loss.backward()
        run.optimizer.step()
        run.method.after_step(0.5)
        for k, v in frozen.items():
            run.method.get_buffer(k).copy_(v)
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def _final_state(path):
    from ccrop.checkpoint import latest_valid_checkpoint

    return latest_valid_checkpoint(path)[1]


def assert_same_state(a, b):
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["boxes"]["boxes"], b["boxes"]["boxes"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"])
    assert a["epoch"] == b["epoch"] and a["step"] == b["step"]


@pytest.mark.parametrize("method", ["simclr", "moco"])
@pytest.mark.slow  # trains
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, monkeypatch, method):
    extra = [f"method.name={method}", "crop.threshold_mode=quantile", "crop.threshold=0.5"]
    extra += ["method.params.queue_size=40"] if method == "moco" else []
    engine.fit(build_run(tiny(tmp_path / "straight", *extra)))
    real_train = engine.train_epoch

    def crash_in_epoch_4(run, epoch):
        if epoch == 3:
            raise KeyboardInterrupt  # the process dies mid-run, after epoch 3's checkpoint
        return real_train(run, epoch)

    monkeypatch.setattr(engine, "train_epoch", crash_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        engine.fit(build_run(tiny(tmp_path / "split", *extra)))
    monkeypatch.setattr(engine, "train_epoch", real_train)
    resumed = build_run(tiny(tmp_path / "split", *extra), resume_from="auto")
    assert resumed.epoch == 3
    engine.fit(resumed)
    a, b = _final_state(tmp_path / "straight"), _final_state(tmp_path / "split")
    assert_same_state(a, b)
    assert not torch.equal(a["boxes"]["boxes"], torch.tensor([0.0, 0, 1, 1]).expand(48, 4))


@pytest.mark.slow  # trains
def test_extending_epochs_on_resume(tmp_path):
    engine.fit(build_run(tiny(tmp_path, "train.epochs=2")))
    run = build_run(tiny(tmp_path, "train.epochs=3"), resume_from="auto")
    assert run.epoch == 2
    summary = engine.fit(run)
    assert summary["epochs"] == 3
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["event"] == "epoch"] == [1, 2, 3]
    assert [r["epoch"] for r in lines if r["event"] == "box_update"] == [2]


@pytest.mark.slow  # trains
def test_full_box_warning_after_a_degenerate_update_only(tmp_path):
    with pytest.warns(ccrop.localize.FullBoxWarning, match="whole image after epoch 2"):
        summary = engine.fit(build_run(tiny(tmp_path / "k", "crop.threshold_mode=fixed",
                                            "crop.box_region=extent", "crop.threshold=0.0")))
    assert summary["box_updates"] == [2, 4]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ccrop.localize.FullBoxWarning)  # small boxes: no warning
        engine.fit(build_run(tiny(tmp_path / "q", "crop.threshold_mode=quantile",
                                  "crop.threshold=0.7")))
    history = build_run(tiny(tmp_path / "q"), resume_from="auto").history
    stats = [h for h in history if h.get("event") == "box_update"]
    assert [h["epoch"] for h in stats] == [2, 4] and all(h["full_share"] < 0.5 for h in stats)


def test_time_summary_skips_the_first_epoch_in_the_median():
    history = [{"event": "epoch", "seconds": 9.0}, {"event": "box_update", "seconds": 0.5},
               {"event": "epoch", "seconds": 3.0}, {"event": "epoch", "seconds": 1.0},
               {"event": "epoch", "seconds": 2.0}]
    t = engine._time_summary(history)
    assert t == {"train_s": 15.0, "median_epoch_s": 2.0, "box_update_s": 0.5}
    assert engine._time_summary([{"event": "epoch", "seconds": 4.0}])["median_epoch_s"] == 4.0
    assert engine._time_summary([])["train_s"] == 0.0



@pytest.mark.slow  # trains
def test_each_box_update_draws_the_localization_figure(tmp_path, capsys):
    from ccrop.cli import main

    out = tmp_path / "run"
    args = ["pretrain", "train.device=cpu", "data.dataset_kwargs.num_images=48",
            "data.batch_size=16", "data.num_workers=0", "model.width=4", "train.epochs=3",
            "crop.warmup_epochs=1", "crop.loc_interval=1", "train.knn_every=0",
            "train.tensorboard=false", "train.progress=false", f"train.out_dir={out}"]
    assert main(args) == 0
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == ["localization-epoch0001.png", "localization-epoch0002.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["box_figure"] == str(out / "figures" / "localization-epoch0002.png")
    assert summary["box_figure"] in capsys.readouterr().out
    from PIL import Image

    with Image.open(summary["box_figure"]) as img:
        assert img.width > 300 and img.height > 300


def test_logged_lr_is_the_one_the_optimizer_used_warmup_included(tmp_path):
    from ccrop.schedule import lr_at

    run = build_run(tiny(tmp_path, "optim.warmup_epochs=2", "train.epochs=3",
                         "crop.warmup_epochs=3"))
    engine.fit(run)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = rows[0]["steps"]
    o = run.cfg.optim
    for e, row in enumerate(rows):
        used = lr_at(e, steps - 1, steps, o.lr, 3, o.min_lr_ratio, o.warmup_epochs)
        assert row["lr"] == pytest.approx(used)
    assert rows[0]["lr"] == pytest.approx(lr_at(0, 0, 1, o.lr, 3, o.min_lr_ratio) / 2)  # ramp
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(rows[-1]["lr"])
