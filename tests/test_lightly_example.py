"""The lightly example (examples/lightly_simclr.py) runs a few steps and writes boxes."""

import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightly.loss")  # ImportError (lightly or a dependency missing): skip
pytest.importorskip("lightly.models.modules")

pytestmark = pytest.mark.slow  # trains the example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightly_simclr.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("lightly_simclr_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_runs_and_writes_boxes(tmp_path, capsys):
    out = tmp_path / "boxes.pt"
    store = _load_example().main([
        "--images", "64", "--epochs", "3", "--warmup", "1", "--interval", "1", "--steps", "2",
        "--batch-size", "16", "--width", "8", "--workers", "0", "--save", str(out)])
    text = capsys.readouterr().out
    losses = [float(v) for v in re.findall(r"loss (\S+)", text)]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses), text
    ious = [float(v) for v in re.findall(r"IoU with gt (\S+),", text)]
    assert len(ious) == 2 and all(0.0 <= v <= 1.0 for v in ious), text  # after epochs 1, 2
    assert store.version == 2
    saved = torch.load(out, weights_only=True)
    assert saved["boxes"].shape == (64, 4) and torch.equal(saved["boxes"], store.boxes)
