"""crop.box_source (heatmap | saliency | oracle | file:PATH), crop.warmup_boxes, and
`ccrop boxes --out` export/import."""

import json

import pytest
import torch
from PIL import Image

from ccrop.box_files import read_boxes
from ccrop.boxes import box_iou
from ccrop.build import build_run
from ccrop.checkpoint import latest_valid_checkpoint
from ccrop.cli import main
from ccrop.config import load_config
from ccrop.data import build_dataset
from ccrop.engine import fit

TINY = ["train.device=cpu", "data.dataset=synthetic", "data.dataset_kwargs.num_images=48",
        "data.batch_size=16", "data.num_workers=0", "model.width=4", "train.epochs=2",
        "crop.warmup_epochs=1", "crop.loc_interval=1", "train.knn_every=0",
        "train.tensorboard=false", "train.progress=false", "method.params.proj_hidden=16",
        "method.params.proj_dim=8", "crop.loc_batch_size=32"]


def _truth() -> torch.Tensor:
    return build_dataset("synthetic", None, "train", num_images=48).gt_boxes


def test_oracle_writes_the_true_boxes_before_the_first_epoch(tmp_path):
    run = build_run(load_config(None, TINY + ["crop.box_source=oracle",
                                              f"train.out_dir={tmp_path}"]))
    summary = fit(run)
    assert summary["box_updates"] == [0]  # once, before training; no scheduled re-writes
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    updates = [r for r in lines if r["event"] == "box_update"]
    assert [(r["epoch"], r["source"]) for r in updates] == [(0, "oracle")]
    assert torch.equal(run.store.boxes, _truth())
    assert summary["box_iou_gt"] == pytest.approx(1.0)
    _, state = latest_valid_checkpoint(tmp_path)
    assert torch.equal(state["boxes"]["boxes"], _truth())  # the resumable state holds them


def test_oracle_on_a_dataset_without_true_boxes_is_exit_2_and_leaves_no_folder(tmp_path,
                                                                                capsys):
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 10), (40 * i, 90, 20)).save(root / "train" / c / f"{i}.png")
    out = tmp_path / "run"
    code = main(["pretrain", "data.dataset=imagefolder", f"data.root={root}",
                 "data.image_size=8", "data.batch_size=2", "crop.box_source=oracle",
                 f"train.out_dir={out}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "crop.box_source=oracle" in err[0] and "imagefolder" in err[0]
    assert not out.exists()


def test_box_source_must_name_a_known_source():
    with pytest.raises(ValueError, match="crop.box_source"):
        load_config(None, ["crop.box_source=detector"])
    with pytest.raises(ValueError, match="crop.box_source"):
        load_config(None, ["crop.box_source=file:"])


@pytest.mark.slow  # trains
def test_saliency_boxes_for_the_warmup_then_the_encoder(tmp_path):
    run = build_run(load_config(None, TINY + ["crop.warmup_boxes=saliency",
                                              f"train.out_dir={tmp_path}"]))
    summary = fit(run)
    assert summary["box_updates"] == [0, 1]  # saliency before epoch 0, the encoder after 1
    sources = [h["source"] for h in run.history if h.get("event") == "box_update"]
    assert sources == ["saliency", "heatmap"]
    first = run.history[0]
    assert first["iou_gt"] > 0.6  # synthetic objects are salient (full image: 0.3)


def test_saliency_box_source_keeps_its_boxes_for_the_whole_run(tmp_path):
    run = build_run(load_config(None, TINY + ["crop.box_source=saliency",
                                              f"train.out_dir={tmp_path}"]))
    summary = fit(run)
    assert summary["box_updates"] == [0]
    assert summary["box_iou_gt"] > 0.6  # measured 0.9 on the synthetic val split


def test_a_schedule_without_updates_warns(tmp_path):
    from ccrop.engine import NoBoxUpdateWarning

    run = build_run(load_config(None, TINY + ["train.epochs=1", f"train.out_dir={tmp_path}"]))
    with pytest.warns(NoBoxUpdateWarning, match="schedule no box update"):
        fit(run)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["pretrain", *TINY, f"train.out_dir={out}"]) == 0
    return out / "checkpoints" / "ckpt-epoch00002.pt"


@pytest.mark.parametrize("suffix", [".csv", ".json", ".pt"])
@pytest.mark.slow  # the module-scope checkpoint run trains
def test_export_then_train_from_the_file_gives_the_same_boxes(ckpt, tmp_path, suffix, capsys):
    path = tmp_path / f"boxes{suffix}"
    assert main(["boxes", "--checkpoint", str(ckpt), "--out", str(path)]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["out"] == str(path) and stats["images"] == 48
    exported, missing = read_boxes(path, 48)
    assert missing == 0
    # the exported boxes are the checkpoint encoder's boxes: recompute them in-process
    assert main(["boxes", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ref.pt")]) == 0
    ref = torch.load(tmp_path / "ref.pt", weights_only=True)["boxes"]
    assert torch.equal(exported, ref)
    assert not torch.equal(exported, torch.tensor([[0.0, 0, 1, 1]]).expand(48, 4))
    # one epoch, no warm-up: no update is scheduled, the file's boxes are used all the same
    run = build_run(load_config(None, TINY + [f"crop.box_source=file:{path}", "train.epochs=1",
                                              "crop.warmup_epochs=0",
                                              f"train.out_dir={tmp_path / 'train'}"]))
    summary = fit(run)
    assert torch.equal(run.store.boxes, ref)
    assert summary["box_iou_gt"] == pytest.approx(float(box_iou(ref, _truth()).mean()))


@pytest.mark.slow  # the module-scope checkpoint run trains
def test_boxes_out_is_checked_before_the_pass(ckpt, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    import ccrop.localize

    monkeypatch.setattr(ccrop.localize, "update_boxes",
                        lambda *a, **k: pytest.fail("the box pass ran"))
    for bad, word in ((afile / "boxes.pt", "is a file, not a folder"),
                      (tmp_path / "boxes.txt", ".txt")):
        assert main(["boxes", "--checkpoint", str(ckpt), "--out", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0]


@pytest.mark.parametrize("row,word", [
    ("3,0.1,0.2,0.5", "expected 5 values"),
    ("3,0.1,nan,0.5,0.6", "not a finite number"),
    ("3,0.5,0.2,0.1,0.6", "less than x0"),
    ("99,0.1,0.2,0.5,0.6", "out of range"),
])
def test_a_bad_box_file_row_is_exit_2_naming_the_row(tmp_path, capsys, row, word):
    path = tmp_path / "boxes.csv"
    path.write_text("index,x0,y0,x1,y1\n0,0.1,0.1,0.9,0.9\n" + row + "\n")
    out = tmp_path / "run"
    assert main(["pretrain", *TINY, f"crop.box_source=file:{path}",
                 f"train.out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 3" in err[0] and word in err[0] and "boxes.csv" in err[0]
    assert not out.exists()


def test_a_partial_box_file_warns_and_fills_the_full_image(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("index,x0,y0,x1,y1\n5,0.25,0.5,0.75,1.0\n")
    with pytest.warns(UserWarning, match="no box for 47 of 48"):
        run = build_run(load_config(None, TINY + [f"crop.box_source=file:{path}",
                                                  f"train.out_dir={tmp_path / 'r'}"]))
    fit(run)
    assert run.store[5].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert run.store[6].tolist() == [0.0, 0.0, 1.0, 1.0]
