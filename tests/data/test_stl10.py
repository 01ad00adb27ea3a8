"""Tests of the STL-10 binary reader: column-major storage, splits, memory maps, bad sizes."""

import os
import pickle
import shutil
import urllib.error

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ccrop.config import ConfigError
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


def _offline(monkeypatch):
    """Make torchvision's downloads fail as without network: each fetch writes a partial
    archive, then raises URLError. Returns the list of URLs tried."""
    from torchvision.datasets import utils

    fetched = []

    def urlretrieve(url, filename, chunk_size=0):
        fetched.append(url)
        with open(filename, "wb") as f:
            f.write(b"half an archive")
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(utils, "_urlretrieve", urlretrieve)
    return fetched


STL_URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
STL_LAYOUT = "stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin"


def test_failed_download_removes_the_folder_it_created(tmp_path, monkeypatch):
    fetched = _offline(monkeypatch)
    root = tmp_path / "new" / "stl"
    with pytest.raises(ConfigError) as err:
        STL10(root, "unlabeled", download=True)
    assert fetched == [STL_URL]
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert msg.startswith(f"stl10: downloading {STL_URL} into {root} (data.root) failed")
    assert "Name or service not known" in msg and STL_LAYOUT in msg
    assert "data.download=true" in msg and "data.root=<folder>" in msg
    assert os.listdir(tmp_path) == []  # new/, new/stl and the partial archive are gone


def test_failed_download_keeps_a_folder_that_existed(tmp_path, monkeypatch):
    fetched = _offline(monkeypatch)
    (tmp_path / "stl10_binary").mkdir()  # an incomplete copy: only one file
    (tmp_path / "stl10_binary" / "class_names.txt").write_text("a b")
    with pytest.raises(ValueError, match="stl10: downloading .* failed"):
        build_dataset("stl10", tmp_path, split="train", download=True)
    assert fetched
    assert sorted(os.listdir(tmp_path)) == ["stl10_binary"]
    assert os.listdir(tmp_path / "stl10_binary") == ["class_names.txt"]
    assert (tmp_path / "stl10_binary" / "class_names.txt").read_text() == "a b"


def test_missing_files_without_download_name_the_config_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        STL10(tmp_path, "test")
    msg = str(err.value)
    assert f"stl10: dataset files not found in {tmp_path} (data.root)" in msg
    assert STL_LAYOUT in msg and STL_URL in msg
    assert "Set data.download=true" in msg and "data.root=<folder>" in msg
    assert "download=True fetches" not in msg
