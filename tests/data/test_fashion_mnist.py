"""Tests of the Fashion-MNIST IDX reader (plain and gzipped files, padding, system copy)."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import array_shapes, arrays

from ccrop.config import ConfigError
from ccrop.data import FashionMNIST, build_dataset
from ccrop.data.fashion_mnist import SYSTEM_DIRS, read_idx


@pytest.mark.parametrize("split", ["train", "test"])  # train is gzipped, test plain
def test_reads_both_file_kinds_and_pads(fashion_root, split):
    ds = FashionMNIST(fashion_root.root, split)
    raw = fashion_root.images[split]
    assert ds.data.shape == (len(raw), 32, 32) and ds.data.dtype == np.uint8
    assert ds.targets == fashion_root.labels[split]
    np.testing.assert_array_equal(ds.data[:, 2:30, 2:30], raw)  # centred, zeros around
    assert ds.data[:, :2].max() == 0 and ds.data[:, :, 30:].max() == 0
    img, label = ds[1]
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (32, 32, 3) and label == ds.targets[1]
    np.testing.assert_array_equal(arr[2:30, 2:30, 1], raw[1])
    assert (arr[..., 0] == arr[..., 2]).all()


def test_no_padding_keeps_28(fashion_root):
    ds = build_dataset("fashion-mnist", fashion_root.root, split="test", pad_to=None)
    np.testing.assert_array_equal(ds.data, fashion_root.images["test"])
    assert ds[0][0].size == (28, 28)


def test_pad_smaller_than_image_is_rejected(fashion_root):
    with pytest.raises(ValueError, match="pad_to=20"):
        FashionMNIST(fashion_root.root, pad_to=20)


def test_torchvision_layout_is_found(fashion_root, tmp_path):
    shutil.copytree(fashion_root.root, tmp_path / "FashionMNIST" / "raw")
    assert len(FashionMNIST(tmp_path, "train")) == 5


def test_truncated_file_names_expected_size(fashion_root, tmp_path):
    shutil.copytree(fashion_root.root, tmp_path / "f")
    path = tmp_path / "f" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    expected = 16 + 3 * 28 * 28
    with pytest.raises(ValueError, match=rf"t10k-images-idx3-ubyte.*expected {expected}"):
        FashionMNIST(tmp_path / "f", "test")


def test_truncated_gzip_and_bad_magic(tmp_path):
    gz = tmp_path / "x-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-6])
    with pytest.raises(ValueError, match="x-idx1-ubyte.gz"):
        read_idx(gz)
    bad = tmp_path / "bad"
    bad.write_bytes(bytes([0, 0, 13, 1, 0, 0, 0, 1, 0, 0, 0, 0]))  # float IDX, not ubyte
    with pytest.raises(ValueError, match="bad.*magic"):
        read_idx(bad)


def test_missing_files_list_searched_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*dataset-fashion-mnist"):
        FashionMNIST(tmp_path)


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, array_shapes(min_dims=1, max_dims=3, max_side=9)))
def test_idx_round_trip(tmp_path_factory, arr):
    path = tmp_path_factory.mktemp("idx") / "a-ubyte"
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.tobytes())
    np.testing.assert_array_equal(read_idx(path), arr)


def test_debian_package_copy_is_found_by_default():
    if not any(Path(d, "train-images-idx3-ubyte.gz").is_file() for d in SYSTEM_DIRS[:1]):
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    train, test = FashionMNIST(split="train"), build_dataset("fashion-mnist", split="test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.data.shape == (60000, 32, 32)
    assert np.bincount(train.targets).tolist() == [6000] * 10
    assert np.bincount(test.targets).tolist() == [1000] * 10


def test_download_needs_a_root_to_download_into():
    with pytest.raises(ConfigError, match="data.download=true needs data.root=<folder>"):
        FashionMNIST(None, "train", download=True)
