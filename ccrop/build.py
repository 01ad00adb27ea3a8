"""Assemble a pretraining run from a ``Config``: data, views, model, method, optimizer, logger."""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import dist
from .boxes import BoxStore
from .config import Config, ConfigError
from .crop import CropPlan
from .data import DATASET_INFO, build_dataset
from .data.sources import CPUSource, ViewSpec, eval_loader
from .engine import Run, check_run_dir, resume, save_run_config
from .methods import build_method
from .models import build_backbone


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's CUDA device if available, else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices); each rank gets its own stream."""
    seed = seed + 1000 * dist.get_rank()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class RunData:
    """Datasets of a run and the monitors that read them."""

    cfg: Config
    train: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    num_classes: int
    gt_boxes: torch.Tensor | None
    has_labels: bool
    _eval: dict[str, Any] = field(default_factory=dict)
    _device: dict[tuple, Any] = field(default_factory=dict)
    #: splits the GPU view source already holds on the device, shared by ``eval_batches``
    resident: dict[str, torch.Tensor] = field(default_factory=dict)

    def split(self, name: str) -> Any:
        """A dataset split, built once (the pretraining split is reused)."""
        d = self.cfg.data
        if name == d.train_split:
            return self.train
        if name not in self._eval:
            self._eval[name] = _dataset(self.cfg, name)
        return self._eval[name]

    def knn(self, backbone: nn.Module, device: torch.device,
            progress: bool = False) -> dict[str, Any]:
        """Weighted kNN (``eval.knn_k``, ``eval.knn_temperature``) of ``backbone``'s pooled
        features: eval-train split as the bank, test split as queries. The pretraining monitor
        and ``ccrop knn`` both call this."""
        from .evaluate.knn import run_knn

        d, t = self.cfg.data, self.cfg.train
        shard = dist.is_dist()  # each rank embeds its share; all see the whole bank
        if shard:  # rank 0's BN statistics, as in the saved checkpoint
            for buf in backbone.buffers():
                dist.broadcast(buf)
        loaders = [self.eval_batches(s, device, shard=shard)
                   for s in (d.eval_train_split, d.test_split)]
        e = self.cfg.eval
        return run_knn(backbone, *loaders, self.num_classes, device, e.knn_k, e.knn_temperature,
                       amp=t.amp, channels_last=t.channels_last, progress=progress,
                       gather=shard)

    @property
    def on_device(self) -> bool:
        """Evaluation batches are made on the device: ``data.pipeline=gpu`` on a small set."""
        d = self.cfg.data
        return d.pipeline == "gpu" and DATASET_INFO[d.dataset].get("small", True)

    def eval_batches(self, split: str, device: torch.device, train: bool = False,
                     shard: bool = False, batch_size: int | None = None) -> Any:
        """``(images, labels)`` batches of a split for the evaluation protocols.

        With ``on_device`` a ``DeviceLabeledBatches`` (the split held on the device, plain ones
        cached), else a DataLoader of PIL transforms: ``train`` gives the linear protocol's
        augmentation (RandomResizedCrop(0.08, 1) + flip), otherwise ``eval_transform``.
        ``batch_size`` defaults to ``data.batch_size``.
        """
        d = self.cfg.data
        batch_size = batch_size or d.batch_size
        if self.on_device:
            from .data.sources import DeviceLabeledBatches

            key = (split, str(device), train, shard, batch_size)
            if key not in self._device:
                self._device[key] = DeviceLabeledBatches(
                    self.split(split), self.mean, self.std, batch_size, device, train=train,
                    seed=self.cfg.train.seed, size=d.loc_image_size, shard=shard,
                    num_workers=d.num_workers, images=self._resident(split, device))
            return self._device[key]
        if not train:
            return eval_loader(self.split(split), self.eval_transform(), batch_size,
                               d.num_workers, shard)
        from torch.utils.data import DataLoader

        from .data.boxed import LabeledImages
        from .evaluate.linear import linear_train_transform

        tf = linear_train_transform(self.image_size, self.mean, self.std)
        return DataLoader(LabeledImages(self.split(split), tf), batch_size, shuffle=True,
                          num_workers=d.num_workers, drop_last=False)

    def eval_transform(self) -> Any:
        """Un-augmented input of kNN and the linear test set. Small sets: the native size
        (``data.loc_image_size`` if set). Others (ImageNet, folders): the standard protocol,
        the short side resized to ``S * 256 / 224`` then a centre ``S`` crop (S = 224: Resize(256)
        + CenterCrop(224)). Localization keeps the official square resize (``loc_loader``)."""
        d = self.cfg.data
        if DATASET_INFO[d.dataset].get("small", True):
            from .data.views import EvalTransform

            return EvalTransform(self.mean, self.std, d.loc_image_size)
        from .evaluate.linear import eval_transform

        return eval_transform(self.image_size, self.mean, self.std,
                              resize=round(self.image_size * 256 / 224))

    def _resident(self, split: str, device: torch.device) -> torch.Tensor | None:
        """The view source's device copy of ``split`` (same size rule), if it is on ``device``."""
        images = self.resident.get(split)
        return images if images is not None and images.device == torch.device(device) else None

    def preview_images(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images in [0, 1] for figures."""
        from .data.images import to_rgb

        out = []
        for i in idx.tolist():
            img = to_rgb(self.train[i][0]).resize((self.image_size, self.image_size))
            out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        return torch.stack(out).float() / 255


def _dataset(cfg: Config, split: str) -> Any:
    d = cfg.data
    kwargs = dict(d.dataset_kwargs)
    if d.dataset in ("imagefolder", "unlabeled-folder", "imagenet200"):
        kwargs.setdefault("on_bad_image", d.on_bad_image)
    try:
        return build_dataset(d.dataset, d.root, split, d.download, **kwargs)
    except TypeError as err:
        raise ConfigError(f"data.dataset_kwargs do not fit dataset {d.dataset!r}: {err}") from None


def build_data(cfg: Config) -> RunData:
    """Build the pretraining dataset and its defaults (mean, std, size, classes, gt boxes)."""
    d = cfg.data
    if d.dataset not in DATASET_INFO:
        raise ConfigError(f"data.dataset must be one of {sorted(DATASET_INFO)}, got {d.dataset!r}")
    info = DATASET_INFO[d.dataset]
    train = _dataset(cfg, d.train_split)
    if len(train) == 0:
        raise ConfigError(f"data.dataset {d.dataset!r} split {d.train_split!r} is empty")
    if d.batch_size > len(train):
        raise ConfigError(f"data.batch_size ({d.batch_size}) is larger than the dataset "
                          f"({len(train)} images)")
    gt = getattr(train, "gt_boxes", None)
    targets = getattr(train, "targets", None)
    has_labels = targets is None or (len(targets) > 0 and int(np.min(targets)) >= 0)
    return RunData(cfg, train, tuple(d.mean or info["mean"]), tuple(d.std or info["std"]),
                   int(d.image_size or info["image_size"]), int(info.get("num_classes") or 0),
                   None if gt is None else torch.as_tensor(gt).float(), has_labels)


def build_model(cfg: Config, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Backbone + method on ``device``; returns ``(method, model)`` where model may be DDP."""
    m = cfg.model
    zero_init = cfg.method.name == "simsiam"
    backbone = build_backbone(m.arch, stem=m.stem, width=m.width, zero_init_residual=zero_init)
    try:
        method = build_method(cfg.method.name, backbone, **cfg.method.params)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"method.params: {err}") from None
    method = method.to(device)
    if cfg.train.channels_last:
        method = method.to(memory_format=torch.channels_last)
    model: nn.Module = method
    if dist.is_dist():
        if device.type == "cuda" and cfg.method.name != "moco":  # MoCo relies on shuffle-BN
            method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(method, device_ids=ids, **_no_buffer_sync())
    if cfg.train.compile:
        model = torch.compile(model)
    return method, model


def _no_buffer_sync() -> dict[str, bool]:
    """DDP keyword that syncs buffers (MoCo queue, BN stats) once at wrap time, not every step:
    they stay in step by construction (all ranks enqueue the same gathered keys)."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    if "forward_sync_buffers" in params:  # newer torch: still syncs at init
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def build_optimizer(cfg: Config, method: nn.Module) -> torch.optim.Optimizer:
    """SGD over the method's parameter groups (SimSiam marks its predictor ``fix_lr``)."""
    o = cfg.optim
    groups = method.param_groups(o.lr, o.weight_decay)
    kw: dict[str, Any] = {}
    if o.fused and next(method.parameters()).is_cuda:
        kw["fused"] = True
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                           **kw)


def build_source(cfg: Config, data: RunData, store: BoxStore, device: torch.device) -> Any:
    """The view source of ``data.pipeline`` (cpu: DataLoader workers; gpu: batched on device)."""
    c, d = cfg.crop, cfg.data
    spec = ViewSpec(d.recipe, CropPlan.from_config(c), data.image_size, data.mean, data.std,
                    d.loc_image_size)
    if d.pipeline == "gpu":
        from .data.sources import GPUSource

        small = DATASET_INFO[d.dataset].get("small", True)
        decode = None if small else round(data.image_size * 256 / 224)  # e.g. 224 -> 256
        amp = cfg.train.amp and device.type == "cuda"  # views cast as autocast would
        source = GPUSource(data.train, store, spec, d.batch_size, cfg.train.seed, device,
                           c.loc_batch_size, decode, d.num_workers, chunk=d.gpu_chunk,
                           out_dtype=torch.bfloat16 if amp else torch.float32,
                           channels_last=cfg.train.channels_last)
        if source.views.images is not None:  # the kNN monitor reuses it, not a second copy
            data.resident[d.train_split] = source.views.images
        return source
    return CPUSource(data.train, store, spec, d.batch_size, d.num_workers, d.persistent_workers,
                     cfg.train.seed, device, c.loc_batch_size)


def dataset_paths(dataset: Any) -> list[str] | None:
    """Image file paths of a folder dataset in index order, or None (array datasets)."""
    samples = getattr(dataset, "samples", None)
    return None if samples is None else [str(p) for p, _ in samples]


def given_boxes(cfg: Config, data: RunData) -> torch.Tensor | None:
    """The boxes of ``crop.box_source`` oracle or ``file:PATH`` (N, 4), or None for heatmap.

    Raises:
        ConfigError: oracle on a dataset without true boxes; a bad box file (names the row).
    """
    source = cfg.crop.box_source
    if source == "heatmap" or not CropPlan.from_config(cfg.crop).localizes:
        return None
    if source == "oracle":
        if data.gt_boxes is None:
            raise ConfigError(
                f"crop.box_source=oracle needs a dataset with true boxes (synthetic, "
                f"fashion-mnist-cluttered); data.dataset {cfg.data.dataset!r} has none")
        return data.gt_boxes.clone()
    from .box_files import read_boxes

    path = source[len("file:"):]
    try:
        boxes, missing = read_boxes(path, len(data.train), dataset_paths(data.train))
    except ValueError as err:
        raise ConfigError(f"crop.box_source: {err}") from None
    if missing and dist.is_main_process():
        warnings.warn(f"crop.box_source: {path!r} has no box for {missing} of {len(data.train)} "
                      "images; they get the full image (plain RandomResizedCrop)", stacklevel=2)
    return boxes


def build_run(cfg: Config, resume_from: str | None = None) -> Run:
    """Everything a run needs, restored from a checkpoint when ``resume_from`` is given."""
    run_dir = Path(cfg.train.out_dir)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    data = build_data(cfg)
    store = BoxStore(len(data.train))
    method, model = build_model(cfg, device)
    boxes = given_boxes(cfg, data)
    if dist.is_main_process():  # after the checks above: a bad config leaves no folder
        check_run_dir(run_dir, resuming=resume_from is not None)
    run = Run(cfg, device, run_dir, method, model, build_optimizer(cfg, method), store,
              build_source(cfg, data, store, device), data, writer=_writer(cfg, run_dir),
              given_boxes=boxes)
    if resume_from is not None and not resume(run, resume_from) and resume_from != "auto":
        raise ConfigError(f"--resume {resume_from!r}: no checkpoint found")
    save_run_config(run)
    return run


def _writer(cfg: Config, run_dir: Path) -> Any:
    if not cfg.train.tensorboard or not dist.is_main_process():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed: TensorBoard logging is off "
                      "(pip install tensorboard)", stacklevel=2)
        return None
    return SummaryWriter(str(run_dir / "tb"))
