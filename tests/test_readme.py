"""Every Python snippet of the README runs verbatim, given only ``my_dataset``.

The snippets define everything else themselves (model, optimizer, loss, epochs); the test only
supplies ``my_dataset``: 64 synthetic 32 px object images with labels. The loops train a
torchvision ResNet-18 and localize with its layer3 (``feature_fn(backbone, layers=...)``).
"""

import math
import re
from pathlib import Path

import pytest
import torch

from ccrop.data import build_dataset

README = Path(__file__).resolve().parents[1] / "README.md"
NUM_IMAGES = 64


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


BLOCKS = _python_blocks()


def _run(code: str) -> dict:
    """Execute one snippet as written with ``my_dataset`` as its only given name."""
    torch.manual_seed(0)
    dataset = build_dataset("synthetic", split="train", num_images=NUM_IMAGES, image_size=32)
    scope = {"__name__": "readme_snippet", "my_dataset": dataset}
    exec(compile(code, str(README), "exec"), scope)
    return scope


def test_the_readme_has_the_plugin_snippets():
    assert len(BLOCKS) >= 3
    loops = [c for c in BLOCKS if "update_boxes(" in c]
    assert len(loops) == 2 and any("BoxedSamples" in c for c in loops)
    assert any("BoxedDataset" in c for c in loops)
    for code in loops:  # the user's own torchvision model, localized at layer3
        assert "torchvision.models.resnet18()" in code
        assert 'feature_fn(backbone, layers=["layer3"])' in code
        assert "**CropConfig().box_rule()" in code and "forward_features" not in code


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"snippet{i}")
def test_readme_snippet_runs_verbatim(index):
    torchvision = pytest.importorskip("torchvision")
    code = BLOCKS[index]
    scope = _run(code)
    if "update_boxes(" in code:
        _check_loop(scope, torchvision)
    if "get_params(" in code:
        _check_pieces(scope)


def _check_loop(scope: dict, torchvision) -> None:
    assert isinstance(scope["backbone"], torchvision.models.ResNet)
    assert math.isfinite(scope["loss"].item())  # the SSL step ran
    epochs, warmup, interval = scope["epochs"], scope["warmup"], scope["interval"]
    updates = sum(e >= warmup and e % interval == 0 for e in range(epochs))
    assert updates >= 1 and epochs <= 5  # short as written: the test runs it unchanged
    store = scope["store"]
    assert store.version == updates and scope["stats"]["images"] == NUM_IMAGES
    boxes = store.boxes
    assert boxes.shape == (NUM_IMAGES, 4) and boxes.min() >= 0 and boxes.max() <= 1
    full = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert not (boxes == full).all(dim=1).all()  # localized: not every box the full image
    assert sum(len(m._forward_hooks) for m in scope["backbone"].modules()) == 0


def _check_pieces(scope: dict) -> None:
    H, W = scope["H"], scope["W"]
    assert scope["view"].size == (32, 32)
    top, left, h, w = scope["top"], scope["left"], scope["h"], scope["w"]
    assert top >= 0 and top + h <= H and left >= 0 and left + w <= W
    assert scope["fmap"].shape == (4, 256, 4, 4)
    boxes = scope["boxes"]
    assert boxes.shape == (4, 4) and boxes.min() >= 0 and boxes.max() <= 1


def test_every_config_named_in_the_docs_loads():
    from ccrop.config import load_config

    root = Path(__file__).resolve().parents[1]
    docs = [root / "README.md", root / "configs" / "README.md",
            *sorted((root / "docs").glob("*.md"))]
    names = {m for doc in docs for m in re.findall(r"--config ([\w./-]+\.yaml)", doc.read_text())}
    assert len(names) >= 4
    for name in sorted(names):
        load_config(root / name if (root / name).exists() else name)  # raises if missing
