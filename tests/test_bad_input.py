"""Bad input found by an outside tester: each is exit 2 and one ``ccrop: error:`` line on stderr
naming the file or key, no traceback, no warning, and nothing already written changed
(docs/reliability.md). Run-folder cases of ``ccrop compare`` are in test_ab.py."""

import pickle
import subprocess
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from ccrop.checkpoint import load_backbone_state, load_checkpoint
from ccrop.cli import main
from ccrop.config import load_config
from ccrop.models import build_backbone

TINY = ["data.dataset_kwargs.num_images=32", "data.batch_size=16", "data.num_workers=0",
        "model.width=4", "train.epochs=1", "crop.warmup_epochs=1", "train.tensorboard=false",
        "train.progress=false"]


def run_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``ccrop <argv>`` in this process; fails on any warning
    (pytest would swallow a warning that the console script prints to stderr)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(list(argv))
    assert not caught, [str(w.message)[:120] for w in caught]
    return code, capsys.readouterr().err.splitlines()


def assert_one_line_error(code: int, err: list[str], *needles: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("ccrop: error: "), err
    assert "Traceback" not in err[0] and "weights_only" not in err[0], err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def config_and_weights() -> tuple[dict, dict[str, torch.Tensor]]:
    """A valid saved config and the method-style state dict of its backbone."""
    cfg = load_config(None, TINY)
    m = cfg.model
    backbone = build_backbone(m.arch, stem=m.stem, width=m.width)
    return asdict(cfg), {f"backbone.{k}": v for k, v in backbone.state_dict().items()}


class Foreign:
    """Any class outside torch's allow-list: its pickle is refused unread."""


def _write(path: Path, case: str, config: dict, weights: dict) -> None:
    if case == "no_config":  # 1: a bare state dict
        torch.save({"model": weights}, path)
    elif case == "model_int":  # 2: a valid config, a model that is not a state dict
        torch.save({"model": 5, "config": config}, path)
    elif case == "model_values":
        torch.save({"model": {"backbone.conv1.weight": 1}, "config": config}, path)
    elif case == "text":  # 8: torch's message advises weights_only=False
        path.write_text("model: 5\nepochs: 3\n")
    elif case == "raw_pickle":  # 9: torch warns about the pickle protocol
        path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    elif case == "foreign_object":  # 9: zip format, an object that weights_only refuses
        torch.save({"model": weights, "x": Foreign()}, path, pickle_protocol=4)


CHECKPOINT_CASES = {
    "no_config": "no saved run config ('config'",
    "model_int": "'model' is of type int",
    "model_values": "'model' must map parameter names to tensors",
    "text": "not a torch.save zip archive",
    "raw_pickle": "not a torch.save zip archive",
    "foreign_object": "holds pickled Python objects",
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_CASES))
def test_bad_checkpoint_is_one_line_naming_the_file(tmp_path, capsys, config_and_weights, case):
    path = tmp_path / "checkpoints" / "ckpt.pt"
    path.parent.mkdir()
    _write(path, case, *config_and_weights)
    before = _snapshot(tmp_path)
    for command in ("knn", "linear", "boxes"):
        code, err = run_cli(capsys, command, "--checkpoint", str(path))
        assert_one_line_error(code, err, str(path), CHECKPOINT_CASES[case])
    assert _snapshot(tmp_path) == before  # no results.jsonl, the file untouched


@pytest.mark.slow  # subprocess
def test_bad_checkpoint_on_the_real_console_is_exactly_one_line(tmp_path, config_and_weights):
    """The console script's stderr, not pytest's capture: torch's warnings would show here."""
    for case in ("raw_pickle", "foreign_object", "text"):
        path = tmp_path / f"{case}.pt"
        _write(path, case, *config_and_weights)
        proc = subprocess.run([sys.executable, "-m", "ccrop.cli", "knn", "--checkpoint",
                               str(path)], capture_output=True, text=True, timeout=120)
        assert_one_line_error(proc.returncode, proc.stderr.splitlines(), str(path))


def test_valid_hand_made_checkpoint_loads(tmp_path, config_and_weights):
    """Control for the cases above: the same config and weights, written right, are accepted."""
    config, weights = config_and_weights
    torch.save({"model": weights, "config": config}, tmp_path / "ok.pt")
    state = load_checkpoint(tmp_path / "ok.pt")
    backbone = build_backbone("resnet18", stem="cifar", width=4)
    load_backbone_state(backbone, state["model"], source=tmp_path / "ok.pt")
    assert all(torch.equal(v, weights[f"backbone.{k}"]) for k, v in backbone.state_dict().items())


def test_boxes_out_under_a_file_names_the_path(tmp_path, capsys, config_and_weights):
    """3: ``--out afile/boxes.pt`` where afile is a file; the box pass never starts."""
    config, weights = config_and_weights
    torch.save({"model": weights, "config": config}, tmp_path / "ok.pt")
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = _snapshot(tmp_path)
    code, err = run_cli(capsys, "boxes", "--checkpoint", str(tmp_path / "ok.pt"), "--out",
                        str(afile / "boxes.pt"))
    assert_one_line_error(code, err, str(afile), "is a file, not a folder")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("override,key", [
    ("data.std=[1,nan,1]", "data.std"),  # 6: NaN after the first position
    ("data.std=[nan,1,1]", "data.std"),
    ("data.std=[1,1,0]", "data.std"),
    ("data.std=[1,inf,1]", "data.std"),
    ("data.mean=[nan,0,0]", "data.mean"),  # 7
    ("data.mean=[0,0,-inf]", "data.mean"),
])
def test_non_finite_normalisation_is_one_line_naming_the_key(tmp_path, capsys, override, key):
    out = tmp_path / "run"
    code, err = run_cli(capsys, "pretrain", *TINY, f"train.out_dir={out}", override)
    assert_one_line_error(code, err, f"config key {key!r}", "got [")
    assert not out.exists()
