"""Tests of the shipped YAML configs: they load, match the official settings and stay consistent."""

from __future__ import annotations

from dataclasses import asdict, fields
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from ccrop.cli import DEMO_OVERRIDES
from ccrop.config import Config, ConfigError, load_config
from ccrop.crop import CropPlan
from ccrop.methods import build_method, method_hparams
from ccrop.models import build_backbone
from ccrop.schedule import box_update_epochs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ALL_FILES = sorted(CONFIG_DIR.rglob("*.yaml"))
LEAF_FILES = [p for p in ALL_FILES if not p.name.startswith("_")]
CPU_SETS = ("synthetic", "cluttered", "icons")  # laptop-size runs, not paper settings
PAPER_FILES = [p for p in LEAF_FILES if p.parent.name not in CPU_SETS]
SMALL_SETS = ("cifar10", "cifar100", "stl10", "tiny-imagenet")
IMAGENET_SETS = ("imagenet1k", "imagenet200")


def _rel(path: Path) -> str:
    return path.relative_to(CONFIG_DIR).as_posix()


def _ids(paths: list[Path]) -> list[str]:
    return [_rel(p) for p in paths]


@cache
def _load(path: Path) -> Config:
    """Each file is parsed once per session (tests only read the result)."""
    return load_config(path)


def _flat(cfg: Config) -> dict[str, Any]:
    """``{"section.key": value}`` of a config (method params as one value)."""
    return {f"{s}.{k}": v for s, sec in asdict(cfg).items() for k, v in sec.items()}


def _diff(a: Config, b: Config) -> set[str]:
    fa, fb = _flat(a), _flat(b)
    return {k for k in fa if fa[k] != fb[k]}


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


def _written(path: Path) -> dict[str, Any]:
    """``{"section.key[.sub]": value}`` the file and its ``_base_`` chain write (the leaf
    wins), read with plain OmegaConf, not with ``load_config``."""
    raw = OmegaConf.to_container(OmegaConf.load(path))
    base = raw.pop("_base_", None)
    own = _leaves(raw)
    return {**_written(path.parent / base), **own} if base else own


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("path", ALL_FILES, ids=_ids(ALL_FILES))
def test_loads_the_values_written_and_defaults_elsewhere(path: Path):
    """Every value the file chain writes is in the config; every other key keeps the
    dataclass default (nothing dropped, renamed or overridden by a base file)."""
    got, default, written = _leaves(asdict(_load(path))), _leaves(asdict(Config())), _written(path)
    assert written, path
    assert {k: got.get(k, "<missing>") for k in written} == written
    assert {k: v for k, v in got.items() if k not in written} == \
        {k: v for k, v in default.items() if k not in written}


@pytest.mark.parametrize("path", LEAF_FILES, ids=_ids(LEAF_FILES))
def test_method_params_are_accepted(path: Path):
    cfg = _load(path)
    params = cfg.method.params
    assert set(params) <= set(method_hparams(cfg.method.name)), params
    # A narrow backbone of the same arch checks the values too (version, queue size, ...).
    assert _builds(cfg.model.arch, cfg.model.stem, cfg.method.name, tuple(sorted(params.items())))


@cache
def _builds(arch: str, stem: str, name: str, params: tuple[tuple[str, Any], ...]) -> bool:
    """Build the method once per distinct setting (many files share one)."""
    backbone = build_backbone(arch, stem=stem, width=4)
    return build_method(name, backbone, **dict(params)).backbone is backbone


@pytest.mark.parametrize("path", LEAF_FILES, ids=_ids(LEAF_FILES))
def test_out_dir_is_runs_folder_stem(path: Path):
    assert _load(path).train.out_dir == f"runs/{path.parent.name}/{path.stem}"


def test_out_dirs_are_unique():
    dirs = [_load(p).train.out_dir for p in LEAF_FILES]
    assert len(dirs) == len(set(dirs))


@pytest.mark.parametrize("path", LEAF_FILES, ids=_ids(LEAF_FILES))
def test_file_stem_matches_method_and_crop(path: Path):
    cfg = _load(path)
    method, crop = path.stem.split("_")
    assert crop == cfg.crop.kind
    assert method.startswith(cfg.method.name) or (method.startswith("moco")
                                                   and cfg.method.name == "moco")
    if method in ("mocov1", "mocov2"):
        assert cfg.method.params["version"] == int(method[-1])


# ----------------------------------------------------------------------------- crop schedule


RCROP_FILES = [p for p in LEAF_FILES if p.stem.endswith("_rcrop")]


@pytest.mark.parametrize("path", RCROP_FILES, ids=_ids(RCROP_FILES))
def test_rcrop_is_ccrop_with_warmup_equal_epochs(path: Path):
    cfg = _load(path)
    assert cfg.crop.warmup_epochs == cfg.train.epochs
    c = cfg.crop
    assert box_update_epochs(cfg.train.epochs, c.warmup_epochs, c.loc_interval,
                             CropPlan.from_config(c).localizes) == []
    # Same setting as the ccrop sibling in everything else.
    sibling = _load(path.with_name(path.stem.replace("_rcrop", "_ccrop") + ".yaml"))
    assert _diff(cfg, sibling) == {"crop.kind", "crop.warmup_epochs", "train.out_dir"}


@pytest.mark.parametrize("path", PAPER_FILES, ids=_ids(PAPER_FILES))
def test_paper_box_updates_at_official_epochs(path: Path):
    cfg = _load(path)
    c = cfg.crop
    got = box_update_epochs(cfg.train.epochs, c.warmup_epochs, c.loc_interval,
                             CropPlan.from_config(c).localizes)
    expected = {"ccrop": [100, 200, 300, 400] if path.parent.name in SMALL_SETS
                else [20, 40, 60, 80], "rcrop": [], "simccrop": []}[c.kind]
    assert got == expected


@pytest.mark.parametrize("path", PAPER_FILES, ids=_ids(PAPER_FILES))
def test_paper_files_use_exact_paper_law(path: Path):
    c = _load(path).crop
    assert c.full_box_guard is None and c.heatmap_align == "paper"
    assert (c.threshold_mode, c.threshold) == ("fixed", 0.1)
    assert c.scale == [0.2, 1.0]
    assert c.alpha == (0.1 if path.parent.name in SMALL_SETS else 0.6)


def test_simccrop_is_moco_ccrop_with_fixed_box():
    for ds in ("cifar10", "cifar100"):
        sim = _load(CONFIG_DIR / ds / "moco_simccrop.yaml")
        ref = _load(CONFIG_DIR / ds / "moco_ccrop.yaml")
        assert sim.crop.kind == "simccrop" and sim.crop.warmup_epochs == 0
        assert _diff(sim, ref) == {"crop.kind", "crop.warmup_epochs", "train.out_dir"}


# ----------------------------------------------------------------------------- official values


@pytest.mark.parametrize("path", PAPER_FILES, ids=_ids(PAPER_FILES))
def test_paper_backbone_batch_and_schedule(path: Path):
    cfg = _load(path)
    small = path.parent.name in SMALL_SETS
    m, o, d = cfg.model, cfg.optim, cfg.data
    assert (m.arch, m.stem, m.width) == (("resnet18", "cifar", 64) if small
                                         else ("resnet50", "imagenet", 64))
    assert d.batch_size == (512 if small else 256)
    assert cfg.train.epochs == (500 if small else 100)
    assert o.momentum == 0.9 and o.warmup_epochs == 0
    assert o.min_lr_ratio == (0.1 if small else 0.0)
    assert d.recipe == ("cifar" if small else "imagenet")
    if not small:
        assert (d.image_size, d.loc_image_size) == (224, 224)
        assert (o.lr, o.weight_decay) == (0.03, 1e-4)


@pytest.mark.parametrize("path", PAPER_FILES, ids=_ids(PAPER_FILES))
def test_paper_lr_and_weight_decay(path: Path):
    cfg = _load(path)
    if path.parent.name in IMAGENET_SETS:
        return  # checked above
    lr, wd = cfg.optim.lr, cfg.optim.weight_decay
    if cfg.method.name == "simclr":
        # official lr 0.5, wd 1e-4 with the loss scaled by T / 0.07: same SGD steps
        scale = cfg.method.params["temperature"] / 0.07
        assert lr == pytest.approx(0.5 * scale) and wd == pytest.approx(1e-4 / scale)
    else:
        assert (lr, wd) == (0.5, 1e-4)


OFFICIAL_PARAMS = {
    "simclr": {"proj_hidden": 512, "proj_dim": 128, "temperature": 0.5},
    "moco": {"version": 2, "proj_dim": 128, "queue_size": 65536, "momentum": 0.999,
             "temperature": 0.2, "symmetric": False},
    "byol": {"proj_hidden": 512, "proj_dim": 128, "momentum": 0.996},
    "simsiam": {"proj_dim": 512, "pred_hidden": 128, "fixed_predictor_lr": True},
}


@pytest.mark.parametrize("path", PAPER_FILES, ids=_ids(PAPER_FILES))
def test_paper_method_params(path: Path):
    cfg = _load(path)
    p = cfg.method.params
    expected = dict(OFFICIAL_PARAMS[cfg.method.name])
    if path.stem.startswith("mocov1"):
        expected.update(version=1, temperature=0.07)
    elif path.stem.startswith("mocov2"):
        expected.update(proj_hidden=2048)  # ResNet-50 features: 2048-2048-128 head
    assert {k: p.get(k) for k in expected} == expected


def test_dataset_splits_and_sizes():
    stl = _load(CONFIG_DIR / "stl10" / "simclr_ccrop.yaml").data
    assert (stl.dataset, stl.train_split, stl.eval_train_split, stl.test_split,
            stl.image_size) == ("stl10", "train+unlabeled", "train", "test", 96)
    tiny = _load(CONFIG_DIR / "tiny-imagenet" / "simclr_ccrop.yaml").data
    assert (tiny.dataset, tiny.test_split, tiny.image_size) == ("tiny-imagenet", "val", 64)
    in1k = _load(CONFIG_DIR / "imagenet1k" / "mocov2_ccrop.yaml").data
    assert (in1k.dataset, in1k.test_split) == ("imagefolder", "val")
    in200 = _load(CONFIG_DIR / "imagenet200" / "mocov2_ccrop.yaml").data
    assert in200.dataset == "imagenet200" and "class_list" in in200.dataset_kwargs


# ----------------------------------------------------------------------------- synthetic


SYNTHETIC_FILES = [p for p in LEAF_FILES if p.parent.name == "synthetic"]


@pytest.mark.parametrize("path", SYNTHETIC_FILES, ids=_ids(SYNTHETIC_FILES))
def test_synthetic_matches_demo(path: Path):
    cfg, demo = _load(path), load_config(None, DEMO_OVERRIDES)
    allowed = {"method.name", "method.params", "train.out_dir", "optim.lr"}
    if cfg.crop.kind == "rcrop":
        allowed |= {"crop.kind", "crop.warmup_epochs"}
    assert _diff(cfg, demo) <= allowed
    assert cfg.data.dataset == "synthetic" and cfg.train.epochs == 10


# ----------------------------------------------------------------------------- README, errors


def test_readme_lists_every_leaf_file():
    readme = (CONFIG_DIR / "README.md").read_text()
    missing = [r for r in _ids(LEAF_FILES) if f"`{r}`" not in readme]
    assert not missing


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
