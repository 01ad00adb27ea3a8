"""Tests of the STL-10 binary reader: column-major storage, splits, memory maps, bad sizes."""

import pickle
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ccrop.data import STL10, build_dataset
from ccrop.data.stl10 import IMAGE_BYTES, open_stl_images


def test_images_come_out_upright(stl_root):
    ds = STL10(stl_root.root, "train")
    img = np.asarray(ds[0][0])
    assert img.shape == (96, 96, 3)
    assert (img[0:10, 0:30] == (255, 0, 0)).all()  # the wide bar stays wide and at the top
    assert not (img[10:30, 0:10] == (255, 0, 0)).all()  # a transposed reader puts it here
    assert tuple(img[80, 10]) == (0, 255, 0)
    np.testing.assert_array_equal(img, stl_root.images["train"][0])


@pytest.mark.parametrize("split", ["train", "test", "unlabeled"])
def test_splits_round_trip(stl_root, split):
    ds = STL10(stl_root.root, split)
    expected = stl_root.images[split]
    assert len(ds) == len(expected) and ds.data.shape == (len(expected), 3, 96, 96)
    np.testing.assert_array_equal(ds.data, expected.transpose(0, 3, 1, 2))
    for i in range(len(ds)):
        np.testing.assert_array_equal(np.asarray(ds[i][0]), expected[i])
    assert ds.targets == stl_root.labels.get(split, [-1] * len(expected))


def test_labels_shift_to_zero_based(stl_root):
    ds = STL10(stl_root.root, "train")
    assert ds.targets == [0, 9, 4] and ds.classes[0] == "airplane"


def test_train_plus_unlabeled_puts_train_first(stl_root):
    ds = build_dataset("stl10", stl_root.root, split="train+unlabeled")
    assert len(ds) == 3 + 4 and ds.targets == [0, 9, 4, -1, -1, -1, -1]
    np.testing.assert_array_equal(np.asarray(ds[3][0]), stl_root.images["unlabeled"][0])
    assert ds.data.shape == (7, 3, 96, 96)


def test_pickles_without_the_memory_map(stl_root):
    ds = STL10(stl_root.root, "unlabeled")
    blob = pickle.dumps(ds)
    assert len(blob) < IMAGE_BYTES  # the images are not inside
    again = pickle.loads(blob)
    np.testing.assert_array_equal(np.asarray(again[2][0]), stl_root.images["unlabeled"][2])


def test_wrong_file_size_names_file_and_size(stl_root, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(stl_root.root, root)
    x = root / "stl10_binary" / "test_X.bin"
    x.write_bytes(x.read_bytes()[:-5])
    with pytest.raises(ValueError, match=f"test_X.bin.*multiple of {IMAGE_BYTES}"):
        STL10(root, "test")


def test_label_count_mismatch(stl_root, tmp_path):
    root = tmp_path / "s"
    shutil.copytree(stl_root.root, root)
    (root / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(ValueError, match="train_y.bin.*expected 3"):
        STL10(root, "train")


def test_missing_root_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="stl10_binary"):
        STL10(tmp_path, "train")


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, (2, 96, 96, 3)))
def test_any_image_round_trips(tmp_path_factory, images):
    path = tmp_path_factory.mktemp("x") / "x.bin"
    path.write_bytes(images.transpose(0, 3, 2, 1).tobytes())  # the published column-major order
    np.testing.assert_array_equal(open_stl_images(path), images.transpose(0, 3, 1, 2))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3 * IMAGE_BYTES).filter(lambda n: n % IMAGE_BYTES))
def test_any_partial_size_is_rejected(tmp_path_factory, size):
    path = tmp_path_factory.mktemp("x") / "x.bin"
    path.write_bytes(bytes(size))
    with pytest.raises(ValueError, match=str(IMAGE_BYTES)):
        open_stl_images(path)
