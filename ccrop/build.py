"""Assemble a pretraining run from a ``Config``: data, views, model, method, optimizer, logger."""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import dist
from .boxes import BoxStore
from .config import Config, ConfigError, save_config
from .crop import CropPlan
from .data import DATASET_INFO
from .data.run_data import RunData, build_data
from .data.sources import CPUSource, DecodedGPUSource, GPUSource, ViewSource, ViewSpec
from .engine import Run, check_run_dir, find_resume, resume, rewind_logs
from .evaluate.monitor import Evaluator
from .methods import build_method
from .models import build_backbone


def resolve_device(name: str) -> torch.device:
    """``auto`` -> this rank's CUDA device if available, else CPU."""
    if name == "auto":
        cuda = torch.cuda.is_available()
        return torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices); each rank gets its own stream."""
    seed = seed + 1000 * dist.get_rank()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: Config, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Backbone + method on ``device``; returns ``(method, model)`` where model may be DDP."""
    backbone = config_backbone(cfg, zero_init_residual=cfg.method.name == "simsiam")
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


def config_backbone(cfg: Config, zero_init_residual: bool = False) -> nn.Module:
    """The backbone of ``cfg.model`` (every key: arch, stem, width, kwargs, vit_heatmap),
    randomly initialised; a timm ViT is sized for the data."""
    m, d = cfg.model, cfg.data
    # the training image side by build_data's rule, without building the data
    size = d.image_size or d.dataset_kwargs.get("image_size") \
        or DATASET_INFO.get(d.dataset, {}).get("image_size", 224)
    return build_backbone(m.arch, stem=m.stem, width=m.width,
                          zero_init_residual=zero_init_residual, image_size=int(size),
                          kwargs=m.kwargs, vit_heatmap=m.vit_heatmap)


def _no_buffer_sync() -> dict[str, bool]:
    """DDP keyword that syncs buffers (MoCo queue, BN stats) once at wrap time, not every step:
    they stay in step by construction (all ranks enqueue the same gathered keys)."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    newer = "forward_sync_buffers" in params  # newer torch: syncs once at init
    return {"forward_sync_buffers" if newer else "broadcast_buffers": False}


def build_optimizer(cfg: Config, method: nn.Module) -> torch.optim.Optimizer:
    """SGD over the method's parameter groups (SimSiam marks its predictor ``fix_lr``)."""
    o = cfg.optim
    fused = {"fused": True} if o.fused and next(method.parameters()).is_cuda else {}
    return torch.optim.SGD(method.param_groups(o.lr, o.weight_decay), lr=o.lr,
                           momentum=o.momentum, weight_decay=o.weight_decay, **fused)


def build_source(cfg: Config, data: RunData, store: BoxStore,
                 device: torch.device) -> ViewSource:
    """The view source of ``data.pipeline`` (cpu: DataLoader workers; gpu: batched on device)."""
    c, d = cfg.crop, cfg.data
    spec = ViewSpec(d.recipe, CropPlan.from_config(c), data.image_size, data.mean, data.std,
                    d.loc_image_size)
    if d.pipeline == "gpu":
        amp = cfg.train.amp and device.type == "cuda"  # views cast as autocast would
        kw = dict(seed=cfg.train.seed, num_workers=d.num_workers, loc_batch_size=c.loc_batch_size,
                  out_dtype=torch.bfloat16 if amp else torch.float32,
                  channels_last=cfg.train.channels_last)
        if DATASET_INFO[d.dataset].get("small", True):
            return GPUSource(data.train, store, spec, d.batch_size, device, chunk=d.gpu_chunk, **kw)
        decode = round(data.image_size * 256 / 224)  # e.g. 224 -> 256
        return DecodedGPUSource(data.train, store, spec, d.batch_size, device, decode_size=decode,
                                **kw)
    return CPUSource(data.train, store, spec, d.batch_size, device, seed=cfg.train.seed,
                     num_workers=d.num_workers, persistent_workers=d.persistent_workers,
                     loc_batch_size=c.loc_batch_size)


def build_evaluator(cfg: Config, data: RunData, source: Any = None) -> Evaluator:
    """The run's evaluation protocols; a GPU source's resident images are shared with them."""
    images = getattr(source, "images", None)
    resident = {data.train_split: images.data} if images is not None else {}
    return Evaluator(data, cfg, resident)


def dataset_paths(dataset: Any) -> list[str] | None:
    """Image file paths of a folder dataset in index order, or None (array datasets)."""
    samples = getattr(dataset, "samples", None)
    return None if samples is None else [str(p) for p, _ in samples]


def given_boxes(cfg: Config, data: RunData) -> torch.Tensor | None:
    """The boxes (N, 4) of ``crop.box_source`` oracle or ``file:PATH``, or None (heatmap and
    saliency boxes are computed by the engine). Raises ``ConfigError``: oracle on a dataset
    without true boxes; a bad box file (naming the row)."""
    source = cfg.crop.box_source
    if source in ("heatmap", "saliency") or not CropPlan.from_config(cfg.crop).localizes:
        return None
    if source == "oracle":
        if data.gt_boxes is None:
            raise ConfigError(
                f"crop.box_source=oracle needs a dataset with true boxes (synthetic, "
                f"fashion-mnist-cluttered, icons); data.dataset {cfg.data.dataset!r} has none")
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
    # the --resume checkpoint is read before anything is written: a missing, truncated or
    # foreign file (or a folder whose checkpoints none reads) leaves no folder behind
    loaded = None if resume_from is None else find_resume(run_dir, resume_from)
    if dist.is_main_process():  # after the checks above: a bad config leaves no folder
        check_run_dir(run_dir, resuming=resume_from is not None)
    source = build_source(cfg, data, store, device)
    evaluator = build_evaluator(cfg, data, source)
    run = Run(cfg, device, run_dir, method, model, build_optimizer(cfg, method), store,
              source, data, knn=evaluator.monitor(device), writer=_writer(cfg, run_dir),
              given_boxes=boxes, compiled=cfg.train.compile)
    if loaded is not None:  # None: a start from scratch (no --resume, or auto found none)
        resume(run, loaded)
    else:  # what an attempt killed before its first checkpoint logged goes
        rewind_logs(run)  # (resume() rewinds to its checkpoint)
    if dist.is_main_process():
        save_config(cfg, run_dir / "config.yaml")
    return run


def _writer(cfg: Config, run_dir: Path) -> Any:
    """TensorBoard writer of the main process, or None."""
    if not cfg.train.tensorboard or not dist.is_main_process():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed: TensorBoard logging is off "
                      "(pip install tensorboard)", stacklevel=2)
        return None
    return SummaryWriter(str(run_dir / "tb"))
