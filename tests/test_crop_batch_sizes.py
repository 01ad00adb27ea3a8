"""Tests of the batched crop sampler with per-sample image sizes (folder images on the GPU path)."""

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ccrop.crop import _fallback, _fallback_batch, sample_crop_params, sample_crop_params_batch


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


@pytest.mark.parametrize("height,width,word", [
    (torch.full((3,), 8), 8, "height"),  # wrong length
    (8, torch.full((4,), 8.0), "width"),  # float sizes
    (torch.ones(4, 1, dtype=torch.long), 8, "height"),  # wrong shape
    (8, torch.ones(4, dtype=torch.bool), "width"),
])
def test_bad_size_tensors_rejected(height, width, word):
    with pytest.raises(ValueError, match=word):
        sample_crop_params_batch(height, width, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(4, 1))
