"""Tests of the icons set: true boxes, icon-disjoint splits, determinism, missing packages."""

import numpy as np
import pytest
import torch
from PIL import Image

from ccrop.data import build_dataset
from ccrop.data import icons as ic


@pytest.fixture(scope="module")
def icons_root(tmp_path_factory):
    """A tiny tree in the layout ``root=`` reads: 4 RGBA PNG icons per category (an opaque
    square of known extent, a semi-transparent fringe), a JPEG, a PNG and a WebP background."""
    root = tmp_path_factory.mktemp("icons")
    rng = np.random.default_rng(0)
    for c, cls in enumerate(ic.CLASSES):
        (root / "icons" / cls).mkdir(parents=True)
        for k in range(4):
            rgba = np.zeros((32, 32, 4), np.uint8)
            rgba[6:26, 4 + k:28 - k, :3] = (30 * c, 200 - 20 * k, 90)
            rgba[6:26, 4 + k:28 - k, 3] = 255
            rgba[3:6, 4 + k:28 - k, 3] = 40  # a faint fringe: below VISIBLE_ALPHA
            Image.fromarray(rgba, "RGBA").save(root / "icons" / cls / f"{cls}-{k}.png")
    (root / "backgrounds" / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.png", "c.webp"):
        pixels = rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "backgrounds" / name)
    return root


@pytest.mark.parametrize("size", [16, 32, 64])
def test_gt_boxes_are_the_tight_extent_of_the_visible_icon(icons_root, size, edges_touch_mask):
    ds = ic.IconsOnPhotos(icons_root, "train", image_size=size, num_images=40, seed=3)
    assert ds.data.shape == (40, size, size, 3) and ds.gt_boxes.shape == (40, 4)
    mask = ds.icon_alpha() > ic.VISIBLE_ALPHA
    pixel_boxes = (ds.gt_boxes.numpy() * size).round().astype(int)
    for i in range(len(ds)):
        assert edges_touch_mask(mask[i], pixel_boxes[i]), i
    side = ds.params["side"] / size  # icon frames: 30-70% of the canvas
    assert side.min() >= 0.3 and side.max() <= 0.7
    frame = np.stack([ds.params["x0"], ds.params["y0"]], 1) / size
    assert (ds.gt_boxes.numpy()[:, :2] >= frame - 1e-6).all()  # the icon lies in its frame


def test_icon_pixels_are_composited_over_the_background(icons_root):
    ds = ic.IconsOnPhotos(icons_root, "val", image_size=32, num_images=8, seed=0)
    alpha = ds.icon_alpha()
    opaque = alpha > 0.999
    assert opaque.any()
    # fully opaque icon pixels hold the icon's colour: green channel 200 - 20 k, blue 90
    blue = ds.data[..., 2][opaque]
    assert np.abs(blue.astype(int) - 90).max() <= 1


def test_same_seed_same_bytes_other_seed_other_images(icons_root):
    a = ic.IconsOnPhotos(icons_root, "train", num_images=16, seed=5)
    ic._CACHE.clear()
    b = ic.IconsOnPhotos(icons_root, "train", num_images=16, seed=5)
    c = ic.IconsOnPhotos(icons_root, "train", num_images=16, seed=6)
    assert a.data is not b.data and np.array_equal(a.data, b.data)
    assert torch.equal(a.gt_boxes, b.gt_boxes) and a.targets == b.targets
    assert not np.array_equal(a.data, c.data)


def test_splits_never_share_an_icon_and_labels_are_categories(icons_root):
    files = ic._icon_files(icons_root)
    parts = {s: ic.split_icons(files, s) for s in ("train", "val", "test")}
    for c, cls in enumerate(ic.CLASSES):
        names = [set(p.name for p in parts[s][c]) for s in ("train", "val", "test")]
        assert set.union(*names) == {p.name for p in files[cls]}  # a partition
        assert sum(map(len, names)) == len(files[cls]) and all(names)
    ds = ic.IconsOnPhotos(icons_root, "test", num_images=64, seed=1)
    used = {ds.icon_names[i] for i in ds.params["icon"]}
    assert used <= {f"{cls}/{p.name}" for c, cls in enumerate(ic.CLASSES) for p in parts["test"][c]}
    for i in range(len(ds)):  # the label is the icon's category
        assert ds.icon_names[ds.params["icon"][i]].split("/")[0] == ic.CLASSES[ds.targets[i]]


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(image_size=15), "image_size=15 must be an integer >= 16"),
        (dict(num_images=0), "num_images=0 must be an integer >= 1"),
        (dict(num_images=None), "num_images=None must be an integer >= 1"),
        (dict(split="unlabeled"), "split='unlabeled'.*allowed"),
    ],
)
def test_bad_arguments_are_named(icons_root, kw, match):
    with pytest.raises(ValueError, match=match):
        ic.IconsOnPhotos(icons_root, **kw)


def test_missing_files_name_the_debian_packages(tmp_path):
    with pytest.raises(ValueError, match="tango-icon-theme, gnome-backgrounds, "
                                         "plasma-workspace-wallpapers"):
        ic.IconsOnPhotos(tmp_path, "train", num_images=4)
    with pytest.raises(ValueError, match="split="):
        build_dataset("icons", None, "unlabeled")


@pytest.mark.skipif(not ic.ICON_DIR.is_dir(), reason="Debian package tango-icon-theme absent")
@pytest.mark.slow  # builds the icon set from the Debian packages (~7 s)
def test_the_debian_packages_make_a_seven_class_set_with_held_out_icons():
    files = ic._icon_files(None)
    assert all(len(files[c]) >= 9 for c in ic.CLASSES)  # places is the smallest: 9 icons
    val = build_dataset("icons", None, "val", num_images=256)
    assert sorted(set(val.targets)) == list(range(7))
    train_icons = {p for part in ic.split_icons(files, "train") for p in part}
    assert not {p for part in ic.split_icons(files, "val") for p in part} & train_icons
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(256, 4)
    from ccrop.boxes import box_iou

    assert 0.1 < float(box_iou(full, val.gt_boxes).mean()) < 0.35  # small objects
