"""The README's plug-in example runs as written (with a tiny dataset, encoder and method)."""

import re
from pathlib import Path

import torch

from ccrop.data import SyntheticObjects
from ccrop.methods import build_method
from ccrop.models import build_backbone

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _run_loop_example(code: str) -> tuple[dict, list]:
    """Run a README training-loop example on 32 tiny synthetic images (batch 16, 3 epochs, box
    updates after epochs 1 and 2); returns its namespace and the shapes ``my_method`` saw."""
    code = code.replace("num_workers=4", "num_workers=1").replace("512", "16")
    backbone = build_backbone("resnet18", width=8)
    method = build_method("simclr", backbone, proj_hidden=16, proj_dim=8)
    calls = []

    def my_method(x1, x2):
        calls.append(x1.shape)
        return method(x1, x2)["loss"]

    scope = {"my_dataset": SyntheticObjects(num_images=32, image_size=32), "mean": (0.5,) * 3,
             "std": (0.25,) * 3, "epochs": 3, "warmup": 1, "interval": 1,
             "backbone": backbone, "my_method": my_method}
    exec(compile(code, "README.md", "exec"), scope)
    return scope, calls


def test_v2_example_runs_and_updates_boxes():
    code = _python_blocks()[0]
    assert "ContrastiveCrop" in code and "BoxedSamples" in code and "update_boxes" in code
    scope, calls = _run_loop_example(code)
    assert calls and calls[0] == torch.Size([16, 3, 32, 32])
    assert scope["store"].version == 2  # boxes written after epochs 1 and 2
    assert scope["stats"]["images"] == 32
    assert not torch.equal(scope["store"].boxes, torch.tensor([[0.0, 0, 1, 1]]).expand(32, 4))


def test_plugin_example_runs_and_updates_boxes():
    code = _python_blocks()[1]
    assert "update_boxes" in code and "BoxedDataset" in code
    scope, calls = _run_loop_example(code)
    assert calls and calls[0] == torch.Size([16, 3, 32, 32])
    assert scope["store"].version == 2  # boxes written after epochs 1 and 2
    assert scope["stats"]["images"] == 32


def test_standalone_example_runs():
    code = _python_blocks()[2]
    from PIL import Image

    backbone = build_backbone("resnet18", width=8)
    scope = {"img": Image.new("RGB", (40, 30)), "H": 30, "W": 40, "box": (0.1, 0.2, 0.7, 0.9),
             "backbone": backbone, "x": torch.rand(2, 3, 32, 32)}
    code = code.replace("image_size=(H, W)", "image_size=(32, 32)")
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["view"].size == (32, 32) and scope["boxes"].shape == (2, 4)
    top, left, h, w = scope["top"], scope["left"], scope["h"], scope["w"]
    assert top >= 0 and top + h <= 30 and left >= 0 and left + w <= 40


def test_every_config_named_in_the_docs_loads():
    from ccrop.config import load_config

    root = Path(__file__).resolve().parents[1]
    docs = [root / "README.md", root / "configs" / "README.md",
            *sorted((root / "docs").glob("*.md"))]
    names = {m for doc in docs for m in re.findall(r"--config ([\w./-]+\.yaml)", doc.read_text())}
    assert len(names) >= 4
    for name in sorted(names):
        load_config(root / name if (root / name).exists() else name)  # raises if missing
