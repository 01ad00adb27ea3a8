"""Typed configuration: dataclasses hold the only defaults; YAML and ``key=value`` override them.

Unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming the key. The
resolved config is saved in every run folder and checkpoint (as a plain dict).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    # generated sets: images of the test split (overrides dataset_kwargs.num_images there), so
    # the kNN test accuracy has a small standard error whatever the training set's size
    test_num_images: int | None = None
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
    # localization: ccrop's defaults were chosen by box IoU on validation splits
    # (docs/results.md); the paper configs set stages [4], fixed 0.1, extent, paper
    # heatmap (the paper) | saliency (no encoder: colour contrast to the border) | oracle
    # (dataset's true boxes) | file:PATH. Boxes other than heatmap are written once, before
    # the first epoch, and used from the end of warm-up on
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
        """The heatmap -> box keywords of ``ccrop.localize.update_boxes``: threshold, mode,
        align, region, heatmap, polarity, center_prior, min_confidence."""
        return dict(threshold=self.threshold, mode=self.threshold_mode,
                    align=self.heatmap_align, region=self.box_region, heatmap=self.heatmap,
                    polarity=self.polarity, center_prior=self.center_prior,
                    min_confidence=self.min_confidence)


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
    """Build a validated ``Config`` from defaults, an optional YAML file and ``key=value`` items.

    Args:
        base: a plain config dict (e.g. a checkpoint's) applied before the file and overrides.
        path: YAML file holding only the keys to change (may contain ``_base_: other.yaml``,
            resolved relative to the file).
        overrides: dotted ``key=value`` strings, e.g. ``["train.epochs=10", "crop.alpha=0.1"]``.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or out-of-range value.
    """
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
        raise ConfigError(_omegaconf_message(err)) from None
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
    """A saved config (checkpoint or run folder) in today's layout, meaning what it meant.

    ``train.knn_k``/``train.knn_temperature`` moved to ``eval.*``; crop settings added since
    (heatmap stages, box region, placement, box source) get the values the run used then.

    Args:
        saved: a plain nested dict as ``to_dict`` wrote it.

    Returns:
        A new dict; ``saved`` is not modified.
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in saved.items()}
    train, crop = out.get("train"), out.get("crop")
    if isinstance(train, dict):
        moved = {k: train.pop(k) for k in ("knn_k", "knn_temperature") if k in train}
        if moved:
            out["eval"] = {**moved, **dict(out.get("eval") or {})}
    if isinstance(crop, dict) and "heatmap_stages" not in crop:
        out["crop"] = crop = {**_BEFORE_LOCALIZATION_OPTIONS, **crop}
    if isinstance(crop, dict) and "heatmap" not in crop:
        out["crop"] = {**_BEFORE_CONFIDENCE_OPTIONS, **crop}
    return out


#: The paper configs shipped inside the package (``ccrop/configs`` links to ``configs/``).
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """A config file: ``path`` itself if it exists, else the packaged config of that name.

    So ``cifar10/simclr_ccrop.yaml`` and ``configs/cifar10/simclr_ccrop.yaml`` work from any
    folder after ``pip install ccrop`` (the ``.yaml`` suffix may be left out).

    Raises:
        ConfigError: neither exists; the message names the path and where packaged configs are.
    """
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
    if not PACKAGED_CONFIGS.is_dir():
        return []
    return sorted(str(f.relative_to(PACKAGED_CONFIGS)) for f in PACKAGED_CONFIGS.rglob("*.yaml")
                  if not f.name.startswith("_"))


def _read_yaml(path: Path, depth: int = 0) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys")
    base = raw.pop("_base_", None)
    if base is None:
        return raw
    if depth > 8:
        raise ConfigError(f"config file {str(path)!r}: _base_ chain too deep")
    return OmegaConf.merge(_read_yaml(path.parent / str(base), depth + 1), raw)


def _omegaconf_message(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0]
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        return f"unknown config key {key!r}"
    return f"bad value for config key {key!r}: {msg}"


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"config key {key!r} must be {expected}, got {value!r}")


def validate(cfg: Config) -> None:
    """Check ranges and choices; raise ``ConfigError`` naming the first bad key."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if key == "model.arch" and value.startswith(ARCH_PREFIXES):
            continue  # any timm / torchvision name; checked in _validate_model and at build
        _require(value in allowed, key, f"one of {allowed}" + (
            ", timm:NAME or tv:NAME" if key == "model.arch" else ""), value)
    _validate_model(cfg.model)
    c, d, o, t = cfg.crop, cfg.data, cfg.optim, cfg.train
    _require(math.isfinite(c.alpha) and c.alpha > 0, "crop.alpha", "> 0", c.alpha)
    _require(len(c.scale) == 2 and 0 < c.scale[0] <= c.scale[1] <= 1, "crop.scale",
             "[lo, hi] with 0 < lo <= hi <= 1", c.scale)
    _require(len(c.ratio) == 2 and all(math.isfinite(r) for r in c.ratio)
             and 0 < c.ratio[0] <= c.ratio[1], "crop.ratio",
             "[lo, hi] of finite numbers with 0 < lo <= hi", c.ratio)
    _require(c.full_box_guard is None or 0 < c.full_box_guard <= 1, "crop.full_box_guard",
             "in (0, 1] or null", c.full_box_guard)
    _require(0 <= c.threshold < 1, "crop.threshold", "in [0, 1)", c.threshold)
    _require(len(c.heatmap_stages) >= 1 and len(set(c.heatmap_stages)) == len(c.heatmap_stages)
             and all(s in (1, 2, 3, 4) for s in c.heatmap_stages), "crop.heatmap_stages",
             "a non-empty list of distinct ResNet stages in 1..4, e.g. [3] or [4]",
             c.heatmap_stages)
    _require(c.box_source in ("heatmap", "saliency", "oracle")
             or c.box_source.startswith("file:") and len(c.box_source) > 5, "crop.box_source",
             "heatmap, saliency, oracle or file:PATH (a .csv, .json or .pt of boxes)",
             c.box_source)
    _require(math.isfinite(c.center_prior) and c.center_prior >= 0, "crop.center_prior",
             "a finite number >= 0", c.center_prior)
    _require(0 <= c.min_confidence <= 1, "crop.min_confidence", "in [0, 1] (0: never fall "
             "back)", c.min_confidence)
    _require(0 <= c.warn_full_share <= 1, "crop.warn_full_share", "in [0, 1]",
             c.warn_full_share)
    _require(t.epochs >= 1, "train.epochs", ">= 1", t.epochs)
    _require(0 <= c.warmup_epochs <= t.epochs, "crop.warmup_epochs",
             f"in [0, train.epochs={t.epochs}]", c.warmup_epochs)
    _require(c.loc_interval >= 1, "crop.loc_interval", ">= 1", c.loc_interval)
    _require(c.loc_batch_size >= 1, "crop.loc_batch_size", ">= 1", c.loc_batch_size)
    _require(d.batch_size >= 2, "data.batch_size", ">= 2", d.batch_size)
    _require(d.num_workers >= 0, "data.num_workers", ">= 0", d.num_workers)
    _require(d.gpu_chunk is None or d.gpu_chunk >= 1, "data.gpu_chunk", ">= 1 or null",
             d.gpu_chunk)
    _require(d.test_num_images is None or d.test_num_images >= 1, "data.test_num_images",
             ">= 1 or null", d.test_num_images)
    _require(d.image_size is None or d.image_size >= 1, "data.image_size", ">= 1", d.image_size)
    _require(d.loc_image_size is None or d.loc_image_size >= 1, "data.loc_image_size",
             ">= 1 or null", d.loc_image_size)
    for name in ("num_images", "image_size"):  # generated sets; a string or NaN is no size
        if d.dataset_kwargs.get(name) is not None:
            v = d.dataset_kwargs[name]
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                     f"data.dataset_kwargs.{name}", "an integer >= 1", v)
    for key, v in (("data.mean", d.mean), ("data.std", d.std)):  # NaN in any position too
        _require(v is None or len(v) == 3 and all(math.isfinite(x) for x in v), key,
                 "3 finite numbers or null", v)
    _require(d.std is None or all(x > 0 for x in d.std), "data.std", "3 numbers > 0", d.std)
    _require(math.isfinite(o.lr) and o.lr > 0, "optim.lr", "a finite number > 0", o.lr)
    _require(0 <= o.momentum < 1, "optim.momentum", "in [0, 1)", o.momentum)
    _require(math.isfinite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay",
             "a finite number >= 0", o.weight_decay)
    _require(0 <= o.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]", o.min_lr_ratio)
    _require(0 <= o.warmup_epochs < t.epochs or o.warmup_epochs == 0, "optim.warmup_epochs",
             f"in [0, train.epochs={t.epochs})", o.warmup_epochs)
    _require(t.save_every >= 1, "train.save_every", ">= 1", t.save_every)
    _require(t.keep_last >= 1, "train.keep_last", ">= 1", t.keep_last)
    _require(t.knn_every >= 0, "train.knn_every", ">= 0", t.knn_every)
    _validate_eval(cfg.eval)
    _require(t.max_steps_per_epoch is None or t.max_steps_per_epoch >= 1,
             "train.max_steps_per_epoch", ">= 1 or null", t.max_steps_per_epoch)
    _require(t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
             "train.device", "auto, cpu, cuda or cuda:N", t.device)


def _validate_model(m: ModelConfig) -> None:
    _require(m.width >= 1, "model.width", ">= 1", m.width)
    if not m.arch.startswith(ARCH_PREFIXES):
        _require(not m.kwargs, "model.kwargs", "empty for ccrop's own ResNets (it is passed to "
                 "timm:/tv: models)", m.kwargs)
        return
    # model.width is ignored here (the demo overrides set it): timm/tv models are sized by
    # their name or model.kwargs
    _require(m.arch.split(":", 1)[1].strip() != "", "model.arch",
             "timm:NAME or tv:NAME with a model name", m.arch)


def _validate_eval(e: EvalConfig) -> None:
    _require(e.knn_k >= 1, "eval.knn_k", ">= 1", e.knn_k)
    _require(math.isfinite(e.knn_temperature) and e.knn_temperature > 0,
             "eval.knn_temperature", "a finite number > 0", e.knn_temperature)
    _require(e.linear_epochs >= 1, "eval.linear_epochs", ">= 1", e.linear_epochs)
    _require(e.linear_lr is None or math.isfinite(e.linear_lr) and e.linear_lr > 0,
             "eval.linear_lr", "a finite number > 0 or null", e.linear_lr)
    m = e.linear_milestones
    _require(m is None or (list(m) == sorted(m) and all(0 < v < e.linear_epochs for v in m)),
             "eval.linear_milestones",
             f"increasing epochs in (0, eval.linear_epochs={e.linear_epochs}) or null", m)
    _require(e.linear_batch_size is None or e.linear_batch_size >= 1,
             "eval.linear_batch_size", ">= 1 or null", e.linear_batch_size)
    _require(math.isfinite(e.linear_weight_decay) and e.linear_weight_decay >= 0,
             "eval.linear_weight_decay", "a finite number >= 0", e.linear_weight_decay)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of builtins (safe for ``torch.load(weights_only=True)`` and YAML)."""
    return asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
