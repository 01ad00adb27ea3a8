"""docs/reproduce.md: the table is what `ccrop compare --paper` prints, and it fills 'ours'."""

import json
from pathlib import Path

import pytest

from ccrop.cli import main
from ccrop.reproduce import paper_pairs, reproduce_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "reproduce.md"
TINY = ["train.device=cpu", "data.dataset=synthetic", "data.root=null", "data.download=false",
        "data.dataset_kwargs.num_images=32", "data.batch_size=16", "data.num_workers=0",
        "data.mean=null", "data.std=null", "model.width=4", "train.epochs=1",
        "train.knn_every=0", "train.tensorboard=false", "train.progress=false",
        "method.params.proj_hidden=16", "method.params.proj_dim=8"]


def test_the_doc_holds_the_generated_table():
    table = reproduce_table()
    assert table in DOC.read_text()
    rows = [r for r in table.splitlines()[2:]]
    assert len(rows) == len(paper_pairs()) == 14  # every packaged pair has a row
    assert all("not known to us" in r for r in rows)  # no number we cannot check


def test_the_filler_places_two_tiny_finished_runs(tmp_path, capsys):
    runs = []
    for crop, warmup in (("rcrop", 1), ("ccrop", 0)):
        out = tmp_path / crop
        code = main(["pretrain", "--config", f"cifar10/simclr_{crop}.yaml", *TINY,
                     f"crop.warmup_epochs={warmup}", f"train.out_dir={out}"])
        assert code == 0
        assert json.loads((out / "command.json").read_text())["config"] == \
            f"cifar10/simclr_{crop}.yaml"
        runs.append(out)
    capsys.readouterr()
    assert main(["compare", "--paper", *map(str, runs), "--out", str(tmp_path / "t.md")]) == 0
    printed = capsys.readouterr().out
    row = next(r for r in printed.splitlines() if r.startswith("| cifar10/simclr |"))
    knn = [json.loads((r / "summary.json").read_text())["knn_top1"] for r in runs]
    assert row.endswith(f"| {knn[0]:.2f} (kNN) * | {knn[1]:.2f} (kNN) * |")
    other = next(r for r in printed.splitlines() if r.startswith("| cifar10/moco |"))
    assert other.endswith("|   |   |")
    assert (tmp_path / "t.md").read_text() == printed


def test_a_run_without_origin_is_exit_2(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text("")
    assert main(["compare", "--paper", str(tmp_path)]) == 2
    assert "command.json" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["[1]", "{not json"])
def test_a_broken_command_file_is_exit_2_naming_it(tmp_path, capsys, text):
    (tmp_path / "command.json").write_text(text)
    assert main(["compare", "--paper", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "command.json" in err[0]
