"""crop.placement: both samplers against references written from each law's formula.

``paper``: centre ``(lo + (hi - lo) u) * extent``, top-left ``floor(centre - size/2 + 0.5)``
shifted into the image. ``official`` (the official code's ``get_params``): the top-left range
``[int(extent*lo) - size//2, int(extent*hi) - size//2]`` clamped to ``[0, extent - size]``,
then ``a + int((b - a) * u)``. Laws are compared over 1e5 draws with a two-sample
Kolmogorov-Smirnov distance that forgives 1 px (rounding), on boxes in the middle and touching
the image edges, where the two laws differ.
"""

import random

import numpy as np
import pytest
import torch

from ccrop.crop import CropPlan, sample_crop_params, sample_crop_params_batch

N = 100_000
H, W = 80, 100
SCALE, RATIO, ALPHA = (0.2, 1.0), (3 / 4, 4 / 3), 0.6
BOXES = {
    "inner": (0.2, 0.3, 0.7, 0.9),
    "full": (0.0, 0.0, 1.0, 1.0),
    "bottom-right corner": (0.6, 0.7, 1.0, 1.0),
    "left edge strip": (0.0, 0.1, 0.15, 0.95),
}


def reference(box, placement, n=N, seed=0):
    """(n, 4) top, left, h, w drawn with numpy from the formulas (10 tries, then centre)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(*SCALE, (n, 10)) * H * W
    r = np.exp(rng.uniform(np.log(RATIO[0]), np.log(RATIO[1]), (n, 10)))
    w, h = np.round(np.sqrt(s * r)), np.round(np.sqrt(s / r))
    fits = (w <= W) & (h <= H)
    first = fits.argmax(1)
    h, w = h[np.arange(n), first], w[np.arange(n), first]  # every draw fits at this size
    u = rng.beta(ALPHA, ALPHA, (n, 2))
    x0, y0, x1, y1 = box
    if placement == "paper":
        top = np.floor((y0 + (y1 - y0) * u[:, 0]) * H - h / 2 + 0.5)
        left = np.floor((x0 + (x1 - x0) * u[:, 1]) * W - w / 2 + 0.5)
        top, left = np.clip(top, 0, H - h), np.clip(left, 0, W - w)
    else:
        def axis(lo, hi, extent, size, v):
            a = np.clip(np.floor(extent * lo) - size // 2, 0, extent - size)
            b = np.clip(np.floor(extent * hi) - size // 2, 0, extent - size)
            return a + np.floor((b - a) * v)
        top, left = axis(y0, y1, H, h, u[:, 0]), axis(x0, x1, W, w, u[:, 1])
    return np.stack([top, left, h, w], 1)


def ks_1px(a, b):
    """Largest CDF gap between integer samples a and b after forgiving a 1 px shift."""
    grid = np.arange(min(a.min(), b.min()) - 1, max(a.max(), b.max()) + 2)
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return max(float(np.max(fa[:-1] - fb[1:])), float(np.max(fb[:-1] - fa[1:])))


def per_sample(box, placement):
    rng = random.Random(1)
    return np.array([sample_crop_params(H, W, box, SCALE, RATIO, ALPHA, rng, None, placement)
                     for _ in range(N)], dtype=float)


def batched(box, placement):
    boxes = torch.tensor([box], dtype=torch.float32).expand(N, 4)
    g = torch.Generator().manual_seed(2)
    out = sample_crop_params_batch(H, W, boxes, SCALE, RATIO, ALPHA, g, None, placement)
    return out.double().numpy()


# 1.36 * sqrt(2 / N) = 0.006 is the 5% critical value of the exact KS distance; 0.01 leaves
# room for the float32 boxes, while the wrong law is off by 0.03 or more on these boxes
LIMIT = 0.01


@pytest.mark.parametrize("sampler", [per_sample, batched], ids=["per-sample", "batched"])
@pytest.mark.parametrize("placement", ["paper", "official"])
@pytest.mark.parametrize("name", list(BOXES))
def test_sampler_follows_its_formula(sampler, placement, name):
    box = BOXES[name]
    got, ref = sampler(box, placement), reference(box, placement)
    for col, what in ((0, "top"), (1, "left"), (2, "h")):
        assert ks_1px(got[:, col], ref[:, col]) < LIMIT, (what, ks_1px(got[:, col], ref[:, col]))
    assert (got[:, 0] >= 0).all() and (got[:, 0] + got[:, 2] <= H).all()
    assert (got[:, 1] >= 0).all() and (got[:, 1] + got[:, 3] <= W).all()


@pytest.mark.parametrize("name", ["inner", "bottom-right corner", "left edge strip"])
def test_the_two_laws_differ_near_edges_and_the_test_sees_it(name):
    """The reference of one law rejects the other: the comparison above can fail."""
    box = BOXES[name]
    paper, official = reference(box, "paper", seed=3), reference(box, "official", seed=4)
    gap = max(ks_1px(paper[:, c], official[:, c]) for c in (0, 1))
    assert gap > 3 * LIMIT, gap


@pytest.mark.parametrize("name", ["inner", "full", "left edge strip"])
def test_official_law_without_the_clamp_is_caught(name):
    """Mutation check: the official formula with the clamp removed (then shifted into the
    image) is another law wherever the box reaches within half a crop of the edge."""
    box = BOXES[name]
    ref = reference(box, "official", seed=5)
    rng = np.random.default_rng(6)
    h = ref[:, 2]
    u = rng.beta(ALPHA, ALPHA, N)
    a, b = np.floor(H * box[1]) - h // 2, np.floor(H * box[3]) - h // 2
    unclamped = np.clip(a + np.floor((b - a) * u), 0, H - h)
    assert ks_1px(unclamped, ref[:, 0]) > 3 * LIMIT


def test_plan_carries_the_placement_to_both_samplers():
    plan = CropPlan(placement="official", full_box_guard=None, alpha=ALPHA)
    box = BOXES["bottom-right corner"]
    rng = random.Random(7)
    got = np.array([plan.sample(H, W, box, rng) for _ in range(20_000)], dtype=float)
    ref = reference(box, "official", n=20_000, seed=8)
    assert ks_1px(got[:, 0], ref[:, 0]) < 0.025
    boxes = torch.tensor([box]).expand(20_000, 4)
    batch = plan.sample_batch(H, W, boxes, torch.Generator().manual_seed(9)).double().numpy()
    assert ks_1px(batch[:, 0], ref[:, 0]) < 0.025
    with pytest.raises(ValueError, match="placement"):
        CropPlan(placement="centre")
