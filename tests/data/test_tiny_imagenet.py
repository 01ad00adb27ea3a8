"""Tests of Tiny ImageNet read from the original unzipped layout."""

import shutil

import numpy as np
import pytest

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
