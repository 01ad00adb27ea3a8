"""Typed configuration: dataclasses hold the only defaults; YAML and ``key=value`` override them.

The boundary for config values: every bad key or value is a ``ConfigError`` naming the key,
checked once at load; the rest of ccrop trusts the values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError  # also importable as ccrop.config.ConfigError


@dataclass
class DataConfig:
    """Dataset, view pipeline and loader."""

    dataset: str = "synthetic"
    root: str | None = None
    download: bool = False
    train_split: str = "train"  # pretraining split, e.g. "train+unlabeled" for STL-10
    eval_train_split: str = "train"  # kNN memory bank / linear training split
    test_split: str = "test"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. num_images for synthetic
    test_num_images: int | None = None  # generated sets: test split size (small kNN error)
    image_size: int | None = None  # default: the dataset's
    mean: list[float] | None = None  # default: the dataset's
    std: list[float] | None = None
    recipe: str = "cifar"  # cifar | imagenet (adds blur)
    pipeline: str = "cpu"  # cpu (PIL in DataLoader workers) | gpu (batched on the device)
    gpu_chunk: int | None = None  # gpu pipeline: batches per view call; None = auto (see docs)
    batch_size: int = 512
    num_workers: int = 2
    persistent_workers: bool = True
    on_bad_image: str = "error"  # error | skip (folder datasets)
    loc_image_size: int | None = None  # localization input side; ImageNet: 224


@dataclass
class CropConfig:
    """ContrastiveCrop and the localization schedule."""

    kind: str = "ccrop"  # ccrop | simccrop | rcrop
    alpha: float = 0.6
    scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    full_box_guard: float | None = 0.95  # None = the paper's exact law
    placement: str = "paper"  # paper (centre in box, then shift) | official (clamp first)
    # localization defaults chosen by box IoU on validation splits (docs/results.md). Boxes
    # other than heatmap (the paper) are written once, before the first epoch: saliency (colour
    # contrast to the border, no encoder) | oracle (the dataset's true boxes) | file:PATH
    box_source: str = "heatmap"
    warmup_boxes: str = "none"  # none (RandomResizedCrop warm-up) | saliency (crop around them)
    heatmap_stages: list[int] = field(default_factory=lambda: [3])  # ResNet stages; paper: [4]
    threshold: float = 0.1  # the paper's k (fixed) or the per-image quantile; unused by otsu
    threshold_mode: str = "otsu"  # fixed (paper) | quantile | otsu
    box_region: str = "peak"  # extent (paper: all kept pixels) | peak (the part at the maximum)
    heatmap_align: str = "receptive"  # receptive (ccrop) | paper (official placement, see docs)
    heatmap: str = "contrast"  # contrast (distance to the border feature) | sum (paper)
    polarity: str = "none"  # none (paper) | auto (flip a map whose border is hotter)
    center_prior: float = 1.0  # weight of a centred Gaussian prior on the heatmap; paper: 0
    min_confidence: float = 0.1  # boxes less confident than this become the full image; paper: 0
    warmup_epochs: int = 100  # = epochs gives the RRC baseline
    loc_interval: int = 100
    loc_batch_size: int = 512
    warn_full_share: float = 0.8  # warn when this share of boxes covers the whole image

    def box_rule(self) -> dict[str, Any]:
        """The heatmap -> box keywords of ``ccrop.localize.update_boxes``."""
        return dict(threshold=self.threshold, mode=self.threshold_mode, align=self.heatmap_align,
                    region=self.box_region, heatmap=self.heatmap, polarity=self.polarity,
                    center_prior=self.center_prior, min_confidence=self.min_confidence)


@dataclass
class ModelConfig:
    """Backbone."""

    arch: str = "resnet18"  # resnet18|34|50 (ccrop's) | timm:NAME | tv:NAME (ccrop.models.external)
    stem: str = "cifar"  # cifar (3x3, no max-pool) | imagenet
    width: int = 64  # ccrop's ResNets only; ignored by timm:/tv: archs
    kwargs: dict[str, Any] = field(default_factory=dict)  # timm:/tv: only, e.g. patch_size: 4
    vit_heatmap: str = "attention"  # timm ViTs: attention (CLS, measured better) | tokens


@dataclass
class MethodConfig:
    """SSL method and its hyper-parameters (passed to the method's constructor)."""

    name: str = "simclr"  # simclr | moco | byol | simsiam
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """SGD with the official per-epoch cosine schedule down to ``min_lr_ratio * lr``."""

    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    min_lr_ratio: float = 0.1
    warmup_epochs: int = 0  # linear lr warm-up (epochs)
    fused: bool = False


@dataclass
class TrainConfig:
    """Run length, precision, logging, checkpoints, monitors."""

    epochs: int = 500
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False
    compile: bool = False  # torch.compile the model; falls back to eager if the compiler fails
    out_dir: str = "runs/default"
    save_every: int = 1  # epochs between checkpoints
    keep_last: int = 2
    knn_every: int = 0  # epochs between kNN monitors; 0 = only at the end
    on_nonfinite: str = "stop"  # stop | skip_step
    tensorboard: bool = True
    progress: bool = True
    max_steps_per_epoch: int | None = None  # for smoke tests and benchmarks


@dataclass
class EvalConfig:
    """Evaluation protocols: kNN (monitor and ``ccrop knn``) and ``ccrop linear``."""

    knn_k: int = 200
    knn_temperature: float = 0.1
    linear_epochs: int = 100
    linear_lr: float | None = None  # None: 10 (batch 512, small sets), 30 (imagenet recipe)
    # lr x0.1 at these epochs; None: 60% and 80% of linear_epochs (60, 80 at 100 epochs)
    linear_milestones: list[int] | None = None
    linear_batch_size: int | None = None  # None: data.batch_size
    linear_weight_decay: float = 0.0

    def linear_lr_or_default(self, recipe: str) -> float:
        """``linear_lr``, else the official lr of the recipe (30 imagenet, 10 otherwise)."""
        if self.linear_lr is not None:
            return self.linear_lr
        return 30.0 if recipe == "imagenet" else 10.0


@dataclass
class Config:
    """Everything a pretraining run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


#: ``model.arch`` prefixes of external backbones: any timm or torchvision model by name
ARCH_PREFIXES = ("timm:", "tv:")

#: the one list of each choice key; crop, localize and the folder reader use these tuples
CHOICES = {
    "data.recipe": ("cifar", "imagenet"),
    "data.pipeline": ("cpu", "gpu"),
    "data.on_bad_image": ("error", "skip"),
    "crop.kind": ("ccrop", "simccrop", "rcrop"),
    "crop.placement": ("paper", "official"),
    "crop.threshold_mode": ("fixed", "quantile", "otsu"),
    "crop.box_region": ("extent", "peak"),
    "crop.heatmap_align": ("receptive", "paper"),
    "crop.heatmap": ("sum", "contrast"),
    "crop.polarity": ("none", "auto"),
    "crop.warmup_boxes": ("none", "saliency"),
    "model.arch": ("resnet18", "resnet34", "resnet50"),
    "model.stem": ("cifar", "imagenet"),
    "model.vit_heatmap": ("attention", "tokens"),
    "method.name": ("simclr", "moco", "byol", "simsiam"),
    "train.on_nonfinite": ("stop", "skip_step"),
}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> Config:
    """A validated ``Config``: defaults, then ``base`` (a saved config dict), the YAML file
    ``path`` (``_base_: other.yaml`` resolved next to it) and dotted ``key=value`` overrides."""
    cfg = OmegaConf.structured(Config)
    try:
        if base is not None:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(upgrade_config_dict(base)))
        if path is not None:
            cfg = OmegaConf.merge(cfg, _read_yaml(resolve_config_path(path)))
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        key, msg = getattr(err, "full_key", None), str(err).splitlines()[0]
        unknown = "not in struct" in msg or "Key '" in msg and "not" in msg
        raise ConfigError(f"unknown config key {key!r}" if unknown
                          else f"bad value for config key {key!r}: {msg}") from None
    out: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(out)
    return out


#: Localization settings added after the first release; a saved config without them was
#: trained with these values (the paper's rule), not with today's defaults.
_BEFORE_LOCALIZATION_OPTIONS = {"heatmap_stages": [4], "box_region": "extent",
                                "placement": "paper", "box_source": "heatmap"}
#: Added with the box confidence; a saved config without them used channel sums, as is.
_BEFORE_CONFIDENCE_OPTIONS = {"heatmap": "sum", "polarity": "none", "center_prior": 0.0,
                              "min_confidence": 0.0, "warmup_boxes": "none"}


def upgrade_config_dict(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config dict (``dataclasses.asdict``) in today's layout, meaning what it meant (a
    new dict): ``train.knn_*`` moved to ``eval.*``; crop settings added since get the values the
    run used then."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in saved.items()}
    train, crop = out.get("train", {}), out.get("crop")
    moved = {k: train.pop(k) for k in ("knn_k", "knn_temperature") if k in train}
    if moved:
        out["eval"] = {**moved, **out.get("eval", {})}
    if crop is not None and "heatmap_stages" not in crop:
        out["crop"] = crop = {**_BEFORE_LOCALIZATION_OPTIONS, **crop}
    if crop is not None and "heatmap" not in crop:
        out["crop"] = {**_BEFORE_CONFIDENCE_OPTIONS, **crop}
    return out


#: The paper configs shipped inside the package (``ccrop/configs`` links to ``configs/``).
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """``path`` if it exists, else the packaged config of that name (``configs/`` prefix and
    ``.yaml`` suffix optional), so paper configs work from any folder after ``pip install``."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_absolute():
        rel = Path(*p.parts[1:]) if p.parts[:1] == ("configs",) else p
        for cand in (PACKAGED_CONFIGS / rel, PACKAGED_CONFIGS / rel.with_suffix(".yaml")):
            if cand.is_file():
                return cand
    raise ConfigError(f"config file {str(path)!r} does not exist (nor as a packaged config; "
                      "`ccrop configs` lists them)")


def packaged_configs() -> list[str]:
    """Names of the packaged paper configs (``dataset/setting.yaml``), bases excluded."""
    return sorted(str(f.relative_to(PACKAGED_CONFIGS)) for f in PACKAGED_CONFIGS.rglob("*.yaml")
                  if not f.name.startswith("_"))


def _read_yaml(path: Path, depth: int = 0) -> DictConfig:
    """The mapping in a YAML config file, its ``_base_`` chain merged under it."""
    name = f"config file {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{name} does not exist")
    try:
        raw = OmegaConf.load(path)
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: not UTF-8
        raise ConfigError(f"{name} is not valid YAML: {err}") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{name} must hold a mapping of keys")
    if depth > 8 and "_base_" in raw:
        raise ConfigError(f"{name} _base_ chain too deep")
    base = raw.pop("_base_", None)
    if base is None:
        return raw
    return OmegaConf.merge(_read_yaml(path.parent / str(base), depth + 1), raw)


#: What a bounded value must be -> its test.
_BOUNDS: dict[str, Callable[[Any, Config], bool]] = {
    ">= 0": lambda v, c: v >= 0, "> 0": lambda v, c: v > 0, ">= 1": lambda v, c: v >= 1,
    ">= 2": lambda v, c: v >= 2, "in [0, 1]": lambda v, c: 0 <= v <= 1,
    "in [0, 1)": lambda v, c: 0 <= v < 1, "in (0, 1]": lambda v, c: 0 < v <= 1}
#: Every checked key -> (test of its value given the config, what it must be). A None value
#: passes (the key's type allows null); every float must be finite besides.
_RULES: dict[str, tuple[Callable[[Any, Config], bool], str]] = {
    key: (_BOUNDS[b], b) for b, keys in {
        ">= 0": "crop.center_prior data.num_workers optim.weight_decay train.knn_every "
                "eval.linear_weight_decay",
        "> 0": "crop.alpha optim.lr eval.knn_temperature eval.linear_lr",
        ">= 1": "crop.loc_interval crop.loc_batch_size data.gpu_chunk data.test_num_images "
                "data.image_size data.loc_image_size model.width train.epochs train.save_every "
                "train.keep_last train.max_steps_per_epoch eval.knn_k eval.linear_epochs "
                "eval.linear_batch_size",
        ">= 2": "data.batch_size",
        "in [0, 1]": "crop.min_confidence crop.warn_full_share optim.min_lr_ratio",
        "in [0, 1)": "crop.threshold optim.momentum",
        "in (0, 1]": "crop.full_box_guard"}.items() for key in keys.split()}
_RULES.update({
    "crop.scale": (lambda v, c: len(v) == 2 and 0 < v[0] <= v[1] <= 1,
                   "[lo, hi] with 0 < lo <= hi <= 1"),
    "crop.ratio": (lambda v, c: len(v) == 2 and 0 < v[0] <= v[1],
                   "[lo, hi] of finite numbers with 0 < lo <= hi"),
    "crop.heatmap_stages": (lambda v, c: len(v) >= 1 and len(set(v)) == len(v)
                            and set(v) <= {1, 2, 3, 4},
                            "a non-empty list of distinct ResNet stages in 1..4, e.g. [3] or [4]"),
    "crop.box_source": (lambda v, c: v in ("heatmap", "saliency", "oracle")
                        or v.startswith("file:") and len(v) > 5,
                        "heatmap, saliency, oracle or file:PATH (a .csv, .json or .pt of boxes)"),
    "crop.warmup_epochs": (lambda v, c: 0 <= v <= c.train.epochs,
                           "in [0, train.epochs={c.train.epochs}]"),
    "data.mean": (lambda v, c: len(v) == 3, "3 finite numbers or null"),
    "data.std": (lambda v, c: len(v) == 3 and all(x > 0 for x in v), "3 numbers > 0 or null"),
    "model.arch": (lambda v, c: not v.startswith(ARCH_PREFIXES) or v.split(":", 1)[1].strip(),
                   "timm:NAME or tv:NAME with a model name"),
    "model.kwargs": (lambda v, c: not v or c.model.arch.startswith(ARCH_PREFIXES),
                     "empty for ccrop's own ResNets (it is passed to timm:/tv: models)"),
    "optim.warmup_epochs": (lambda v, c: 0 <= v < c.train.epochs or v == 0,
                            "in [0, train.epochs={c.train.epochs})"),
    "train.device": (lambda v, c: v in ("auto", "cpu") or v.startswith("cuda"),
                     "auto, cpu, cuda or cuda:N"),
    "eval.linear_milestones": (lambda v, c: list(v) == sorted(v)
                               and all(0 < m < c.eval.linear_epochs for m in v),
                               "increasing epochs in (0, eval.linear_epochs="
                               "{c.eval.linear_epochs}) or null"),
})


def validate(cfg: Config) -> None:
    """Check every value once (finite floats, ranges, choices); ``ConfigError`` names the
    first bad key in the config's field order."""
    def check(key: str, value: Any, ok: bool, expected: str) -> None:
        if not ok:
            raise ConfigError(f"config key {key!r} must be {expected}, got {value!r}")

    for section in fields(cfg):
        part = getattr(cfg, section.name)
        for f in fields(part):
            key, v = f"{section.name}.{f.name}", getattr(part, f.name)
            if v is None:
                continue
            if "float" in str(f.type):  # NaN or inf in any position too
                check(key, v, all(map(math.isfinite, v if isinstance(v, list) else [v])),
                      "finite numbers" if isinstance(v, list) else "a finite number")
            if key in CHOICES and not (key == "model.arch" and v.startswith(ARCH_PREFIXES)):
                extra = ", timm:NAME or tv:NAME" if key == "model.arch" else ""
                check(key, v, v in CHOICES[key], f"one of {CHOICES[key]}{extra}")
            if key in _RULES:
                test, expected = _RULES[key]
                check(key, v, bool(test(v, cfg)), expected.format(c=cfg))
    for name in ("num_images", "image_size"):  # generated sets; a string or NaN is no size
        v = cfg.data.dataset_kwargs.get(name)
        ok = v is None or isinstance(v, int) and not isinstance(v, bool) and v >= 1
        check(f"data.dataset_kwargs.{name}", v, ok, "an integer >= 1")


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
