"""Tests of the batched view path: each op against torchvision, parameters, GPUViews,
DeviceImages, and the box copy of GPUSource."""

import math
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats

from ccrop.boxes import BoxStore
from ccrop.crop import FULL_BOX, CropPlan, sample_crop_params_batch
from ccrop.data.gpu_ops import (
    adjust_hue,
    augment,
    color_jitter,
    crop_resize,
    gaussian_blur,
    grayscale,
    resize_weights,
    sample_view_params,
    solarize,
)
from ccrop.data.gpu_views import DeviceImages, GPUViews
from ccrop.data.sources import GPUSource, ViewSpec
from ccrop.data.synthetic import SyntheticObjects
from ccrop.data.views import RECIPES, Recipe, build_crop

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def smooth_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, h, w) uint8 smooth random colour images (interpolated 4x4 noise)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def rand_float(n: int, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    """(n, 3, h, w) float images in [0, 1] with grey pixels and channel ties mixed in."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, h, w), generator=g).float() / 255  # uint8 grid: many ties
    x[:, :, 0] = x[:, :1, 0]  # a grey row
    x[:, 1, 1] = x[:, 0, 1]  # r == g
    x[:, 2, 2] = x[:, 1, 2]  # g == b
    return x


def per_sample(op, x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    return torch.stack([op(x[i], float(factors[i])) for i in range(x.shape[0])])


# ----------------------------------------------------------------------------- crop + resize


@pytest.mark.parametrize("size", [32, 20, 57])
def test_crop_resize_matches_torchvision_antialiased(size):
    imgs = smooth_images(6, 32, 40)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(6, 1)
    params = sample_crop_params_batch(32, 40, boxes, scale=(0.08, 1.0), full_box_guard=1e-12,
                                      generator=torch.Generator().manual_seed(size))
    out = crop_resize(imgs, torch.arange(6), params, size)
    assert out.shape == (6, 3, size, size) and out.dtype == torch.float32
    for i in range(6):
        t, l, h, w = params[i].tolist()
        ref = TF.resized_crop(imgs[i].float() / 255, t, l, h, w, [size, size], antialias=True)
        assert torch.allclose(out[i], ref, atol=1e-5)


@pytest.mark.parametrize("size", [32, 16])
def test_crop_resize_close_to_pil(size):
    imgs = smooth_images(8, 32, 32, seed=1)
    params = torch.tensor([[0, 0, 32, 32], [3, 5, 14, 17], [10, 0, 22, 19], [0, 9, 32, 23],
                           [7, 7, 9, 12], [1, 2, 30, 25], [20, 20, 12, 12], [0, 0, 1, 1]])
    out = crop_resize(imgs, torch.arange(8), params, size)
    for i in range(8):
        t, l, h, w = params[i].tolist()
        pil = Image.fromarray(imgs[i].permute(1, 2, 0).numpy())
        ref = np.asarray(TF.resized_crop(pil, t, l, h, w, [size, size])).copy()
        ref = torch.from_numpy(ref).permute(2, 0, 1).float() / 255
        assert (out[i] - ref).abs().mean() < 1 / 255  # PIL rounds to uint8 (twice)
        assert (out[i] - ref).abs().max() < 3 / 255


def test_resize_weights_rows_sum_to_one_and_stay_in_crop():
    start, length = torch.tensor([0, 5, 17]), torch.tensor([32, 3, 15])
    w = resize_weights(start, length, 32, 8)  # downscale, upscale, mild downscale
    assert torch.allclose(w.sum(-1), torch.ones(3, 8))
    cols = torch.arange(32)
    for b in range(3):
        outside = (cols < start[b]) | (cols >= start[b] + length[b])
        assert (w[b][:, outside] == 0).all()
        assert (w[b][:, ~outside].sum(0) > 0).all()  # every crop pixel is used


def test_crop_resize_full_crop_same_size_is_identity():
    imgs = smooth_images(3, 16, 16)
    params = torch.tensor([[0, 0, 16, 16]]).repeat(3, 1)
    out = crop_resize(imgs, torch.arange(3), params, 16)
    assert torch.allclose(out, imgs.float() / 255, atol=1e-6, rtol=0)


def test_crop_resize_shares_sources_and_flips():
    imgs = smooth_images(4, 24, 24)
    src = torch.tensor([2, 2, 0, 2])
    params = torch.tensor([[1, 2, 20, 18], [1, 2, 20, 18], [0, 0, 24, 24], [1, 2, 20, 18]])
    flip = torch.tensor([False, True, True, False])
    out = crop_resize(imgs, src, params, 16, flip=flip)
    plain = crop_resize(imgs, src, params, 16)
    assert torch.equal(out[0], out[3])  # same source and params: same view
    assert torch.allclose(out[1], out[0].flip(-1), atol=1e-6)
    assert torch.allclose(out, torch.where(flip[:, None, None, None], plain.flip(-1), plain),
                          atol=1e-6)
    assert imgs.shape == (4, 3, 24, 24)  # the dataset itself is untouched


def test_crop_resize_broadcasts_gray_and_accepts_float():
    gray = smooth_images(2, 16, 16)[:, :1]
    params = torch.tensor([[2, 2, 10, 12], [0, 0, 16, 16]])
    out = crop_resize(gray, torch.arange(2), params, 8)
    assert out.shape == (2, 3, 8, 8)
    assert torch.equal(out[:, 0], out[:, 2])
    out_f = crop_resize(gray.float() / 255, torch.arange(2), params, 8)
    assert torch.allclose(out, out_f, atol=1e-6)


# ----------------------------------------------------------------------------- colour ops


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), shift=st.floats(-0.5, 0.5))
def test_hue_matches_torchvision(seed, shift):
    x = rand_float(3, seed=seed)
    f = torch.tensor([shift, -shift, shift / 3])
    assert torch.allclose(adjust_hue(x, f), per_sample(TF.adjust_hue, x, f), atol=2e-5)


def test_hue_zero_shift_is_identity_and_keeps_max_min():
    x = rand_float(4, seed=3)
    assert torch.allclose(adjust_hue(x, torch.zeros(4)), x, atol=1e-6)
    y = adjust_hue(x, torch.full((4,), 0.23))
    assert torch.allclose(y.amax(1), x.amax(1), atol=1e-6)
    assert torch.allclose(y.amin(1), x.amin(1), atol=1e-6)


def reference_jitter(x, order, factors, apply):
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    out = []
    for i in range(x.shape[0]):
        img = x[i]
        if apply[i]:
            for k in order[i].tolist():
                img = ops[k](img, float(factors[i, k]))
        out.append(img)
    return torch.stack(out)


@pytest.mark.parametrize("sync_free", [False, True])  # boolean-index and torch.where hue
@pytest.mark.parametrize("device", DEVICES)
def test_color_jitter_matches_per_sample_torchvision(device, sync_free):
    x = rand_float(24, seed=5)
    p = sample_view_params(24, RECIPES["cifar"], torch.Generator().manual_seed(0))
    p["jitter"][:3] = False  # some samples certainly skip jitter
    out = color_jitter(x.clone().to(device), p["order"].to(device), p["factors"].to(device),
                       p["jitter"].to(device), sync_free=sync_free).cpu()
    ref = reference_jitter(x, p["order"], p["factors"], p["jitter"])
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.equal(out[~p["jitter"]], x[~p["jitter"]])  # skipped samples bit-exact


def test_grayscale_matches_torchvision():
    x = rand_float(4)
    apply = torch.tensor([True, False, True, False])
    out = grayscale(x.clone(), apply)
    ref = TF.rgb_to_grayscale(x, num_output_channels=3)
    assert torch.allclose(out[apply], ref[apply], atol=1e-6)
    assert torch.equal(out[~apply], x[~apply])


def test_gaussian_blur_matches_torchvision():
    x = rand_float(4, h=16, w=14)
    sigma = torch.tensor([0.1, 0.7, 1.5, 2.0])
    apply = torch.tensor([True, True, False, True])
    out = gaussian_blur(x, sigma, apply, kernel_size=9)
    for i in range(4):
        ref = TF.gaussian_blur(x[i], [9, 9], [float(sigma[i])] * 2) if apply[i] else x[i]
        assert torch.allclose(out[i], ref, atol=1e-5)
    assert torch.equal(out[2], x[2])


def test_solarize_matches_torchvision():
    x = rand_float(3)
    apply = torch.tensor([True, False, True])
    out = solarize(x, apply)
    assert torch.equal(out[0], TF.solarize(x[0], 128 / 255)) and torch.equal(out[1], x[1])


# ----------------------------------------------------------------------------- parameters


def test_sample_view_params_distributions():
    n = 20000
    recipe = Recipe(flip_p=0.5, jitter=(0.4, 0.3, 0.9, 0.1), jitter_p=0.8, gray_p=0.2,
                    blur_p=0.5, solarize_p=0.1)
    p = sample_view_params(n, recipe, torch.Generator().manual_seed(0))
    for key, prob in [("flip", 0.5), ("jitter", 0.8), ("gray", 0.2), ("blur", 0.5),
                      ("solarize", 0.1)]:
        assert p[key].dtype == torch.bool and p[key].shape == (n,)
        assert abs(p[key].float().mean().item() - prob) < 5 * math.sqrt(prob * (1 - prob) / n)
    assert torch.equal(p["order"].sort(dim=1).values, torch.arange(4).expand(n, 4))
    codes = (p["order"] * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)[torch.bincount(codes, minlength=256) > 0]
    assert counts.numel() == 24  # every permutation, uniformly
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3
    f = p["factors"]
    lo, hi = torch.tensor([0.6, 0.7, 0.1, -0.1]), torch.tensor([1.4, 1.3, 1.9, 0.1])
    assert (f >= lo).all() and (f <= hi).all()
    assert (f.min(0).values < lo + 0.01).all() and (f.max(0).values > hi - 0.01).all()
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0


def test_sample_view_params_reproducible():
    a = sample_view_params(50, RECIPES["imagenet"], torch.Generator().manual_seed(3))
    b = sample_view_params(50, RECIPES["imagenet"], torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_augment_skips_zero_probability_ops():
    x = rand_float(5)
    recipe = Recipe(flip_p=0, jitter_p=0, gray_p=0, blur_p=0, solarize_p=0)
    p = sample_view_params(5, RECIPES["imagenet"], torch.Generator().manual_seed(0))
    assert torch.equal(augment(x, p, recipe, 3), x)


# ----------------------------------------------------------------------------- GPUViews


LAW = ("scale", "ratio", "alpha", "full_box_guard", "placement")
IMAGES = smooth_images(16, 24, 24)  # (N, 3, H, W) uint8


def with_plan(kw: dict) -> dict:
    """Test shorthand: ``crop=`` and the law's keywords become ``plan=CropPlan(...)``."""
    law = {k: kw.pop(k) for k in LAW if k in kw}
    if law or "crop" in kw:
        kw["plan"] = CropPlan(kw.pop("crop", "ccrop"), **law)
    return kw


def make_views(**kw) -> GPUViews:
    """GPUViews whose output side is the side of ``IMAGES`` unless ``size`` is given."""
    kw.setdefault("size", IMAGES.shape[-1])
    return GPUViews(**with_plan(kw))


def same_boxes(b: int, box=FULL_BOX, device="cpu") -> torch.Tensor:
    """(b, 4) copies of one normalised box."""
    return torch.tensor([box], dtype=torch.float32, device=device).repeat(b, 1)


@pytest.mark.parametrize("device", DEVICES)
def test_views_shapes_range_and_reproducibility(device):
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    v = make_views(mean=mean, std=std, size=16, num_views=3, recipe="imagenet", device=device)
    images = DeviceImages(IMAGES, device)
    idx = torch.tensor([0, 5, 5, 15], device=device)
    boxes = same_boxes(4, device=device)
    out = v(images.data, idx, boxes, torch.Generator(device).manual_seed(0))
    assert len(out) == 3 and all(t.shape == (4, 3, 16, 16) for t in out)
    lo = (0 - torch.tensor(mean)) / torch.tensor(std)
    hi = (1 - torch.tensor(mean)) / torch.tensor(std)
    for t in out:
        t = t.cpu()
        assert t.dtype == torch.float32 and torch.isfinite(t).all()
        assert (t >= lo.view(1, 3, 1, 1) - 1e-5).all() and (t <= hi.view(1, 3, 1, 1) + 1e-5).all()
    again = v(images.data, idx, boxes, torch.Generator(device).manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(out, again))
    assert not torch.equal(out[0], out[1])  # views are independent draws


def test_identity_views_equal_plain():
    recipe = Recipe(flip_p=0, jitter_p=0, gray_p=0)
    v = make_views(recipe=recipe, scale=(1.0, 1.0), ratio=(1.0, 1.0), mean=(0.3, 0.4, 0.5))
    idx = torch.tensor([3, 1, 4])
    ev = v.plain(IMAGES[idx])
    ref = TF.normalize(IMAGES[idx].float() / 255, (0.3, 0.4, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(ev, ref, atol=1e-6)
    for view in v(IMAGES, idx, same_boxes(3)):
        assert torch.allclose(view, ev, atol=1e-5)
    gray = IMAGES[idx, :1]  # (B, 1, H, W) is broadcast to RGB
    ref = TF.normalize(gray.expand(-1, 3, -1, -1).float() / 255, (0.3, 0.4, 0.5), (0.5,) * 3)
    assert torch.allclose(v.plain(gray), ref, atol=1e-6)


def test_out_dtype_and_channels_last():
    v = make_views(out_dtype=torch.bfloat16, channels_last=True)
    a, b = v(IMAGES, torch.arange(4), same_boxes(4))
    assert a.dtype == torch.bfloat16 and a.is_contiguous(memory_format=torch.channels_last)
    assert b.is_contiguous(memory_format=torch.channels_last)
    assert v.plain(IMAGES[:2]).dtype == torch.bfloat16


def crop_centres(v: GPUViews, boxes: torch.Tensor, image_size: tuple[int, int],
                 seed: int = 0) -> torch.Tensor:
    """(n, 2) float64 normalised (x, y) centres of crops for (n, 4) ``boxes``."""
    p = v.crop_params(boxes, image_size, torch.Generator().manual_seed(seed))
    p, (h, w) = p.double(), image_size  # float64 like the Python path: exact ties for KS
    return torch.stack([(p[:, 1] + p[:, 3] / 2) / w, (p[:, 0] + p[:, 2] / 2) / h], 1)


def box_source(store: BoxStore, plan: CropPlan) -> GPUSource:
    """A resident GPUSource on CPU over 64 px synthetic images, one per box of ``store``."""
    ds = SyntheticObjects(num_images=len(store), image_size=64, seed=0)
    spec = ViewSpec("cifar", plan, 16, (0.5,) * 3, (0.5,) * 3)
    return GPUSource(ds, store, spec, 8, torch.device("cpu"), seed=0, num_workers=0)


def test_boxes_updated_moves_the_sources_crops():
    store = BoxStore(16)
    src = box_source(store, CropPlan(alpha=0.5, scale=(0.05, 0.1)))
    first = torch.zeros(4000, dtype=torch.long)  # image 0, 4000 times
    idx = torch.arange(8)
    c_full = crop_centres(src.views, src.boxes[first], src.images.image_size)
    before = src.views_for(idx, torch.Generator().manual_seed(5))
    store.update(torch.tensor([0]), torch.tensor([[0.0, 0.0, 0.3, 0.3]]))
    assert torch.allclose(crop_centres(src.views, src.boxes[first], src.images.image_size),
                          c_full)  # not synced yet
    src.boxes_updated(store)
    c_box = crop_centres(src.views, src.boxes[first], src.images.image_size)
    assert (c_box < 0.35).float().mean() > 0.95 and (c_full < 0.35).float().mean() < 0.5
    after = src.views_for(idx, torch.Generator().manual_seed(5))
    assert not torch.equal(after[0][0], before[0][0])  # the views read the device copy


@pytest.mark.parametrize("kind", ["ccrop", "simccrop", "rcrop"])
def test_crop_kinds_follow_build_crop(kind):
    box = (0.5, 0.1, 0.9, 0.4)
    kw = dict(scale=(0.1, 0.5), alpha=0.3, full_box_guard=0.95)
    v = make_views(crop=kind, **kw)
    gpu = crop_centres(v, same_boxes(4000, box), (40, 48)).numpy()
    crop = build_crop(kind, 16, **kw)
    rng = random.Random(0)
    cpu = []
    for _ in range(4000):  # the box is ignored by simccrop and rcrop
        t, l, h, w = crop.get_params(40, 48, box, rng)
        cpu.append(((l + w / 2) / 48, (t + h / 2) / 40))
    cpu = np.array(cpu)
    for axis in range(2):
        assert stats.ks_2samp(gpu[:, axis], cpu[:, axis]).pvalue > 1e-3


def test_device_images_index_batches():
    images = DeviceImages(smooth_images(23, 8, 8))
    assert len(images) == 23 and images.image_size == (8, 8)
    g = torch.Generator().manual_seed(0)
    batches = list(images.index_batches(5, generator=g))
    assert len(batches) == 4 == images.num_batches(5) and all(b.shape == (5,) for b in batches)
    seen = torch.cat(batches)
    assert seen.unique().numel() == 20
    full = torch.cat(list(images.index_batches(5, shuffle=False, drop_last=False)))
    assert torch.equal(full, torch.arange(23)) and images.num_batches(5, drop_last=False) == 5
    ranks = [torch.cat(list(images.index_batches(3, generator=torch.Generator().manual_seed(1),
                                                 rank=r, world_size=2))) for r in range(2)]
    assert ranks[0].numel() == ranks[1].numel() == 9
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())


@pytest.mark.parametrize("recipe", [dict(gray_p=1.5), dict(jitter=(0.4, 0.4, 0.4, 0.7)),
                                    dict(jitter=(-0.1, 0.4, 0.4, 0.1)), dict(blur_sigma=(2, 1))])
def test_recipe_validation(recipe):
    with pytest.raises(ValueError, match=next(iter(recipe))):
        Recipe(**recipe)


@pytest.mark.parametrize("kwargs,match", [
    ({"recipe": "mnist"}, "recipe"),
    ({"size": 0}, "size"),
    ({"num_views": 0}, "num_views"),
    ({"std": (0.5, 0.0, 0.5)}, "std"),
    ({"mean": (0.5, 0.5)}, "mean"),
    ({"out_dtype": torch.int32}, "out_dtype"),
    ({"blur_kernel_size": 4}, "blur_kernel_size"),
])
def test_constructor_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_views(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"kind": "random"}, "crop kind"),
    ({"scale": (0.5, 0.2)}, "scale"),
    ({"alpha": 0.0}, "alpha"),
    ({"full_box_guard": 1.5}, "full_box_guard"),
])
def test_crop_plan_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CropPlan(**kwargs)


@pytest.mark.parametrize("images,match", [
    (torch.zeros(4, 3, 8, 8), "uint8"),
    (torch.zeros(4, 4, 8, 8, dtype=torch.uint8), "images"),
    (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), "at least one"),
])
def test_device_images_are_validated(images, match):
    with pytest.raises(ValueError, match=match):
        DeviceImages(images)


# ----------------------------------------------------------------------------- folder canvases


def canvases(extents, side: int = 20, pad: int = 0, seed: int = 0) -> torch.Tensor:
    """(B, 3, side, side) uint8: smooth images in the top-left (h, w) of each, ``pad`` elsewhere."""
    out = torch.full((len(extents), 3, side, side), pad, dtype=torch.uint8)
    for i, (h, w) in enumerate(extents):
        out[i, :, :h, :w] = smooth_images(1, h, w, seed=seed + i)[0]
    return out


EXTENTS = [(20, 15), (15, 20), (20, 20), (4, 20), (1, 1), (12, 9)]
FOLDER_BOX = (0.1, 0.2, 0.8, 0.7)  # normalised to each image's valid region


def folder_views(**kw) -> GPUViews:
    kw.setdefault("recipe", "imagenet")
    return GPUViews(size=12, **with_plan(kw))


@pytest.mark.parametrize("crop", ["ccrop", "simccrop", "rcrop"])
def test_views_with_extents_shapes_and_crops_inside_regions(crop):
    v = folder_views(crop=crop, num_views=3)
    hw = torch.tensor(EXTENTS)  # (B, 2)
    out = v(canvases(EXTENTS), torch.arange(6), same_boxes(6, FOLDER_BOX),
            torch.Generator().manual_seed(0), extents=hw)
    assert len(out) == 3 and all(t.shape == (6, 3, 12, 12) and torch.isfinite(t).all()
                                 for t in out)
    p = v.crop_params(same_boxes(300, FOLDER_BOX), hw.repeat(50, 1),
                      torch.Generator().manual_seed(1))
    top, left, h, w = p.unbind(1)  # (300,) each
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= hw[:, 0].repeat(50)).all() and (left + w <= hw[:, 1].repeat(50)).all()
    assert (top + h == 20).any()  # crops do reach the edge of the larger regions


@pytest.mark.parametrize("recipe", ["cifar", "imagenet"])
def test_views_with_extents_never_read_the_padding(recipe):
    v = folder_views(recipe=recipe)
    hw, rows, boxes = torch.tensor(EXTENTS), torch.arange(6), same_boxes(6, FOLDER_BOX)

    def run(pad, extents):
        g = torch.Generator().manual_seed(4)
        return v(canvases(EXTENTS, pad=pad), rows, boxes, g, extents=extents)

    for a, b in zip(run(0, hw), run(255, hw)):
        assert torch.equal(a, b)
    # without extents the crops cover the padding, so the padding value shows: the check bites
    assert not all(torch.equal(a, b) for a, b in zip(run(0, None), run(255, None)))


def test_views_of_a_canvas_equal_views_of_the_bare_image():
    """One image of 20 x 13 in a 24 x 24 canvas gives the views of the 20 x 13 image itself."""
    v = folder_views()
    bare = smooth_images(1, 20, 13, seed=9)
    canvas = torch.full((1, 3, 24, 24), 77, dtype=torch.uint8)
    canvas[:, :, :20, :13] = bare
    rows, box = torch.arange(1), same_boxes(1, FOLDER_BOX)

    def views(images, extents=None):
        return v(images, rows, box, torch.Generator().manual_seed(8), extents=extents)

    for a, b in zip(views(canvas, torch.tensor([[20, 13]])), views(bare)):
        assert torch.allclose(a, b, atol=1e-5)
    # the whole canvas as extents = no extents
    for a, b in zip(views(canvas, torch.tensor([[24, 24]])), views(canvas)):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_for_fixed_params():
    imgs = smooth_images(8, 32, 32)
    p = sample_view_params(16, RECIPES["imagenet"], torch.Generator().manual_seed(0))
    crops = sample_crop_params_batch(32, 32, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(16, 1))
    src = torch.arange(16) % 8

    def run(dev):
        q = {k: t.to(dev) for k, t in p.items()}
        x = crop_resize(imgs.to(dev), src.to(dev), crops.to(dev), 24, flip=q["flip"])
        return augment(x, q, RECIPES["imagenet"], 13).cpu()

    assert torch.allclose(run("cpu"), run("cuda"), atol=1e-4)
