"""Tests of the view sources: both paths on an image folder, through the engine."""

import numpy as np
import pytest
import torch
from PIL import Image

from ccrop.cli import main
from ccrop.config import load_config
from ccrop.data.sources import DecodedImages


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
        (tmp_path / "val" / c).mkdir(parents=True)
        for i in range(10):
            size = (int(rng.integers(30, 60)), int(rng.integers(30, 60)))
            arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "train" / c / f"{i}.png")
            if i < 3:
                Image.fromarray(arr).save(tmp_path / "val" / c / f"{i}.jpg")
    return tmp_path


def test_decoded_images_are_uint8_of_fixed_size(folder):
    from ccrop.data import build_dataset

    ds = DecodedImages(build_dataset("imagefolder", str(folder), "train"), 24)
    i, img = ds[3]
    assert i == 3 and img.dtype == torch.uint8 and img.shape == (3, 24, 24)


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_folder_pretraining_on_both_paths(folder, tmp_path, pipeline):
    out = tmp_path / pipeline
    args = ["pretrain", "data.dataset=imagefolder", f"data.root={folder}", "data.test_split=val",
            "data.image_size=16", "data.loc_image_size=16", "data.batch_size=8",
            "data.num_workers=0", f"data.pipeline={pipeline}", "model.width=8",
            "train.epochs=2", "crop.warmup_epochs=1", "crop.loc_interval=1",
            "crop.threshold_mode=quantile", "crop.threshold=0.5", "train.progress=false",
            "train.tensorboard=false", "method.params.proj_hidden=16",
            "method.params.proj_dim=8", f"train.out_dir={out}"]
    assert main(args) == 0
    from ccrop.checkpoint import latest_valid_checkpoint

    state = latest_valid_checkpoint(out)[1]
    boxes = state["boxes"]["boxes"]
    assert boxes.shape == (20, 4) and (boxes[:, 2] - boxes[:, 0] < 1).any()  # localized
    assert load_config(str(out / "config.yaml")).data.pipeline == pipeline
