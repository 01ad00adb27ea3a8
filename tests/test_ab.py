"""Tests of ``ccrop ab``: paired statistics, arm parsing, an end-to-end A/B, ``ccrop compare``."""

import json
import math
import shutil

import pytest

from ccrop.ab import BUILTIN_ARMS, collect_groups, paired_stats, parse_arms, parse_seeds, summarise
from ccrop.cli import main
from ccrop.config import ConfigError, load_config
from ccrop.runs import knn_curve, load_run, read_events, run_seed

# crop.full_box_guard=null: with one epoch no box update happens, so ContrastiveCrop samples from
# the full box; without the guard that is the paper's Beta law, not RandomResizedCrop, and the
# two arms really differ (with the guard they would train identically and the test be blind)
TINY = ["train.device=cpu", "data.dataset=synthetic", "data.dataset_kwargs.num_images=48",
        "data.batch_size=16", "data.num_workers=0", "model.width=4", "train.epochs=1",
        "crop.warmup_epochs=0", "crop.loc_interval=1", "train.tensorboard=false",
        "train.progress=false", "method.params.proj_hidden=16", "method.params.proj_dim=8",
        "crop.full_box_guard=null"]


# ----------------------------------------------------------------------------- statistics


def test_paired_stats_matches_a_hand_computation():
    base = {0: 10.0, 1: 20.0, 2: 30.0, 7: 50.0}  # seed 7: the other arm never finished it
    other = {0: 11.0, 1: 22.0, 2: 34.0, 9: 1.0}  # seed 9: no baseline run
    p = paired_stats(base, other)
    # differences 1, 2, 4: mean 7/3; deviations -4/3, -1/3, 5/3; squares sum 42/9;
    # variance 42/9 / (3 - 1) = 7/3; sd sqrt(7/3); half width t_{0.975,2} * sd / sqrt(3)
    mean, sd, t2 = 7 / 3, math.sqrt(7 / 3), 4.302652729911275
    half = t2 * sd / math.sqrt(3)
    assert p["n"] == 3 and p["seeds"] == [0, 1, 2] and p["diffs"] == [1.0, 2.0, 4.0]
    assert p["mean"] == pytest.approx(mean) and p["std"] == pytest.approx(sd)
    assert p["t"] == pytest.approx(t2, abs=1e-6)
    assert p["ci_low"] == pytest.approx(mean - half, abs=1e-5)  # 7/3 - 3.7946 = -1.4613
    assert p["ci_high"] == pytest.approx(mean + half, abs=1e-5)  # 6.1280
    assert p["ci_low"] == pytest.approx(-1.46127, abs=1e-4)
    assert p["wins"] == 3


def test_paired_stats_wins_ties_and_too_few_pairs():
    p = paired_stats({0: 5.0, 1: 5.0, 2: 5.0}, {0: 5.0, 1: 4.0, 2: 7.0})  # diffs 0, -1, +2
    assert p["wins"] == 1 and p["mean"] == pytest.approx(1 / 3)
    one = paired_stats({3: 1.0}, {3: 2.5})
    assert one["n"] == 1 and one["mean"] == 1.5 and one["wins"] == 1
    assert one["std"] is None and one["ci_low"] is None and one["ci_high"] is None
    none = paired_stats({0: 1.0}, {1: 1.0})
    assert none["n"] == 0 and none["mean"] is None and none["wins"] == 0


def test_summarise_uses_the_sample_std():
    s = summarise([2.0, 4.0, 9.0])  # mean 5; deviations -3, -1, 4; (9 + 1 + 16) / 2 = 13
    assert s["n"] == 3 and s["mean"] == pytest.approx(5.0) and s["std"] == pytest.approx(13**0.5)
    assert summarise([3.5]) == {"n": 1, "mean": 3.5, "std": 0.0}
    assert summarise([])["mean"] is None


@pytest.mark.parametrize("n", [2, 3, 5, 8, 31, 200])
def test_paired_interval_is_scipys_student_t_interval(n):
    from scipy import stats

    base = {s: float(s % 3) for s in range(n)}
    other = {s: base[s] + 0.5 + 0.37 * ((s * 7) % 5) for s in range(n)}
    d = [other[s] - base[s] for s in range(n)]
    low, high = stats.t.interval(0.95, n - 1, loc=sum(d) / n, scale=stats.sem(d))
    p = paired_stats(base, other)
    assert p["t"] == stats.t.ppf(0.975, n - 1)
    assert p["ci_low"] == pytest.approx(low, rel=1e-12, abs=1e-12)
    assert p["ci_high"] == pytest.approx(high, rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------- arms and seeds


def test_builtin_arms_parse_in_order():
    arms = parse_arms("rcrop,ccrop,simccrop,ccrop-paper")
    assert [a.name for a in arms] == ["rcrop", "ccrop", "simccrop", "ccrop-paper"]
    assert arms[0].overrides == ("crop.kind=rcrop",)
    paper = load_config(None, list(arms[3].overrides)).crop
    assert (paper.kind, paper.threshold_mode, paper.threshold, paper.alpha) == \
        ("ccrop", "fixed", 0.1, 0.1)
    assert paper.full_box_guard is None and paper.heatmap_align == "paper"


def test_custom_arm_keeps_list_values():
    arms = parse_arms("rcrop,a01:crop.alpha=0.1,crop.scale=[0.3,1.0],crop.ratio=[0.5,2],ccrop")
    assert [a.name for a in arms] == ["rcrop", "a01", "ccrop"]
    assert arms[1].overrides == ("crop.alpha=0.1", "crop.scale=[0.3,1.0]",
                                 "crop.ratio=[0.5,2]")
    crop = load_config(None, list(arms[1].overrides)).crop
    assert crop.alpha == 0.1 and crop.scale == [0.3, 1.0] and crop.ratio == [0.5, 2.0]


@pytest.mark.parametrize("spec,arms", [
    ("rcrop,ccrop,oracle", {"rcrop": BUILTIN_ARMS["rcrop"], "ccrop": BUILTIN_ARMS["ccrop"],
                            "oracle": BUILTIN_ARMS["oracle"]}),
    # benchmarks/results/ab-2026-12-04/PLAN.md: a custom arm between built-ins
    ("rcrop,ccrop,oracle,ccrop-old:crop.heatmap=sum,crop.center_prior=0,crop.min_confidence=0,"
     "saliency-warmup,saliency",
     {"rcrop": BUILTIN_ARMS["rcrop"], "ccrop": BUILTIN_ARMS["ccrop"],
      "oracle": BUILTIN_ARMS["oracle"],
      "ccrop-old": ("crop.heatmap=sum", "crop.center_prior=0", "crop.min_confidence=0"),
      "saliency-warmup": BUILTIN_ARMS["saliency-warmup"], "saliency": BUILTIN_ARMS["saliency"]}),
    ("ccrop,official:crop.placement=official",  # README.md
     {"ccrop": BUILTIN_ARMS["ccrop"], "official": ("crop.placement=official",)}),
    (" x : crop.box_source=file:/a/b.json , crop.scale=[0.2, 1.0] ",  # ':' in a value, spaces
     {"x": ("crop.box_source=file:/a/b.json", "crop.scale=[0.2, 1.0]")}),
    (["rcrop", "a:crop.alpha=0.1"], {"rcrop": BUILTIN_ARMS["rcrop"], "a": ("crop.alpha=0.1",)}),
])
def test_documented_arm_specs(spec, arms):
    got = parse_arms(spec)
    assert {a.name: a.overrides for a in got} == arms and [a.name for a in got] == list(arms)
    for a in got:
        load_config(None, list(a.overrides))  # every override is a valid config key


@pytest.mark.parametrize("spec,needle", [
    ("rcrop,rcrop", "rcrop"),
    ("rcrop,rcorp", "rcorp"),
    ("", "empty"),
    ("a/b:crop.alpha=0.1", "a/b"),
    ("rcrop,x:", "x"),
    ("rcrop,x:alpha=0.1", "alpha=0.1"),
    ("ccrop:crop.alpha=0.1", "ccrop"),
    ("crop.alpha=0.1,rcrop", "crop.alpha=0.1"),
    ("rcrop,crop.alpha=0.1", "crop.alpha=0.1"),  # overrides follow a custom arm only
    ("rcrop,,ccrop", "''"),
    ("a:crop.scale=[0.2,1.0,b", "'1.0'"),  # an unclosed bracket does not swallow the rest
    ("rcrop,ccrop,s:train.seed=3", "train.seed"),
])
def test_bad_arm_specs_name_the_problem_and_the_builtins(spec, needle):
    with pytest.raises(ConfigError) as err:
        parse_arms(spec)
    msg = str(err.value)
    assert needle in msg and all(name in msg for name in BUILTIN_ARMS)


@pytest.mark.parametrize("spec,seeds", [("3", [0, 1, 2]), ("0,1,2", [0, 1, 2]), ("7,", [7]),
                                        ("4,2", [4, 2]), (2, [0, 1])])
def test_seeds(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["0", "abc", "1,1", "-1", "", "1.5"])
def test_bad_seeds(spec):
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds(spec)


# ----------------------------------------------------------------------------- end to end


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def ab_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ab") / "ab"
    assert main(["ab", *TINY, "--arms", "rcrop,ccrop", "--seeds", "2", "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # the module-scope ab_dir trains four runs
def test_ab_writes_every_run_and_the_report(ab_dir):
    for arm in ("rcrop", "ccrop"):
        for seed in (0, 1):
            folder = ab_dir / arm / f"seed{seed}"
            assert _summary(folder)["epochs"] == 1
            tag = json.loads((folder / "ab_arm.json").read_text())
            assert tag["arm"] == arm and tag["seed"] == seed
            cfg = load_config(folder / "config.yaml")
            assert cfg.train.seed == seed and cfg.crop.kind == arm
    md = (ab_dir / "ab.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| rcrop") or ln.startswith("| ccrop")]
    assert len(rows) == 2 and rows[0].split("|")[2].strip() == "2"
    assert "wins" in rows[1] and (ab_dir / "ab_knn.png").stat().st_size > 1000
    # the arms really differ (else the pairing checks below would be blind)
    loss = {a: json.loads((ab_dir / a / "seed0" / "metrics.jsonl").read_text())["loss"]
            for a in ("rcrop", "ccrop")}
    assert loss["rcrop"] != loss["ccrop"]


@pytest.mark.slow  # the module-scope ab_dir trains four runs
def test_ab_json_pairs_the_runs_by_seed(ab_dir):
    data = json.loads((ab_dir / "ab.json").read_text())
    assert data["baseline"] == "rcrop" and [a["arm"] for a in data["arms"]] == ["rcrop", "ccrop"]
    base, other = data["arms"]
    assert base["seeds"] == [0, 1] and other["seeds"] == [0, 1] and base["vs_baseline"] is None
    knn = {(a, s): _summary(ab_dir / a / f"seed{s}")["knn_top1"]
           for a in ("rcrop", "ccrop") for s in (0, 1)}
    diffs = [knn["ccrop", s] - knn["rcrop", s] for s in (0, 1)]
    p = other["vs_baseline"]["knn_top1"]
    assert p["n"] == 2 and p["diffs"] == pytest.approx(diffs)
    assert p["mean"] == pytest.approx(sum(diffs) / 2)
    half = 12.706205 * abs(diffs[0] - diffs[1]) / math.sqrt(2) / math.sqrt(2)  # sd = |d0-d1|/√2
    assert p["ci_high"] - p["mean"] == pytest.approx(half, abs=1e-4)
    assert p["wins"] == sum(d > 0 for d in diffs)
    assert [r["knn_top1"] for r in other["runs"]] == [knn["ccrop", 0], knn["ccrop", 1]]
    assert other["knn_top1"]["mean"] == pytest.approx((knn["ccrop", 0] + knn["ccrop", 1]) / 2)


@pytest.mark.slow  # the module-scope ab_dir trains four runs
def test_rerun_skips_finished_runs_and_resumes_unfinished_ones(ab_dir, capsys):
    folders = [ab_dir / a / f"seed{s}" for s in (0, 1) for a in ("rcrop", "ccrop")]
    before = {f: (f / "summary.json").stat().st_mtime_ns for f in folders}
    ckpts = {f: sorted((f / "checkpoints").iterdir())[-1].stat().st_mtime_ns for f in folders}
    capsys.readouterr()
    assert main(["ab", *TINY, "--seeds", "2", "--out", str(ab_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("done already") == 4 and " ..." not in out
    assert {f: (f / "summary.json").stat().st_mtime_ns for f in folders} == before
    # a run killed after its last checkpoint, before summary.json: resumed, not retrained
    knn = _summary(folders[3])["knn_top1"]
    (folders[3] / "summary.json").unlink()
    assert main(["ab", *TINY, "--seeds", "2", "--out", str(ab_dir)]) == 0
    assert "[4/4] ccrop seed 1 ... (resuming)" in capsys.readouterr().out
    assert _summary(folders[3])["knn_top1"] == pytest.approx(knn)
    assert {f: sorted((f / "checkpoints").iterdir())[-1].stat().st_mtime_ns
            for f in folders} == ckpts


@pytest.mark.slow  # the module-scope ab_dir trains four runs
def test_changed_arm_settings_are_refused(ab_dir, capsys):
    before = (ab_dir / "ab.md").read_text()
    assert main(["ab", *TINY, "crop.alpha=0.3", "--seeds", "2", "--out", str(ab_dir)]) == 2
    err = capsys.readouterr().err
    assert "ab_arm.json" in err and "other settings" in err
    assert (ab_dir / "ab.md").read_text() == before


@pytest.mark.parametrize("arms,needle", [
    ("rcrop,nope", "nope"),
    ("rcrop,bad:crop.alphaa=0.1", "crop.alphaa"),
    ("rcrop,bad:crop.alpha=0", "crop.alpha"),
])
def test_bad_arm_exits_2_before_any_folder(tmp_path, capsys, arms, needle):
    out = tmp_path / "ab"
    assert main(["ab", *TINY, "--arms", arms, "--seeds", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ccrop: error:") and err.count("\n") == 1 and needle in err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.slow  # the module-scope ab_dir trains four runs
def test_compare_groups_the_ab_folder_by_arm(ab_dir, tmp_path, capsys):
    capsys.readouterr()
    assert main(["compare", str(ab_dir), "--out", str(tmp_path / "bands.png")]) == 0
    out = capsys.readouterr().out
    assert (ab_dir / "ab.md").read_text() in out  # the same table as `ccrop ab`
    assert (tmp_path / "bands.png").stat().st_size > 1000
    # seed folders given one by one, the baseline (first group) now ccrop; a lone run folder
    lone = tmp_path / "lone"
    shutil.copytree(ab_dir / "rcrop" / "seed1", lone)
    (lone / "ab_arm.json").unlink()
    groups = collect_groups([ab_dir / "ccrop" / "seed0", ab_dir / "rcrop" / "seed1",
                             ab_dir / "ccrop" / "seed1", lone])
    assert list(groups) == ["ccrop", "rcrop", str(lone)]
    assert [f.name for f in groups["ccrop"]] == ["seed0", "seed1"]
    assert main(["compare", str(ab_dir / "ccrop"), str(ab_dir / "rcrop")]) == 0
    rows = [ln.split("|")[1].strip() for ln in capsys.readouterr().out.splitlines()
            if ln.startswith("| ") and "---" not in ln][1:]
    assert rows == ["ccrop", "rcrop"]


def test_run_reader_picks_epoch_events_skips_a_torn_line_and_reads_the_seed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"event": "epoch", "epoch": 1, "knn_top1": 10.0},
             {"event": "box_update", "epoch": 1, "mean_area": 0.5, "knn_top1": 99.0},
             {"event": "epoch", "epoch": 2, "loss": 1.0},  # no monitor this epoch
             {"event": "epoch", "epoch": 3, "knn_top1": 30.0}]
    torn = json.dumps({"event": "epoch", "epoch": 4, "knn_top1": 40.0})[:20]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + torn)
    (run / "summary.json").write_text(json.dumps(
        {"epochs": 4, "knn_top1": 45.0, "knn_k": 200, "time": {"median_epoch_s": 2.0},
         "box_updates": [1]}))
    (run / "config.yaml").write_text("train:\n  seed: 7\n")
    assert [r["epoch"] for r in read_events(run)] == [1, 2, 3]
    assert [r["mean_area"] for r in read_events(run, "box_update")] == [0.5]
    assert knn_curve(run) == [[1, 10.0], [3, 30.0]]
    rec = load_run(run)
    assert rec["curve"] == [[1, 10.0], [3, 30.0], [4, 45.0]]  # the final value of summary.json
    assert rec["seed"] == 7 and rec["epochs"] == 4 and rec["box_updates"] == 1
    assert rec["knn_k"] == 200.0 and rec["linear_fast"] is None and rec["overrides"] is None
    (run / "ab_arm.json").write_text(json.dumps({"arm": "x", "seed": 3, "overrides": ["a.b=1"]}))
    assert run_seed(run, json.loads((run / "ab_arm.json").read_text())) == 3
    assert load_run(run)["seed"] == 3 and load_run(run)["overrides"] == ["a.b=1"]
    (run / "ab_arm.json").unlink()
    (run / "config.yaml").unlink()
    assert load_run(run)["seed"] is None  # no ab_arm.json, no config.yaml: cannot be paired


@pytest.mark.parametrize("content,needle", [
    (None, "summary.json"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"knn_top1": "high"}', "knn_top1"),
])
def test_compare_bad_input_exits_2_naming_file_and_key(tmp_path, capsys, content, needle):
    run = tmp_path / "broken_run"
    run.mkdir()
    if content is not None:
        (run / "summary.json").write_text(content)
    assert main(["compare", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ccrop: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert needle in err and str(run / "summary.json") in err


@pytest.mark.slow  # trains and probes a run
def test_linear_fast_column_from_the_run_and_from_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "ab"
    args = ["ab", *TINY, "--arms", "rcrop", "--seeds", "0,", "--out", str(out), "--linear-fast"]
    assert main(args) == 0
    probe = out / "rcrop" / "seed0" / "linear_fast.json"
    top1 = json.loads(probe.read_text())["top1"]
    assert "linear-fast (%)" in (out / "ab.md").read_text()
    assert json.loads((out / "ab.json").read_text())["arms"][0]["linear_fast"]["mean"] == top1
    probe.unlink()  # a finished run without its probe: probed from the final checkpoint
    assert main(args) == 0
    assert json.loads(probe.read_text())["top1"] == pytest.approx(top1, abs=1e-6)
    assert "done already" in capsys.readouterr().out
