"""Tests of the ContrastiveCrop sampling law (per sample and batched)."""

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats

from ccrop import ContrastiveCrop, RandomResizedCrop, SimCCrop
from ccrop.crop import check_box, sample_crop_params, sample_crop_params_batch


@st.composite
def boxes(draw):
    x = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
    y = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
    return (x[0], y[0], x[1], y[1])


@st.composite
def crop_args(draw):
    lo = draw(st.floats(0.01, 1.0))
    hi = draw(st.floats(lo, 1.0))
    rlo = draw(st.floats(0.2, 3.0))
    rhi = draw(st.floats(rlo, 5.0))
    alpha = draw(st.floats(0.05, 5.0))
    guard = draw(st.one_of(st.none(), st.floats(0.1, 1.0)))
    return (lo, hi), (rlo, rhi), alpha, guard


@settings(max_examples=300, deadline=None)
@given(
    h=st.integers(1, 400),
    w=st.integers(1, 400),
    box=boxes(),
    args=crop_args(),
    seed=st.integers(0, 2**31),
)
def test_crop_always_inside_image(h, w, box, args, seed):
    scale, ratio, alpha, guard = args
    top, left, ch, cw = sample_crop_params(
        h, w, box, scale, ratio, alpha, random.Random(seed), guard
    )
    assert all(isinstance(v, int) for v in (top, left, ch, cw))
    assert ch >= 1 and cw >= 1
    assert top >= 0 and top + ch <= h
    assert left >= 0 and left + cw <= w


@settings(max_examples=100, deadline=None)
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    box=boxes(),
    args=crop_args(),
    seed=st.integers(0, 2**31),
)
def test_batched_crop_always_inside_image(h, w, box, args, seed):
    scale, ratio, alpha, guard = args
    g = torch.Generator().manual_seed(seed)
    out = sample_crop_params_batch(h, w, torch.tensor([box] * 16), scale, ratio, alpha, g, guard)
    top, left, ch, cw = out.unbind(1)
    assert out.dtype == torch.int64 and out.shape == (16, 4)
    assert (ch >= 1).all() and (cw >= 1).all()
    assert (top >= 0).all() and (top + ch <= h).all()
    assert (left >= 0).all() and (left + cw <= w).all()


@pytest.mark.parametrize("alpha", [0.1, 0.6, 1.0, 3.0])
def test_centre_follows_beta_inside_box(alpha):
    """Small crops in a central box are never shifted: their centres are lo + (hi-lo)*Beta."""
    H = W = 2000
    box = (0.3, 0.4, 0.7, 0.6)
    rng = random.Random(0)
    us, vs = [], []
    for _ in range(4000):
        top, left, h, w = sample_crop_params(H, W, box, (0.001, 0.004), (3 / 4, 4 / 3), alpha, rng)
        us.append(((left + w / 2) / W - box[0]) / (box[2] - box[0]))
        vs.append(((top + h / 2) / H - box[1]) / (box[3] - box[1]))
    edges = np.linspace(0, 1, 11)
    for sample in (us, vs):
        # pixel rounding moves u by at most 1/(0.2*2000) = 0.0025, far below the bin width
        counts, _ = np.histogram(np.clip(sample, 0, 1), edges)
        for a, must_fit in ((alpha, True), (alpha * 3 + 1, False)):
            expected = np.diff(stats.beta(a, a).cdf(edges)) * len(sample)
            p = stats.chisquare(counts, expected).pvalue
            assert (p > 1e-3) if must_fit else (p < 1e-3)


def test_centre_suppression_pushes_views_apart():
    """alpha < 1 puts centres near the box edges more often than uniform."""
    rng = random.Random(1)

    def edge_share(alpha):
        n = 0
        for _ in range(3000):
            _, left, _, w = sample_crop_params(
                1000, 1000, (0.2, 0.2, 0.8, 0.8), (0.001, 0.002), (1, 1), alpha, rng
            )
            u = ((left + w / 2) / 1000 - 0.2) / 0.6
            n += min(u, 1 - u) < 0.1
        return n / 3000

    assert edge_share(0.1) > 0.6 > 0.3 > edge_share(1.0) > 0.1


def test_scale_and_ratio_law():
    rng = random.Random(2)
    areas, ratios = [], []
    for _ in range(3000):
        _, _, h, w = sample_crop_params(1000, 1000, (0, 0, 1, 1), (0.2, 0.6), (0.5, 2.0), 0.6, rng)
        areas.append(h * w / 1e6)
        ratios.append(np.log(w / h))
    assert stats.kstest(areas, stats.uniform(0.2, 0.4).cdf).pvalue > 1e-3
    lo, hi = np.log(0.5), np.log(2.0)
    assert stats.kstest(ratios, stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


def test_fallback_centre_crop_when_nothing_fits():
    # ratio far from the image's: no try can fit a 1x100 image at area >= 0.9 with ratio ~1
    top, left, h, w = sample_crop_params(
        1, 100, (0, 0, 1, 1), (0.9, 1.0), (1.0, 1.0), 0.6, random.Random(0)
    )
    assert (h, w) == (1, 1) and left == 49 and top == 0


def test_guard_makes_full_box_uniform_like_rrc():
    """With a full box and alpha = 0.1, unguarded crops hug the borders; guarded ones do not."""
    rng = random.Random(3)

    def left_positions(guard):
        out = []
        for _ in range(3000):
            _, left, _, w = sample_crop_params(
                1000, 1000, (0, 0, 1, 1), (0.04, 0.04), (1, 1), 0.1, rng, guard
            )
            out.append(left / (1000 - w))
        return np.array(out)

    assert np.mean((left_positions(None) < 0.02) | (left_positions(None) > 0.98)) > 0.6
    guarded = left_positions(0.95)
    assert stats.kstest(guarded, stats.uniform(0, 1).cdf).pvalue > 1e-3


def test_generator_reproducible():
    crop = ContrastiveCrop(32, alpha=0.1)
    a = [
        crop.get_params(50, 60, (0.1, 0.1, 0.5, 0.9), torch.Generator().manual_seed(5))
        for _ in range(3)
    ]
    b = crop.get_params(50, 60, (0.1, 0.1, 0.5, 0.9), torch.Generator().manual_seed(6))
    assert a[0] == a[1] == a[2]
    assert (
        any(
            crop.get_params(50, 60, (0.1, 0.1, 0.5, 0.9), torch.Generator().manual_seed(s)) != a[0]
            for s in range(7, 12)
        )
        or b != a[0]
    )


@pytest.mark.parametrize("kind", ["pil", "uint8", "float"])
def test_crop_accepts_pil_and_tensors(kind):
    arr = np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    img = {
        "pil": Image.fromarray(arr),
        "uint8": torch.from_numpy(arr).permute(2, 0, 1),
        "float": torch.from_numpy(arr).permute(2, 0, 1).float() / 255,
    }[kind]
    out = ContrastiveCrop(16)(img, (0.2, 0.2, 0.8, 0.8))
    if kind == "pil":
        assert out.size == (16, 16)
    else:
        assert out.shape == (3, 16, 16) and out.dtype == img.dtype


def test_simccrop_ignores_box_and_uses_centre():
    crop = SimCCrop(8, scale=(0.0001, 0.0002), alpha=1.0)
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = crop.get_params(1000, 1000, (0, 0, 0.01, 0.01), rng)
        assert 250 - 10 <= left + w / 2 <= 750 + 10 and 250 - 10 <= top + h / 2 <= 750 + 10


def test_rrc_matches_torchvision_law():
    from torchvision.transforms import RandomResizedCrop as TVRRC

    torch.manual_seed(0)
    ours = RandomResizedCrop(32, scale=(0.2, 1.0))
    rng = random.Random(0)
    a = [ours.get_params(64, 48, None, rng) for _ in range(3000)]
    b = [TVRRC.get_params(torch.zeros(3, 64, 48), [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(3000)]
    for k in range(4):
        assert stats.ks_2samp([x[k] for x in a], [x[k] for x in b]).pvalue > 1e-3


@pytest.mark.parametrize(
    "bad", [(0.5, 0, 0.4, 1), (0, 0, 1, 1.2), (float("nan"), 0, 1, 1), (-0.1, 0, 1, 1), (0, 0, 1)]
)
def test_bad_boxes_rejected(bad):
    with pytest.raises(ValueError, match="box"):
        ContrastiveCrop(8).get_params(10, 10, bad)
    with pytest.raises(ValueError, match="box"):
        check_box(bad)


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": -1}, "alpha"),
        ({"scale": (0, 1)}, "scale"),
        ({"scale": (0.5, 1.5)}, "scale"),
        ({"ratio": (2, 1)}, "ratio"),
        ({"size": 0}, "size"),
        ({"full_box_guard": 1.5}, "full_box_guard"),
    ],
)
def test_bad_arguments_rejected_at_construction(kwargs, word):
    args = {"size": 8, **kwargs}
    with pytest.raises(ValueError, match=word):
        ContrastiveCrop(**args)


def test_tiny_image_rejected_with_clear_error():
    with pytest.raises(ValueError, match="1 pixel"):
        ContrastiveCrop(8)(torch.zeros(3, 0, 5))
