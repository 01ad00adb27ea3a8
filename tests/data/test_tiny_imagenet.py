"""Tests of Tiny ImageNet read from the original unzipped layout."""

import os
import shutil
import urllib.error

import numpy as np
import pytest

from ccrop.config import ConfigError
from ccrop.data import TinyImageNet, build_dataset


def _close(img, color, tol=12):
    return np.abs(np.asarray(img, np.int16) - np.array(color)).max() <= tol


def test_train_labels_follow_sorted_wnids(tiny_root):
    ds = TinyImageNet(tiny_root.root, "train")
    assert ds.classes == sorted(tiny_root.extra["wnids"]) and len(ds) == 6
    assert sorted(ds.targets) == [0, 0, 1, 1, 2, 2]
    for i in range(len(ds)):
        img, label = ds[i]
        assert img.mode == "RGB" and img.size == (64, 64)
        wnid = ds.classes[label]
        if "02000000_1" not in ds.samples[i][0]:  # the grayscale one has lost its colour
            assert _close(img, tiny_root.extra["colors"][wnid]), wnid


def test_grayscale_jpeg_becomes_rgb(tiny_root):
    ds = TinyImageNet(tiny_root.root, "train")
    i = next(k for k, (p, _) in enumerate(ds.samples) if p.endswith("n02000000_1.JPEG"))
    arr = np.asarray(ds[i][0])
    assert arr.shape == (64, 64, 3) and (arr[..., 0] == arr[..., 1]).all()


def test_val_labels_from_annotations(tiny_root):
    ds = build_dataset("tiny-imagenet", tiny_root.root, split="val")
    assert ds.targets == tiny_root.labels["val"] and len(ds) == 4
    for i in range(len(ds)):
        img, label = ds[i]
        assert _close(img, tiny_root.extra["colors"][ds.classes[label]])


def test_test_is_an_alias_of_val(tiny_root):
    val, test = TinyImageNet(tiny_root.root, "val"), TinyImageNet(tiny_root.root, "test")
    assert val.samples == test.samples


def test_root_may_be_the_unzipped_folder_itself(tiny_root):
    ds = TinyImageNet(tiny_root.root / "tiny-imagenet-200", "train")
    assert len(ds) == 6


def test_missing_root_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="wnids.txt.*val_annotations"):
        TinyImageNet(tmp_path, "train")


def test_unknown_wnid_in_annotations_names_line(tiny_root, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tiny_root.root, root)
    ann = root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_9.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:5"):
        TinyImageNet(root, "val")


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



TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_LAYOUT = "tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG"


def test_failed_download_removes_the_folder_it_created(tmp_path, monkeypatch):
    fetched = _offline(monkeypatch)
    root = tmp_path / "data"
    with pytest.raises(ConfigError) as err:
        TinyImageNet(root, "val", download=True)
    assert fetched == [TINY_URL]
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert msg.startswith(f"tiny-imagenet: downloading {TINY_URL} into {root} (data.root) failed")
    assert "Name or service not known" in msg and TINY_LAYOUT in msg
    assert "data.download=true" in msg and "data.root=<folder>" in msg
    assert os.listdir(tmp_path) == []  # data/ and the partial zip are gone


def test_failed_download_keeps_a_folder_that_existed(tmp_path, monkeypatch):
    fetched = _offline(monkeypatch)
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "readme.txt").write_text("mine")
    with pytest.raises(ValueError, match="tiny-imagenet: downloading .* failed"):
        build_dataset("tiny-imagenet", tmp_path, split="train", download=True)
    assert fetched
    assert sorted(os.listdir(tmp_path)) == ["imagenet", "readme.txt"]
    assert (tmp_path / "readme.txt").read_text() == "mine"


def test_missing_files_without_download_name_the_config_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        TinyImageNet(tmp_path, "train")
    msg = str(err.value)
    assert f"tiny-imagenet: dataset files not found in {tmp_path} (data.root)" in msg
    assert TINY_LAYOUT in msg and TINY_URL in msg
    assert "Set data.download=true" in msg and "data.root=<folder>" in msg
