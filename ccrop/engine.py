"""The one training loop for every method: views -> method -> loss, boxes every few epochs
(``encoder -> heatmaps -> boxes -> BoxStore``); epoch-end checkpoints resume bit-exactly on CPU."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from . import dist
from .boxes import BoxStore, box_iou
from .checkpoint import (
    CheckpointError,
    ckpt_path,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    seed_rngs,
    set_rng_state,
)
from .compiling import first_compiled_step
from .config import Config, ConfigError
from .crop import CropPlan
from .data.run_data import RunData
from .data.sources import ViewSource
from .evaluate.results import append_result
from .files import atomic_write
from .localize import box_stats, localize_dataset, saliency_boxes, warn_unreliable
from .methods import SSLMethod
from .runtime import autocast, progress
from .schedule import box_update_epochs, lr_at
from .syncs import LossDisplay


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient."""


class NoBoxUpdateWarning(UserWarning):
    """The crop needs boxes but the schedule never localizes: every epoch is plain RRC."""


@dataclass
class Run:
    """The live objects of one pretraining run."""

    cfg: Config
    device: torch.device
    run_dir: Path
    method: SSLMethod  # unwrapped
    model: nn.Module  # method, or DDP(method)
    optimizer: torch.optim.Optimizer
    store: BoxStore
    source: ViewSource  # CPUSource | GPUSource
    data: RunData
    knn: Callable[[nn.Module], dict[str, Any]] | None = None  # monitor: backbone -> kNN result
    writer: Any = None
    epoch: int = 0  # completed epochs
    step: int = 0  # global optimizer steps
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_steps: int = 0
    compile_checked: bool = False  # a compiled model's first step has run (or fell back)
    compiled: bool = False  # the model is torch.compile'd (False again after a fallback)
    given_boxes: torch.Tensor | None = None  # (N, 4) crop.box_source oracle/file: no encoder


def _train_step(run: Run, x1: torch.Tensor, x2: torch.Tensor, params: list[torch.Tensor],
                total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on view pairs (B, 3, H, W) each; returns the 0-dim loss and a 0-dim
    bool (loss and gradients finite), both on the device. With ``on_nonfinite=skip_step`` a bad
    step is undone (buffers restored, no update) at the cost of one host sync."""
    method = run.method
    skip_mode = run.cfg.train.on_nonfinite == "skip_step"
    # skip mode: keep the buffers (BN statistics, MoCo queue) to undo a bad forward pass
    saved = [b.detach().clone() for b in method.buffers()] if skip_mode else None
    with autocast(run.device, run.cfg.train.amp):
        loss = run.model(x1, x2)["loss"]
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    ok = torch.isfinite(loss.detach())  # stays on the device: no host sync
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())
    if skip_mode and not bool(ok):  # opt-in host sync
        run.skipped_steps += 1
        for buf, old in zip(method.buffers(), saved):
            buf.copy_(old)
    else:
        run.optimizer.step()
        method.after_step((run.step + 1) / total_steps)
    return loss, ok


def _first_step(run: Run, x1: torch.Tensor, x2: torch.Tensor, params: list[torch.Tensor],
                total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``_train_step`` the first time; a compiled model's compiler failure falls back to eager."""
    run.compile_checked = True
    if not run.cfg.train.compile:
        return _train_step(run, x1, x2, params, total_steps)

    def go_eager() -> None:
        run.optimizer.zero_grad(set_to_none=True)
        run.model, run.compiled = run.model._orig_mod, False  # torch.compile's wrapped module

    return first_compiled_step(lambda: _train_step(run, x1, x2, params, total_steps),
                               list(run.method.buffers()), go_eager)


def train_epoch(run: Run, epoch: int) -> dict[str, float]:
    """Train one epoch; returns mean loss, lr, timings and throughput. Loss and finiteness stay
    on the device until the end (and bar refreshes): no host sync unless ``skip_step``."""
    cfg = run.cfg
    run.model.train()
    steps = min(len(run.source), cfg.train.max_steps_per_epoch or len(run.source))
    total_steps = steps * cfg.train.epochs
    params = [p for p in run.method.parameters() if p.requires_grad]
    loss_sum = torch.zeros((), device=run.device)
    first_bad = torch.full((), -1, dtype=torch.long, device=run.device)
    bar = progress(None, f"epoch {epoch + 1}/{cfg.train.epochs}", cfg.train.progress, steps)
    shown = LossDisplay(run.device)
    t0 = t_data = time.perf_counter()
    data_time, n_img = 0.0, 0
    for i, (_, views) in enumerate(run.source):
        if i >= steps:
            break
        data_time += time.perf_counter() - t_data
        lr = lr_at(epoch, i, steps, cfg.optim.lr, cfg.train.epochs, cfg.optim.min_lr_ratio,
                   cfg.optim.warmup_epochs)
        for group in run.optimizer.param_groups:  # SimSiam's predictor: fix_lr
            group["lr"] = cfg.optim.lr if group.get("fix_lr", False) else lr
        x1, x2 = (_to_input(v, cfg) for v in views)
        step = _train_step if run.compile_checked else _first_step
        loss, ok = step(run, x1, x2, params, total_steps)
        # Python scalars, not torch.tensor(i, device=...): that copy would sync every step
        first_bad = torch.where((first_bad < 0) & ~ok, i, first_bad)
        loss_sum += torch.where(ok, loss.detach().float(), 0.0)
        run.step += 1
        n_img += x1.shape[0] * dist.get_world_size()
        if bar is not None:
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(loss=shown.update(loss), lr=f"{lr:.4g}")
        t_data = time.perf_counter()
    if bar is not None:
        bar.close()
    bad = int(first_bad)
    if bad >= 0 and cfg.train.on_nonfinite == "stop":
        raise NonFiniteLossError(
            f"non-finite loss or gradient at epoch {epoch + 1}, step {bad + 1}; the run stopped "
            "and the last good checkpoint is untouched (lower optim.lr, or set "
            "train.on_nonfinite=skip_step)")
    seconds = time.perf_counter() - t0
    loss_mean = float(dist.all_reduce_mean(loss_sum)) / max(1, steps)
    # the lr the optimizer used last (warm-up ramps it per step; otherwise constant per epoch)
    used = next((g["lr"] for g in run.optimizer.param_groups if not g.get("fix_lr")),
                cfg.optim.lr)
    return {"loss": loss_mean, "lr": used, "seconds": seconds, "data_seconds": data_time,
            "images_per_s": n_img / max(seconds, 1e-9), "steps": steps}


def _to_input(x: torch.Tensor, cfg: Config) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if cfg.train.channels_last else x


def localize_step(run: Run, completed: int) -> dict[str, Any]:
    """Re-localize every training image with the current encoder and log the statistics."""
    t = run.cfg.train
    # every rank localizes with rank 0's encoder, BN running statistics included (without
    # SyncBN they drift apart per rank); the boxes then match the saved checkpoint's encoder
    encoder = run.method.heatmap_encoder  # each method names its query/online encoder
    for buf in encoder.buffers():
        dist.broadcast(buf)
    stats = localize_dataset(run.cfg.crop, encoder, run.source.loc_batches(), run.store,
                             run.device, amp=t.amp, channels_last=t.channels_last,
                             gt_boxes=run.data.gt_boxes, progress=t.progress, warn_share=None)
    return _boxes_written(run, stats, completed, "heatmap", f" after epoch {completed}")


def initial_boxes(run: Run) -> dict[str, Any] | None:
    """Boxes written once before the first epoch: ``crop.box_source`` oracle, file or
    saliency, or saliency boxes for the warm-up (``crop.warmup_boxes``); None if none."""
    crop = run.cfg.crop
    if run.given_boxes is not None:
        start, idx = time.perf_counter(), torch.arange(len(run.store))
        run.store.update(idx, run.given_boxes)
        stats = box_stats(run.store, idx, torch.zeros(len(idx), dtype=torch.bool),
                          run.data.gt_boxes, time.perf_counter() - start)
        source = crop.box_source.split(":")[0]
    elif "saliency" in (crop.box_source, crop.warmup_boxes):
        stats = saliency_boxes(run.source.loc_batches(), run.store, run.data.gt_boxes,
                               run.cfg.train.progress, crop.min_confidence)
        source = "saliency"
    else:
        return None
    return _boxes_written(run, stats, 0, source, " before the first epoch",
                          f"the boxes of {source} are that large")


def _boxes_written(run: Run, stats: dict[str, Any], epoch: int, source: str, when: str,
                   advice: str | None = None) -> dict[str, Any]:
    """After a box update: tell the views, warn about unreliable boxes, draw the figure (heatmap
    boxes), log one ``metrics.jsonl`` line and TensorBoard scalars; returns the record."""
    run.source.boxes_updated(run.store)
    stats = {"event": "box_update", "epoch": epoch, "source": source, **stats}
    if not dist.is_main_process():
        return stats
    warn_unreliable(stats, run.cfg.crop.warn_full_share, when, advice)
    from .viz import box_grid, config_localization_figure

    if source == "heatmap" and run.given_boxes is None:
        n = len(run.data.train)
        idx = torch.linspace(0, n - 1, min(6, n)).long().tolist()
        path = run.run_dir / "figures" / f"localization-epoch{epoch:04d}.png"
        figure = _figure("the localization figure", lambda: config_localization_figure(
            run.cfg.crop, run.method.heatmap_encoder, run.data.train, idx, path,
            device=run.device, mean=run.data.mean, std=run.data.std,
            gt_boxes=run.data.gt_boxes, image_size=run.cfg.data.loc_image_size))
        if figure is not None:
            stats["figure"] = str(figure)
    append_jsonl(run.run_dir / "metrics.jsonl", stats)
    if run.writer is not None:
        for key in ("mean_area", "full_share", "degenerate", "seconds", "iou_gt",
                    "fallback_share", "flipped_share", "mean_confidence"):
            if key in stats:
                run.writer.add_scalar(f"boxes/{key}", stats[key], epoch)
        idx = torch.arange(min(16, len(run.store)))
        _figure("the box grid", lambda: run.writer.add_image(
            "boxes/grid", box_grid(run.data.preview_images(idx), run.store[idx]), epoch))
    return stats


def _figure(what: str, draw: Callable[[], Any]) -> Any:
    """``draw()``, or None after a warning: a figure must never stop training."""
    try:
        return draw()
    except Exception as err:
        warnings.warn(f"could not draw {what}: {err}", stacklevel=3)
        return None


def save(run: Run) -> Path | None:
    """Write the epoch's checkpoint (everything for an exact resume) on the main process and
    prune old ones."""
    path = None
    if dist.is_main_process():
        state = {"model": run.method.state_dict(), "optimizer": run.optimizer.state_dict(),
                 "epoch": run.epoch, "step": run.step, "boxes": run.store.state_dict(),
                 "rng": rng_state(), "config": asdict(run.cfg),
                 "history": json.loads(json.dumps(run.history)), "skipped_steps": run.skipped_steps}
        path = save_checkpoint(state, ckpt_path(run.run_dir, run.epoch))
        prune_checkpoints(run.run_dir, run.cfg.train.keep_last)
    dist.barrier()
    return path


def find_resume(run_dir: Path, target: str) -> tuple[str, dict[str, Any]] | None:
    """``(path, state)`` of the checkpoint ``target`` names (``auto``: the newest valid one in
    ``run_dir``, None if it has none); ``CheckpointError``: a bad file, or none that reads."""
    if target != "auto":
        return target, load_checkpoint(target)
    # rank 0 picks the file and every rank loads that one: ranks that listed the folder
    # on their own could pick different epochs (a lagging shared file system)
    main = dist.is_main_process()
    found = latest_valid_checkpoint(run_dir) if main else None
    if found:
        where = str(found[0])
    else:  # "": checkpoints, none of which reads
        where = "" if main and list_checkpoints(run_dir) else None
    where = dist.broadcast_object(where)
    if where == "":
        raise CheckpointError(f"no checkpoint in {str(run_dir / 'checkpoints')!r} can be read; "
                              "move them away to start again, or resume from a path")
    return None if where is None else (where, found[1] if found else load_checkpoint(where))


def resume(run: Run, found: tuple[str, dict[str, Any]]) -> None:
    """Restore ``run`` from a checkpoint ``find_resume`` loaded: ``(path, state)``."""
    where, state = found
    try:
        run.method.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.store.load_state_dict(state["boxes"])
        epochs = run.cfg.train.epochs
        detail = None if int(state["epoch"]) <= epochs else (
            f"it is at epoch {state['epoch']} but train.epochs is {epochs}; set a larger "
            "train.epochs to continue")
    except (KeyError, RuntimeError, ValueError) as err:  # another model, method or dataset
        detail = " ".join(ln.strip() for ln in str(err).splitlines()[:2])[:300] or repr(err)
    if detail is not None:
        raise CheckpointError(f"checkpoint {str(where)!r} does not fit this config: {detail}")
    run.epoch, run.step = int(state["epoch"]), int(state["step"])
    run.history = list(state.get("history", []))
    run.skipped_steps = int(state.get("skipped_steps", 0))
    set_rng_state(state["rng"])
    rewind_logs(run)  # records written after this checkpoint (before a kill) are redone


def fit(run: Run) -> dict[str, Any]:
    """Train from ``run.epoch`` to ``cfg.train.epochs`` with boxes, monitors and checkpoints."""
    cfg = run.cfg
    plan = CropPlan.from_config(cfg.crop)
    heatmaps = plan.localizes and cfg.crop.box_source == "heatmap"
    updates = set(box_update_epochs(cfg.train.epochs, cfg.crop.warmup_epochs,
                                    cfg.crop.loc_interval, heatmaps))
    boxes_from = 0 if cfg.crop.warmup_boxes == "saliency" else cfg.crop.warmup_epochs
    if not plan.localizes and run.epoch == 0:  # the store shows the box in use
        run.store.fill(plan.fixed_box)
        run.source.boxes_updated(run.store)
    if plan.localizes and run.epoch == 0 and not _updated_at(run, 0):
        first = initial_boxes(run)
        if first is not None:
            run.history.append(first)
        elif not updates and dist.is_main_process():
            warnings.warn(f"crop.kind={cfg.crop.kind} reads boxes, but train.epochs="
                          f"{cfg.train.epochs}, crop.warmup_epochs={cfg.crop.warmup_epochs} and "
                          f"crop.loc_interval={cfg.crop.loc_interval} schedule no box update: "
                          "every epoch is plain RandomResizedCrop", NoBoxUpdateWarning,
                          stacklevel=2)
    seed_rngs(cfg.train.seed, run.epoch, dist.get_rank())
    while run.epoch < cfg.train.epochs:
        epoch = run.epoch
        if epoch in updates and not _updated_at(run, epoch):
            run.history.append(localize_step(run, epoch))
        run.source.set_epoch(epoch, plan.uses_boxes(epoch, boxes_from))
        metrics = train_epoch(run, epoch)
        run.epoch = epoch + 1
        if run.knn is not None and cfg.train.knn_every \
                and run.epoch % cfg.train.knn_every == 0 and run.epoch < cfg.train.epochs:
            metrics["knn_top1"] = run.knn(run.method.backbone)["top1"]
        _log_epoch(run, metrics)
        # the next epoch's global RNG streams depend on (seed, epoch, rank) only: what a process
        # drew once (a persistent loader's first iterator) leaves no trace in them or the
        # checkpoint, so a killed-and-resumed run saves the same checkpoints
        seed_rngs(cfg.train.seed, run.epoch, dist.get_rank())
        if run.epoch % cfg.train.save_every == 0 or run.epoch == cfg.train.epochs:
            save(run)
    return finish(run)


def _updated_at(run: Run, completed: int) -> bool:
    """True when the history already holds this epoch's box update (resumed after it)."""
    return any(h.get("event") == "box_update" and h.get("epoch") == completed
               for h in run.history)


def _log_epoch(run: Run, metrics: dict[str, Any]) -> None:
    record = {"event": "epoch", "epoch": run.epoch, "step": run.step, **metrics}
    run.history.append(record)
    if not dist.is_main_process():
        return
    run.data.report_bad_images()  # data.on_bad_image=skip: one line per split
    append_jsonl(run.run_dir / "metrics.jsonl", record)
    if run.writer is not None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                run.writer.add_scalar(f"train/{key}", value, run.epoch)
        run.writer.flush()
    if run.cfg.train.progress:
        extra = f"  knn {metrics['knn_top1']:.2f}%" if "knn_top1" in metrics else ""
        print(f"epoch {run.epoch}/{run.cfg.train.epochs}  loss {metrics['loss']:.4f}  "
              f"lr {metrics['lr']:.4g}  {metrics['images_per_s']:.0f} img/s{extra}", flush=True)


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line, flushed and fsynced."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record, default=float) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def rewind_logs(run: Run) -> None:
    """Make ``metrics.jsonl`` and ``results.jsonl`` match the state training starts from, so a
    killed-and-resumed run logs everything once: drop torn lines, records of later epochs, a box
    update of ``run.epoch`` the history lacks, and all but the last record of an event's epoch."""
    if not dist.is_main_process():
        return
    done, updated = run.epoch, _updated_at(run, run.epoch)
    for path in (run.run_dir / "metrics.jsonl", run.run_dir / "results.jsonl"):
        for stale in path.parent.glob(f".{path.name}.tmp-*"):  # of a rewrite that was killed
            stale.unlink(missing_ok=True)
        if not path.is_file():
            continue
        data, kept = path.read_bytes(), {}
        for i, line in enumerate(data.split(b"\n")):
            try:
                record = json.loads(line)
            except ValueError:  # torn (JSONDecodeError, bad UTF-8) or the empty last line
                continue
            epoch, event, key = record.get("epoch"), record.get("event"), i
            if type(epoch) is int:
                if epoch > done or epoch == done and event == "box_update" and not updated:
                    continue
                if event in ("epoch", "box_update"):
                    key = (event, epoch)
            kept.pop(key, None)  # the last record of an (event, epoch) stays, where it stands
            kept[key] = line + b"\n"
        text = b"".join(kept.values())
        if text != data:
            atomic_write(path, lambda fh, text=text: fh.write(text))


def finish(run: Run) -> dict[str, Any]:
    """Final kNN accuracy and box IoU vs ground truth (if known), written to ``summary.json``."""
    summary: dict[str, Any] = {"epochs": run.epoch, "steps": run.step,
                               "skipped_steps": run.skipped_steps,
                               "compiled": run.compiled}  # False after a compiler fallback
    if run.knn is not None:
        knn = run.knn(run.method.backbone)
        summary.update(knn_top1=knn["top1"], knn_k=knn["k"], knn_temperature=knn["temperature"])
        if dist.is_main_process():
            append_result(run.run_dir, {**knn, "dataset": run.cfg.data.dataset,
                                        "split": run.cfg.data.test_split,
                                        "checkpoint": str(ckpt_path(run.run_dir, run.epoch)),
                                        "epoch": run.epoch})
    if run.data.gt_boxes is not None:
        gt = torch.as_tensor(run.data.gt_boxes).float()
        summary["box_iou_gt"] = float(box_iou(run.store.boxes, gt).mean())
        summary["full_box_iou_gt"] = float(box_iou(torch.tensor([[0.0, 0, 1, 1]]).expand_as(gt),
                                                   gt).mean())
    boxes = [h for h in run.history if h.get("event") == "box_update"]
    summary["box_updates"] = [h["epoch"] for h in boxes]
    if boxes:  # the last update's label-free confidence: how many images fell back to RRC
        summary["fallback_share"] = boxes[-1].get("fallback_share", 0.0)
    figures = [h["figure"] for h in boxes if h.get("figure")]
    if figures:
        summary["box_figure"] = figures[-1]
    summary["time"] = _time_summary(run.history)
    if run.cfg.data.on_bad_image == "skip":  # folder datasets: which images were left out
        skipped = run.data.bad_image_paths()
        summary.update(bad_images_skipped=len(skipped), bad_image_paths=skipped[:100])
    if dist.is_main_process():
        run.data.report_bad_images()  # the evaluation splits read by the final kNN
        (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _time_summary(history: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent training and re-localizing over the whole run; ``median_epoch_s`` leaves
    out the first epoch (start-up, compilation) when there are others."""
    secs = [h["seconds"] for h in history if h.get("event") == "epoch"]
    steady = sorted(secs[1:] or secs)
    return {"train_s": float(sum(secs)),
            "median_epoch_s": float(steady[len(steady) // 2]) if steady else 0.0,
            "box_update_s": float(sum(h["seconds"] for h in history
                                      if h.get("event") == "box_update"))}


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds ccrop checkpoints, or a ``command.json``, ``ab_arm.json``,
    ``metrics.jsonl`` (first line) or whole saved ``config.yaml`` with ccrop's keys."""
    folder = Path(folder)
    if list_checkpoints(folder):
        return True
    # each file with keys of its own (a same-named file of another tool lacks them):
    # reproduce.COMMAND_FILE, ab.ARM_FILE, the engine's log, save_config's whole config
    for name, keys in (("command.json", ("config", "overrides", "argv")),
                       ("ab_arm.json", ("arm", "seed")), ("metrics.jsonl", ("event",)),
                       ("config.yaml", ("data", "crop", "model", "method", "optim", "train"))):
        try:
            with open(folder / name, encoding="utf-8") as fh:
                text = fh.readline() if name == "metrics.jsonl" else fh.read()
            value = yaml.safe_load(text) if name == "config.yaml" else json.loads(text)
        except (OSError, ValueError, yaml.YAMLError):  # absent, unreadable, not JSON/YAML
            continue
        if isinstance(value, dict) and all(k in value for k in keys) and (
                name != "config.yaml" or all(isinstance(value[k], dict) for k in keys)
                and "out_dir" in value["train"]):
            return True
    return False


def check_run_dir(run_dir: Path, resuming: bool) -> None:
    """Create the run folder and check it can be written; ``ConfigError`` (naming
    ``train.out_dir``) for an existing run unless resuming, and for a non-empty folder (hidden
    entries do not count) that is not a run folder."""
    problem = None
    try:
        if run_dir.is_dir() and any(not p.name.startswith(".") for p in run_dir.iterdir()) \
                and not is_run_folder(run_dir):
            problem = ("is not empty and is not a ccrop run folder (no checkpoints, "
                       "metrics.jsonl, command.json or saved config.yaml); ccrop writes only "
                       "into a new or empty folder or its own run folder: choose another "
                       "train.out_dir")
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
            if list_checkpoints(run_dir) and not resuming:
                problem = ("already holds checkpoints; pass --resume auto to continue it, or "
                           "choose another train.out_dir")
    except OSError as err:
        problem = f"cannot be read or written: {err.strerror or err}"
    if problem is not None:
        raise ConfigError(f"train.out_dir {str(run_dir)!r} {problem}")
