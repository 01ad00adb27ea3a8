"""Tests of the torchvision v2 ContrastiveCrop / SimCCrop and BoxedSamples."""

import random

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ccrop import crop as C
from ccrop.boxes import BoxStore
from ccrop.transforms import BOX_KEY, BoxedSamples, ContrastiveCrop, SimCCrop

H, W = 30, 40
PIX = [4.0, 3.0, 20.0, 27.0]  # the object box in pixels (x0, y0, x1, y1)
NORM = (4 / W, 3 / H, 20 / W, 27 / H)  # the same box, normalised by hand

LAWS = [
    dict(alpha=0.6, full_box_guard=0.95, placement="paper"),
    dict(alpha=0.1, full_box_guard=None, placement="official"),
    dict(alpha=1.0, full_box_guard=0.5, placement="paper"),  # the box is guarded: uniform
]


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, H, W), dtype=torch.uint8, generator=g)  # (3, H, W)


def _bbox(rows=(PIX,), fmt="XYXY"):
    return tv_tensors.BoundingBoxes(torch.tensor(rows), format=fmt, canvas_size=(H, W))


def _params(crop, flat_inputs, seed):
    torch.manual_seed(seed)
    p = crop.make_params(flat_inputs)
    return p["top"], p["left"], p["height"], p["width"]


# ----------------------------------------------------------------------------- the law


@pytest.mark.parametrize("law", LAWS)
def test_params_equal_crop_get_params(law):
    """Same box, same seed: the v2 transform draws exactly what ccrop.ContrastiveCrop draws."""
    v2crop, ref = ContrastiveCrop(16, **law), C.ContrastiveCrop(16, **law)
    for seed in range(60):
        got = _params(v2crop, [_image(), _bbox()], seed)
        want = ref.get_params(H, W, NORM, torch.Generator().manual_seed(seed))
        assert got == want


@pytest.mark.parametrize("law", LAWS)
def test_normalised_box_key_gives_the_same_crop(law):
    """The dict form ``{"ccrop_box": ...}`` crops exactly as get_params says; box unchanged."""
    v2crop, ref = ContrastiveCrop(16, **law), C.ContrastiveCrop(16, **law)
    img = _image()
    for seed in range(20):
        torch.manual_seed(seed)
        out = v2crop({"image": img, BOX_KEY: NORM})
        top, left, h, w = ref.get_params(H, W, NORM, torch.Generator().manual_seed(seed))
        assert torch.equal(out["image"], F.resized_crop(img, top, left, h, w, [16, 16]))
        assert out[BOX_KEY] == NORM


def test_draw_stream_equals_crop_plan():
    """Many draws in a row from torch's global RNG: exactly ``CropPlan.sample``'s draws."""
    crop = ContrastiveCrop(16, alpha=0.3, full_box_guard=None)
    plan = C.CropPlan("ccrop", (0.2, 1.0), (3 / 4, 4 / 3), 0.3, None, "paper")
    torch.manual_seed(7)
    got = [crop.make_params([_image(), _bbox()]) for _ in range(500)]
    g = torch.Generator().manual_seed(7)
    want = [plan.sample(H, W, NORM, C.as_rng(g)) for _ in range(500)]
    assert [(p["top"], p["left"], p["height"], p["width"]) for p in got] == want


def test_distribution_matches_crop_plan_ks():
    """KS test of crop positions against ``CropPlan.sample`` from an unrelated random.Random;
    the same test rejects a different alpha (so it can fail)."""
    stats = pytest.importorskip("scipy.stats")
    n, flat = 3000, [_image(), _bbox()]
    torch.manual_seed(0)
    crop = ContrastiveCrop(16, alpha=0.1, full_box_guard=None)
    ours = torch.tensor([[crop.make_params(flat)[k] for k in ("top", "left", "height")]
                         for _ in range(n)], dtype=torch.float64)  # (n, 3)
    rng = random.Random(1)
    for alpha, same in ((0.1, True), (1.0, False)):
        plan = C.CropPlan("ccrop", (0.2, 1.0), (3 / 4, 4 / 3), alpha, None)
        ref = torch.tensor([plan.sample(H, W, NORM, rng)[:3] for _ in range(n)],
                           dtype=torch.float64)  # (n, 3)
        # centres (top + h/2, left + w/2 ~ left + h/2) and the height
        p = [stats.ks_2samp(ours[:, k].numpy(), ref[:, k].numpy()).pvalue for k in range(3)]
        if same:
            assert min(p) > 1e-3, p
        else:
            assert min(p[:2]) < 1e-6, p


def test_global_seed_reproduces():
    crop, img = ContrastiveCrop(16), _image()
    torch.manual_seed(3)
    a = crop(img, _bbox())
    torch.manual_seed(3)
    b = crop(img, _bbox())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    draws = {_params(crop, [img, _bbox()], s) for s in range(20)}
    assert len(draws) > 10  # different seeds, different crops


def test_union_and_formats_give_the_object_box():
    """Several boxes: their union; XYWH / CXCYWH boxes: the same object box as XYXY."""
    crop = ContrastiveCrop(16, alpha=0.1, full_box_guard=None)
    parts = _bbox([[4.0, 10.0, 12.0, 27.0], [8.0, 3.0, 20.0, 15.0]])  # union = PIX
    xywh = _bbox([[4.0, 3.0, 16.0, 24.0]], "XYWH")
    cxcywh = _bbox([[12.0, 15.0, 16.0, 24.0]], "CXCYWH")
    for seed in range(20):
        want = _params(crop, [_image(), _bbox()], seed)
        for boxes in (parts, xywh, cxcywh):
            assert _params(crop, [_image(), boxes], seed) == want
    assert crop.make_params([_image(), parts])["box"] == pytest.approx(NORM)


# ----------------------------------------------------------------------------- outputs


def test_output_boxes_are_input_boxes_through_the_crop():
    """Hand computation: shift by (left, top), scale by size / (w, h), clamp to the output."""
    s = 24
    crop = ContrastiveCrop(s, alpha=0.1, full_box_guard=None)
    rows = [PIX, [0.0, 0.0, 10.0, 8.0], [25.0, 14.0, 39.0, 29.0]]
    img, boxes = _image(), _bbox(rows)
    for seed in range(30):
        torch.manual_seed(seed)
        out_img, out_boxes = crop(img, boxes)
        top, left, h, w = _params(crop, [img, boxes], seed)
        x = ((torch.tensor(rows)[:, 0::2] - left) * s / w).clamp(0, s)  # (K, 2)
        y = ((torch.tensor(rows)[:, 1::2] - top) * s / h).clamp(0, s)
        want = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)  # (K, 4)
        assert isinstance(out_boxes, tv_tensors.BoundingBoxes)
        assert out_boxes.canvas_size == (s, s) and out_boxes.format.value == "XYXY"
        torch.testing.assert_close(out_boxes.as_subclass(torch.Tensor), want, atol=1e-4, rtol=0)
        assert torch.equal(out_img, F.resized_crop(img, top, left, h, w, [s, s]))


def _as_kind(img, kind):
    if kind == "pil":
        return Image.fromarray(img.permute(1, 2, 0).numpy())
    return tv_tensors.Image(img) if kind == "image" else img


@pytest.mark.parametrize("kind", ["pil", "tensor", "image"])
def test_composes_with_v2(kind):
    """ContrastiveCrop + flip + ColorJitter + ToImage + ToDtype on images, masks and boxes."""
    img = _image()
    mask = tv_tensors.Mask((torch.arange(H)[:, None] + torch.arange(W)) % 5)  # (H, W) 0..4
    pipe = v2.Compose([ContrastiveCrop(32), v2.RandomHorizontalFlip(),
                       v2.ColorJitter(0.4, 0.4, 0.4, 0.1), v2.ToImage(),
                       v2.ToDtype(torch.float32, scale=True)])
    out_img, out_mask, out_boxes = pipe(_as_kind(img, kind), mask, _bbox())
    assert out_img.shape == (3, 32, 32) and out_img.dtype == torch.float32
    assert float(out_img.min()) >= 0.0 and float(out_img.max()) <= 1.0
    assert isinstance(out_mask, tv_tensors.Mask) and out_mask.shape == (32, 32)
    assert out_mask.dtype == mask.dtype and set(out_mask.unique().tolist()) <= set(range(5))
    assert out_boxes.canvas_size == (32, 32)
    # the mask follows the image's crop and flip (nearest resize)
    flip = v2.Compose([ContrastiveCrop(32), v2.RandomHorizontalFlip(p=1.0)])
    torch.manual_seed(5)
    _, flipped, _ = flip(_as_kind(img, kind), mask, _bbox())
    top, left, h, w = _params(ContrastiveCrop(32), [img, mask, _bbox()], 5)
    want = F.horizontal_flip(F.resized_crop(mask, top, left, h, w, [32, 32]))
    assert torch.equal(flipped, want)


def test_pure_tensor_box_in_dict_is_not_an_image():
    """A (4,) tensor under "ccrop_box" placed before a plain-tensor image is still the box."""
    img = _image()
    torch.manual_seed(0)
    out = ContrastiveCrop(16)({BOX_KEY: torch.tensor(NORM), "image": img})
    assert out["image"].shape == (3, 16, 16)
    assert torch.equal(out[BOX_KEY], torch.tensor(NORM))


# ----------------------------------------------------------------------------- errors


def test_missing_box_is_a_clear_error():
    crop = ContrastiveCrop(16)
    for sample in [(_image(),), (_image(), 3), ({"image": _image(), "box": NORM},)]:
        with pytest.raises(ValueError, match="ccrop_box.*SimCCrop needs no box"):
            crop(*sample)
    with pytest.raises(ValueError, match="hold no box"):
        crop(_image(), tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY",
                                                canvas_size=(H, W)))


@pytest.mark.parametrize("box", [(0.1, float("nan"), 0.5, 0.5), (0.1, 0.2, 1.5, 0.5),
                                 (0.6, 0.2, 0.5, 0.5), (0.1, 0.2, 0.5)])
def test_bad_normalised_box_names_it(box):
    with pytest.raises(ValueError, match=BOX_KEY):
        ContrastiveCrop(16)({"image": _image(), BOX_KEY: box})


def test_simccrop_needs_no_box():
    crop, ref = SimCCrop(16, alpha=0.1), C.SimCCrop(16, alpha=0.1)
    img = _image()
    for seed in range(20):
        torch.manual_seed(seed)
        out = crop(img)
        top, left, h, w = ref.get_params(H, W, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(out, F.resized_crop(img, top, left, h, w, [16, 16]))
    assert crop.make_params([img])["box"] == C.CENTER_BOX


# ----------------------------------------------------------------------------- BoxedSamples


def test_boxed_samples_items():
    images = torch.stack([_image(i) for i in range(4)])  # (4, 3, H, W)
    store = BoxStore(4)
    store.update(torch.tensor([2]), torch.tensor([NORM]))
    seen = []

    def record(sample):
        seen.append(sample[1])
        return sample

    data = BoxedSamples(TensorDataset(images, torch.arange(4) + 10), store, record, num_views=3)
    index, views, label = data[2]
    assert (index, label, len(views)) == (2, 12, 3)
    assert torch.equal(views[0], images[2])
    assert seen[0].canvas_size == (H, W)
    torch.testing.assert_close(seen[0].as_subclass(torch.Tensor), torch.tensor([PIX]))


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
@pytest.mark.slow  # worker processes (fork and spawn)
def test_boxed_samples_persistent_worker_sees_update(ctx):
    """Views follow the store after an update, in the same persistent worker."""
    n, side = 6, 64
    xs = torch.arange(side, dtype=torch.float32) + 0.5
    coords = torch.stack([xs.expand(side, side), xs[:, None].expand(side, side),
                          torch.zeros(side, side)])  # (3, S, S): channel 0 = x, channel 1 = y
    images = coords.expand(n, 3, side, side).clone()
    store = BoxStore(n)
    # tiny crops whose centre sits near the box centre (Beta(50, 50)): the view's mean x, y
    # is the box centre in pixels
    crop = ContrastiveCrop(8, scale=(0.01, 0.01), ratio=(1.0, 1.0), alpha=50.0,
                           full_box_guard=None)
    data = BoxedSamples(TensorDataset(images, torch.zeros(n)), store, crop)
    torch.manual_seed(0)
    loader = DataLoader(data, batch_size=n, num_workers=1, persistent_workers=True,
                        multiprocessing_context=ctx)

    def centres():
        _, views, _ = next(iter(loader))
        return torch.stack([v[:, :2].mean(dim=(2, 3)) for v in views])  # (V, B, 2) x, y

    first = centres()
    assert ((first > 20) & (first < 44)).all()  # full box: near the image centre (32)
    store.update(torch.arange(n), torch.tensor([[0.0, 0.0, 0.2, 0.2]] * n))
    second = centres()  # same worker process
    assert (second < 12).all()  # new box: centre near 6.4 px


@pytest.mark.parametrize("cls", [ContrastiveCrop, SimCCrop])
@pytest.mark.parametrize("size", [1.5, (32, 1.5), 0, "32"])
def test_v2_size_must_be_a_positive_int_or_pair_of_ints(cls, size):
    with pytest.raises(ValueError, match="size must be a positive int or a pair"):
        cls(size=size)
    assert cls(size=8).size == (8, 8)

