"""Tests of build_dataset and DATASET_INFO: names, splits, errors, per-dataset defaults."""

import pytest
from PIL import Image

from ccrop.data import DATASET_INFO, build_dataset
from ccrop.data.registry import _REGISTRY


def test_every_name_has_info_and_a_reader():
    assert set(DATASET_INFO) == set(_REGISTRY)
    for name, info in DATASET_INFO.items():
        assert set(info) == {"mean", "std", "image_size", "num_classes", "small"}, name
        assert len(info["mean"]) == len(info["std"]) == 3
        assert all(0 < m < 1 for m in info["mean"]) and all(0 < s < 0.5 for s in info["std"])
        assert isinstance(info["image_size"], int) and isinstance(info["num_classes"], int)
    assert DATASET_INFO["cifar10"]["image_size"] == 32 and DATASET_INFO["stl10"]["image_size"] == 96
    assert DATASET_INFO["tiny-imagenet"]["num_classes"] == 200
    assert not DATASET_INFO["imagenet"]["small"] and DATASET_INFO["cifar100"]["small"]


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="'cifar11'.*cifar10.*synthetic"):
        build_dataset("cifar11", "/tmp")


@pytest.mark.parametrize(
    "name,split",
    [("cifar10", "unlabeled"), ("stl10", "val"), ("tiny-imagenet", "x"), ("synthetic", "nope")],
)
def test_bad_split_lists_allowed(name, split):
    with pytest.raises(ValueError, match=f"split='{split}'.*{name}.*allowed"):
        build_dataset(name, "/tmp", split=split)


def test_root_required_and_download_limits(tmp_path):
    with pytest.raises(ValueError, match="root"):
        build_dataset("cifar10")
    with pytest.raises(ValueError, match="download=True is not supported for 'imagefolder'"):
        build_dataset("imagefolder", tmp_path, download=True)
    with pytest.raises(ValueError, match="class_list"):
        build_dataset("imagenet200", tmp_path)
    with pytest.raises(FileNotFoundError):  # download=False never fetches
        build_dataset("cifar100", tmp_path)


@pytest.mark.parametrize(
    "name,fixture,split,count",
    [
        ("cifar10", "cifar_root", "train", 10),
        ("cifar10", "cifar_root", "test", 3),
        ("cifar100", "cifar_root", "train", 4),
        ("stl10", "stl_root", "unlabeled", 4),
        ("tiny-imagenet", "tiny_root", "test", 4),
        ("imagenet", "folder_root", "val", 2),
        ("fashion-mnist", "fashion_root", "train", 5),
    ],
)
def test_builds_from_real_format_fixtures(request, name, fixture, split, count):
    root = request.getfixturevalue(fixture).root
    ds = build_dataset(name, root, split=split)
    assert len(ds) == count == len(ds.targets)
    img, label = ds[count - 1]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and isinstance(label, int)
    small = DATASET_INFO[name]["small"]
    assert not small or img.size == (DATASET_INFO[name]["image_size"],) * 2


def test_transform_kwarg_applies_to_items(cifar_root):
    ds = build_dataset("cifar10", cifar_root.root, transform=lambda im: im.size)
    assert ds[0][0] == (32, 32)
