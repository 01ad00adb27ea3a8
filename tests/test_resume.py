"""Kill-and-resume and checkpoint guarantees (docs/reliability.md, items 1 and 2).

A tiny MoCo run (queue, key encoder, boxes, optimizer and RNG state all live in the checkpoint) is
killed with SIGKILL at random moments, inside a box update and inside a checkpoint write, and
resumed with ``--resume auto``; its final state must equal an uninterrupted run's bit for bit.
"""

import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import ccrop.checkpoint as ckpt_mod
import ccrop.engine as engine
import ccrop.localize
from ccrop import cli
from ccrop.build import build_run
from ccrop.checkpoint import (
    CheckpointError,
    ckpt_path,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    seed_rngs,
)
from ccrop.config import load_config
from ccrop.evaluate.results import append_result

pytestmark = pytest.mark.filterwarnings("ignore:.*the whole image")

EPOCHS = 10
TINY = [
    "data.dataset=synthetic", "data.dataset_kwargs.num_images=32",
    "data.dataset_kwargs.image_size=16", "data.image_size=16", "data.batch_size=16",
    "data.num_workers=0", "model.width=4", "method.name=moco", "method.params.queue_size=64",
    f"train.epochs={EPOCHS}", "crop.warmup_epochs=1", "crop.loc_interval=1",
    "crop.loc_batch_size=32", "train.knn_every=0", "train.tensorboard=false",
    "train.progress=false", "train.device=cpu",  # bit-exact resume is a CPU guarantee
]  # fmt: skip
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


class Killed(BaseException):
    """Stands in for SIGKILL inside this process: no ``except Exception`` catches it and the run
    is abandoned (``finally`` blocks still run; the subprocess test covers a real SIGKILL)."""


def overrides(out: Path, *extra: str) -> list[str]:
    return [*TINY, f"train.out_dir={out}", *extra]


def tiny(out: Path, *extra: str):
    return load_config(None, overrides(out, *extra))


def final_state(run_dir: Path) -> dict:
    found = latest_valid_checkpoint(run_dir)
    assert found is not None, f"no checkpoint in {run_dir}"
    return found[1]


def newest_epoch(run_dir: Path) -> int:
    names = [p.name for p in list_checkpoints(run_dir)]
    return max((int(re.findall(r"\d+", n)[0]) for n in names), default=0)


def logged(text: bytes, event: str = "epoch") -> list[int]:
    """The epochs of the ``event`` records of a ``metrics.jsonl``, in file order."""
    return [json.loads(ln)["epoch"] for ln in text.splitlines()
            if json.loads(ln).get("event") == event]


def rewound(text: bytes, state: dict) -> bytes:
    """The lines of a ``metrics.jsonl`` that a resume from checkpoint ``state`` keeps: the
    records of its history (the epochs and box updates it has done), in file order."""
    done, kept = {(h["event"], h["epoch"]) for h in state["history"]}, []
    for line in text.split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:  # a line torn by the kill
            continue
        if (record["event"], record["epoch"]) in done:
            kept.append(line + b"\n")
    return b"".join(kept)


def assert_once_each(text: bytes, epochs: int = EPOCHS, updates: range = range(1, EPOCHS)) -> None:
    """Every epoch and every box update (``crop.warmup_epochs=1``, ``loc_interval=1``: after
    each epoch but the last) logged exactly once, in order."""
    assert logged(text) == list(range(1, epochs + 1))
    assert logged(text, "box_update") == list(updates)


def assert_same_state(a: dict, b: dict) -> None:
    """Weights (incl. MoCo queue and key encoder), boxes, optimizer, counters, RNG, history."""
    assert a["epoch"] == b["epoch"] == EPOCHS and a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys() and "queue" in a["model"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["boxes"]["boxes"], b["boxes"]["boxes"])
    assert torch.equal(a["boxes"]["version"], b["boxes"]["version"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and len(sa) > 0
    for k in sa:
        assert torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]), k
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["rng"]["python"] == b["rng"]["python"]
    assert torch.equal(a["rng"]["numpy"][1], b["rng"]["numpy"][1])

    def story(state: dict) -> list[tuple]:
        keys = ("event", "epoch", "step", "loss", "mean_area", "degenerate")
        return [tuple(h.get(k) for k in keys) for h in state["history"]]

    assert story(a) == story(b) and a["skipped_steps"] == b["skipped_steps"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """The uninterrupted run every resumed run must equal."""
    out = tmp_path_factory.mktemp("straight")
    engine.fit(build_run(tiny(out)))
    state = final_state(out)
    full = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert not (state["boxes"]["boxes"] == full).all(), "boxes must be non-trivial to compare"
    return out, state


# ----------------------------------------------------------------------------- 1. kill + resume


def _kill_at_random_moment(proc: subprocess.Popen, out: Path, rng: random.Random) -> bool:
    """Wait for two new checkpoints (their gap = one epoch), then SIGKILL at a seeded random
    moment of the following epoch (a step, the box update, the checkpoint write or the prune).

    Returns:
        True when the process was still running when killed.
    """
    start, deadline = newest_epoch(out), time.monotonic() + 240
    stamps = []
    while proc.poll() is None and len(stamps) < 2 and time.monotonic() < deadline:
        if newest_epoch(out) >= start + len(stamps) + 1:
            stamps.append(time.monotonic())
        time.sleep(0.005)
    if len(stamps) == 2:
        time.sleep(rng.uniform(0.0, 1.0) * (stamps[1] - stamps[0]))
    alive = proc.poll() is None
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.wait()
    return alive


@pytest.mark.slow  # subprocesses killed with SIGKILL
def test_sigkill_at_random_moments_then_resume_auto_is_bit_identical(tmp_path, reference):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ccrop.cli", "pretrain", *overrides(out), "--resume", "auto"]
    env = {**os.environ, **SUBPROCESS_ENV}
    rng, kills, metrics = random.Random(2022), 0, b""
    for attempt in range(3):
        with open(tmp_path / f"stderr-{attempt}.txt", "wb") as log:
            proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                    stderr=log)
            alive = _kill_at_random_moment(proc, out, rng)
        assert alive, (tmp_path / f"stderr-{attempt}.txt").read_text()[-2000:]
        kills += 1
        for path in list_checkpoints(out):  # whatever the moment, no partial file has a real name
            load_checkpoint(path)
        now = (out / "metrics.jsonl").read_bytes()
        # the resume kept the lines of its checkpoint and appended the epochs after it
        assert now.startswith(metrics)
        metrics = rewound(now, final_state(out))  # what the next resume keeps
    assert kills == 3
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (out / "metrics.jsonl").read_bytes()
    assert text.startswith(metrics)
    assert_once_each(text)  # no record of an epoch trained again after a kill twice
    assert_same_state(final_state(out), reference[1])
    assert not list((out / "checkpoints").glob(".*.tmp-*"))  # temp files of killed writers


#: persistent DataLoader workers (a resumed process creates their iterator once more), a kNN
#: monitor, one box update (after epoch 2; it draws a figure: seconds), every checkpoint kept
WHOLE_EPOCHS = 4
WHOLE = ["data.num_workers=1", "data.persistent_workers=true", "train.knn_every=2",
         "crop.loc_interval=2", f"train.epochs={WHOLE_EPOCHS}", f"train.keep_last={WHOLE_EPOCHS}"]
#: the wall-clock fields of the history records, by event: the only fields left out
TIMINGS = {"epoch": ("seconds", "data_seconds", "images_per_s"), "box_update": ("seconds",)}


def without_timings(state: dict) -> dict:
    """The checkpoint less the ``TIMINGS`` fields of its history (each must be there)."""
    history = []
    for record in state["history"]:
        drop = TIMINGS[record["event"]]
        assert set(drop) <= record.keys(), record
        history.append({k: v for k, v in record.items() if k not in drop})
    return {**state, "history": history}


def assert_same_tree(a, b, where: str = "checkpoint") -> None:
    """Equal bit for bit: tensors (dtype, shape, values), dicts (same keys), sequences, scalars."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a.keys()} != {b.keys()}"
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def _kill_after_checkpoint(proc: subprocess.Popen, out: Path, epoch: int) -> bool:
    """SIGKILL ``proc`` as soon as the checkpoint of ``epoch`` is in place (early in the next
    epoch); True when it was still running."""
    deadline = time.monotonic() + 240
    while proc.poll() is None and newest_epoch(out) < epoch and time.monotonic() < deadline:
        time.sleep(0.005)
    alive = proc.poll() is None
    proc.kill()
    proc.wait()
    return alive


@pytest.mark.slow  # subprocesses killed with SIGKILL
def test_sigkill_then_resume_auto_writes_the_same_whole_checkpoints(tmp_path):
    """Every checkpoint of a run killed (SIGKILL) after its first checkpoint and resumed equals the
    uninterrupted run's in every field (model, optimizer, boxes, RNG states, counters, config,
    history) but the wall-clock timings. Both runs use the same folder (the first is moved away
    after it ends), so the paths in config and history match too."""
    out, straight = tmp_path / "run", tmp_path / "straight"
    cmd = [sys.executable, "-m", "ccrop.cli", "pretrain", *overrides(out, *WHOLE),
           "--resume", "auto"]
    env = {**os.environ, **SUBPROCESS_ENV}

    def run_to_end() -> None:
        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    run_to_end()
    out.rename(straight)
    with open(tmp_path / "stderr.txt", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=log)
        alive = _kill_after_checkpoint(proc, out, 1)
    assert alive and newest_epoch(out) < WHOLE_EPOCHS, (tmp_path / "stderr.txt").read_text()
    run_to_end()
    for epoch in range(1, WHOLE_EPOCHS + 1):
        a, b = (load_checkpoint(ckpt_path(d, epoch)) for d in (straight, out))
        assert a["epoch"] == epoch and "cuda" not in a["rng"]
        assert_same_tree(without_timings(a), without_timings(b), f"epoch {epoch}")
    for folder in (straight, out):  # the same records, once each, as the uninterrupted run
        assert_once_each((folder / "metrics.jsonl").read_bytes(), WHOLE_EPOCHS, range(2, 3))


def test_seed_rngs_is_a_function_of_seed_epoch_and_rank():
    seed_rngs(7, 3, 0)
    first = rng_state()
    torch.rand(5), random.random()  # draws in between do not matter
    seed_rngs(7, 3, 0)
    assert_same_tree(rng_state(), first)
    for other in ((7, 4, 0), (7, 3, 1), (8, 3, 0)):
        seed_rngs(*other)
        state = rng_state()
        assert not torch.equal(state["torch"], first["torch"]), other
        assert state["python"] != first["python"], other
        assert not torch.equal(state["numpy"][1], first["numpy"][1]), other


@pytest.mark.slow  # the module-scope reference run trains
def test_killed_during_box_update_then_resume_is_bit_identical(tmp_path, monkeypatch, reference):
    out = tmp_path / "run"
    real, calls = ccrop.localize.update_boxes, []

    def dies_after_writing_boxes(encoder, loader, store, *args, **kwargs):
        stats = real(encoder, loader, store, *args, **kwargs)
        calls.append(store.boxes.clone())
        if len(calls) == 3:  # boxes of the 4th epoch are in memory, not yet in a checkpoint
            raise Killed
        return stats

    monkeypatch.setattr(ccrop.localize, "update_boxes", dies_after_writing_boxes)
    with pytest.raises(Killed):
        engine.fit(build_run(tiny(out)))
    assert newest_epoch(out) == 3
    lines_before = (out / "metrics.jsonl").read_bytes()
    monkeypatch.setattr(ccrop.localize, "update_boxes", real)
    resumed = build_run(tiny(out), resume_from="auto")
    assert resumed.epoch == 3 and torch.equal(resumed.store.boxes, calls[1])  # saved boxes
    engine.fit(resumed)
    assert_same_state(final_state(out), reference[1])
    text = (out / "metrics.jsonl").read_bytes()
    assert text.startswith(lines_before)  # killed before the update's line: nothing to undo
    assert_once_each(text)


@pytest.mark.slow  # the module-scope reference run trains
def test_killed_while_writing_a_checkpoint_then_resume_is_bit_identical(tmp_path, monkeypatch,
                                                                      reference):
    out = tmp_path / "run"
    real_save, seen = torch.save, {}

    def dies_half_way(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        if isinstance(obj, dict) and obj.get("epoch") == 5 and "tmp" not in seen:
            f.write(data[: len(data) // 2])
            f.flush()
            seen["tmp"] = Path(f.name)
            seen["final_exists"] = ckpt_path(out, 5).exists()
            seen["visible"] = [load_checkpoint(p)["epoch"] for p in list_checkpoints(out)]
            # what a SIGKILL leaves behind (the in-process stand-in lets the cleanup run)
            shutil.copy(f.name, str(f.name).rsplit("-", 1)[0] + "-999999")
            raise Killed
        f.write(data)

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(Killed):
        engine.fit(build_run(tiny(out)))
    assert seen["tmp"].parent == ckpt_path(out, 5).parent and seen["tmp"].name.startswith(".")
    assert seen["final_exists"] is False and seen["visible"] == [3, 4]
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-epoch00003.pt", "ckpt-epoch00004.pt"]
    assert list((out / "checkpoints").glob(".*.tmp-*-999999"))
    lines_before = (out / "metrics.jsonl").read_bytes()
    # epoch 5 and the box update after it were logged before the kill, not checkpointed
    assert logged(lines_before) == [1, 2, 3, 4, 5]
    assert logged(lines_before, "box_update") == [1, 2, 3, 4]
    monkeypatch.setattr(torch, "save", real_save)
    resumed = build_run(tiny(out), resume_from="auto")
    assert resumed.epoch == 4
    kept = (out / "metrics.jsonl").read_bytes()  # rewound to checkpoint 4 by the resume
    assert kept == rewound(lines_before, final_state(out)) and lines_before.startswith(kept)
    assert logged(kept) == [1, 2, 3, 4] and logged(kept, "box_update") == [1, 2, 3]
    engine.fit(resumed)
    assert_same_state(final_state(out), reference[1])
    assert not list((out / "checkpoints").glob(".*.tmp-*"))
    text = (out / "metrics.jsonl").read_bytes()
    assert text.startswith(kept)
    assert_once_each(text)  # epoch 5 trained again after the kill, logged once


def _jsonl(*records: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_rewind_logs_keeps_the_records_of_the_restored_state(tmp_path):
    """After a resume at epoch 3 the logs hold what checkpoint 3 holds: epochs 1..3, the box
    updates of its history (once each, the newest), the results of epochs <= 3; torn lines and
    records of later epochs go (the resumed run writes them again)."""
    def ep(e: int, **kw) -> dict:
        return {"event": "epoch", "epoch": e, "step": 2 * e, **kw}

    def box(e: int, **kw) -> dict:
        return {"event": "box_update", "epoch": e, "source": "heatmap", **kw}

    history = [ep(1), box(1), ep(2), box(2), ep(3)]
    metrics = tmp_path / "metrics.jsonl"
    # epoch 2 twice (a log of an older ccrop), then epoch 4 and its update, then a torn line
    metrics.write_bytes(_jsonl(ep(1), box(1), ep(2, loss=1.0), ep(2, loss=2.0), box(2),
                               {"event": "note"}, ep(3), box(3), ep(4), box(4))
                        + b'{"event": "epoch", "epo')
    for epoch in (None, 2, 3, 4, 4):
        append_result(tmp_path, {"protocol": "knn", "dataset": "synthetic", "split": "test",
                                 "checkpoint": None, "epoch": epoch, "top1": 50.0})
    with open(tmp_path / "results.jsonl", "ab") as fh:
        fh.write(b'{"protocol": "kn')  # torn
    (tmp_path / ".metrics.jsonl.tmp-999999").write_bytes(b"{")  # of a rewrite killed before
    run = SimpleNamespace(run_dir=tmp_path, epoch=3, history=history)
    engine.rewind_logs(run)
    assert metrics.read_bytes() == _jsonl(ep(1), box(1), ep(2, loss=2.0), box(2),
                                          {"event": "note"}, ep(3))
    results = [json.loads(ln) for ln in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    assert [r["epoch"] for r in results] == [None, 2, 3]
    assert not list(tmp_path.glob(".*tmp*"))
    # a log that matches already is left alone (same file, not rewritten)
    inode = metrics.stat().st_ino, (tmp_path / "results.jsonl").stat().st_ino
    engine.rewind_logs(run)
    assert (metrics.stat().st_ino, (tmp_path / "results.jsonl").stat().st_ino) == inode
    # the update after the restored epoch stays only when the checkpoint holds it
    metrics.write_bytes(_jsonl(ep(1), box(1), box(2)))
    engine.rewind_logs(SimpleNamespace(run_dir=tmp_path, epoch=1, history=[ep(1), box(1)]))
    assert metrics.read_bytes() == _jsonl(ep(1), box(1))
    engine.rewind_logs(SimpleNamespace(run_dir=tmp_path, epoch=1, history=[ep(1)]))
    assert metrics.read_bytes() == _jsonl(ep(1))
    # no log yet: nothing is created
    engine.rewind_logs(SimpleNamespace(run_dir=tmp_path / "new", epoch=0, history=[]))
    assert not (tmp_path / "new").exists()


@pytest.mark.slow  # the module-scope reference run trains
def test_corrupt_newest_checkpoint_of_a_run_is_skipped_on_resume(tmp_path, reference):
    out = tmp_path / "copy"
    shutil.copytree(reference[0], out)
    newest = ckpt_path(out, EPOCHS)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated (e.g. copied off a full disk)
    with pytest.warns(UserWarning, match=re.escape(str(newest))):
        resumed = build_run(tiny(out), resume_from="auto")
    assert resumed.epoch == EPOCHS - 1
    engine.fit(resumed)  # trains the last epoch again
    assert_same_state(final_state(out), reference[1])


@pytest.mark.slow  # the module-scope reference run trains
def test_resume_with_another_model_is_one_clear_error(tmp_path, reference, capsys):
    out = tmp_path / "copy"
    shutil.copytree(reference[0], out)
    code = cli.main(["pretrain", *overrides(out, "model.width=8"), "--resume", "auto"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "does not fit this config" in err[0] and str(ckpt_path(out, EPOCHS)) in err[0]


# ----------------------------------------------------------------------------- 2. checkpoints


def test_checkpoint_write_is_temp_fsync_load_test_rename(tmp_path, monkeypatch):
    events: list[tuple] = []
    real_fsync, real_replace, real_load = os.fsync, os.replace, ckpt_mod.load_checkpoint

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst)

    def load(path, *args, **kwargs):
        events.append(("load", str(path)))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(ckpt_mod, "load_checkpoint", load)
    path = ckpt_path(tmp_path, 1)
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    tmp = events[0][1]
    assert Path(tmp).parent == path.parent and Path(tmp).name.startswith(f".{path.name}.tmp")
    assert events == [("fsync", tmp), ("load", tmp), ("replace", tmp, str(path)),
                      ("fsync", str(path.parent))]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_checkpoint_that_does_not_read_back_is_never_renamed(tmp_path, monkeypatch):
    path = ckpt_path(tmp_path, 1)
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: f.write(b"PK\x03\x04 broken"))
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 1}, path)
    assert path.read_bytes() == before and os.listdir(path.parent) == [path.name]


def _corrupt(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))
    elif how == "flipped":  # same size, bytes changed in the middle (zip CRC check)
        data = bytearray(path.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
        path.write_bytes(bytes(data))
    elif how == "not_ccrop":
        torch.save([torch.ones(2)], path)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "flipped", "not_ccrop"])
def test_corrupt_newest_checkpoint_is_reported_and_skipped(tmp_path, how):
    for epoch in (1, 2, 3):
        state = {"model": {"w": torch.randn(4096)}, "epoch": epoch}
        save_checkpoint(state, ckpt_path(tmp_path, epoch))
    _corrupt(ckpt_path(tmp_path, 3), how)
    with pytest.warns(UserWarning, match=re.escape(str(ckpt_path(tmp_path, 3)))):
        path, state = latest_valid_checkpoint(tmp_path)
    assert path == ckpt_path(tmp_path, 2) and state["epoch"] == 2
    with pytest.raises(CheckpointError, match=re.escape(str(ckpt_path(tmp_path, 3)))):
        load_checkpoint(ckpt_path(tmp_path, 3))
    _corrupt(ckpt_path(tmp_path, 2), how)
    with pytest.warns(UserWarning):
        assert latest_valid_checkpoint(tmp_path)[1]["epoch"] == 1


@pytest.mark.slow  # the module-scope reference run trains
def test_keep_last_prunes_old_checkpoints_and_stale_temp_files(tmp_path, reference):
    names = [p.name for p in list_checkpoints(reference[0])]
    assert names == [f"ckpt-epoch{e:05d}.pt" for e in (EPOCHS - 1, EPOCHS)]  # default keep_last=2
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for epoch in range(1, 6):
        ckpt_path(tmp_path, epoch).write_bytes(b"x")
    stale = folder / ".ckpt-epoch00006.pt.tmp-999999"
    own = folder / f".ckpt-epoch00006.pt.tmp-{os.getpid()}"  # being written by this process
    stale.write_bytes(b"x")
    own.write_bytes(b"x")
    deleted = prune_checkpoints(tmp_path, 3)
    assert [p.name for p in deleted] == ["ckpt-epoch00001.pt", "ckpt-epoch00002.pt"]
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt-epoch00003.pt", "ckpt-epoch00004.pt", "ckpt-epoch00005.pt"]
    assert not stale.exists() and own.exists()


@pytest.mark.slow  # trains
def test_metrics_lines_are_flushed_every_epoch(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real, seen = engine.train_epoch, []

    def spy(run, epoch):  # at the start of each epoch, the previous epochs are on disk
        path = out / "metrics.jsonl"
        seen.append(path.read_text().splitlines() if path.exists() else [])
        return real(run, epoch)

    monkeypatch.setattr(engine, "train_epoch", spy)
    engine.fit(build_run(tiny(out, "train.epochs=3")))
    seen = [[ln for ln in lines if '"event": "epoch"' in ln] for lines in seen]
    assert [len(lines) for lines in seen] == [0, 1, 2]
    assert seen[2][0] == seen[1][0] and '"epoch": 2' in seen[2][1]
