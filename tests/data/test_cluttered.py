"""Tests of cluttered Fashion-MNIST: true boxes, visible items, splits, determinism, cache."""

import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ccrop.data import DATASET_INFO, ClutteredFashionMNIST, build_dataset
from ccrop.data import cluttered as cl
from ccrop.data.fashion_mnist import CLASSES, SYSTEM_DIRS, FashionMNIST
from ccrop.data.synthetic import mask_boxes

SEEDS = range(6)  # the fixture's train split has only 4 images: vary the seed for more


def test_types_shapes_labels_and_items(fashion_root):
    ds = ClutteredFashionMNIST(fashion_root.root, "train", image_size=32, seed=1)
    assert ds.data.shape == (4, 32, 32, 3) and ds.data.dtype == np.uint8
    assert ds.gt_boxes.shape == (4, 4) and ds.gt_boxes.dtype == torch.float32
    assert ds.classes == list(CLASSES)
    assert ds.source_indices.dtype == np.int64
    assert ds.targets == [fashion_root.labels["train"][i] for i in ds.source_indices]
    img, label = ds[3]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
    assert label == ds.targets[3]
    np.testing.assert_array_equal(np.asarray(img), ds.data[3])


def test_splits_are_disjoint_and_sized_by_the_rule(fashion_root):
    root = fashion_root.root
    train, val = (ClutteredFashionMNIST(root, s, image_size=16) for s in ("train", "val"))
    test = ClutteredFashionMNIST(root, "test", image_size=16)
    assert train.source_indices.tolist() == [0, 1, 2, 3]  # 5 items: val is the last max(1, 5//6)
    assert val.source_indices.tolist() == [4]
    assert not set(train.source_indices) & set(val.source_indices)
    assert test.source_indices.tolist() == [0, 1, 2] and test.targets == fashion_root.labels["test"]
    assert val.targets == fashion_root.labels["train"][4:]
    np.testing.assert_array_equal(cl.split_rows("train", 60000), np.arange(50000))
    np.testing.assert_array_equal(cl.split_rows("val", 60000), np.arange(50000, 60000))
    assert len(cl.split_rows("test", 10000)) == 10000


@pytest.mark.parametrize("size", [16, 32, 64])
def test_gt_boxes_are_the_tight_extent_of_the_visible_pixels(fashion_root, size, edges_touch_mask):
    for seed in SEEDS:
        ds = ClutteredFashionMNIST(fashion_root.root, "train", image_size=size, seed=seed)
        masks = ds.item_masks()
        assert masks.dtype == bool and masks.shape == (len(ds), size, size)
        np.testing.assert_array_equal(masks, ds.item_alpha() > cl.VISIBLE_ALPHA)
        np.testing.assert_array_equal(ds.gt_boxes.numpy(), mask_boxes(masks))
        for mask, box in zip(masks, ds.gt_boxes.numpy()):
            assert edges_touch_mask(mask, np.rint(box * size).astype(int))
        np.testing.assert_array_equal(ds.item_masks([2, 0]), masks[[2, 0]])  # by index


def test_blank_item_still_gets_a_one_pixel_box(fashion_root, tmp_path):
    shutil.copytree(fashion_root.root, tmp_path / "f")
    path = tmp_path / "f" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:16] + bytes(28 * 28) + raw[16 + 28 * 28 :]))  # item 0
    ds = ClutteredFashionMNIST(tmp_path / "f", "train", image_size=32)
    assert ds.item_alpha([0]).max() == 0
    mask = ds.item_masks([0])[0]
    assert mask.sum() == 1
    x0, y0, x1, y1 = ds.gt_boxes[0].numpy() * 32
    assert x1 - x0 == pytest.approx(1) and y1 - y0 == pytest.approx(1)
    side, fx, fy = (ds.params[k][0] for k in ("side", "x0", "y0"))
    assert fx <= x0 < fx + side and fy <= y0 < fy + side  # inside the item's frame


def test_item_is_really_there(fashion_root):
    """The image is the composite alpha * colour + (1 - alpha) * background (+ pixel noise),
    and in the visible mask it differs clearly from the background alone."""
    inside = []
    for seed in SEEDS:
        ds = ClutteredFashionMNIST(fashion_root.root, "train", image_size=32, seed=seed)
        alpha, masks = ds.item_alpha()[..., None], ds.item_masks()  # (N, H, W, 1), (N, H, W)
        img, bg = ds.data.astype(float), ds.backgrounds().astype(float)
        composite = alpha * ds.params["color"][:, None, None] * 255 + (1 - alpha) * bg
        for i in range(len(ds)):
            assert np.abs(img[i] - composite[i]).mean() < 8  # uniform noise: mean |n| <= 6.6
            assert (alpha[i] == 0).any() and (alpha[i] > 0.5).any()
            inside.append(np.abs(img[i] - bg[i]).mean(-1)[masks[i]].mean())
    assert min(inside) > 10 and np.mean(inside) > 40


def test_same_seed_same_bytes_other_seed_or_split_differs(fashion_root, monkeypatch):
    root = fashion_root.root
    a = ClutteredFashionMNIST(root, "train", image_size=32, seed=7)
    monkeypatch.setattr(cl, "_CACHE", {})  # render again, not from the cache
    b = ClutteredFashionMNIST(root, "train", image_size=32, seed=7)
    assert a.data is not b.data and a.data.tobytes() == b.data.tobytes()
    assert torch.equal(a.gt_boxes, b.gt_boxes) and a.targets == b.targets
    other = ClutteredFashionMNIST(root, "train", image_size=32, seed=8)
    assert not np.array_equal(a.data, other.data)
    assert not np.array_equal(a.params["side"], other.params["side"])
    test = ClutteredFashionMNIST(root, "test", image_size=32, seed=7)
    assert not np.array_equal(a.params["side"][:3], test.params["side"])  # independent streams


def test_num_images_keeps_the_first_images(fashion_root):
    full = ClutteredFashionMNIST(fashion_root.root, "train", image_size=32, seed=2)
    first = ClutteredFashionMNIST(fashion_root.root, "train", image_size=32, num_images=2, seed=2)
    assert len(first) == 2 and first.source_indices.tolist() == [0, 1]
    np.testing.assert_array_equal(first.data, full.data[:2])
    assert torch.equal(first.gt_boxes, full.gt_boxes[:2])


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(num_images=0), "num_images=0"),
        (dict(num_images=2.5), r"num_images=2.5 must be None or an integer >= 1"),
        (dict(num_images=5), r"num_images=5 .*'train' \(4 images\)"),
        (dict(image_size=15), "image_size=15"),
        (dict(split="unlabeled"), "split='unlabeled'.*allowed"),
    ],
)
def test_bad_arguments_are_named(fashion_root, kw, match):
    with pytest.raises(ValueError, match=match):
        ClutteredFashionMNIST(fashion_root.root, **kw)


@pytest.mark.parametrize("size", [16, 32, 50, 64])
def test_item_side_is_30_to_70_percent_and_inside(fashion_root, size):
    for seed in SEEDS:
        ds = ClutteredFashionMNIST(fashion_root.root, "train", image_size=size, seed=seed)
        side, x0, y0 = (ds.params[k] for k in ("side", "x0", "y0"))
        assert ((side >= 0.3 * size) & (side <= 0.7 * size)).all()
        assert (x0 >= 0).all() and (y0 >= 0).all()
        assert (x0 + side <= size).all() and (y0 + side <= size).all()
        box = ds.gt_boxes.numpy() * size  # within the frame, give or take the bilinear pixel
        assert (box[:, 0] >= np.floor(x0 - 1)).all() and (box[:, 2] <= np.ceil(x0 + side + 1)).all()
        assert (box[:, 1] >= np.floor(y0 - 1)).all() and (box[:, 3] <= np.ceil(y0 + side + 1)).all()


def test_build_dataset_val_64_and_info(fashion_root):
    ds = build_dataset(
        "fashion-mnist-cluttered", root=fashion_root.root, split="val", image_size=64
    )
    img, label = ds[0]
    assert isinstance(ds, ClutteredFashionMNIST) and len(ds) == 1
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (64, 64)
    assert label == fashion_root.labels["train"][4]
    info = DATASET_INFO["fashion-mnist-cluttered"]
    assert info["image_size"] == 32 and info["num_classes"] == 10 and info["small"]


def test_cache_shares_the_arrays(fashion_root):
    a = ClutteredFashionMNIST(fashion_root.root, "test", image_size=24, seed=3)
    b = ClutteredFashionMNIST(fashion_root.root, "test", image_size=24, seed=3, transform=str)
    assert a.data is b.data and a.params is b.params
    assert torch.equal(a.gt_boxes, b.gt_boxes) and a.gt_boxes is not b.gt_boxes  # boxes copied
    assert isinstance(b[0][0], str)
    assert (
        ClutteredFashionMNIST(fashion_root.root, "test", image_size=24, seed=4).data is not a.data
    )


def _system_root() -> Path | None:
    for d in SYSTEM_DIRS:
        if (Path(d).expanduser() / "train-images-idx3-ubyte.gz").is_file():
            return Path(d).expanduser()
    return None


@pytest.mark.skipif(_system_root() is None, reason="system Fashion-MNIST files not installed")
def test_real_files_splits_boxes_and_speed():
    start = time.perf_counter()
    val = ClutteredFashionMNIST(split="val", image_size=32, num_images=3000)
    assert time.perf_counter() - start < 10.0  # ~0.5 s on one free core; generous when shared
    assert val.source_indices.tolist() == list(range(50000, 53000))
    source = FashionMNIST(split="train", pad_to=None)
    assert val.targets == [source.targets[i] for i in val.source_indices]
    np.testing.assert_array_equal(val.gt_boxes.numpy(), mask_boxes(val.item_masks()))
    box = val.gt_boxes
    area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
    assert 0.08 < area.mean() < 0.3 and area.max() < 0.6  # frame <= 0.7 side, + bilinear spill
    with pytest.raises(ValueError, match=r"num_images=50001 .*\(50000 images\)"):
        ClutteredFashionMNIST(split="train", num_images=50001)
    with pytest.raises(ValueError, match=r"num_images=10001 .*\(10000 images\)"):
        ClutteredFashionMNIST(split="test", num_images=10001)
