"""Tests of robust image loading and the folder datasets (ImageFolder, subsets, unlabeled)."""

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccrop.data import BadImageError, ImageFolder, UnlabeledFolder, build_dataset, load_rgb


def _a(messy_root, name):
    return np.asarray(load_rgb(messy_root.root / "a" / name))


def test_rgb_png_round_trips_exactly(messy_root):
    path = messy_root.root / "a" / "01_rgb.png"
    img = load_rgb(path)
    assert img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), np.asarray(Image.open(path)))


def test_grayscale_becomes_three_equal_channels(messy_root):
    arr = _a(messy_root, "02_gray.png")
    assert arr.shape == (7, 9, 3) and (arr == 77).all()


def test_alpha_is_dropped_keeping_colour(messy_root):
    arr = _a(messy_root, "03_rgba.png")  # fully transparent (200, 100, 50)
    assert (arr == (200, 100, 50)).all()


def test_palette_with_transparency(messy_root):
    arr = _a(messy_root, "04_palette.png")  # entry 1 = red; entry 0 = transparent black
    assert arr.shape == (5, 5, 3) and (arr[:, 1:] == (255, 0, 0)).all()
    assert (arr[:, 0] == 0).all()  # alpha dropped: the stored colour stays


def test_16_bit_is_rescaled_not_clipped(messy_root):
    arr = _a(messy_root, "05_deep16.png")  # 0, 32896 (= 128 * 257), 65535 per row
    assert arr[0, :, 0].tolist() == [0, 128, 255] and (arr[..., 0] == arr[..., 2]).all()


def test_cmyk_white_stays_white(messy_root):
    arr = _a(messy_root, "06_cmyk.jpg")
    assert arr.shape == (8, 8, 3) and arr.min() >= 250


def test_exif_orientation_is_applied(messy_root):
    arr = _a(messy_root, "07_exif.jpg")  # stored 40 x 20, orientation 6: rotate 90 clockwise
    assert arr.shape == (40, 20, 3)
    top_right = arr[1:7, 13:19].astype(int)
    assert (top_right[..., 0] > 200).all() and (top_right[..., 1:] < 60).all()
    assert arr[30:, :5, 0].max() < 100  # nothing red at the bottom-left


def _save(path: Path, img: Image.Image) -> Path:
    img.save(path)
    return path


def test_tiny_and_extreme_aspect_images(tmp_path):
    one = load_rgb(_save(tmp_path / "one.png", Image.new("RGB", (1, 1), (1, 2, 3))))
    assert one.size == (1, 1) and one.getpixel((0, 0)) == (1, 2, 3)
    strip = load_rgb(_save(tmp_path / "strip.png", Image.new("L", (10000, 50), 9)))
    assert strip.size == (10000, 50) and strip.mode == "RGB"


def test_la_and_32_bit_and_float_modes(tmp_path):
    la = load_rgb(_save(tmp_path / "la.png", Image.new("LA", (3, 3), (90, 0))))
    assert la.getpixel((1, 1)) == (90, 90, 90)
    deep = Image.fromarray(np.array([[0, 65535]], np.int32))  # mode I, 16-bit range
    assert load_rgb(_save(tmp_path / "i.tif", deep)).getpixel((1, 0)) == (255, 255, 255)
    flt = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))  # mode F in [0, 1]
    assert [load_rgb(_save(tmp_path / "f.tif", flt)).getpixel((x, 0))[0] for x in range(3)] == [
        0, 128, 255
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["01_corrupt.jpg", "02_empty.png", "04_truncated.jpg"])
def test_bad_files_raise_naming_the_path(messy_root, name):
    path = messy_root.root / "b" / name
    with pytest.raises(BadImageError, match=name) as info:
        load_rgb(path)
    assert "expected a readable image" in str(info.value)
    if name == "02_empty.png":
        assert "empty (0 bytes)" in str(info.value)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_rgb(tmp_path / "nope.png")


def test_messy_folder_error_mode_names_the_file(messy_root):
    ds = ImageFolder(messy_root.root)
    i = next(k for k, (p, _) in enumerate(ds.samples) if p.endswith("01_corrupt.jpg"))
    with pytest.raises(BadImageError, match="01_corrupt.jpg"):
        ds[i]


def test_messy_folder_skip_mode_counts_and_replaces(messy_root, caplog):
    ds = ImageFolder(messy_root.root, on_bad_image="skip")
    assert ds.classes == ["a", "b", "empty"] and len(ds) == 12
    with caplog.at_level(logging.DEBUG, logger="ccrop.data"):
        items = [ds[i] for i in range(len(ds))]
    assert all(img.mode == "RGB" for img, _ in items)
    assert sorted(ds.bad_images) == sorted(messy_root.extra["bad"])  # each counted once
    per_file = [r for r in caplog.records if "skipping bad image" in r.getMessage()]
    assert len(per_file) == 3 and all(r.levelno == logging.DEBUG for r in per_file)
    i = next(k for k, (p, _) in enumerate(ds.samples) if p.endswith("01_corrupt.jpg"))
    expected = np.asarray(load_rgb(messy_root.extra["good_after_bad"]))
    np.testing.assert_array_equal(np.asarray(items[i][0]), expected)  # next valid item
    assert items[i][1] == ds.classes.index("b")


def test_skip_mode_reports_one_line_per_split_with_count_and_first_path(messy_root, caplog):
    """Skipped files are not one console line each: ``report_skipped`` logs one warning with
    the count and the first path, and again only when more files were skipped."""
    ds = ImageFolder(messy_root.root, on_bad_image="skip")
    with caplog.at_level(logging.WARNING, logger="ccrop.data"):
        caplog.clear()
        for _ in range(2):  # two passes (epochs): the same files skipped again
            [ds[i] for i in range(len(ds))]
        assert caplog.records == []  # nothing per file
        paths = ds.report_skipped("train")
        assert ds.report_skipped("train") == paths  # nothing new: no second line
    assert sorted(paths) == sorted(messy_root.extra["bad"])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "split 'train'" in lines[0], lines
    assert "skipped 3 unreadable" in lines[0] and lines[0].endswith(f"first: {paths[0]}")


def test_empty_class_is_ignored_with_warning_but_keeps_label(messy_root, caplog):
    with caplog.at_level(logging.WARNING, logger="ccrop.data"):
        ds = ImageFolder(messy_root.root)
    assert "empty" in ds.classes and ds.classes.index("empty") not in ds.targets
    assert any("empty class folder" in r.getMessage() for r in caplog.records)


def test_bad_on_bad_image_value(messy_root):
    with pytest.raises(ValueError, match="on_bad_image='ignore'.*error.*skip"):
        ImageFolder(messy_root.root, on_bad_image="ignore")


def test_split_subfolders_and_pixels(folder_root):
    train = build_dataset("imagefolder", folder_root.root, split="train")
    val = build_dataset("imagefolder", folder_root.root, split="val")
    assert train.classes == ["cat", "dog"] and train.targets == [0, 0, 0, 1, 1]
    assert len(val) == 2 and val.targets == [0, 1]
    path, _ = train.samples[3]
    np.testing.assert_array_equal(np.asarray(train[3][0]), np.asarray(Image.open(path)))


def test_missing_split_folder_is_named(folder_root):
    with pytest.raises(FileNotFoundError, match=r"test not found.*\['train', 'val'\]"):
        ImageFolder(folder_root.root, split="test")


def test_root_without_split_folders_is_the_split(folder_root):
    ds = ImageFolder(folder_root.root / "train", split="train")
    assert len(ds) == 5


def test_class_list_selects_and_orders(folder_root, tmp_path):
    lst = tmp_path / "classes.txt"
    lst.write_text("# two classes\ndog  a dog\n\n")
    ds = build_dataset("imagenet200", folder_root.root, split="train", class_list=lst)
    assert ds.classes == ["dog"] and ds.targets == [0, 0]
    lst.write_text("dog\ncat\n")
    assert ImageFolder(folder_root.root, class_list=lst).targets == [0, 0, 1, 1, 1]


def test_class_list_errors(folder_root, tmp_path):
    lst = tmp_path / "classes.txt"
    lst.write_text("dog\ncow\n")
    with pytest.raises(FileNotFoundError, match="'cow'"):
        ImageFolder(folder_root.root, class_list=lst)
    lst.write_text("dog\ndog\n")
    with pytest.raises(ValueError, match=r"dupes \['dog'\]"):
        ImageFolder(folder_root.root, class_list=lst)
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        ImageFolder(folder_root.root, class_list=tmp_path / "nothere.txt")


def test_unlabeled_folder_is_recursive(messy_root, folder_root):
    ds = UnlabeledFolder(messy_root.root)
    assert len(ds) == 12 and set(ds.targets) == {-1}
    assert len(build_dataset("unlabeled-folder", folder_root.root, split="val")) == 2


def test_empty_dataset_names_root(tmp_path, caplog):
    (tmp_path / "only_empty_class").mkdir()
    with pytest.raises(ValueError, match=str(tmp_path)):
        ImageFolder(tmp_path)


def test_missing_root_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*<class>/<images>"):
        ImageFolder(tmp_path / "nowhere")
