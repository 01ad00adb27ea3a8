"""Tests of the view sources: both paths on an image folder through the engine, decoded canvases,
and the evaluation batches made on the device."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ccrop import dist
from ccrop.cli import main
from ccrop.config import load_config
from ccrop.data.sources import DecodedImages, eval_loader, fit_size
from ccrop.data.synthetic import SyntheticObjects
from ccrop.data.views import EvalTransform
from ccrop.evaluate.batches import DeviceLabeledBatches


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


def test_decoded_images_are_uint8_canvases_with_their_valid_region(folder):
    from ccrop.data import build_dataset

    base = build_dataset("imagefolder", str(folder), "train")
    ds = DecodedImages(base, 24)
    i, img, hw = ds[3]
    assert i == 3 and img.dtype == torch.uint8 and img.shape == (3, 32, 32)  # 32 = 24 * 4 / 3
    assert hw.dtype == torch.int64 and hw.shape == (2,)
    w0, h0 = base[3][0].size
    assert tuple(hw.tolist()) == fit_size(h0, w0, 24, 32) and min(hw.tolist()) <= 24


def _colour_images(sizes):
    """A list dataset of ``(PIL image, label)`` with random colours, one per ``(h, w)``."""
    rng = np.random.default_rng(1)
    return [(Image.fromarray(rng.integers(1, 255, (h, w, 3), dtype=np.uint8)), 0)
            for h, w in sizes]


@pytest.mark.parametrize("hw,expected", [
    ((40, 32), (30, 24)),  # portrait: short side 24, long side 30 <= 32
    ((32, 40), (24, 30)),  # landscape
    ((50, 50), (24, 24)),  # square, as the old square resize
    ((10, 100), (3, 32)),  # very wide: long side capped at 32, short side 3
    ((100, 10), (32, 3)),  # very tall
    ((3, 4), (24, 32)),  # tiny: upscaled to the rule (4/3 exactly fits the canvas)
    ((1, 1000), (1, 32)),  # a line keeps at least one pixel
])
def test_decoded_images_keep_aspect_ratio_top_left(hw, expected):
    base = _colour_images([hw])
    _, img, got = DecodedImages(base, 24)[0]
    h, w = got.tolist()
    assert (h, w) == expected and img.shape == (3, 32, 32) and img.dtype == torch.uint8
    ref = base[0][0].resize((w, h), Image.BILINEAR)  # the valid region is the resized image
    assert torch.equal(img[:, :h, :w], torch.from_numpy(np.array(ref)).permute(2, 0, 1))
    assert img[:, h:].sum() == 0 and img[:, :, w:].sum() == 0  # zero padding
    assert img[:, :h, :w].min() > 0  # the image itself (values >= 1) fills the region


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 2000), w=st.integers(1, 2000), size=st.integers(1, 300),
       extra=st.floats(1.0, 3.0))
def test_fit_size_keeps_the_ratio_within_rounding(h, w, size, extra):
    cap = max(size, round(size * extra))
    fh, fw = fit_size(h, w, size, cap)
    assert 1 <= fh <= cap and 1 <= fw <= cap and min(fh, fw) <= size
    assert min(fh, fw) == size or max(fh, fw) == cap  # one of the two rules is active
    assert (fh <= fw) == (h <= w) or fh == fw  # orientation kept

    def rounds_to(side, new, f):
        return abs(new - side * f) <= 0.5 + 1e-9 or (new == 1 and side * f < 1)

    # one scale for both sides (short side to size, or long side to the cap), rounded
    assert any(rounds_to(h, fh, f) and rounds_to(w, fw, f)
               for f in (size / min(h, w), cap / max(h, w)))


@pytest.mark.parametrize("kwargs,word", [
    ({"size": 0}, "size"), ({"size": 2.5}, "size"), ({"size": 24, "max_side": 23}, "max_side"),
    ({"size": 24, "max_side": 30.5}, "max_side"),
])
def test_decoded_images_validate_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        DecodedImages(_colour_images([(4, 4)]), **kwargs)


@pytest.mark.parametrize("pipeline", ["cpu", "gpu"])
def test_folder_pretraining_on_both_paths(folder, tmp_path, pipeline):
    out = tmp_path / pipeline
    args = ["pretrain", "data.dataset=imagefolder", f"data.root={folder}", "data.test_split=val",
            "data.image_size=16", "data.loc_image_size=16", "data.batch_size=8",
            "data.num_workers=0", f"data.pipeline={pipeline}", "model.width=8",
            "train.epochs=2", "crop.warmup_epochs=1", "crop.loc_interval=1",
            "crop.threshold_mode=quantile", "crop.threshold=0.5", "crop.min_confidence=0",
            "crop.heatmap=sum", "crop.center_prior=0",
            "train.progress=false",
            "train.tensorboard=false", "method.params.proj_hidden=16",
            "method.params.proj_dim=8", "train.device=cpu", f"train.out_dir={out}"]
    assert main(args) == 0
    from ccrop.checkpoint import latest_valid_checkpoint

    state = latest_valid_checkpoint(out)[1]
    boxes = state["boxes"]["boxes"]
    assert boxes.shape == (20, 4) and (boxes[:, 2] - boxes[:, 0] < 1).any()  # localized
    assert load_config(str(out / "config.yaml")).data.pipeline == pipeline


# ----------------------------------------------------------------------------- DeviceLabeledBatches


MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def ds():
    return SyntheticObjects(num_images=50, image_size=16, seed=3)


def test_plain_batches_equal_the_pil_eval_loader(ds):
    dev = DeviceLabeledBatches(ds, MEAN, STD, 16, torch.device("cpu"))
    ref = eval_loader(ds, EvalTransform(MEAN, STD), 16, 0)
    assert len(dev) == len(ref) == 4 and len(dev.dataset) == 50
    for (x, y), (xr, yr) in zip(dev, ref):
        assert torch.equal(y, yr.long())
        torch.testing.assert_close(x, xr, atol=1e-6, rtol=0)


def test_train_batches_are_a_fresh_augmented_permutation_every_pass(ds):
    dev = DeviceLabeledBatches(ds, MEAN, STD, 16, torch.device("cpu"), train=True, seed=1)
    assert dev.views.plan.scale == (0.08, 1.0) and dev.views.plan.kind == "rcrop"
    labels = torch.as_tensor(ds.targets)
    passes = []
    for _ in range(2):
        batches = list(dev)
        got = torch.cat([y for _, y in batches])
        assert torch.equal(got.sort().values, labels.sort().values)  # every image once
        assert all(x.shape[1:] == (3, 16, 16) and torch.isfinite(x).all() for x, _ in batches)
        passes.append(batches)
    assert not torch.equal(passes[0][0][0], passes[1][0][0])  # new shuffle and draws
    again = list(DeviceLabeledBatches(ds, MEAN, STD, 16, torch.device("cpu"), train=True,
                                      seed=1))
    assert torch.equal(again[0][0], passes[0][0][0])  # reproducible from the seed
    plain = torch.cat([x for x, _ in DeviceLabeledBatches(ds, MEAN, STD, 50, "cpu")])
    assert not torch.allclose(passes[0][0][0], plain[:16])  # augmented


def test_shards_cover_the_dataset_as_gather_shards_expects(ds, monkeypatch):
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    shares = []
    for rank in range(3):
        monkeypatch.setattr(dist, "get_rank", lambda r=rank: r)
        dev = DeviceLabeledBatches(ds, MEAN, STD, 8, torch.device("cpu"), shard=True)
        ys = torch.cat([y for _, y in dev])
        assert ys.shape[0] == 17 and len(dev) == 3  # ceil(50 / 3), padded
        shares.append(ys)
    # padded position q = slot * world + rank holds item q % N: the sampler's order
    rows = torch.stack(shares, dim=1).reshape(-1)[:50]
    assert torch.equal(rows, torch.as_tensor(ds.targets))


def test_the_knn_bank_reuses_the_gpu_sources_resident_images(tmp_path):
    from ccrop.build import build_evaluator, build_run

    cfg = load_config(None, [
        "data.dataset=synthetic", "data.dataset_kwargs.num_images=40", "data.batch_size=8",
        "data.num_workers=0", "data.pipeline=gpu", "model.width=8", "train.epochs=1",
        "crop.warmup_epochs=0", "train.tensorboard=false", "train.progress=false",
        "train.device=cpu", f"train.out_dir={tmp_path}"])
    run = build_run(cfg)
    evaluator = build_evaluator(run.cfg, run.data, run.source)
    bank = evaluator.eval_batches(cfg.data.eval_train_split, run.device)
    assert bank.images.data.data_ptr() == run.source.images.data.data_ptr()  # one copy
    test = evaluator.eval_batches(cfg.data.test_split, run.device)
    assert test.images.data.data_ptr() != run.source.images.data.data_ptr()
    ref = eval_loader(run.data.train, EvalTransform(run.data.mean, run.data.std), 8, 0)
    for (x, y), (xr, yr) in zip(bank, ref):  # the shared copy gives the eval images
        assert torch.equal(y, yr.long())
        torch.testing.assert_close(x, xr, atol=1e-6, rtol=0)
