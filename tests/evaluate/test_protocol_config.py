"""Evaluation settings in the typed config (eval.*) and the ImageNet evaluation transform."""

import numpy as np
import pytest
import torch
from PIL import Image

from ccrop.build import build_data, build_evaluator
from ccrop.cli import main
from ccrop.config import ConfigError, load_config, upgrade_config_dict
from ccrop.data.sources import loc_loader
from ccrop.evaluate.linear import linear_lr_at, linear_milestones


def _gradient_image(w=300, h=200) -> Image.Image:
    """x-ramp in red, y-ramp in green: a pixel's colour tells where it came from."""
    x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


@pytest.fixture
def imagenet_like(tmp_path):
    root = tmp_path / "folder"
    for c in ("a", "b"):
        for split in ("train", "val"):
            (root / split / c).mkdir(parents=True)
            _gradient_image().save(root / split / c / "0.png")
    return load_config(None, ["data.dataset=imagefolder", f"data.root={root}",
                              "data.test_split=val", "data.recipe=imagenet",
                              "data.loc_image_size=224", "data.batch_size=2"])


def test_knn_and_linear_test_inputs_are_resize_256_then_centre_crop_224(imagenet_like):
    data = build_data(imagenet_like)
    evaluator = build_evaluator(imagenet_like, data)
    x = evaluator.eval_transform()(_gradient_image())  # (3, 224, 224) normalised
    assert x.shape == (3, 224, 224)
    mean = torch.tensor(data.mean).view(3, 1, 1)
    std = torch.tensor(data.std).view(3, 1, 1)
    rgb = (x * std + mean) * 255
    # short side 200 -> 256, long side 300 -> 384; the centre 224 keeps x in [80, 304) of 384
    # (of 300 px: [62.5, 237.5)) and all of y's central 224 of 256 (of 200: [12.5, 187.5))
    red_lo, red_hi = rgb[0, :, 0].mean(), rgb[0, :, -1].mean()
    assert red_lo == pytest.approx(62.5 / 300 * 255, abs=3)
    assert red_hi == pytest.approx(237.5 / 300 * 255, abs=3)
    assert rgb[1, 0, :].mean() == pytest.approx(12.5 / 200 * 255, abs=3)
    images, _ = next(iter(evaluator.eval_batches("val", torch.device("cpu"))))
    assert images.shape == (2, 3, 224, 224) and torch.allclose(images[0], x, atol=1e-6)


def test_localization_keeps_the_official_square_resize(imagenet_like):
    data = build_data(imagenet_like)
    loader = loc_loader(data.train, data.mean, data.std, 2, 0, 224)
    _, images = next(iter(loader))
    assert images.shape == (2, 3, 224, 224)
    red = (images[0, 0] * data.std[0] + data.mean[0]) * 255
    assert red[:, 0].mean() < 3 and red[:, -1].mean() > 250  # the whole width, squashed


def test_eval_settings_are_config_keys_with_the_official_defaults():
    e = load_config(None, []).eval
    assert (e.knn_k, e.knn_temperature, e.linear_epochs, e.linear_weight_decay) == \
        (200, 0.1, 100, 0.0)
    assert e.linear_lr_or_default("cifar") == 10.0 and e.linear_lr_or_default("imagenet") == 30.0
    assert linear_milestones(100, e.linear_milestones) == (60, 80)
    e = load_config(None, ["eval.linear_lr=3", "eval.linear_milestones=[5,9]",
                           "eval.linear_epochs=12"]).eval
    assert e.linear_lr_or_default("imagenet") == 3.0
    assert [linear_lr_at(i, 1.0, 12, e.linear_milestones) for i in (4, 5, 9)] == \
        pytest.approx([1.0, 0.1, 0.01])
    for bad in ("eval.linear_milestones=[80,60]", "eval.linear_milestones=[100]",
                "eval.knn_k=0", "eval.linear_lr=-1", "eval.linear_batch_size=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(None, [bad])


@pytest.mark.parametrize("override", ["eval.knn_temperature=inf", "eval.knn_temperature=nan",
                                      "eval.linear_lr=inf", "eval.linear_lr=nan",
                                      "eval.linear_weight_decay=inf"])
def test_eval_floats_must_be_finite(override):
    """knn_temperature=inf was accepted and summary.json then held ``Infinity``."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"config key '{key}' must be a finite number"):
        load_config(None, [override])
    assert load_config(None, ["eval.linear_lr=null"]).eval.linear_lr is None


def test_linear_help_names_the_eval_keys(capsys):
    with pytest.raises(SystemExit):
        main(["linear", "--help"])
    out = capsys.readouterr().out
    assert "eval.linear_epochs" in out and "eval.linear_lr" in out and "--epochs" not in out


def test_saved_configs_of_earlier_versions_keep_their_meaning():
    old = {"train": {"knn_k": 50, "knn_temperature": 0.07, "epochs": 300},
           "crop": {"threshold_mode": "fixed", "threshold": 0.1, "kind": "ccrop"}}
    cfg = load_config(None, base=old)
    assert (cfg.eval.knn_k, cfg.eval.knn_temperature) == (50, 0.07)
    assert cfg.crop.heatmap_stages == [4] and cfg.crop.box_region == "extent"
    assert cfg.crop.placement == "paper" and cfg.crop.threshold_mode == "fixed"
    assert "knn_k" in old["train"]  # not modified
    assert (cfg.crop.heatmap, cfg.crop.center_prior, cfg.crop.min_confidence) == ("sum", 0, 0)
    current = {"heatmap_stages": [3], "box_region": "peak", "heatmap": "contrast"}
    assert upgrade_config_dict({"crop": current})["crop"] == current  # already current
    before_confidence = upgrade_config_dict({"crop": {"heatmap_stages": [3]}})["crop"]
    assert before_confidence["heatmap"] == "sum" and before_confidence["min_confidence"] == 0
