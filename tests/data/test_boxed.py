"""Tests of the index-carrying wrappers and the CPU view pipeline."""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ccrop import BoxStore
from ccrop.data.boxed import BoxedDataset, IndexedImages, unpack_item
from ccrop.data.images import to_rgb
from ccrop.data.views import EvalTransform, build_view_transform


class Plain(torch.utils.data.Dataset):
    def __init__(self, n=8, size=16, kind="tuple"):
        rng = np.random.default_rng(0)
        self.arr = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
        self.kind = kind

    def __len__(self):
        return len(self.arr)

    def __getitem__(self, i):
        img = Image.fromarray(self.arr[i])
        if self.kind == "dict":
            return {"image": img.convert("L"), "label": i % 3}
        if self.kind == "bare":
            return img.convert("P")
        return img.convert("RGBA"), i % 3


@pytest.mark.parametrize("kind,label", [("tuple", 1), ("dict", 1), ("bare", -1)])
def test_boxed_dataset_returns_index_views_label(kind, label):
    ds = BoxedDataset(Plain(kind=kind), BoxStore(8), build_view_transform(size=8), num_views=3)
    index, views, target = ds[4]
    assert index == 4 and target == label and len(views) == 3
    assert all(v.shape == (3, 8, 8) and v.dtype == torch.float32 for v in views)
    assert not torch.equal(views[0], views[1])  # independent draws


def test_seeded_views_are_pure_function_of_seed_epoch_index():
    store = BoxStore(8)
    ds = BoxedDataset(Plain(), store, build_view_transform(size=8), seed=3)
    a = ds[2][1]
    random.seed(123)  # global state must not matter
    assert all(torch.equal(x, y) for x, y in zip(a, ds[2][1]))
    ds.set_epoch(1)
    assert not torch.equal(a[0], ds[2][1][0])
    # same across worker counts
    ds.set_epoch(0)
    one = torch.cat([b[1][0] for b in DataLoader(ds, batch_size=4, num_workers=0)])
    two = torch.cat([b[1][0] for b in DataLoader(ds, batch_size=3, num_workers=2)])
    assert one.shape == (8, 3, 8, 8) and torch.equal(one, two)


def test_views_follow_store_box():
    """A tiny box in the image's corner: every crop's centre must be near that corner."""
    arr = np.zeros((64, 64, 3), dtype=np.uint8)
    arr[:8, :8] = 255  # white corner, black elsewhere

    class One(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return Image.fromarray(arr), 0

    store = BoxStore(1, (0.0, 0.0, 0.05, 0.05))
    tf = build_view_transform(
        size=16, scale=(0.01, 0.02), mean=(0, 0, 0), std=(1, 1, 1), full_box_guard=None
    )
    tf.recipe = type(tf.recipe)(flip_p=0, jitter_p=0, gray_p=0)
    ds = BoxedDataset(One(), store, tf, num_views=8, seed=0)
    assert all(v.mean() > 0.5 for v in ds[0][1])
    store.update(torch.tensor([0]), torch.tensor([[0.9, 0.9, 1.0, 1.0]]))
    assert all(v.mean() < 0.01 for v in ds[0][1])


def test_recipe_and_crop_choices():
    assert build_view_transform(recipe="imagenet").recipe.blur_p == 0.5
    rrc = build_view_transform(crop="rcrop").crop
    assert rrc.plan.kind == "rcrop" and rrc.full_box_guard is None  # uniform: no guard needed
    with pytest.raises(ValueError, match="recipe"):
        build_view_transform(recipe="nope")
    with pytest.raises(ValueError, match="crop"):
        build_view_transform(crop="nope")


def test_bad_wrapper_arguments():
    with pytest.raises(ValueError, match="boxes"):
        BoxedDataset(Plain(n=8), BoxStore(7), build_view_transform())
    with pytest.raises(ValueError, match="num_views"):
        BoxedDataset(Plain(n=8), BoxStore(8), build_view_transform(), num_views=0)
    with pytest.raises(ValueError, match="image key"):
        unpack_item({"x": 1})


def test_indexed_images_eval_transform():
    ds = IndexedImages(Plain(), EvalTransform((0, 0, 0), (1, 1, 1)))
    i, img = ds[5]
    assert i == 5 and img.shape == (3, 16, 16)
    expected = torch.from_numpy(Plain().arr[5]).permute(2, 0, 1).float() / 255
    assert torch.allclose(img, expected)
    resized = EvalTransform((0, 0, 0), (1, 1, 1), size=24)(Image.fromarray(Plain().arr[0]))
    assert resized.shape == (3, 24, 24)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "I", "F", "1"])
def test_to_rgb_modes(mode):
    base = Image.fromarray(np.full((4, 5, 3), 200, dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16))
    elif mode == "I":
        img = Image.fromarray(np.full((4, 5), 255, dtype=np.int32), "I")
    elif mode == "F":
        img = Image.fromarray(np.full((4, 5), 1.0, dtype=np.float32), "F")
    else:
        img = base.convert(mode)
    out = to_rgb(img)
    assert out.mode == "RGB" and out.size == (5, 4)
    if mode in ("I;16", "I", "F"):
        assert np.asarray(out).min() == 255
