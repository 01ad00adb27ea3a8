"""Tests of the synthetic object dataset: exact boxes, determinism, speed, learnable colours."""

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays
from PIL import Image

from ccrop.data import SHAPES, SyntheticObjects, build_dataset
from ccrop.data.synthetic import mask_boxes


@pytest.fixture(scope="module")
def small():
    return SyntheticObjects(num_images=300, image_size=32, seed=3)


def test_shapes_types_and_items(small):
    assert small.data.shape == (300, 32, 32, 3) and small.data.dtype == np.uint8
    assert small.gt_boxes.shape == (300, 4) and small.gt_boxes.dtype == torch.float32
    assert len(small.targets) == 300 and small.classes == list(SHAPES)
    assert np.bincount(small.targets).tolist() == [30] * 10  # balanced
    img, label = small[7]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and label == small.targets[7]
    np.testing.assert_array_equal(np.asarray(img), small.data[7])


@pytest.mark.parametrize("size", [32, 64, 96])
def test_gt_box_is_exactly_the_object_extent(size):
    ds = SyntheticObjects(num_images=60, image_size=size, seed=size)
    masks = ds.object_masks()
    assert masks.any(axis=(1, 2)).all()
    for i in range(len(ds)):
        rows, cols = np.nonzero(masks[i])
        extent = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        np.testing.assert_allclose(ds.gt_boxes[i].numpy() * size, extent, atol=1e-4)


def test_boxes_are_valid_and_sized_like_objects(small):
    b = small.gt_boxes
    assert ((b >= 0) & (b <= 1)).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    assert area.min() > 0.03 and area.max() < 0.6 and 0.15 < area.mean() < 0.4


def test_masks_mark_the_drawn_object(small):
    """Pixels inside the mask look like the object's colour far more than those outside."""
    masks = small.object_masks()
    color = small.params["color"] * 255  # (N, 3)
    inside_closer = 0
    for i in range(len(small)):
        dist = np.abs(small.data[i].astype(float) - color[i]).mean(-1)  # (H, W)
        inside_closer += dist[masks[i]].mean() < dist[~masks[i]].mean()
    assert inside_closer >= 0.95 * len(small)


def test_same_seed_same_bytes_other_seed_or_split_differs():
    a, b = SyntheticObjects(64, 32, seed=1), SyntheticObjects(64, 32, seed=1)
    assert a.data.tobytes() == b.data.tobytes() and torch.equal(a.gt_boxes, b.gt_boxes)
    assert a.targets == b.targets
    assert not np.array_equal(a.data, SyntheticObjects(64, 32, seed=2).data)
    test = SyntheticObjects(64, 32, seed=1, split="test")
    val = SyntheticObjects(64, 32, seed=1, split="val")
    for other in (test, val):
        assert not np.array_equal(a.data, other.data)
        assert not torch.equal(a.gt_boxes, other.gt_boxes)
    assert not np.array_equal(val.data, test.data)


def test_colour_hints_the_class_but_shape_is_needed(small):
    """Nearest class-mean object colour beats chance clearly but is far from perfect."""
    ds = SyntheticObjects(1000, 32, seed=5)
    masks = ds.object_masks()
    mean_color = np.stack([ds.data[i][masks[i]].mean(0) for i in range(len(ds))])
    y = np.array(ds.targets)
    train, test = slice(0, 700), slice(700, None)
    centres = np.stack([mean_color[train][y[train] == c].mean(0) for c in range(10)])
    pred = ((mean_color[test, None] - centres[None]) ** 2).sum(-1).argmin(1)
    accuracy = (pred == y[test]).mean()
    assert 0.3 < accuracy < 0.85


def test_fast_enough():
    start = time.perf_counter()
    SyntheticObjects(num_images=5000, image_size=32)
    assert time.perf_counter() - start < 5.0  # ~0.3 s on one free core; generous when shared


def test_build_dataset_passes_kwargs():
    ds = build_dataset("synthetic", split="test", num_images=20, image_size=16, num_classes=3)
    assert len(ds) == 20 and ds.data.shape[1:] == (16, 16, 3) and set(ds.targets) == {0, 1, 2}


@pytest.mark.parametrize(
    "kw", [dict(num_images=0), dict(image_size=4), dict(num_classes=11), dict(split="valid")]
)
def test_bad_arguments(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        SyntheticObjects(**kw)


@settings(max_examples=60, deadline=None)
@given(arrays(bool, (3, 7, 9)).filter(lambda m: m.any(axis=(1, 2)).all()))
def test_mask_boxes_match_brute_force(masks):
    boxes = mask_boxes(masks)
    for m, box in zip(masks, boxes):
        rows, cols = np.nonzero(m)
        expected = [cols.min() / 9, rows.min() / 7, (cols.max() + 1) / 9, (rows.max() + 1) / 7]
        np.testing.assert_allclose(box, expected, rtol=1e-6)
