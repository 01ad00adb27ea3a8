"""Tests of the heatmap -> box step and of update_boxes."""

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from ccrop import BoxStore, boxes_from_features, heatmaps_from_features, update_boxes
from ccrop.localize import boxes_from_heatmaps, localize


def blob(h, w, y0, y1, x0, x1, c=3, b=1):
    fmap = torch.zeros(b, c, h, w)
    fmap[:, :, y0:y1, x0:x1] = 1.0
    return fmap


def test_feature_blob_gives_expected_box():
    # 4x4 map, hot cell at row 1, col 2; upsampled to 32x32 (8 px per cell)
    fmap = blob(4, 4, 1, 2, 2, 3)
    heat, bad = heatmaps_from_features(fmap, (32, 32))
    assert heat.shape == (1, 32, 32) and not bad.any()
    assert heat.min() == 0 and heat.max() <= 1
    box = boxes_from_features(fmap, (32, 32), threshold=0.1)[0]
    # bilinear (align_corners=False) spreads the cell by half a cell each side (4 px), and
    # k = 0.1 keeps most of that spread: the box contains the cell and stays near it
    cell = torch.tensor([16 / 32, 8 / 32, 24 / 32, 16 / 32])
    assert box[0] <= cell[0] and box[1] <= cell[1] and box[2] >= cell[2] and box[3] >= cell[3]
    assert (box - cell).abs().max() <= 8 / 32
    # a high threshold shrinks it to the cell's core
    core = boxes_from_features(fmap, (32, 32), threshold=0.8)[0]  # peak is 0.94^2
    assert core[0] >= cell[0] - 1 / 32 and core[2] <= cell[2] + 1 / 32


def test_box_is_projection_extent_not_component():
    heat = torch.zeros(1, 10, 10)
    heat[0, 1, 1] = 1.0
    heat[0, 8, 6] = 1.0
    boxes, empty = boxes_from_heatmaps(heat, 0.5)
    assert torch.allclose(boxes[0], torch.tensor([0.1, 0.1, 0.7, 0.9])) and not empty.any()


def test_single_pixel_and_single_row_boxes_have_extent():
    heat = torch.zeros(2, 8, 8)
    heat[0, 3, 5] = 1.0
    heat[1, 2, :] = 1.0
    boxes, _ = boxes_from_heatmaps(heat, 0.5)
    assert torch.allclose(boxes[0], torch.tensor([5 / 8, 3 / 8, 6 / 8, 4 / 8]))
    assert torch.allclose(boxes[1], torch.tensor([0.0, 2 / 8, 1.0, 3 / 8]))  # height 1 px, not 0


@pytest.mark.parametrize("case", ["zeros", "constant", "nan", "inf", "neg_inf"])
def test_degenerate_maps_give_full_box_and_are_counted(case):
    fmap = torch.rand(3, 4, 4, 4)
    value = {
        "zeros": 0.0,
        "constant": 7.0,
        "nan": float("nan"),
        "inf": float("inf"),
        "neg_inf": float("-inf"),
    }[case]
    if case in ("zeros", "constant"):
        fmap[1] = value
    else:
        fmap[1, 2, 1, 1] = value
    boxes, degenerate = localize(fmap, (16, 16))
    assert torch.isfinite(boxes).all()
    assert degenerate.tolist() == [False, True, False]
    assert torch.equal(boxes[1], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    heat, _ = heatmaps_from_features(fmap, (16, 16))
    assert torch.isfinite(heat).all()


def test_all_pixels_above_threshold_gives_full_box():
    fmap = torch.rand(2, 1, 4, 4) + 10  # normalised min 0 at one pixel: quantile 0 keeps ~all
    boxes = boxes_from_features(fmap, (8, 8), threshold=0.0, mode="quantile")
    assert (boxes[:, 2] - boxes[:, 0] >= 0.75).all()


def test_quantile_mode_adapts_to_flat_maps():
    # a flat-ish map: everything > 0.1 after normalisation except one pixel -> full box in fixed
    fmap = torch.full((1, 1, 8, 8), 5.0)
    fmap[0, 0, 0, 0] = 0.0
    fmap[0, 0, 3:5, 3:5] = 6.0
    fixed = boxes_from_features(fmap, (8, 8), 0.1)[0]
    quant = boxes_from_features(fmap, (8, 8), 0.9, mode="quantile")[0]
    assert (fixed[2] - fixed[0]) * (fixed[3] - fixed[1]) > 0.9
    assert (quant[2] - quant[0]) * (quant[3] - quant[1]) < 0.3


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(1, 40),
    st.floats(0, 0.99),
    st.sampled_from(["fixed", "quantile", "otsu"]),
    st.sampled_from(["extent", "peak"]),
    st.integers(0, 10**6),
)
def test_boxes_always_valid(b, h, w, size, k, mode, region, seed):
    g = torch.Generator().manual_seed(seed)
    fmap = torch.randn(b, 3, h, w, generator=g) * 10 ** torch.randint(-8, 8, (1,), generator=g)
    fmap[torch.rand(fmap.shape, generator=g) < 0.05] = float("nan")
    boxes = boxes_from_features(fmap, (size, size + 3), k, mode, region=region)
    assert boxes.shape == (b, 4) and torch.isfinite(boxes).all()
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"mode": "adaptive"}, "mode"),
        ({"region": "largest"}, "region"),
    ],
)
def test_bad_threshold_and_mode(kwargs, word):
    with pytest.raises(ValueError, match=word):
        boxes_from_features(torch.rand(1, 2, 4, 4), (8, 8), **kwargs)


def test_bad_fmap_shape():
    with pytest.raises(ValueError, match="fmap"):
        boxes_from_features(torch.rand(2, 4, 4), (8, 8))


class BlobEncoder(torch.nn.Module):
    """Feature map = average-pooled image, so the box is where the bright square is."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 4) * self.scale  # (B, 3, H/4, W/4)


def test_update_boxes_writes_by_index_and_reports_stats():
    n, size = 10, 16
    images = torch.zeros(n, 3, size, size)
    truth = torch.zeros(n, 4)
    for i in range(n):
        y, x = (i % 3) * 4, (i % 2) * 8
        images[i, :, y : y + 4, x : x + 8] = 1.0
        truth[i] = torch.tensor([x / 16, y / 16, (x + 8) / 16, (y + 4) / 16])
    images[7] = 0.5  # constant: degenerate
    ds = TensorDataset(torch.arange(n), images)
    loader = DataLoader(ds, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(0))
    store = BoxStore(n)
    enc = BlobEncoder().train()
    start = time.perf_counter()
    stats = update_boxes(enc, loader, store, threshold=0.5, gt_boxes=truth)
    elapsed = time.perf_counter() - start
    assert enc.training  # mode restored
    assert stats["images"] == n and stats["degenerate"] == 1
    assert stats["full_share"] == pytest.approx(0.1)
    ok = [i for i in range(n) if i != 7]
    assert torch.allclose(store[ok], truth[ok], atol=1e-6)
    assert torch.equal(store[7], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    # 9 exact boxes (IoU 1) and image 7's full box around its (8x4 of 16x16) true box
    assert stats["iou_gt"] == pytest.approx((len(ok) + 0.125) / n, abs=1e-6)
    assert 0 < stats["seconds"] <= elapsed  # the pass itself, timed inside the call
    assert stats["mean_area"] == pytest.approx(
        float(((truth[ok, 2] - truth[ok, 0]) * (truth[ok, 3] - truth[ok, 1])).sum() + 1) / n
    )


def test_update_boxes_accepts_bound_method_and_empty_loader_error():
    enc = BlobEncoder()
    store = BoxStore(2)
    loader = [(torch.tensor([0, 1]), torch.rand(2, 3, 8, 8))]
    update_boxes(enc.forward, loader, store)
    assert store.version == 1
    with pytest.raises(ValueError, match="no images"):
        update_boxes(enc, [], store)


def _strided_sampler():
    """Three 3x3 stride-2 padded convs with a centre tap: output cell j reads input pixel 8j,
    the geometry of a ResNet's stride-2 stages."""
    convs = []
    for _ in range(3):
        conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
        convs.append(conv)
    return torch.nn.Sequential(*convs)


@pytest.mark.parametrize("align,expected_shift", [("receptive", 0.0), ("paper", 3.5)])
def test_heatmap_alignment_matches_strided_receptive_field(align, expected_shift):
    net = _strided_sampler()
    img = torch.zeros(1, 1, 32, 32)
    img[0, 0, 16, 8] = 1.0  # cell (2, 1) of the 4x4 map
    with torch.no_grad():
        fmap = net(img)  # (1, 1, 4, 4)
    assert fmap[0, 0, 2, 1] == 1.0 and fmap.sum() == 1.0
    heat, _ = heatmaps_from_features(fmap, (32, 32), align=align)
    # centre of mass of the hot region (where heat > 0.5) along each axis
    ys, xs = torch.nonzero(heat[0] > 0.5, as_tuple=True)
    assert float(ys.float().mean()) == pytest.approx(16 + expected_shift, abs=0.51)
    assert float(xs.float().mean()) == pytest.approx(8 + expected_shift, abs=0.51)


def test_receptive_alignment_clamps_at_edges_and_stays_in_range():
    fmap = torch.rand(3, 5, 7, 7)
    heat, _ = heatmaps_from_features(fmap, (224, 224), align="receptive")
    assert heat.shape == (3, 224, 224) and heat.min() >= 0 and heat.max() <= 1
    boxes = boxes_from_features(fmap, (224, 224), 0.1, align="receptive")
    assert (boxes >= 0).all() and (boxes <= 1).all()
    with pytest.raises(ValueError, match="align"):
        boxes_from_features(fmap, (224, 224), align="middle")


# ----------------------------------------------------------------------------- ccrop's rules


def test_otsu_level_splits_a_two_level_map_between_its_levels():
    # 30% of pixels at 0.8 (+ small noise), the rest at 0.2: Otsu's level lies between the modes
    g = torch.Generator().manual_seed(0)
    heat = torch.full((3, 20, 20), 0.2) + 0.02 * torch.rand(3, 20, 20, generator=g)
    heat[:, :6, :] += 0.6
    from ccrop.localize import otsu_levels

    level = otsu_levels(heat)
    assert ((level >= 0.2) & (level < 0.8)).all()  # the top of the lower class
    assert ((heat > level[:, None, None]).float().mean(dim=(1, 2)) == 0.3).all()


def test_otsu_matches_brute_force_between_class_variance():
    from ccrop.localize import otsu_levels

    heat = torch.rand(5, 7, 9, generator=torch.Generator().manual_seed(1))
    level = otsu_levels(heat)
    def score(v, t):
        hi = v > t
        if hi.all() or not hi.any():
            return -1.0
        w1 = hi.float().mean()
        return float(w1 * (1 - w1) * (v[hi].mean() - v[~hi].mean()) ** 2)

    for b in range(5):
        v = heat[b].flatten()
        best = max(score(v, t) for t in v.unique())
        assert score(v, level[b]) == pytest.approx(best, rel=1e-5)


def test_peak_region_keeps_the_blob_holding_the_maximum():
    # two hot cells far apart on an 8x8 map; the left one is hotter
    fmap = torch.zeros(1, 2, 8, 8)
    fmap[:, :, 3:5, 0:2] = 1.0
    fmap[:, :, 3:5, 6:8] = 0.7
    extent = boxes_from_features(fmap, (32, 32), 0.3, region="extent")[0]
    peak = boxes_from_features(fmap, (32, 32), 0.3, region="peak")[0]
    assert extent[0] == 0 and extent[2] == 1  # both blobs: the whole width
    assert peak[0] == 0 and peak[2] < 0.4  # the left blob alone
    assert peak[1] == extent[1] and peak[3] == extent[3]


def test_peak_component_on_a_coarse_grid_for_large_images():
    from ccrop.localize import PEAK_GRID, peak_component

    size = 4 * PEAK_GRID  # pooled by 4
    heat = torch.zeros(1, size, size)
    heat[0, 10:30, 10:30] = 1.0
    heat[0, 80:100, 80:100] = 0.9
    mask = heat > 0.5
    comp = peak_component(mask, heat)
    assert comp[0, 10:30, 10:30].all() and not comp[0, 80:, 80:].any()
    assert comp.sum() == 400


def test_several_stage_maps_average_their_heatmaps():
    a = blob(4, 4, 0, 1, 0, 1, c=2)  # hot top-left cell
    b = blob(8, 8, 6, 8, 6, 8, c=5)  # hot bottom-right at twice the resolution
    heat_a, _ = heatmaps_from_features(a, (32, 32))
    heat_b, _ = heatmaps_from_features(b, (32, 32))
    both, bad = heatmaps_from_features([a, b], (32, 32))
    mixed = heat_a + heat_b
    mixed = (mixed - mixed.min()) / (mixed.max() - mixed.min())
    assert torch.allclose(both, mixed, atol=1e-6) and not bad.any()
    with pytest.raises(ValueError, match="agree in B"):
        heatmaps_from_features([a, torch.zeros(2, 1, 4, 4)], (32, 32))


def test_feature_fn_selects_resnet_stages():
    from ccrop.localize import feature_fn
    from ccrop.models import build_backbone

    net = build_backbone(width=4).eval()
    x = torch.randn(2, 3, 32, 32)
    assert feature_fn(net, None) == net.forward_features
    assert feature_fn(net, [4]) == net.forward_features
    maps = feature_fn(net, (3, 4))(x)
    assert [tuple(m.shape) for m in maps] == [(2, 16, 8, 8), (2, 32, 4, 4)]
    assert torch.equal(maps[1], net.forward_features(x))
    assert feature_fn(net, (3,)).__self__ is net  # update_boxes finds the module
    with pytest.raises(ValueError, match="stage_maps"):
        feature_fn(torch.nn.Conv2d(3, 3, 1), (3,))
