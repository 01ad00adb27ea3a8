"""Tests of the CIFAR-10/100 pickle reader on fixture batches in the original format."""

import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from ccrop.data import CIFAR10, CIFAR100, build_dataset
from ccrop.data.cifar import read_cifar_batch


def test_cifar10_train_reads_all_batches_in_order(cifar_root):
    ds = CIFAR10(cifar_root.root, "train")
    assert len(ds) == 10 and ds.data.shape == (10, 32, 32, 3) and ds.data.dtype == np.uint8
    assert ds.targets == cifar_root.labels["train"]
    np.testing.assert_array_equal(ds.data, cifar_root.images["train"])
    assert ds.classes[0] == "airplane" and len(ds.classes) == 10


def test_cifar10_items_round_trip_pixels(cifar_root):
    ds = build_dataset("cifar10", cifar_root.root, split="train")
    img, label = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (32, 32)
    row, col = cifar_root.extra["known_pixel"]
    assert img.getpixel((col, row)) == cifar_root.extra["known_rgb"]
    assert label == cifar_root.labels["train"][0]
    for i in range(len(ds)):
        np.testing.assert_array_equal(np.asarray(ds[i][0]), cifar_root.images["train"][i])


def test_cifar10_test_split(cifar_root):
    ds = CIFAR10(cifar_root.root, "test")
    assert len(ds) == 3 and ds.targets == [9, 0, 4]
    np.testing.assert_array_equal(np.asarray(ds[-1][0]), cifar_root.images["test"][-1])


def test_cifar100_fine_labels_with_bytes_keys(cifar_root):
    for split in ("train", "test"):
        ds = CIFAR100(cifar_root.root, split)
        assert ds.targets == cifar_root.labels[f"100-{split}"]
        np.testing.assert_array_equal(ds.data, cifar_root.images[f"100-{split}"])
    assert len(ds.classes) == 100


def _copy(cifar_root, tmp_path):
    dst = tmp_path / "c"
    shutil.copytree(cifar_root.root, dst)
    return dst


def test_truncated_pickle_names_the_file(cifar_root, tmp_path):
    root = _copy(cifar_root, tmp_path)
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[: os.path.getsize(batch) // 2])
    with pytest.raises(ValueError, match="data_batch_3.*truncated"):
        CIFAR10(root, "train")


def test_wrong_data_size_names_expected_size(tmp_path):
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump({"labels": [1, 2], "data": np.zeros((2, 3000), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match=r"batch.*size 6000.*\(2, ?3, ?32, ?32\)"):
        read_cifar_batch(path, "labels")


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil"
    with open(path, "wb") as f:
        pickle.dump({"data": os.getcwd, "labels": []}, f, protocol=2)  # a global other than numpy
    with pytest.raises(ValueError, match="evil"):
        read_cifar_batch(path, "labels")


def test_missing_files_name_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        CIFAR10(tmp_path, "train")


def test_bad_split_is_named(cifar_root):
    with pytest.raises(ValueError, match="'val'.*train.*test"):
        CIFAR10(cifar_root.root, "val")
