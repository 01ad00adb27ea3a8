"""Tests of the heatmap -> box step and of update_boxes."""

import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from ccrop import BoxStore, boxes_from_features, heatmaps_from_features, update_boxes
from ccrop.boxes import box_area, box_iou
from ccrop.localize import (
    FallbackWarning,
    box_confidence,
    boxes_from_heatmaps,
    localize,
    saliency_boxes,
    saliency_heatmaps,
)


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
    boxes, degenerate = localize(fmap, (16, 16))[:2]
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


# feature_fn(model, layers=[...]): heatmap maps of any nn.Module through forward hooks


def _tv_resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def _to_layer3(net, x):
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer3(net.layer2(net.layer1(x)))


def _hook_count(net):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def test_feature_fn_layers_of_a_torchvision_resnet():
    from ccrop.localize import feature_fn

    net = _tv_resnet18()
    x = torch.randn(2, 3, 64, 64)
    fn = feature_fn(net, layers=["layer3"])
    assert fn.__self__ is net
    with torch.no_grad():
        fmap = fn(x)
        assert fmap.shape == (2, 256, 4, 4)
        assert torch.equal(fmap, _to_layer3(net, x))
        maps = feature_fn(net, layers=["layer4", "layer3"])(x)  # the given order
        assert isinstance(maps, list) and [tuple(m.shape) for m in maps] == [
            (2, 512, 2, 2), (2, 256, 4, 4)]
        assert torch.equal(maps[1], fmap)
        assert torch.equal(feature_fn(net, "layer3")(x), fmap)  # names where stages go
        assert torch.equal(feature_fn(net, layers="layer3")(x), fmap)
    assert _hook_count(net) == 0


def test_feature_fn_layers_stop_the_forward_after_the_last_layer():
    from ccrop.localize import feature_fn

    net = _tv_resnet18()
    seen = []
    spy = net.layer4.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    feature_fn(net, layers=["layer3"])(torch.randn(1, 3, 32, 32))
    assert seen == []  # layer4 (and fc) never ran
    feature_fn(net, layers=["layer4"])(torch.randn(1, 3, 32, 32))
    assert len(seen) == 1
    spy.remove()


def test_feature_fn_unknown_layer_lists_candidates_at_construction():
    from ccrop.localize import feature_fn

    net = _tv_resnet18()
    with pytest.raises(ValueError, match="no module 'layer5'") as err:
        feature_fn(net, layers=["layer3", "layer5"])
    msg = str(err.value)
    assert "\n" not in msg and "layer4" in msg and "conv1" in msg and "fc" in msg
    with pytest.raises(ValueError, match="candidates") as err:
        feature_fn(net, layers=["conv"])  # many names hold "conv": the list is cut
    assert "more)" in str(err.value) and len(str(err.value).split(", ")) <= 22
    with pytest.raises(ValueError, match="not both"):
        feature_fn(net, (3,), layers=["layer3"])
    with pytest.raises(ValueError, match="non-empty"):
        feature_fn(net, layers=[])
    with pytest.raises(ValueError, match="layers="):  # no stage_maps: point to layers
        feature_fn(net, (3,))
    with pytest.raises(ValueError, match="layers="):  # no forward_features either
        feature_fn(net)
    assert _hook_count(net) == 0


def test_feature_fn_layers_remove_hooks_on_errors_and_check_outputs():
    from ccrop.localize import feature_fn

    net = _tv_resnet18()
    with pytest.raises(RuntimeError):  # 1-channel input: conv1 fails before layer3
        feature_fn(net, layers=["layer3"])(torch.randn(1, 1, 32, 32))
    assert _hook_count(net) == 0
    with pytest.raises(ValueError, match="'fc'.*\\(1, 1000\\)"):
        feature_fn(net, layers=["layer3", "fc"])(torch.randn(1, 3, 32, 32))
    assert _hook_count(net) == 0
    tokens = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, 4), torch.nn.Flatten(2))
    with pytest.raises(ValueError, match="'1'.*tokens"):
        feature_fn(tokens, layers=["1"])(torch.randn(1, 3, 16, 16))

    class Branches(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.used(x)

    branch = Branches()
    with pytest.raises(ValueError, match="'unused' did not run"):
        feature_fn(branch, layers=["unused"])(torch.randn(1, 3, 8, 8))
    assert _hook_count(branch) == 0


def test_feature_fn_layers_localize_end_to_end_with_update_boxes():
    from ccrop.config import CropConfig
    from ccrop.localize import feature_fn

    net = _tv_resnet18().train()
    images = torch.randn(10, 3, 64, 64)
    loader = DataLoader(TensorDataset(torch.arange(10), images), batch_size=4)
    store = BoxStore(10)
    stats = update_boxes(feature_fn(net, layers=["layer3"]), loader, store,
                         **CropConfig().box_rule())
    assert net.training  # put in eval mode for the update, then restored
    assert store.version == 1 and stats["images"] == 10
    boxes = store.boxes
    assert boxes.shape == (10, 4) and boxes.min() >= 0 and boxes.max() <= 1
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert not torch.equal(boxes, torch.tensor([[0.0, 0, 1, 1]]).expand(10, 4))
    assert _hook_count(net) == 0
    # several layers average their heatmaps, as stages do
    update_boxes(feature_fn(net, layers=["layer3", "layer4"]), loader, store)
    assert store.version == 2


def test_feature_fn_layers_match_stages_on_ccrop_backbones():
    from ccrop.localize import feature_fn
    from ccrop.models import build_backbone

    net = build_backbone(width=4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(feature_fn(net, layers=["layer3"])(x), feature_fn(net, (3,))(x)[0])
        a, b = feature_fn(net, layers=["layer3", "layer4"])(x)
        assert torch.equal(b, net.forward_features(x))
        tv = build_backbone("tv:resnet18").eval()  # ccrop's torchvision wrapper: trunk.*
        assert torch.equal(feature_fn(tv, layers=["trunk.layer3"])(x), feature_fn(tv, (3,))(x)[0])
    with pytest.raises(ValueError, match="trunk.layer3"):
        feature_fn(tv, layers=["layer3"])


def test_feature_fn_layers_of_a_timm_model():
    timm = pytest.importorskip("timm")
    from ccrop.localize import feature_fn
    from ccrop.models import build_backbone

    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = feature_fn(net, layers=["layer3"])(x)
        y = net.maxpool(net.act1(net.bn1(net.conv1(x))))
        assert torch.equal(fmap, net.layer3(net.layer2(net.layer1(y))))
        wrapped = build_backbone("timm:resnet18").eval()  # ccrop's timm wrapper: net.*
        assert torch.equal(feature_fn(wrapped, layers=["net.layer3"])(x),
                           feature_fn(wrapped, (3,))(x)[0])
    assert _hook_count(net) == 0


# ----------------------------------------------------------------------------- reading the encoder


def _object_map(value_obj: float, value_bg: float, noise: float = 0.0) -> torch.Tensor:
    """(2, 8, 8, 8) feature maps: an object at cells [2:5, 3:6] with its own direction."""
    g = torch.Generator().manual_seed(0)
    fmap = torch.zeros(2, 8, 8, 8)
    fmap[:, 0] = value_bg  # background: channel 0
    fmap[:, :, 2:5, 3:6] = 0.0
    fmap[:, 1, 2:5, 3:6] = value_obj  # object: channel 1
    return fmap + noise * torch.randn(fmap.shape, generator=g)


def test_inverted_heatmap_is_flipped_and_counted():
    # channel sum: the background (2.0) is hotter than the object (1.0) -> the box is wrong
    fmap = _object_map(1.0, 2.0)
    plain = localize(fmap, (32, 32), mode="otsu", align="receptive", region="peak")
    auto = localize(fmap, (32, 32), mode="otsu", align="receptive", region="peak",
                    polarity="auto")
    assert not plain.flipped.any() and auto.flipped.all()
    truth = torch.tensor([[3 / 8, 2 / 8, 6 / 8, 5 / 8]]).expand(2, 4)
    assert box_iou(plain.boxes, truth).max() < 0.5
    assert box_iou(auto.boxes, truth).min() > 0.6
    # a map hotter inside than on its border is never flipped
    assert not localize(_object_map(2.0, 1.0), (32, 32), polarity="auto").flipped.any()


def test_contrast_heatmap_finds_the_object_whatever_its_sign():
    truth = torch.tensor([[3 / 8, 2 / 8, 6 / 8, 5 / 8]]).expand(2, 4)
    for obj, bg in ((1.0, 2.0), (2.0, 1.0), (-1.0, 0.5)):
        heat, bad = heatmaps_from_features(_object_map(obj, bg), (8, 8), heatmap="contrast")
        assert not bad.any()
        assert heat[:, 2:5, 3:6].min() > 0.99 and heat[:, 6:, :].max() < 0.01
        boxes = boxes_from_features(_object_map(obj, bg), (32, 32), mode="otsu",
                                    align="receptive", heatmap="contrast")
        assert box_iou(boxes, truth).min() > 0.6


def test_center_prior_prefers_the_central_of_two_equal_blobs():
    heat_map = torch.zeros(1, 1, 16, 16)
    heat_map[0, 0, 6:10, 6:10] = 1.0  # central blob
    heat_map[0, 0, 0:4, 12:16] = 1.0  # corner blob, as hot
    both = localize(heat_map, (16, 16), mode="otsu", region="extent")
    centred = localize(heat_map, (16, 16), mode="otsu", region="extent", center_prior=1.0)
    assert box_area(both.boxes)[0] > 0.35  # spans both blobs
    assert torch.allclose(centred.boxes, torch.tensor([[6 / 16, 6 / 16, 10 / 16, 10 / 16]]))


def test_box_confidence_is_inside_minus_outside_heat():
    heat = torch.zeros(3, 10, 10)
    heat[:, 2:6, 2:6] = 1.0
    boxes = torch.tensor([[0.2, 0.2, 0.6, 0.6], [0.0, 0.0, 1.0, 1.0], [0.6, 0.6, 1.0, 1.0]])
    conf = box_confidence(heat, boxes)
    assert conf[0] == pytest.approx(1.0)  # the blob exactly
    assert conf[1] == 0.0  # full box: nothing outside
    assert conf[2] == pytest.approx(-16 / 84)  # an empty corner: colder than the rest


@pytest.mark.parametrize("kind", ["constant", "noise"])
def test_unreliable_maps_fall_back_to_the_full_box_and_are_counted(kind):
    g = torch.Generator().manual_seed(1)
    fmap = torch.ones(4, 8, 8, 8) if kind == "constant" else torch.rand(4, 8, 8, 8, generator=g)
    found = localize(fmap, (32, 32), mode="otsu", align="receptive", region="peak",
                     min_confidence=0.3)
    assert torch.equal(found.boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(4, 4))
    if kind == "constant":  # degenerate, not a fallback
        assert found.degenerate.all() and not found.fallback.any()
    else:  # a box was found, but no hotter than its surroundings by 0.3 (or already full)
        raw = localize(fmap, (32, 32), mode="otsu", align="receptive", region="peak").boxes
        assert not found.degenerate.any() and found.fallback.any()
        assert torch.equal(found.fallback, box_area(raw) < 0.95)
        assert (found.confidence < 0.3).all()
    # a clear object passes the same bar
    clear = localize(_object_map(2.0, 1.0), (32, 32), mode="otsu", min_confidence=0.3)
    assert not clear.fallback.any()


def test_update_boxes_counts_fallbacks_and_warns_when_most_fall_back():
    class Ramp(torch.nn.Module):
        def forward(self, x):  # (B, 3, H, W) -> a left-to-right ramp (B, 1, 8, 8): no object
            return torch.linspace(0, 1, 8).expand(x.shape[0], 1, 8, 8)

    data = TensorDataset(torch.arange(8), torch.randn(8, 3, 16, 16))
    store = BoxStore(8)
    with pytest.warns(FallbackWarning, match="fell back to the full image"):
        # Otsu boxes the hotter half, only ~0.5 hotter than the rest: below 0.9, all fall back
        stats = update_boxes(Ramp(), DataLoader(data, batch_size=4), store, mode="otsu",
                             min_confidence=0.9)
    assert stats["fallback_share"] == 1.0
    assert torch.equal(store.boxes, torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(8, 4))


def test_saliency_boxes_find_a_coloured_blob_with_no_network():
    images = torch.zeros(2, 3, 32, 32)
    images[:, 0] = 0.2  # reddish background
    images[0, :, 4:12, 20:30] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    images[1, :, 16:28, 2:10] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
    store = BoxStore(2)
    data = TensorDataset(torch.arange(2), images)
    truth = torch.tensor([[20 / 32, 4 / 32, 30 / 32, 12 / 32], [2 / 32, 16 / 32, 10 / 32, 28 / 32]])
    stats = saliency_boxes(DataLoader(data, batch_size=2), store, gt_boxes=truth)
    assert stats["iou_gt"] > 0.7 and stats["fallback_share"] == 0.0
    _, bad = saliency_heatmaps(torch.ones(1, 3, 16, 16))
    assert bad.all()  # a uniform image has no salient region


@pytest.mark.parametrize("kwargs, word", [(dict(heatmap="contrst"), "heatmap"),
                                          (dict(polarity="flip"), "polarity")])
def test_unknown_heatmap_rule_is_an_error_not_a_silent_default(kwargs, word):
    with pytest.raises(ValueError, match=word):
        localize(torch.rand(2, 4, 4, 4), (16, 16), **kwargs)
    with pytest.raises(ValueError, match="reference"):
        saliency_heatmaps(torch.rand(1, 3, 8, 8), reference="median")
