"""Tests of the ContrastiveCrop sampling law (per sample and batched)."""

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats

from ccrop import BoxRandomResizedCrop, ContrastiveCrop, SimCCrop
from ccrop.crop import (
    BoxCrop,
    CropPlan,
    _fallback,
    _fallback_batch,
    sample_crop_params,
    sample_crop_params_batch,
)


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
    ours = BoxRandomResizedCrop(32, scale=(0.2, 1.0))
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
        ContrastiveCrop(8)(torch.zeros(3, 0, 5), (0, 0, 1, 1))


# ----------------------------------------------------------- per-sample image sizes (batched)


@st.composite
def box_rows(draw, n):
    """(n, 4) float32 tensor of valid normalised boxes."""
    rows = []
    for _ in range(n):
        x = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
        y = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
        rows.append((x[0], y[0], x[1], y[1]))
    return torch.tensor(rows)


@st.composite
def law(draw):
    lo = draw(st.floats(0.01, 1.0))
    rlo = draw(st.floats(0.2, 3.0))
    guard = draw(st.one_of(st.none(), st.floats(0.1, 1.0)))
    return (lo, draw(st.floats(lo, 1.0))), (rlo, draw(st.floats(rlo, 5.0))), \
        draw(st.floats(0.05, 5.0)), guard


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 300)), min_size=1,
                      max_size=12),
       data=st.data(), args=law(), seed=st.integers(0, 2**31))
def test_each_crop_inside_its_own_image(sizes, data, args, seed):
    scale, ratio, alpha, guard = args
    hw = torch.tensor(sizes)  # (B, 2)
    boxes = data.draw(box_rows(len(sizes)))
    g = torch.Generator().manual_seed(seed)
    out = sample_crop_params_batch(hw[:, 0], hw[:, 1], boxes, scale, ratio, alpha, g, guard)
    top, left, ch, cw = out.unbind(1)
    assert out.dtype == torch.int64 and out.shape == (len(sizes), 4)
    assert (ch >= 1).all() and (cw >= 1).all()
    assert (top >= 0).all() and (top + ch <= hw[:, 0]).all()
    assert (left >= 0).all() and (left + cw <= hw[:, 1]).all()


@pytest.mark.parametrize("h,w,scale,ratio,guard", [
    (32, 40, (0.2, 1.0), (3 / 4, 4 / 3), None),
    (200, 300, (0.08, 1.0), (3 / 4, 4 / 3), 0.95),
    (7, 3, (0.5, 1.0), (0.5, 2.0), 1e-12),
    (1, 100, (0.9, 1.0), (1.0, 1.0), None),  # nothing fits: the centre-crop fallback
])
def test_equal_tensor_sizes_give_the_int_result(h, w, scale, ratio, guard):
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]]).repeat(32, 1)  # (64, 4)
    n = boxes.shape[0]

    def run(height, width):
        g = torch.Generator().manual_seed(7)
        return sample_crop_params_batch(height, width, boxes, scale, ratio, 0.4, g, guard)

    ref = run(h, w)
    assert torch.equal(run(torch.full((n,), h), torch.full((n,), w)), ref)
    assert torch.equal(run(torch.full((n,), h, dtype=torch.int32), w), ref)  # mixed, int32


def test_mixed_sizes_give_each_row_its_own_images_law():
    """Row i of a mixed-size batch is the crop a same-size batch of row i's size gives it: the
    random draws sit at the same place, only the size changes."""
    rng = np.random.default_rng(0)
    sizes = torch.from_numpy(rng.integers(1, 120, (40, 2)))  # (B, 2) including tiny images
    boxes = torch.tensor([[0.2, 0.1, 0.7, 0.5]]).repeat(40, 1)
    args = ((0.3, 1.0), (0.5, 2.0), 0.3)  # wide scale range: many rows need the fallback
    out = sample_crop_params_batch(sizes[:, 0], sizes[:, 1], boxes, *args,
                                   torch.Generator().manual_seed(3), 0.5)
    for i, (h, w) in enumerate(sizes.tolist()):
        one = sample_crop_params_batch(h, w, boxes, *args, torch.Generator().manual_seed(3), 0.5)
        assert torch.equal(out[i], one[i]), (i, h, w)


def test_fallback_twin_equals_python_fallback():
    hw = [(h, w) for h in (1, 2, 3, 7, 10, 99, 100, 256) for w in (1, 2, 5, 9, 100, 255, 341)]
    t = torch.tensor(hw, dtype=torch.float64)  # (K, 2)
    for ratio in ((3 / 4, 4 / 3), (1.0, 1.0), (0.2, 0.3), (2.5, 5.0)):
        got = torch.stack(_fallback_batch(t[:, 0], t[:, 1], ratio), 1).to(torch.int64)
        ref = torch.tensor([_fallback(h, w, ratio) for h, w in hw])
        assert torch.equal(got, ref), ratio


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    return stats.ks_2samp(a, b).pvalue


def test_non_square_law_matches_the_pil_sampler_and_squashing_does_not():
    """A 200x300 image among 300x200 ones follows the per-sample (PIL-path) law in aspect ratio
    and area share; the old path (crop a square, stretch back) gets the aspect ratio wrong."""
    h, w, n = 200, 300, 4000
    scale, ratio, alpha = (0.2, 1.0), (3 / 4, 4 / 3), 0.6
    heights = torch.tensor([h, w]).repeat(n)  # (2n,) alternate landscape / portrait
    widths = torch.tensor([w, h]).repeat(n)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(2 * n, 1)
    g = torch.Generator().manual_seed(11)
    out = sample_crop_params_batch(heights, widths, boxes, scale, ratio, alpha, g)
    out = out[0::2].double()  # (n, 4) the landscape rows
    batch_aspect = (out[:, 3] / out[:, 2]).numpy()
    batch_area = (out[:, 2] * out[:, 3] / (h * w)).numpy()
    rng = random.Random(5)
    pil = np.array([sample_crop_params(h, w, (0, 0, 1, 1), scale, ratio, alpha, rng)
                    for _ in range(n)], dtype=np.float64)
    pil_aspect, pil_area = pil[:, 3] / pil[:, 2], pil[:, 2] * pil[:, 3] / (h * w)
    assert _ks(batch_aspect, pil_aspect) > 1e-3
    assert _ks(batch_area, pil_area) > 1e-3

    side = 256  # old path: crops of a squashed 256 x 256 square, mapped back to 200 x 300
    sq = sample_crop_params_batch(side, side, boxes[:n], scale, ratio, alpha,
                                  torch.Generator().manual_seed(11)).double()
    sq_aspect = ((sq[:, 3] * w / side) / (sq[:, 2] * h / side)).numpy()
    assert _ks(sq_aspect, pil_aspect) < 1e-6  # the test can tell the two laws apart
    assert np.median(sq_aspect) > 1.3 > np.median(pil_aspect)  # squashing stretches crops


@pytest.mark.parametrize("cls", [ContrastiveCrop, SimCCrop, BoxRandomResizedCrop])
@pytest.mark.parametrize("size", [1.5, 32.0, (32, 1.5), (0, 8), -4, True, "32", [8], (8, 8, 8),
                                  None])
def test_size_must_be_a_positive_int_or_pair_of_ints(cls, size):
    """size=1.5 raised TypeError: 'float' object is not iterable; (32, 1.5) was truncated."""
    with pytest.raises(ValueError, match="size must be a positive int or a pair"):
        cls(size=size)
    assert cls(size=np.int64(8)).size == (8, 8) and cls(size=[6, 9]).size == (6, 9)
    with pytest.raises(ValueError, match="size"):
        BoxCrop(CropPlan(), 1.5)

