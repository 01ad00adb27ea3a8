"""Speed benchmarks of a config (``ccrop bench``): views/s, step ms, epoch split, GPU memory.

All measured in one process (ratios compare like with like), device synchronised before each
clock read.
"""

from __future__ import annotations

import platform
import random
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from .boxes import BoxStore
from .compiling import CompileFailedWarning, first_compiled_step
from .config import Config
from .runtime import autocast


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs after one warm-up run."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def environment(device: torch.device) -> dict[str, Any]:
    """Machine description stored with every benchmark."""
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads(), "device": str(device),
           "machine": platform.machine()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def bench_views(cfg: Config, data: Any, store: BoxStore, device: torch.device,
                n: int = 2048) -> dict[str, float]:
    """Views/s of the PIL path (one process, one core) vs the batched path (CPU and device)."""
    from .crop import CropPlan
    from .data.images import to_rgb
    from .data.sources import GPUSource, ViewSpec
    from .data.views import build_view_transform

    c, d = cfg.crop, cfg.data
    spec = ViewSpec(d.recipe, CropPlan.from_config(c), data.image_size, data.mean, data.std,
                    d.loc_image_size)
    tf = build_view_transform(spec.recipe, spec.plan, spec.size, spec.mean, spec.std)
    m = min(n, len(data.train))
    images = [to_rgb(data.train[i][0]) for i in range(m)]
    boxes = store.boxes[:m].tolist()
    rng = random.Random(0)

    def pil() -> None:
        for img, box in zip(images, boxes):
            tf(img, box, rng)

    out: dict[str, Any] = {"pil_views_per_s": m / _timed(pil, torch.device("cpu"), 1)}
    for where in ["cpu"] + (["cuda"] if device.type == "cuda" else []):
        dev = torch.device(where) if where == "cpu" else device
        src = GPUSource(data.train, store, spec, d.batch_size, dev, seed=0, chunk=d.gpu_chunk)
        idx = torch.arange(min(d.batch_size, len(data.train)), device=dev)
        sec = _timed(lambda s=src, i=idx: s.views_for(i), dev, 5)
        out[f"batched_{where}_views_per_s"] = 2 * idx.numel() / sec
        if src.chunk > 1:  # the engine's call: views of `chunk` batches at once
            big = torch.arange(min(d.batch_size * src.chunk, len(data.train)), device=dev)
            sec = _timed(lambda s=src, i=big: s.views_for(i), dev, 5)
            out[f"batched_{where}_views_per_s_chunk{src.chunk}"] = 2 * big.numel() / sec
    out["batched_cpu_over_pil"] = out["batched_cpu_views_per_s"] / out["pil_views_per_s"]
    out["ops_per_view_call"] = _ops_per_call(data, store, spec, d.batch_size)
    return out


def _ops_per_call(data: Any, store: BoxStore, spec: Any, batch_size: int) -> int:
    """Ops (~ kernel launches) of one batched view call on the accelerator code path (what
    bounds the GPU path at CIFAR size)."""
    from .data.sources import GPUSource
    from .syncs import SyncSpy

    src = GPUSource(data.train, store, spec, batch_size, torch.device("cpu"), seed=0)
    src.use_sync_free_paths()
    idx = torch.arange(min(batch_size, len(data.train)))
    with SyncSpy() as spy:
        src.views_for(idx)
    return spy.ops


def bench_syncs(cfg: Config, steps: int = 2) -> dict[str, float]:
    """Host syncs per training step of the engine loop on the accelerator code paths (on CPU
    too; ``SyncSpy``): 0 means the device queue never drains mid-epoch. DataLoader work runs in
    a worker process, outside the count."""
    from .build import build_run
    from .engine import train_epoch
    from .syncs import SyncSpy

    counts, done = [], []
    with tempfile.TemporaryDirectory() as tmp:
        c = replace(cfg, train=replace(cfg.train, out_dir=tmp, progress=False,
                                       tensorboard=False, compile=False),
                    data=replace(cfg.data, num_workers=max(1, cfg.data.num_workers),
                                 persistent_workers=False))
        run = build_run(c)
        if hasattr(run.source, "use_sync_free_paths"):  # the GPU path: its accelerator code
            run.source.use_sync_free_paths()
        for n in (1, 1 + steps):
            run.cfg.train.max_steps_per_epoch = n
            with SyncSpy() as spy:
                done.append(train_epoch(run, 0)["steps"])
            counts.append(spy.count)
    per_step = (counts[1] - counts[0]) / max(1, done[1] - done[0])
    return {"host_syncs_per_step": per_step, "host_syncs_per_epoch": counts[0] - per_step,
            "sites": spy.report().splitlines()}


def bench_step(cfg: Config, device: torch.device, steps: int,
               compiled: bool = True) -> dict[str, float]:
    """Training-step ms: fp32, bf16 + channels_last (CUDA), + torch.compile (CUDA, optional)."""
    from .build import build_model, build_optimizer

    variants = [("fp32", False, False, False)]
    if device.type == "cuda":
        variants.append(("bf16_channels_last", True, True, False))
        if compiled:
            variants.append(("bf16_channels_last_compiled", True, True, True))
    out: dict[str, float] = {}
    size = cfg.data.image_size or 32
    b = cfg.data.batch_size
    for name, amp, cl, comp in variants:
        c = replace(cfg, train=replace(cfg.train, amp=amp, channels_last=cl, compile=comp))
        method, model = build_model(c, device)
        opt = build_optimizer(c, method)
        x1, x2 = (torch.randn(b, 3, size, size, device=device) for _ in range(2))
        if cl:
            x1, x2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))

        def step(model=model, opt=opt, x1=x1, x2=x2, amp=amp) -> None:
            with autocast(device, amp):
                loss = model(x1, x2)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        if comp:  # compile outside the timing; a compiler failure is recorded instead
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", CompileFailedWarning)
                    first_compiled_step(step, [], lambda: None)
            except CompileFailedWarning as failed:
                out[f"step_error_{name}"] = str(failed).partition("failed (")[2].rpartition(
                    "); ")[0]
                continue
        out[f"step_ms_{name}"] = 1000 * _timed(step, device, steps)
    return out


def bench_epoch(cfg: Config, max_steps: int) -> dict[str, float]:
    """A (capped) epoch of the engine: data / step seconds scaled to the full epoch, the box
    pass (``localization_with_figure_s`` adds the figure) and checkpoint seconds."""
    from .build import build_run
    from .engine import localize_step, save, train_epoch

    with tempfile.TemporaryDirectory() as tmp:
        c = replace(cfg, train=replace(cfg.train, out_dir=tmp, max_steps_per_epoch=max_steps,
                                       progress=False, tensorboard=False))
        run = build_run(c)
        run.source.set_epoch(0, True)
        train_epoch(run, 0)  # warm-up epoch (workers, allocator, cudnn autotune)
        _sync(run.device)
        metrics = train_epoch(run, 1)
        _sync(run.device)
        t = time.perf_counter()
        loc = localize_step(run, 1)
        _sync(run.device)
        loc_s = time.perf_counter() - t
        t = time.perf_counter()
        save(run)  # what train.save_every adds per saved epoch (write, fsync, read-back test)
        save_s = time.perf_counter() - t
        steps, full = metrics["steps"], len(run.source)
        return {"epoch_steps_measured": steps, "epoch_steps_full": full,
                "epoch_data_s": metrics["data_seconds"] * full / steps,
                "epoch_step_s": (metrics["seconds"] - metrics["data_seconds"]) * full / steps,
                "epoch_total_s": metrics["seconds"] * full / steps,
                "localization_s": loc["seconds"], "localization_images": loc["images"],
                "localization_with_figure_s": loc_s,  # + the figures/ drawing
                "checkpoint_s": save_s}


def run_bench(cfg: Config, steps: int = 5, epoch_steps: int = 20,
              compiled: bool = True) -> dict[str, Any]:
    """All benchmarks of ``cfg`` (``steps``, ``epoch_steps`` >= 1); a JSON-ready dict."""
    from .build import build_data, resolve_device

    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = build_data(cfg)
    store = BoxStore(len(data.train))
    result: dict[str, Any] = {"config": {"dataset": cfg.data.dataset, "images": len(data.train),
                                         "method": cfg.method.name, "arch": cfg.model.arch,
                                         "width": cfg.model.width, "crop": cfg.crop.kind,
                                         "pipeline": cfg.data.pipeline,
                                         "batch_size": cfg.data.batch_size},
                              "environment": environment(device)}
    result["views"] = bench_views(cfg, data, store, device)
    result["step"] = bench_step(cfg, device, steps, compiled)
    result["epoch"] = bench_epoch(cfg, epoch_steps)
    result["syncs"] = bench_syncs(cfg)
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result
