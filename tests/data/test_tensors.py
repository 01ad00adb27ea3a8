"""Tests of dataset_to_uint8: array fast paths agree with decoding every item."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from ccrop.data import (
    CIFAR10,
    STL10,
    FashionMNIST,
    SyntheticObjects,
    UnlabeledFolder,
    dataset_to_uint8,
)


def _by_items(ds):
    items = [torch.from_numpy(np.array(ds[i][0])) for i in range(len(ds))]  # (H, W, 3) each
    return torch.stack(items).permute(0, 3, 1, 2)


def test_nhwc_fast_path_matches_items(cifar_root):
    ds = CIFAR10(cifar_root.root, "train")
    out = dataset_to_uint8(ds)
    assert out.shape == (10, 3, 32, 32) and out.dtype == torch.uint8 and out.is_contiguous()
    assert torch.equal(out, _by_items(ds))


def test_stl_layout_and_parts(stl_root):
    ds = STL10(stl_root.root, "train+unlabeled")
    out = dataset_to_uint8(ds, progress=True)
    assert out.shape == (7, 3, 96, 96) and torch.equal(out, _by_items(ds))


def test_grayscale_is_repeated(fashion_root):
    ds = FashionMNIST(fashion_root.root, "test")
    out = dataset_to_uint8(ds)
    assert out.shape == (3, 3, 32, 32)
    assert torch.equal(out[:, 0], torch.from_numpy(ds.data)) and torch.equal(out[:, 0], out[:, 2])


def test_foreign_dataset_with_data_attribute():
    class Like:  # torchvision-style: .data (N, H, W, 3) numpy, PIL items
        data = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return Image.fromarray(self.data[i]), 0

    out = dataset_to_uint8(Like())
    assert out.shape == (4, 3, 5, 6) and torch.equal(out, _by_items(Like()))


def test_transform_forces_the_item_path():
    ds = SyntheticObjects(5, 16, transform=ImageOps.mirror)
    out = dataset_to_uint8(ds)
    assert torch.equal(out, torch.from_numpy(ds.data[:, :, ::-1].copy()).permute(0, 3, 1, 2))


def test_resize_on_request():
    ds = SyntheticObjects(3, 32)
    out = dataset_to_uint8(ds, image_size=(16, 24))
    assert out.shape == (3, 3, 16, 24)
    ref = ds[1][0].resize((24, 16), Image.Resampling.BILINEAR)
    assert torch.equal(out[1], torch.from_numpy(np.array(ref)).permute(2, 0, 1))


def test_mixed_sizes_need_image_size(messy_root):
    ds = UnlabeledFolder(messy_root.root / "a")  # 7 images from 1x3 up to 40x20
    with pytest.raises(ValueError, match="image_size"):
        dataset_to_uint8(ds)
    out = dataset_to_uint8(ds, image_size=8, num_workers=2)
    assert out.shape == (len(ds), 3, 8, 8)
    assert torch.equal(out[0], dataset_to_uint8(ds, image_size=8)[0])
