"""End-to-end tests of the ``ccrop`` command line on a tiny synthetic run."""

import contextlib
import errno
import io
import json
import math
from pathlib import Path

import pytest
import torch

from ccrop.box_files import BoxFileError
from ccrop.checkpoint import ckpt_path, load_checkpoint
from ccrop.cli import main
from ccrop.config import ConfigError
from ccrop.errors import DataError

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


@pytest.mark.slow  # the module-scope run trains
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


@pytest.mark.slow  # the module-scope run trains
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


@pytest.mark.slow  # the module-scope run trains
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
        cfg = load_config(None, [f"data.pipeline={pipe}"], base=saved)
        protocols = build_evaluator(cfg, build_data(cfg))
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


@pytest.mark.slow  # the module-scope run trains
def test_existing_run_is_not_overwritten(run_dir, capsys):
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert main(["pretrain", *TINY, f"train.out_dir={run_dir}"]) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


@pytest.mark.slow  # the module-scope run trains
def test_checkpoint_of_another_architecture_names_the_keys(run_dir, capsys):
    ckpt = str(run_dir / "checkpoints" / "ckpt-epoch00002.pt")
    assert main(["knn", "--checkpoint", ckpt, "model.width=16"]) == 2
    err = capsys.readouterr().err
    assert "shape mismatch" in err and "conv1.weight" in err and "Traceback" not in err


@pytest.mark.slow  # trains
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


@pytest.mark.slow  # the module-scope run trains
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


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    """Run ``ccrop <argv>``: exit 2 and one ``ccrop: error:`` line holding every needle."""
    code = main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("ccrop: error: "), (code, err)
    assert all(n in err[0] for n in needles), (needles, err[0])
    return err[0]


@pytest.mark.parametrize("argv,flag", [
    (["viz", "--num", "-1"], "--num"), (["viz", "--num", "0"], "--num"),
    (["bench", "--steps", "0"], "--steps"), (["bench", "--steps", "-2"], "--steps")])
def test_count_arguments_must_be_at_least_one(tmp_path, capsys, argv, flag):
    """``viz --num -1`` was accepted; ``bench --steps 0`` ended in an IndexError."""
    out = tmp_path / "out"
    _one_line_error(capsys, [*argv, "--out", str(out)], flag, ">= 1")
    assert not out.exists()


def _broken_epoch(monkeypatch, exc: BaseException) -> None:
    """Make the first training epoch of ``ccrop pretrain`` raise ``exc``."""
    import ccrop.engine

    def broken_train_epoch(run, epoch):
        raise exc

    monkeypatch.setattr(ccrop.engine, "train_epoch", broken_train_epoch)


@pytest.mark.parametrize("exc", [
    ValueError("internal shape bug"), KeyError("internal"), IndexError("internal"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "/internal/cache.bin"),
    OSError("a socket went away")])
def test_a_bug_inside_training_keeps_its_traceback(tmp_path, monkeypatch, capsys, exc):
    """Only bad input and a failing disk are one line with exit 2: a ValueError (or any other
    exception) raised inside training is a bug and propagates with its traceback."""
    _broken_epoch(monkeypatch, exc)
    with pytest.raises(type(exc)) as caught:
        main(["pretrain", *TINY, f"train.out_dir={tmp_path / 'run'}"])
    assert caught.value is exc
    frames = [entry.name for entry in caught.traceback]
    assert frames[-1] == "broken_train_epoch" and "fit" in frames and "main" in frames
    assert "ccrop: error" not in capsys.readouterr().err


@pytest.mark.parametrize("exc,code", [
    (OSError(errno.ENOSPC, "No space left on device", "/run/x"), 2),
    (PermissionError(errno.EACCES, "Permission denied", "/run/x"), 2),
    (OSError(errno.EROFS, "Read-only file system", "/run/x"), 2),
    (ConfigError("bad value"), 2), (DataError("bad data file"), 2),
    (BoxFileError("boxes.csv: row 3 is bad"), 2), (KeyboardInterrupt(), 130)])
def test_user_errors_inside_training_are_one_line(tmp_path, monkeypatch, capsys, exc, code):
    """The error family (``ccrop.errors.CcropError``), box files and an OSError of a failing
    environment are reported as one line wherever they are raised; Ctrl-C exits with 130."""
    _broken_epoch(monkeypatch, exc)
    assert main(["pretrain", *TINY, f"train.out_dir={tmp_path / 'run'}"]) == code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0] == "ccrop: interrupted" if code == 130 else err[0].startswith("ccrop: error: ")


def test_error_family():
    from ccrop.checkpoint import CheckpointError
    from ccrop.data.base import DatasetMissingError
    from ccrop.data.folder import BadImageError
    from ccrop.errors import CcropError, DataPathError

    for cls in (ConfigError, DataError, DataPathError, DatasetMissingError, BadImageError,
                CheckpointError):
        assert issubclass(cls, CcropError), cls
    for cls in (ConfigError, DataError, DataPathError, DatasetMissingError, BadImageError):
        assert issubclass(cls, ValueError), cls  # callers catching ValueError keep working
    assert issubclass(DataPathError, FileNotFoundError)
    assert issubclass(CheckpointError, RuntimeError)


def test_output_paths_that_cannot_be_written_are_one_line(tmp_path, capsys):
    """``--out`` with a file where a folder must be (or a folder where a file must be) is bad
    input found before any work, not an OSError traceback at the end."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    _one_line_error(capsys, ["viz", "--out", str(afile)], "--out", "is a file")
    _one_line_error(capsys, ["viz", "--out", str(afile / "figs")], "--out", "is a file")
    _one_line_error(capsys, ["bench", "--out", str(tmp_path)], "--out", "is a folder")
    _one_line_error(capsys, ["compare", "--paper", "--out", str(afile / "t.md")], "--out")
    _one_line_error(capsys, ["ab", "--out", str(afile)], "--out", "is a file")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and afile.read_text() == "x"


@pytest.mark.slow  # the module-scope run trains
def test_eval_of_a_loose_checkpoint_prints_and_writes_nothing(run_dir, tmp_path, capsys):
    """A checkpoint outside ``<run>/checkpoints/`` appended to results.jsonl in its
    grandparent folder; now the result is printed only, with one line saying so."""
    loose = tmp_path / "loose"
    loose.mkdir()
    ckpt = loose / "ck.pt"
    ckpt.write_bytes(ckpt_path(run_dir, 2).read_bytes())
    (loose / "checkpoints").mkdir()  # a look-alike next to it changes nothing
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    n_results = len((run_dir / "results.jsonl").read_text().splitlines())
    assert main(["knn", "--checkpoint", str(ckpt)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.splitlines()[-1])["checkpoint"] == str(ckpt)
    notes = [ln for ln in captured.err.splitlines() if "results.jsonl not written" in ln]
    assert len(notes) == 1 and str(ckpt) in notes[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == n_results


def test_pretrain_never_writes_into_a_users_folder(tmp_path, capsys):
    """A folder with the user's own config.yaml and summary.json (no checkpoints) was
    overwritten; a folder that is not a ccrop run folder is refused, untouched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    files = {"config.yaml": "train:\n  epochs: 3\n", "summary.json": '{"mine": 1}\n'}
    for name, text in files.items():
        (mine / name).write_text(text)
    for resume in ([], ["--resume", "auto"]):
        _one_line_error(capsys, ["pretrain", *TINY, f"train.out_dir={mine}", *resume],
                        f"train.out_dir {str(mine)!r}", "not a ccrop run folder")
        assert {p.name: p.read_text() for p in mine.iterdir()} == files


def test_run_folder_identification(tmp_path):
    """What ``check_run_dir`` writes into: a new, empty (hidden files only) or ccrop folder."""
    from ccrop.config import load_config, save_config
    from ccrop.engine import check_run_dir, is_run_folder

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".gitkeep").write_text("")
    check_run_dir(empty, resuming=False)
    check_run_dir(tmp_path / "new" / "run", resuming=False)
    assert (tmp_path / "new" / "run").is_dir()
    stopped = tmp_path / "stopped"  # a run stopped before its first epoch: the saved config
    stopped.mkdir()
    save_config(load_config(None, []), stopped / "config.yaml")
    (stopped / "notes.txt").write_text("the user's notes")
    assert is_run_folder(stopped)
    check_run_dir(stopped, resuming=False)
    for name, text in (("command.json", '{"config": null, "overrides": [], "argv": ["ccrop"]}'),
                       ("metrics.jsonl", '{"event": "epoch", "epoch": 1}\n')):
        folder = tmp_path / name
        folder.mkdir()
        (folder / name).write_text(text)
        assert is_run_folder(folder), name
    other = tmp_path / "other"  # same names, another tool's contents
    (other / "checkpoints").mkdir(parents=True)
    (other / "checkpoints" / "last.ckpt").write_text("x")
    (other / "metrics.jsonl").write_text('{"loss": 1}\n')
    (other / "command.json").write_text("[]")
    (other / "config.yaml").write_text("lr: 0.1\n")
    assert not is_run_folder(other)
    with pytest.raises(ConfigError, match="not a ccrop run folder"):
        check_run_dir(other, resuming=True)


@pytest.mark.parametrize("case", ["missing", "truncated"])
def test_bad_resume_file_leaves_no_run_folder(tmp_path, capsys, case):
    """The --resume file is read before the run folder (config.yaml, command.json, tb/) is
    made."""
    ckpt = tmp_path / "ck.pt"
    if case == "truncated":
        ckpt.write_bytes(b"PK\x03\x04 not a whole zip")
    out = tmp_path / "run"
    args = [a for a in TINY if a != "train.tensorboard=false"]
    _one_line_error(capsys, ["pretrain", *args, f"train.out_dir={out}", "--resume", str(ckpt)],
                    str(ckpt))
    assert not out.exists()


def test_linear_protocol_is_seeded(tmp_path, capsys):
    """``ccrop linear`` seeds from ``train.seed``: the same checkpoint gives the same result
    (classifier init, shuffling, augmentation)."""
    tiny = ["data.dataset_kwargs.num_images=32", "data.test_num_images=32", "data.batch_size=16",
            "data.num_workers=0", "model.width=4", "train.epochs=1", "crop.kind=rcrop",
            "crop.warmup_epochs=1", "train.tensorboard=false", "train.progress=false",
            f"train.out_dir={tmp_path}"]
    assert main(["pretrain", *tiny]) == 0
    ckpt = str(ckpt_path(tmp_path, 1))
    records = []
    for _ in range(2):
        capsys.readouterr()
        assert main(["linear", "--checkpoint", ckpt, "eval.linear_epochs=1"]) == 0
        records.append(_records(capsys)[-1])
    # top-1 of a tiny collapsed probe can agree by chance; the per-epoch train loss cannot
    first, second = records
    assert (first["top1"], first["history"]) == (second["top1"], second["history"])
