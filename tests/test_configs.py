"""Tests of the shipped YAML configs: they load, match the official settings and stay consistent.

The official values are written once, in the tables below (per dataset family, per method, per
dataset). Each test checks every file against a table in one loop, collects every mismatch as
``file: key = got, expected want`` and asserts that the list is empty, so one failure names every
bad file and key at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from ccrop.cli import DEMO_OVERRIDES
from ccrop.config import Config, ConfigError, load_config, resolve_config_path
from ccrop.crop import CropPlan
from ccrop.methods import build_method, method_hparams
from ccrop.models import build_backbone
from ccrop.schedule import box_update_epochs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ALL_FILES = sorted(CONFIG_DIR.rglob("*.yaml"))
LEAF_FILES = [p for p in ALL_FILES if not p.name.startswith("_")]
CPU_SETS = ("synthetic", "cluttered", "icons")  # laptop-size runs, not paper settings
PAPER_FILES = [p for p in LEAF_FILES if p.parent.name not in CPU_SETS]
SYNTHETIC_FILES = [p for p in LEAF_FILES if p.parent.name == "synthetic"]
BASELINE_KINDS = ("rcrop", "simccrop")  # the same setting as the ccrop sibling, other crops
BASELINE_FILES = [p for p in LEAF_FILES if p.stem.split("_")[-1] in BASELINE_KINDS]


# ----------------------------------------------------------------------------- official values
# Peng et al., CVPR 2022, and the official repository's configs.

SMALL_SETS = ("cifar10", "cifar100", "stl10", "tiny-imagenet")
IMAGENET_SETS = ("imagenet1k", "imagenet200")
FAMILY = {**dict.fromkeys(SMALL_SETS, "small"), **dict.fromkeys(IMAGENET_SETS, "imagenet")}

#: Backbone, data, optimizer and schedule of each dataset family.
OFFICIAL = {
    "small": {"model.arch": "resnet18", "model.stem": "cifar", "model.width": 64,
              "data.recipe": "cifar", "data.batch_size": 512, "train.epochs": 500,
              "optim.momentum": 0.9, "optim.warmup_epochs": 0, "optim.min_lr_ratio": 0.1,
              "crop.alpha": 0.1},  # optim.lr, optim.weight_decay: SMALL_SET_OPTIM
    "imagenet": {"model.arch": "resnet50", "model.stem": "imagenet", "model.width": 64,
                 "data.recipe": "imagenet", "data.batch_size": 256, "train.epochs": 100,
                 "data.image_size": 224, "data.loc_image_size": 224,
                 "optim.lr": 0.03, "optim.weight_decay": 1e-4,
                 "optim.momentum": 0.9, "optim.warmup_epochs": 0, "optim.min_lr_ratio": 0.0,
                 "crop.alpha": 0.6},
}

#: Completed epochs after which ccrop updates its boxes (rcrop and simccrop: never).
BOX_UPDATES = {"small": [100, 200, 300, 400], "imagenet": [20, 40, 60, 80]}

#: The paper's heatmap -> box rule and crop law (every paper file, every family).
PAPER_LOCALIZATION = {
    "crop.heatmap_stages": [4], "crop.threshold_mode": "fixed", "crop.threshold": 0.1,
    "crop.box_region": "extent", "crop.heatmap_align": "paper", "crop.placement": "official",
    "crop.heatmap": "sum", "crop.polarity": "none", "crop.center_prior": 0.0,
    "crop.min_confidence": 0.0, "crop.full_box_guard": None, "crop.scale": [0.2, 1.0],
    "crop.box_source": "heatmap", "crop.warmup_boxes": "none",
}

_MOCO = {"version": 2, "proj_dim": 128, "queue_size": 65536, "momentum": 0.999,
         "temperature": 0.2, "symmetric": False}

#: ``method.params`` by the method part of the file name (exactly these keys).
OFFICIAL_PARAMS = {
    "simclr": {"proj_hidden": 512, "proj_dim": 128, "temperature": 0.5},
    "moco": {**_MOCO, "proj_hidden": 512},  # MoCo v2 on ResNet-18 features: 512-512-128
    "mocov1": {**_MOCO, "version": 1, "temperature": 0.07},  # linear head 2048-128
    "mocov2": {**_MOCO, "proj_hidden": 2048},  # ResNet-50 features: 2048-2048-128 head
    "byol": {"proj_hidden": 512, "proj_dim": 128, "momentum": 0.996},
    "simsiam": {"proj_dim": 512, "pred_hidden": 128, "fixed_predictor_lr": True},
}

#: Small-set lr and weight decay per method: officially lr 0.5, wd 1e-4 for all four. The official
#: SimCLR loss is NT-Xent times T / 0.07, ours plain NT-Xent; SGD on loss * s equals lr * s with
#: wd / s, so SimCLR's same steps are lr 0.5 * s, wd 1e-4 / s.
_SIMCLR_S = OFFICIAL_PARAMS["simclr"]["temperature"] / 0.07
SMALL_SET_OPTIM = {
    "simclr": {"optim.lr": 0.5 * _SIMCLR_S, "optim.weight_decay": 1e-4 / _SIMCLR_S},
    **{m: {"optim.lr": 0.5, "optim.weight_decay": 1e-4} for m in ("moco", "byol", "simsiam")},
}

PRESENT = "<set>"  # expected value: the key exists and is not empty

#: Dataset, splits and sizes per dataset folder.
DATASETS = {
    "cifar10": {"data.dataset": "cifar10", "data.image_size": 32},
    "cifar100": {"data.dataset": "cifar100", "data.image_size": 32},
    "stl10": {"data.dataset": "stl10", "data.train_split": "train+unlabeled",
              "data.eval_train_split": "train", "data.test_split": "test", "data.image_size": 96},
    "tiny-imagenet": {"data.dataset": "tiny-imagenet", "data.test_split": "val",
                      "data.image_size": 64},
    "imagenet1k": {"data.dataset": "imagefolder", "data.test_split": "val"},
    "imagenet200": {"data.dataset": "imagenet200", "data.test_split": "val",
                    "data.dataset_kwargs.class_list": PRESENT},
}


# ----------------------------------------------------------------------------- helpers


def _rel(path: Path) -> str:
    return path.relative_to(CONFIG_DIR).as_posix()


def _ids(paths: list[Path]) -> list[str]:
    return [_rel(p) for p in paths]


@cache
def _load(path: Path) -> Config:
    """Each file is parsed once per session (tests only read the result)."""
    return load_config(path)


@cache
def _values(path: Path) -> dict[str, Any]:
    """``{"section.key[.sub]": value}`` of a file's config (method params one by one)."""
    return _leaves(asdict(_load(path)))


def _flat(cfg: Config) -> dict[str, Any]:
    """``{"section.key": value}`` of a config (method params as one value)."""
    return {f"{s}.{k}": v for s, sec in asdict(cfg).items() for k, v in sec.items()}


def _diff(a: Config, b: Config) -> set[str]:
    fa, fb = _flat(a), _flat(b)
    return {k for k in fa if fa[k] != fb[k]}


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _written(path: Path) -> dict[str, Any]:
    """``{"section.key[.sub]": value}`` the file and its ``_base_`` chain write (the leaf
    wins), read with plain OmegaConf, not with ``load_config``."""
    raw = OmegaConf.to_container(OmegaConf.load(path))
    base = raw.pop("_base_", None)
    own = _leaves(raw)
    return {**_written(path.parent / base), **own} if base else own


_MISSING = "<missing>"


def _same(got: Any, want: Any) -> bool:
    if want is PRESENT:
        return got not in (_MISSING, None, "")
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-15)
    return bool(got == want)


def _mismatches(rel: str, got: dict[str, Any], want: dict[str, Any], what: str = "expected",
                exact: bool = False) -> list[str]:
    """``"file: key = got, expected want"`` for every key of ``want`` that ``got`` does not
    match; with ``exact``, also every key of ``got`` that ``want`` lacks."""
    bad = [f"{rel}: {k} = {got.get(k, _MISSING)!r}, {what} {v!r}"
           for k, v in want.items() if not _same(got.get(k, _MISSING), v)]
    if exact:
        bad += [f"{rel}: {k} = {v!r}, {what} no such key" for k, v in got.items() if k not in want]
    return bad


def _report(bad: list[str]) -> str:
    return f"{len(bad)} mismatch(es):\n" + "\n".join(bad)


def _loaded(paths: list[Path], bad: list[str]) -> Iterator[tuple[Path, str, Config]]:
    """``(path, rel, config)`` of each file that loads; one that does not is reported in ``bad``
    (and skipped), so a broken file does not hide the mismatches of the others."""
    for path in paths:
        try:
            cfg = _load(path)
        except Exception as err:  # report every file that fails
            bad.append(f"{_rel(path)}: load_config fails: {err}")
            continue
        yield path, _rel(path), cfg


def _paper_files(bad: list[str]) -> Iterator[tuple[Path, str, Config, str]]:
    """``(path, rel, config, family)`` of every paper file that loads; a folder without a row in
    the tables is reported in ``bad`` (and skipped)."""
    for path, rel, cfg in _loaded(PAPER_FILES, bad):
        folder = path.parent.name
        if folder in FAMILY and folder in DATASETS:
            yield path, rel, cfg, FAMILY[folder]
        else:
            bad.append(f"{rel}: folder {folder!r} is neither in FAMILY/DATASETS nor a CPU set")


def _updates(path: Path) -> list[int]:
    cfg = _load(path)
    c = cfg.crop
    return box_update_epochs(cfg.train.epochs, c.warmup_epochs, c.loc_interval,
                             CropPlan.from_config(c).localizes)


# ----------------------------------------------------------------------------- every file


def test_every_official_setting_has_a_file():
    small = [f"{d}/{m}_{c}.yaml" for d in ("cifar10", "cifar100")
             for m in ("simclr", "moco", "byol", "simsiam") for c in ("ccrop", "rcrop")]
    small += [f"{d}/moco_simccrop.yaml" for d in ("cifar10", "cifar100")]
    small += [f"{d}/simclr_{c}.yaml" for d in ("stl10", "tiny-imagenet")
              for c in ("ccrop", "rcrop")]
    big = [f"{d}/mocov{v}_{c}.yaml" for d in IMAGENET_SETS for v in (1, 2)
           for c in ("ccrop", "rcrop")]
    demo = [f"synthetic/{m}_ccrop.yaml" for m in ("simclr", "moco", "byol", "simsiam")]
    demo.append("synthetic/simclr_rcrop.yaml")
    expected = set(small + big + demo)
    assert expected <= set(_ids(LEAF_FILES)), expected - set(_ids(LEAF_FILES))


def test_every_folder_is_a_paper_dataset_or_a_cpu_set():
    """A paper folder has its family and dataset in the tables; CPU sets are not paper files."""
    folders = {p.parent.name for p in LEAF_FILES}
    assert not set(CPU_SETS) & set(FAMILY)
    assert set(FAMILY) == set(DATASETS) and set(FAMILY.values()) == set(OFFICIAL) == \
        set(BOX_UPDATES)
    unknown = sorted(folders - set(CPU_SETS) - set(FAMILY))
    assert not unknown, f"folders neither in FAMILY nor in CPU_SETS: {unknown}"
    assert PAPER_FILES and BASELINE_FILES and SYNTHETIC_FILES  # no loop below is empty
    assert not any(p.parent.name in CPU_SETS for p in PAPER_FILES)


def test_every_file_loads_what_it_writes_and_defaults_elsewhere(tmp_path, monkeypatch):
    """Every YAML (bases too) loads with ``load_config``; every value its ``_base_`` chain writes
    is in the config and every other key keeps the dataclass default (nothing dropped, renamed
    or overridden by a base file); every leaf's packaged name resolves to it from any folder
    (``load_config(name)`` reads that file: see test_config_names_resolve_from_any_folder)."""
    default, bad = _leaves(asdict(Config())), []
    for path, rel, _ in _loaded(ALL_FILES, bad):
        got = _values(path)
        written = _written(path)
        if not written:
            bad.append(f"{rel}: writes no value")
        bad += _mismatches(rel, got, written, "file writes")
        bad += _mismatches(rel, {k: v for k, v in got.items() if k not in written},
                           {k: v for k, v in default.items() if k not in written},
                           "default", exact=True)
    monkeypatch.chdir(tmp_path)  # no configs/ here: the packaged file is used
    for path in LEAF_FILES:
        rel = _rel(path)
        try:
            found = resolve_config_path(rel).resolve()
        except ConfigError as err:
            bad.append(f"{rel}: the packaged name does not resolve from another folder: {err}")
            continue
        if found != path.resolve():
            bad.append(f"{rel}: the packaged name resolves to {found}, not to {path}")
    assert not bad, _report(bad)


def test_method_params_are_accepted():
    """Every leaf's method params are the method's hyper-parameters, and a narrow backbone of the
    same arch builds the method with them (checks the values too: version, queue size, ...)."""
    bad = []
    for _, rel, cfg in _loaded(LEAF_FILES, bad):
        params = cfg.method.params
        unknown = sorted(set(params) - set(method_hparams(cfg.method.name)))
        if unknown:
            bad.append(f"{rel}: method.params {unknown} unknown to {cfg.method.name}")
            continue
        try:
            ok = _builds(cfg.model.arch, cfg.model.stem, cfg.method.name,
                         tuple(sorted(params.items())))
        except Exception as err:
            ok, err_text = False, f"{type(err).__name__}: {err}"
        else:
            err_text = "the method does not hold the backbone"
        if not ok:
            bad.append(f"{rel}: method {cfg.method.name}{params} does not build: {err_text}")
    assert not bad, _report(bad)


@cache
def _builds(arch: str, stem: str, name: str, params: tuple[tuple[str, Any], ...]) -> bool:
    """Build the method once per distinct setting (many files share one)."""
    backbone = build_backbone(arch, stem=stem, width=4)
    return build_method(name, backbone, **dict(params)).backbone is backbone


def test_file_names_match_out_dir_method_and_crop():
    """``<folder>/<method>_<crop>.yaml`` writes to ``runs/<folder>/<stem>`` (unique), runs that
    method (``mocov1``/``mocov2``: MoCo of that version) and that crop kind."""
    bad: list[str] = []
    dirs: dict[str, list[str]] = {}
    for path, rel, cfg in _loaded(LEAF_FILES, bad):
        method, crop = path.stem.split("_")
        want = {"train.out_dir": f"runs/{path.parent.name}/{path.stem}", "crop.kind": crop}
        if method in ("mocov1", "mocov2"):
            want.update({"method.name": "moco", "method.params.version": int(method[-1])})
        elif method.startswith(cfg.method.name):
            want["method.name"] = cfg.method.name  # e.g. a longer name of the same method
        else:
            want["method.name"] = method
        bad += _mismatches(rel, _values(path), want)
        dirs.setdefault(cfg.train.out_dir, []).append(rel)
    bad += [f"{', '.join(rels)}: train.out_dir {d!r} is shared" for d, rels in sorted(dirs.items())
            if len(rels) > 1]
    assert not bad, _report(bad)


# ----------------------------------------------------------------------------- crop schedule


def test_baselines_are_their_ccrop_sibling():
    """``*_rcrop``: its ``*_ccrop`` sibling with ``crop.kind: rcrop`` and warm-up = epochs (no box
    update ever); ``*_simccrop``: the sibling with ``crop.kind: simccrop`` and warm-up 0 (a fixed
    box from the first epoch, no localization). Nothing else differs but ``train.out_dir``."""
    bad = []
    for path, rel, cfg in _loaded(BASELINE_FILES, bad):
        method, kind = path.stem.split("_")
        sibling = path.with_name(f"{method}_ccrop.yaml")
        if not sibling.is_file():
            bad.append(f"{rel}: no ccrop sibling {_rel(sibling)}")
            continue
        if not list(_loaded([sibling], bad)):
            continue
        warmup = cfg.train.epochs if kind == "rcrop" else 0
        bad += _mismatches(rel, _values(path), {"crop.kind": kind, "crop.warmup_epochs": warmup})
        if _updates(path):
            bad.append(f"{rel}: box updates after epochs {_updates(path)}, expected none")
        other = _diff(cfg, _load(sibling)) - {"crop.kind", "crop.warmup_epochs", "train.out_dir"}
        bad += [f"{rel}: {k} = {_flat(cfg)[k]!r}, ccrop sibling has {_flat(_load(sibling))[k]!r}"
                for k in sorted(other)]
    assert not bad, _report(bad)


def test_paper_box_updates_at_official_epochs():
    bad = []
    for path, rel, cfg, family in _paper_files(bad):
        kind = cfg.crop.kind
        want = BOX_UPDATES[family] if kind == "ccrop" else []
        if _updates(path) != want:
            bad.append(f"{rel}: box updates after epochs {_updates(path)} ({kind}), "
                       f"expected {want}")
    assert not bad, _report(bad)


def test_paper_files_use_the_paper_localization_rule():
    bad = []
    for path, rel, _, _ in _paper_files(bad):
        bad += _mismatches(rel, _values(path), PAPER_LOCALIZATION)
    assert not bad, _report(bad)


# ----------------------------------------------------------------------------- official values


def test_paper_backbone_data_optimizer_and_schedule():
    """Arch, stem, width, batch, recipe, epochs, lr, momentum, weight decay, lr warm-up and
    floor, alpha (and the ImageNet image sizes) of each family; small-set lr/wd per method."""
    bad = []
    for path, rel, cfg, family in _paper_files(bad):
        want = dict(OFFICIAL[family])
        if family == "small":
            want.update(SMALL_SET_OPTIM[cfg.method.name])
        bad += _mismatches(rel, _values(path), want)
    assert not bad, _report(bad)


def test_paper_method_params():
    """Exactly the official ``method.params`` (MoCo K and m, BYOL m, temperatures, heads,
    SimSiam's fixed predictor lr) of the method the file is named after."""
    bad = []
    for path, rel, _, _ in _paper_files(bad):
        method = path.stem.split("_")[0]
        if method not in OFFICIAL_PARAMS:
            bad.append(f"{rel}: method {method!r} has no row in OFFICIAL_PARAMS")
            continue
        want = {f"method.params.{k}": v for k, v in OFFICIAL_PARAMS[method].items()}
        got = {k: v for k, v in _values(path).items() if k.startswith("method.params.")}
        bad += _mismatches(rel, got, want, exact=True)
    assert not bad, _report(bad)


def test_paper_datasets_splits_and_sizes():
    bad = []
    for path, rel, _, _ in _paper_files(bad):
        bad += _mismatches(rel, _values(path), DATASETS[path.parent.name])
    assert not bad, _report(bad)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_files_match_the_demo():
    """Each synthetic file is ``ccrop pretrain`` without a config (cli.DEMO_OVERRIDES) but for its
    method, lr and out_dir (rcrop: also the crop kind and warm-up): 10 epochs on synthetic data."""
    demo, bad = load_config(None, DEMO_OVERRIDES), []
    for path, rel, cfg in _loaded(SYNTHETIC_FILES, bad):
        allowed = {"method.name", "method.params", "train.out_dir", "optim.lr"}
        if cfg.crop.kind == "rcrop":
            allowed |= {"crop.kind", "crop.warmup_epochs"}
        bad += [f"{rel}: {k} = {_flat(cfg)[k]!r}, demo has {_flat(demo)[k]!r}"
                for k in sorted(_diff(cfg, demo) - allowed)]
        bad += _mismatches(rel, _values(path), {"data.dataset": "synthetic", "train.epochs": 10})
    assert not bad, _report(bad)


# ----------------------------------------------------------------------------- README, errors


def test_readme_lists_every_leaf_file():
    readme = (CONFIG_DIR / "README.md").read_text()
    missing = [r for r in _ids(LEAF_FILES) if f"`{r}`" not in readme]
    assert not missing, f"configs/README.md does not list: {missing}"


def test_unknown_key_fails_naming_it(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("crop:\n  alpah: 0.1\n")
    with pytest.raises(ConfigError, match="alpah"):
        load_config(bad)


def test_unknown_key_in_base_file_fails_naming_it(tmp_path: Path):
    (tmp_path / "_base.yaml").write_text("train:\n  epochz: 3\n")
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text("_base_: _base.yaml\ntrain:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_config(leaf)


def test_leaf_with_unknown_key_fails(tmp_path: Path):
    base = CONFIG_DIR / "cifar10" / "simclr_ccrop.yaml"
    leaf = tmp_path / "leaf.yaml"
    leaf.write_text(f"_base_: {base}\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(leaf)


# ----------------------------------------------------------------------------- packaged configs


def test_every_config_ships_in_the_package():
    """The wheel's package-data globs (pyproject) reach two folder levels: every file must."""
    from ccrop.config import PACKAGED_CONFIGS, packaged_configs

    assert PACKAGED_CONFIGS.resolve() == CONFIG_DIR
    assert all(len(p.relative_to(CONFIG_DIR).parts) <= 2 for p in ALL_FILES)
    assert packaged_configs() == _ids(LEAF_FILES)
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"configs/*.yaml", "configs/*/*.yaml"' in text


@pytest.mark.parametrize("name", ["cifar10/simclr_ccrop.yaml", "configs/cifar10/simclr_ccrop.yaml",
                                  "cifar10/simclr_ccrop"])
def test_config_names_resolve_from_any_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the packaged file is used
    assert _flat(load_config(name)) == _flat(_load(CONFIG_DIR / "cifar10" / "simclr_ccrop.yaml"))


def test_a_local_file_wins_over_a_packaged_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "simclr_ccrop.yaml").write_text("train: {seed: 7}\n")
    cfg = load_config("cifar10/simclr_ccrop.yaml")
    assert cfg.train.seed == 7 and cfg.data.dataset == "synthetic"  # not the packaged file


def test_missing_config_names_the_path_and_the_listing_command(tmp_path, monkeypatch, capsys):
    from ccrop.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="cifar10/nope.yaml.*ccrop configs"):
        load_config("cifar10/nope.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "cifar10/simclr_ccrop.yaml" in out and f"{len(LEAF_FILES)} configs" in out


def _float_keys() -> list[tuple[str, Any]]:
    """Every float key of the typed config (scalars and lists), with its default."""
    cfg, keys = Config(), []
    for section in fields(cfg):
        values = getattr(cfg, section.name)
        for f in fields(values):
            if "float" in str(f.type):
                keys.append((f"{section.name}.{f.name}", getattr(values, f.name)))
    return keys


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("key,default", _float_keys(), ids=[k for k, _ in _float_keys()])
def test_every_float_key_must_be_finite_and_names_itself(key, default, bad):
    """inf/NaN in any float key (a list's last item too) is refused naming the key, not later
    by the optimizer or in summary.json (crop.ratio=[0.75,inf] named no key before)."""
    if isinstance(default, list) or key in ("data.mean", "data.std"):
        items = list(default) if default is not None else [0.5, 0.5, 0.5]
        value = "[" + ",".join(str(v) for v in items[:-1]) + f",{bad}]"
    else:
        value = bad
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize("override", ["crop.warn_full_share=-1", "crop.warn_full_share=1.5",
                                      "optim.momentum=1", "optim.min_lr_ratio=2"])
def test_float_keys_out_of_their_range_name_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        load_config(None, [override])
    load_config(None, [f"{key}=0"])  # the lower edge is fine


@pytest.mark.parametrize("override", [
    "data.dataset_kwargs.num_images=nan", "data.dataset_kwargs.num_images=abc",
    "data.dataset_kwargs.num_images=2.5", "data.dataset_kwargs.num_images=0",
    "data.dataset_kwargs.num_images=true", "data.dataset_kwargs.image_size=nan",
    "data.dataset_kwargs.image_size=-3"])
def test_generated_set_sizes_must_be_integers(override):
    """dataset_kwargs.num_images=nan reached the dataset as the string 'nan' ('<' not supported
    between instances of 'str' and 'int')."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"config key '{key}' must be an integer >= 1"):
        load_config(None, [override])
    cfg = load_config(None, ["data.dataset=cluttered", "data.dataset_kwargs.num_images=null"])
    assert cfg.data.dataset_kwargs["num_images"] is None  # cluttered: null = the whole split


@pytest.mark.parametrize("override,key", [
    ("optim.lr=inf", "optim.lr"), ("optim.weight_decay=inf", "optim.weight_decay"),
    ("crop.warn_full_share=nan", "crop.warn_full_share"), ("crop.ratio=[0.75,inf]", "crop.ratio"),
    ("data.dataset_kwargs.num_images=nan", "data.dataset_kwargs.num_images")])
def test_cli_bad_float_is_one_line_and_writes_nothing(tmp_path, capsys, override, key):
    from ccrop.cli import main

    out = tmp_path / "run"
    assert main(["pretrain", f"train.out_dir={out}", override]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"ccrop: error: config key '{key}'"), err
    assert not out.exists()
