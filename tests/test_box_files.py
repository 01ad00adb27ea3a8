"""Tests of box file import/export: round trips, path matching, COCO union, and every error."""

import json
import os
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccrop import files
from ccrop.box_files import BoxFileError, check_output_path, read_boxes, write_boxes

FULL = torch.tensor([0.0, 0.0, 1.0, 1.0])
DATA_PATHS = [f"/data/train/n0{k % 3}/img{k}.JPEG" for k in range(6)]
_HYP = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

f32 = st.floats(0.0, 1.0, width=32)
edge = st.sampled_from([0.0, 1.0])


@st.composite
def box_tensors(draw, max_n=12):
    """(N, 4) valid float32 boxes, often with 0/1 edges and subnormal or degenerate sides."""
    n = draw(st.integers(1, max_n))
    rows = []
    for _ in range(n):
        a, b, c, d = (draw(st.one_of(f32, edge)) for _ in range(4))
        rows.append([min(a, b), min(c, d), max(a, b), max(c, d)])
    return torch.tensor(rows, dtype=torch.float32)


def random_boxes(n, seed=0):
    """(n, 4) valid float32 boxes: sorted random corners."""
    corners = torch.rand(n, 2, 2, generator=torch.Generator().manual_seed(seed))  # (N, 2, xy)
    return torch.cat([corners.min(1).values, corners.max(1).values], 1)  # (N, 4)


def write_text(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_bits_equal(a, b):
    assert a.dtype == b.dtype == torch.float32
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))


# ---------------------------------------------------------------- round trips


@_HYP
@given(
    boxes=box_tensors(), suffix=st.sampled_from([".csv", ".json", ".pt"]), with_paths=st.booleans()
)
def test_round_trip_bit_identical(tmp_path, boxes, suffix, with_paths):
    n = boxes.shape[0]
    paths = [f"/d/c{i % 2}/img {i},x.png" for i in range(n)] if with_paths else None
    out = write_boxes(tmp_path / f"b{suffix}", boxes, paths)
    back, missing = read_boxes(out, n, paths)
    assert missing == 0
    assert_bits_equal(back, boxes)


@_HYP
@given(boxes=box_tensors(), data=st.data())
def test_json_round_trip_with_pixel_sizes(tmp_path, boxes, data):
    n = boxes.shape[0]
    sizes = torch.tensor(
        data.draw(
            st.lists(
                st.tuples(st.integers(1, 100_000), st.integers(1, 100_000)), min_size=n, max_size=n
            )
        )
    )
    out = write_boxes(tmp_path / "b.json", boxes, sizes=sizes)
    back, missing = read_boxes(out, n)
    assert missing == 0
    assert_bits_equal(back, boxes)
    coco = json.loads(out.read_text())
    assert [[im["height"], im["width"]] for im in coco["images"]] == sizes.tolist()


def test_json_round_trip_random_boxes_and_sizes(tmp_path):
    boxes = random_boxes(2000)
    sizes = torch.randint(1, 5000, (2000, 2), generator=torch.Generator().manual_seed(1))
    paths = [f"root/{i}.jpg" for i in range(2000)]
    out = write_boxes(tmp_path / "b.json", boxes, paths, sizes)
    assert_bits_equal(read_boxes(out, 2000, paths)[0], boxes)


@pytest.mark.parametrize("with_paths", [True, False])
def test_json_export_evaluates_with_pycocotools(tmp_path, with_paths):
    """The export is a COCO file: pycocotools loads it, and the annotations scored as
    detections against themselves give AP 1.0; reading it back gives the same boxes."""
    from pycocotools.coco import COCO  # a dev dependency
    from pycocotools.cocoeval import COCOeval

    n = 8
    # non-degenerate boxes (a zero-area box has no defined IoU)
    boxes = torch.tensor([[0.1, 0.2, 0.6, 0.9]]) + 0.04 * torch.arange(n)[:, None]  # (N, 4)
    boxes = boxes.clamp(0, 1)
    paths = [f"/data/train/c{i % 2}/img{i}.png" for i in range(n)] if with_paths else None
    sizes = torch.tensor([[32 + i, 48 - i] for i in range(n)])  # (N, 2) (h, w)
    out = write_boxes(tmp_path / "b.json", boxes, paths, sizes)

    data = json.loads(out.read_text())
    assert sorted(a["id"] for a in data["annotations"]) == list(range(1, n + 1))
    assert [im["id"] for im in data["images"]] == list(range(n))
    assert all(a["iscrowd"] == 0 and a["category_id"] == 1 for a in data["annotations"])
    names = [im["file_name"] for im in data["images"]]
    assert names == (paths if with_paths else [str(i) for i in range(n)])

    gt = COCO(str(out))
    assert sorted(gt.getImgIds()) == list(range(n)) and gt.getCatIds() == [1]
    dets = [{**a, "score": 1.0} for a in data["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    # a shifted detection set must score lower: the evaluation is not trivially 1.0
    moved = [{**d, "bbox": [d["bbox"][0] + 0.5 * d["bbox"][2], *d["bbox"][1:]]} for d in dets]
    ev = COCOeval(gt, gt.loadRes(moved), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] < 0.5

    back, missing = read_boxes(out, n, paths)
    assert missing == 0
    assert_bits_equal(back, boxes)


def test_json_reads_files_of_older_writers(tmp_path):
    """Files written before annotation ids started at 1 (ids from 0, no file_name, no
    categories) still read by image id = dataset index."""
    images = [{"id": i, "width": 10, "height": 20} for i in range(3)]
    anns = [{"id": i, "image_id": i, "bbox": [1, 2, 4, 8]} for i in range(3)]
    path = write_text(tmp_path, "old.json", coco(images, anns))
    boxes, missing = read_boxes(path, 3)
    assert missing == 0
    expected = torch.tensor([0.1, 0.1, 0.5, 0.5], dtype=torch.float32).repeat(3, 1)
    assert torch.equal(boxes, expected)


def test_csv_writer_layout(tmp_path):
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    out = write_boxes(tmp_path / "b.csv", boxes, ["a/x.jpg"])
    header, row = out.read_text().splitlines()
    assert header == "index,path,x0,y0,x1,y1"
    assert row.split(",")[2] == repr(float(boxes[0, 0]))
    assert write_boxes(tmp_path / "c.csv", boxes).read_text().startswith("index,x0,")


def test_pt_reordered_by_path(tmp_path):
    boxes = random_boxes(6)
    perm = [3, 0, 5, 1, 4, 2]
    torch.save({"boxes": boxes[perm], "paths": [DATA_PATHS[i] for i in perm]}, tmp_path / "b.pt")
    assert_bits_equal(read_boxes(tmp_path / "b.pt", 6, DATA_PATHS)[0], boxes)
    torch.save(boxes, tmp_path / "plain.pt")  # a bare tensor, rows by index
    assert_bits_equal(read_boxes(tmp_path / "plain.pt", 6)[0], boxes)


# ---------------------------------------------------------------- CSV input


def test_csv_by_index_missing_get_full_box(tmp_path):
    path = write_text(tmp_path, "b.csv", "index,x0,y0,x1,y1\n\n2,0.1,0.2,0.5,0.6\n\n0,0,0,0,0\n")
    boxes, missing = read_boxes(path, 4)
    assert missing == 2
    assert torch.equal(boxes[2], torch.tensor([0.1, 0.2, 0.5, 0.6]))
    assert torch.equal(boxes[0], torch.zeros(4))  # degenerate box is kept
    assert torch.equal(boxes[1], FULL) and torch.equal(boxes[3], FULL)


def test_csv_by_path_exact_and_suffix_any_column_order(tmp_path):
    text = (
        "y1, x1 ,score,path,y0,x0\n"
        f"0.9,0.8,0.99,{DATA_PATHS[4]},0.3,0.2\n"
        "0.7,0.6,0.5,n02/img5.JPEG,0.1,0.0\n"
        "1,1,0,train/n00/img0.JPEG,0,0.5\n"
    )
    boxes, missing = read_boxes(write_text(tmp_path, "b.csv", text), 6, DATA_PATHS)
    assert missing == 3
    assert torch.equal(boxes[4], torch.tensor([0.2, 0.3, 0.8, 0.9]))
    assert torch.equal(boxes[5], torch.tensor([0.0, 0.1, 0.6, 0.7]))
    assert torch.equal(boxes[0], torch.tensor([0.5, 0.0, 1.0, 1.0]))
    assert torch.equal(boxes[1], FULL)


def test_csv_index_and_path_must_agree(tmp_path):
    ok = write_text(
        tmp_path, "ok.csv", "index,path,x0,y0,x1,y1\n1,n01/img1.JPEG,0,0,1,1\n2,,0,0,.5,.5\n"
    )
    assert read_boxes(ok, 6, DATA_PATHS)[1] == 4
    bad = write_text(tmp_path, "bad.csv", "index,path,x0,y0,x1,y1\n2,n01/img1.JPEG,0,0,1,1\n")
    with pytest.raises(BoxFileError, match=r"bad\.csv line 2: .*image 1 .*index says 2"):
        read_boxes(bad, 6, DATA_PATHS)
    assert read_boxes(bad, 6)[1] == 5  # array dataset: path column ignored, index used


def test_suffix_match_respects_component_boundary(tmp_path):
    path = write_text(tmp_path, "b.csv", "path,x0,y0,x1,y1\n0/img0.JPEG,0,0,1,1\n")
    with pytest.raises(BoxFileError, match=r"b\.csv line 2: path '0/img0\.JPEG' is not an image"):
        read_boxes(path, 6, DATA_PATHS)


# ---------------------------------------------------------------- bad input


CSV_ERRORS = [
    ("index,x0,y0,x1,y1\n0,0,0,1,1\n1,0,0,1\n", None, "line 3", r"expected 5 values .*got 4"),
    (
        "index,x0,y0,x1,y1\n\n\n\n\n\n\n\n1,nan,0,1,1\n",
        None,
        "line 9",
        "value 'nan' is not a finite number",
    ),
    ("index,x0,y0,x1,y1\n1,0,0,1,1.5\n", None, "line 2", r"y1=1\.5 is outside \[0, 1\]"),
    (
        "index,x0,y0,x1,y1\n0,0,0,1,1\n1,0,0,1,1\n\n0,0,0,1,1\n\n\n0.5,0,.2,1\n",
        None,
        "line 5",
        r"image 0 appears twice \(lines 2 and 5\)",
    ),
    (
        "\n\n\n\n\n\nindex,x0,y0,x1,y1\n1,0.5,0,0.2,1\n",
        None,
        "line 8",
        r"x1=0\.2 is less than x0=0\.5",
    ),
    ("index,x0,y0,x1,y1\n1200,0,0,1,1\n", None, "line 2", "index 1200 is out of range for 6"),
    ("index,x0,y0,x1,y1\n-1,0,0,1,1\n", None, "line 2", "index -1 is out of range"),
    ("index,x0,y0,x1,y1\nfive,0,0,1,1\n", None, "line 2", "index 'five' is not a whole number"),
    ("index,x0,y0,x1,y1\n1,0,zero,1,1\n", None, "line 2", "'zero' is not a number"),
    (
        "path,x0,y0,x1,y1\nnope/a.JPEG,0,0,1,1\n",
        DATA_PATHS,
        "line 2",
        "'nope/a.JPEG' is not an image of this dataset",
    ),
    (
        "path,x0,y0,x1,y1\nn01/img1.JPEG,0,0,1,1\nimg5.JPEG,0,0,1,1\n",
        None,
        "line 1",
        "no image paths",
    ),
    (
        "path,x0,y0,x1,y1\n" + "\n" * 4 + "img1.JPEG,0,0,1,1\n",
        [*DATA_PATHS, "/other/img1.JPEG"],
        "line 6",
        r"ambiguous.*2 image paths",
    ),
    ("id,x0,y0,x1,y1\n1,0,0,1,1\n", None, "line 1", "neither an index nor a path"),
    ("index,x0,y0,x_1,y1\n1,0,0,1,1\n", None, "line 1", "lacks column.* x1"),
    ("", None, "", "empty"),
    ("\n  \n", None, "", "empty"),
]


@pytest.mark.parametrize("text,paths,line,message", CSV_ERRORS)
def test_csv_errors_name_file_and_line(tmp_path, text, paths, line, message):
    path = write_text(tmp_path, "boxes.csv", text)
    n = len(paths) if paths else 6
    with pytest.raises(BoxFileError, match=message) as err:
        read_boxes(path, n, paths)
    assert str(path) in str(err.value)
    assert f"boxes.csv {line}:" in str(err.value) if line else True


@pytest.mark.parametrize(
    "rows,line,message",
    [  # the first bad row is named, whether its fault is in the box or elsewhere
        (["1,0.5,0,0.2,1", "2,0,0", "five,0,0,1,1"], "line 2", r"x1=0\.2 is less than x0=0\.5"),
        (["1,0,0,1,1", "1,0,0,1,1", "2,0.5,0,0.2,1"], "line 3", r"image 1 appears twice"),
        (["1,0,0,1,1", "2,0,0,1,nan", "1,0,0,1,1"], "line 3", "value 'nan' is not a finite"),
        (["1,0,0,1,1", "2,0,0,1", "3,0,0,1,9"], "line 3", "expected 5 values"),
    ],
)
def test_csv_error_names_the_first_bad_row(tmp_path, rows, line, message):
    path = write_text(tmp_path, "b.csv", "\n".join(["index,x0,y0,x1,y1", *rows]) + "\n")
    with pytest.raises(BoxFileError, match=f"b\\.csv {line}: {message}"):
        read_boxes(path, 6)


def test_json_error_names_the_first_bad_annotation(tmp_path):
    anns = [{"image_id": 0, "bbox": [0, 0, 1, 1]}, {"image_id": 0, "bbox": [0, 0, 200, 1]},
            {"image_id": 0, "bbox": [0, 0, -1, 1]}]
    path = write_text(tmp_path, "b.json", coco([IMG], anns))
    with pytest.raises(BoxFileError, match=r"annotations\[1\]: bbox \[0, 0, 200, 1\]"):
        read_boxes(path, 6)
    path = write_text(tmp_path, "b.json", coco([IMG], anns[:1] + anns[2:] + anns[1:2]))
    with pytest.raises(BoxFileError, match=r"annotations\[1\]: bbox .*negative"):
        read_boxes(path, 6)


def coco(images, annotations):
    return json.dumps({"images": images, "annotations": annotations})


def test_coco_union_box_and_pixel_normalisation(tmp_path):
    images = [
        {"id": 7, "file_name": "n01/img1.JPEG", "width": 200, "height": 100},
        {"id": 8, "width": 10, "height": 10},
    ]  # no file_name: id 8 is not an index
    anns = [{"image_id": 7, "bbox": [20, 10, 60, 30]}, {"image_id": 7, "bbox": [100, 50, 80, 40]}]
    path = write_text(tmp_path, "b.json", coco(images[:1], anns))
    boxes, missing = read_boxes(path, 6, DATA_PATHS)
    assert missing == 5
    union = torch.tensor([20 / 200, 10 / 100, 180 / 200, 90 / 100], dtype=torch.float32)
    assert torch.equal(boxes[1], union)
    # without paths the id is the dataset index
    path = write_text(
        tmp_path,
        "c.json",
        coco([{"id": 2, "width": 4, "height": 8}], [{"image_id": 2, "bbox": [1, 2, 2, 6]}]),
    )
    assert torch.equal(read_boxes(path, 3)[0][2], torch.tensor([0.25, 0.25, 0.75, 1.0]))


def test_coco_clamps_tiny_overshoot(tmp_path):
    ann = {"image_id": 0, "bbox": [-1e-5, 0, 100.00005, 100]}  # 1e-7 and 4e-7 over the edges
    path = write_text(tmp_path, "b.json", coco([{"id": 0, "width": 100, "height": 100}], [ann]))
    assert torch.equal(read_boxes(path, 1)[0][0], FULL)


IMG = {"id": 0, "width": 100, "height": 50}
JSON_ERRORS = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a COCO-style object"),
    (json.dumps({"images": [IMG]}), "no 'annotations' list"),
    (
        coco([IMG], [{"image_id": 0, "bbox": [1, 2, 3]}]),
        r"annotations\[0\]: expected 'bbox'",
    ),
    (
        coco(
            [IMG], [{"image_id": 0, "bbox": [0, 0, 1, 1]}, {"image_id": 0, "bbox": [50, 0, 60, 1]}]
        ),
        r"annotations\[1\]: bbox .* 100x50 image: x1=1\.1 is outside \[0, 1\]",
    ),
    (coco([IMG], [{"image_id": 0, "bbox": [0, 0, -1, 1]}]), r"annotations\[0\].*negative"),
    (coco([IMG], [{"image_id": 3, "bbox": [0, 0, 1, 1]}]), r"annotations\[0\]: image_id 3 is not"),
    (coco([{"id": 0, "width": 100}], []), r"images\[0\]: expected positive 'width'"),
    (coco([IMG, {**IMG, "id": 1200}], []), r"images\[1\]: id 1200 is out of range"),
    (coco([IMG, IMG], []), r"images\[1\]: image id appears twice"),
    (coco([{**IMG, "file_name": "zzz.jpg"}], []), r"images\[0\].*'zzz.jpg' is not an image"),
]


@pytest.mark.parametrize("text,message", JSON_ERRORS)
def test_json_errors_name_file_and_entry(tmp_path, text, message):
    path = write_text(tmp_path, "boxes.json", text)
    with pytest.raises(BoxFileError, match=message) as err:
        read_boxes(path, 6, DATA_PATHS)
    assert str(path) in str(err.value)


def test_pt_errors(tmp_path):
    def check(obj, message, paths=None, name="boxes.pt"):
        if isinstance(obj, str):
            (tmp_path / name).write_text(obj)
        else:
            torch.save(obj, tmp_path / name)
        with pytest.raises(BoxFileError, match=message) as err:
            read_boxes(tmp_path / name, 6, paths)
        assert str(tmp_path / name) in str(err.value)
        assert "weights_only" not in str(err.value)

    good = FULL.repeat(6, 1)
    check(torch.zeros(6, 3), r"\(N, 4\) float tensor.*; got \(6, 3\)")
    check(torch.zeros(5, 4), "holds 5 boxes, but the dataset has 6 images")
    check({"boxes": good[:2]}, "holds 2 boxes")
    check({"boxes": torch.ones(6, 4, dtype=torch.long)}, "float tensor")
    check([1, 2], "expected an \\(N, 4\\)")
    check({"box": good}, "no|keys \\['box'\\]")
    bad = good.clone()
    bad[4, 0] = 0.7
    bad[4, 2] = 0.3
    check(bad, r"boxes\.pt row 4: x1=0\.3 is less than x0=0\.7")
    bad[4] = float("nan")
    check(bad, r"row 4: value 'nan' is not a finite")
    check("hello, I am text\n", "cannot load it as a box file")
    check(
        {"boxes": good, "paths": ["/x/unknown.png"] + DATA_PATHS[1:]},
        r"row 0: path .*not an",
        DATA_PATHS,
    )
    check(
        {"boxes": good, "paths": DATA_PATHS[:5] + DATA_PATHS[:1]},
        r"row 5: path .* is image 0, as is row 0",
        DATA_PATHS,
    )


def test_pt_refuses_pickled_objects(tmp_path):
    torch.save({"boxes": FULL.repeat(2, 1), "extra": re.compile("x")}, tmp_path / "b.pt")
    with pytest.raises(BoxFileError, match="cannot load") as err:
        read_boxes(tmp_path / "b.pt", 2)
    assert "weights_only" not in str(err.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(BoxFileError, match=r"unknown suffix '\.txt'.*\.csv, \.json, \.pt"):
        read_boxes(write_text(tmp_path, "b.txt", "index,x0,y0,x1,y1\n"), 3)
    with pytest.raises(BoxFileError, match=r"gone\.csv: file not found"):
        read_boxes(tmp_path / "gone.csv", 3)
    with pytest.raises(BoxFileError, match="not UTF-8"):
        (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81" * 10)
        read_boxes(tmp_path / "bin.csv", 3)


# ---------------------------------------------------------------- output path and atomic write


def test_check_output_path(tmp_path):
    afile = write_text(tmp_path, "afile", "x")
    with pytest.raises(BoxFileError, match="afile is a file, not a folder"):
        check_output_path(afile / "boxes.csv")
    with pytest.raises(BoxFileError, match="afile is a file, not a folder"):
        check_output_path(afile / "deeper" / "boxes.csv")
    assert check_output_path(tmp_path / "nowhere" / "boxes.json")  # missing folders are made
    write_boxes(tmp_path / "nowhere" / "boxes.json", torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    assert (tmp_path / "nowhere" / "boxes.json").is_file()
    with pytest.raises(BoxFileError, match=r"unknown suffix '\.npy'"):
        check_output_path(tmp_path / "boxes.npy")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(BoxFileError, match="is a folder"):
        check_output_path(tmp_path / "dir.pt")
    assert check_output_path(tmp_path / "boxes.PT") == tmp_path / "boxes.PT"
    with pytest.raises(BoxFileError, match="is a file, not a folder"):
        write_boxes(afile / "boxes.csv", FULL[None])


@pytest.mark.parametrize("suffix", [".csv", ".json", ".pt"])
def test_atomic_write_replaces_whole_file(tmp_path, suffix):
    path = tmp_path / f"boxes{suffix}"
    write_boxes(path, random_boxes(300), [f"p{i}" for i in range(300)])
    small = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    write_boxes(path, small)
    assert_bits_equal(read_boxes(path, 1)[0], small)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temp file left behind


def test_nested_writers_of_one_path_do_not_share_a_temp_file(tmp_path):
    path = tmp_path / "boxes.csv"

    def outer(fh):
        fh.write(b"outer")
        files.atomic_write(path, lambda inner: inner.write(b"inner"))  # e.g. another thread

    files.atomic_write(path, outer)
    assert path.read_bytes() == b"outer"  # the last rename wins; neither write was torn
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "boxes.csv"
    old = write_boxes(path, FULL[None]).read_bytes()
    with pytest.raises(BoxFileError):
        write_boxes(path, torch.tensor([[0.5, 0.0, 0.2, 1.0]]))  # invalid: nothing written
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == [path.name]

    def dies_half_way(fd):
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    monkeypatch.setattr(files.os, "fsync", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        write_boxes(path, random_boxes(5))
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == [path.name]
