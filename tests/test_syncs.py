"""Host syncs: the spy finds them, and the training step, views and box update have none."""

import dataclasses

import pytest
import torch

import ccrop.engine as engine
from ccrop.boxes import BoxStore
from ccrop.build import build_run
from ccrop.config import load_config
from ccrop.crop import FULL_BOX, CropPlan
from ccrop.data.gpu_ops import color_jitter, default_sync_free, sample_view_params
from ccrop.data.gpu_views import DeviceImages, GPUViews
from ccrop.data.sources import GPUSource, ViewSpec, auto_chunk
from ccrop.data.synthetic import SyntheticObjects
from ccrop.data.views import RECIPES, Recipe
from ccrop.localize import boxes_from_heatmaps
from ccrop.methods import METHODS
from ccrop.syncs import SyncSpy

# ----------------------------------------------------------------------------- the spy


@pytest.mark.parametrize("name,fn", [
    ("item", lambda x: x.sum().item()),
    ("float", lambda x: float(x.max())),
    ("bool", lambda x: bool((x > 0).any())),
    ("tensor from python", lambda x: torch.tensor(3.0, device=x.device)),
    ("as_tensor from python", lambda x: torch.as_tensor([1, 2], device=x.device)),
    ("nonzero", lambda x: (x > 0).nonzero()),
    ("mask index", lambda x: x[x > 0]),
    ("mask assign", lambda x: x.clone().__setitem__(x > 0, 0.0)),
    ("masked_select", lambda x: x.masked_select(x > 0)),
    ("unique", lambda x: torch.unique(x)),
])
def test_spy_catches_each_kind_of_sync(name, fn):
    x = torch.randn(4, 3)
    with SyncSpy() as spy:
        fn(x)
    assert spy.count >= 1, name
    assert "test_syncs.py" in spy.report()  # the call site is named


def test_spy_ignores_sync_free_ops():
    x = torch.randn(8, 4)
    with SyncSpy() as spy:
        y = torch.where(x > 0, x, 0.0) * 2.0 + torch.full((), 3.0)
        y = y[torch.arange(4)]  # integer index: no sync
        y.index_select(0, torch.zeros(2, dtype=torch.long))
        torch.nn.functional.cross_entropy(x, torch.zeros(8, dtype=torch.long))
    assert spy.count == 0, spy.report()


# ----------------------------------------------------------------------------- the step


def _tiny(tmp_path, *extra):
    return load_config(None, [
        "data.dataset=synthetic", "data.dataset_kwargs.num_images=96", "data.batch_size=16",
        "data.num_workers=0", "data.pipeline=gpu", "model.width=8", "train.epochs=3",
        "crop.warmup_epochs=0", "crop.loc_interval=1", "train.knn_every=0",
        "train.tensorboard=false", "train.progress=false", "method.params.proj_hidden=32",
        "method.params.proj_dim=16", "crop.loc_batch_size=16", f"train.out_dir={tmp_path}",
        *extra])


def _sync_free_run(cfg):
    """The run of ``cfg`` (GPU pipeline) with its source on the accelerator code paths, which
    avoid data-dependent shapes, although it runs on the CPU."""
    run = build_run(cfg)
    run.source.use_sync_free_paths()
    return run


def test_sync_free_is_explicit_and_removes_the_boolean_index():
    assert default_sync_free(torch.device("cpu")) is False
    assert default_sync_free(torch.device("cuda")) is True
    assert GPUViews().sync_free is False and GPUViews(sync_free=True).sync_free is True
    x = torch.rand(16, 3, 8, 8)
    p = sample_view_params(16, RECIPES["cifar"], torch.Generator().manual_seed(0))
    ops = {}
    for sync_free in (True, False):
        with SyncSpy() as spy:
            color_jitter(x, p["order"], p["factors"], p["jitter"], sync_free=sync_free)
        ops[sync_free] = [op for op, _ in spy.events]
    assert ops[True] == [], ops  # torch.where over every sample
    assert "aten.nonzero.default" in ops[False], ops  # CPU default: hue on the selected only


@pytest.mark.parametrize("name", sorted(METHODS))
def test_training_steps_have_no_host_sync(tmp_path, name):
    """Syncs per epoch do not grow with the number of steps: only the end-of-epoch reads."""
    extra = {"moco": ["method.params.queue_size=64"],
             "simsiam": ["method.params.proj_dim=32", "method.params.pred_hidden=8"]}
    cfg = _tiny(tmp_path, f"method.name={name}", *extra.get(name, []))
    if name == "simsiam":
        cfg.method.params.pop("proj_hidden")
    run = _sync_free_run(cfg)
    counts = []
    for steps in (1, 4):
        run.cfg.train.max_steps_per_epoch = steps
        with SyncSpy() as spy:
            engine.train_epoch(run, 1)
        counts.append(spy.count)
    assert counts[0] == counts[1] <= 2, spy.report()
    assert all("engine.py" in site for _, site in spy.events), spy.report()


def test_skip_step_mode_is_the_one_opt_in_sync_per_step(tmp_path):
    run = _sync_free_run(_tiny(tmp_path, "train.on_nonfinite=skip_step",
                               "train.max_steps_per_epoch=3"))
    with SyncSpy() as spy:
        engine.train_epoch(run, 1)
    per_step = [site for _, site in spy.events if "_train_step" in site]
    assert len(per_step) == 3, spy.report()  # one bool(ok) per step


@pytest.mark.parametrize("recipe", ["cifar", "imagenet"])
@pytest.mark.parametrize("crop", ["ccrop", "simccrop", "rcrop"])
def test_view_generation_has_no_host_sync(recipe, crop):
    images = DeviceImages(torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8))
    boxes = torch.tensor([FULL_BOX]).repeat(40, 1)  # (N, 4)
    views = GPUViews(CropPlan(crop), recipe, size=16, out_dtype=torch.bfloat16,
                     channels_last=True, sync_free=True)
    g = torch.Generator().manual_seed(0)
    with SyncSpy() as spy:
        for idx in images.index_batches(16, generator=g):
            views(images.data, idx, boxes[idx], generator=g)
            views.plain(images.data.index_select(0, idx))
        views(images.data[:8], torch.arange(8), boxes[:8], g)  # a decoded batch
    assert spy.count == 0, spy.report()


@pytest.mark.parametrize("crop", ["ccrop", "simccrop", "rcrop"])
def test_folder_views_with_extents_have_no_host_sync(crop):
    """Decoded folder canvases with per-sample valid regions: per-sample crop law, no sync."""
    canvases = torch.randint(0, 256, (8, 3, 21, 21), dtype=torch.uint8)  # (B, 3, M, M)
    hw = torch.tensor([[16, 21], [21, 16], [16, 16], [3, 21], [21, 2], [1, 1], [9, 12],
                       [21, 21]])  # (B, 2) valid (h, w)
    boxes = torch.tensor([[0.1, 0.2, 0.8, 0.7]]).repeat(8, 1)  # (B, 4)
    views = GPUViews(CropPlan(crop), "imagenet", size=16, out_dtype=torch.bfloat16,
                     channels_last=True, sync_free=True)
    g = torch.Generator().manual_seed(0)
    with SyncSpy() as spy:
        out = views(canvases, torch.arange(8), boxes, g, extents=hw)
        views.crop_params(boxes, hw, g)
    assert spy.count == 0, spy.report()
    assert [v.shape for v in out] == [(8, 3, 16, 16)] * 2


@pytest.mark.slow  # trains
def test_box_update_syncs_once_per_update_not_per_batch(tmp_path):
    run = build_run(_tiny(tmp_path))
    counts = []
    for batch in (48, 8):  # 2 vs 12 localization batches
        run.source.loc_batch_size = batch
        with SyncSpy() as spy:
            engine.localize_step(run, 1)
        counts.append(spy.count)
    assert counts[0] == counts[1], spy.report()


def test_heatmap_to_box_has_no_host_sync():
    heat = torch.rand(5, 8, 8)
    for mode in ("fixed", "quantile"):
        with SyncSpy() as spy:
            boxes_from_heatmaps(heat, 0.5, mode)
        assert spy.count == 0, spy.report()


# ----------------------------------------------------------------------------- chunked views


def _source(chunk, recipe="cifar"):
    ds = SyntheticObjects(num_images=70, image_size=16, seed=0)
    spec = ViewSpec(recipe, CropPlan(), 16, (0.5,) * 3, (0.5,) * 3)
    return GPUSource(ds, BoxStore(70), spec, 16, torch.device("cpu"), seed=0, num_workers=0,
                     chunk=chunk)


def test_a_sources_sync_free_paths_remove_its_syncs():
    """An epoch and the localization pass of a resident source: the CPU default takes the
    boolean index (the spy sees it), ``use_sync_free_paths`` leaves no sync at all."""
    counts = []
    for sync_free in (False, True):
        src = _source(2)
        if sync_free:
            src.use_sync_free_paths()
        with SyncSpy() as spy:
            batches = list(src)
            list(src.loc_batches())
        counts.append(spy.count)
        assert len(batches) == 70 // 16
    assert counts[0] > 0 and counts[1] == 0, spy.report()


def test_chunked_views_keep_the_batches_and_shapes():
    one, three = list(_source(1)), list(_source(3))
    assert len(one) == len(three) == 70 // 16
    for (i1, v1), (i3, v3) in zip(one, three):
        assert torch.equal(i1, i3)  # same permutation, same batches
        assert [v.shape for v in v1] == [v.shape for v in v3] == [(16, 3, 16, 16)] * 2
        assert not torch.equal(v3[0], v3[1])  # two distinct views


def test_chunked_views_equal_unchunked_ones_when_augmentation_is_deterministic():
    fixed = Recipe(flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    one, three = _source(1, fixed), _source(3, fixed)
    for src in (one, three):  # crops: the whole image, so the views are the images themselves
        for maker in (src.views, src.plain):
            maker.plan = dataclasses.replace(maker.plan, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    for (i1, v1), (i3, v3) in zip(one, three):
        assert torch.equal(i1, i3) and torch.equal(v1[0], v3[0]) and torch.equal(v1[1], v3[1])


def test_auto_chunk_is_one_on_cpu_and_bounded_on_accelerators():
    assert auto_chunk(torch.device("cpu"), 512, 2, 32) == 1
    assert auto_chunk(torch.device("cuda"), 512, 2, 32) == 8
    assert auto_chunk(torch.device("cuda"), 256, 2, 96) == 4
    assert auto_chunk(torch.device("cuda"), 256, 2, 224) == 1


def test_gpu_chunk_config_key_is_validated(tmp_path):
    from ccrop.config import ConfigError

    with pytest.raises(ConfigError, match="data.gpu_chunk"):
        _tiny(tmp_path, "data.gpu_chunk=0")


def test_linear_protocol_epoch_syncs_once_not_per_step():
    from ccrop.evaluate.linear import _train_epoch

    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6))
    clf = torch.nn.Linear(6, 3)
    opt = torch.optim.SGD(clf.parameters(), lr=0.1)
    opts = {"desc": "t", "progress": False, "amp": False, "channels_last": False}
    counts = []
    for n in (1, 5):
        loader = [(torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,))) for _ in range(n)]
        with SyncSpy() as spy:
            out = _train_epoch(backbone, clf, loader, opt, torch.device("cpu"), opts)
        counts.append(spy.count)
        assert 0 <= out["train_top1"] <= 100
    assert counts[0] == counts[1] == 2, spy.report()


def test_loss_display_shows_the_value_on_cpu():
    from ccrop.syncs import LossDisplay

    shown = LossDisplay(torch.device("cpu"))
    assert shown.update(torch.tensor(1.23456)) == "1.2346"
