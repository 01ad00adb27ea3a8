"""ContrastiveCrop's box updates in a Lightning ``Trainer``: a callback that re-localizes boxes
(``pip install -e ".[lightning]"``; README: "In a Lightning module")."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as err:  # pragma: no cover - exercised only without Lightning
    raise ImportError("ccrop.lightning needs Lightning (the `lightning` package): "
                      "pip install 'ccrop[lightning]'") from err

from . import dist
from .boxes import BoxStore, box_area
from .config import CropConfig
from .localize import FULL_SHARE_AREA, feature_fn, update_boxes
from .schedule import box_update_epochs

__all__ = ["ContrastiveCropCallback", "shard_loader", "stage_features"]

#: ``update_boxes`` statistics logged after each box update (``iou_gt`` only with ``gt_boxes``)
LOGGED_STATS = ("mean_area", "full_share", "degenerate", "iou_gt", "images", "seconds",
                "fallback_share", "flipped_share", "mean_confidence")


def stage_features(stages: Sequence[int]) -> Callable[[nn.Module], Callable]:
    """``encoder -> feature_fn(encoder, stages)`` for ccrop's ResNets (1-based stages, e.g.
    ``(3,)``, ccrop's default, or ``(4,)``, the paper's); picklable."""
    return partial(feature_fn, stages=tuple(int(s) for s in stages))  # picklable (ddp_spawn)


class ContrastiveCropCallback(Callback):
    """Re-localize ContrastiveCrop's boxes on ccrop's schedule during ``Trainer.fit``.

    After completed epoch ``e`` in ``ccrop.schedule.box_update_epochs(max_epochs, warmup_epochs,
    interval)`` (never after the last epoch, nor once ``max_steps`` is reached) it runs
    ``update_boxes`` with the module's encoder over ``loader`` into ``store`` (shared memory:
    persistent training workers see the boxes), logs the statistics (``LOGGED_STATS``, as
    ``{prefix}name``) and appends them to ``history``.

    Warm-up: a new ``BoxStore`` holds full-image boxes, which ``ContrastiveCrop``'s guard turns
    into RandomResizedCrop (a warning if the store is not full then); ccrop's ``BoxedDataset``
    given as ``train_dataset`` is switched with ``set_epoch(epoch, use_boxes)`` instead.
    DDP: each rank localizes its share (a plain ``DataLoader`` is rebuilt once with an
    unshuffled, padded ``DistributedSampler``) and every rank gets every box; with
    ``ddp_spawn`` pass picklable ``encoder``/``features``. The boxes and ``history`` are in
    the callback's checkpoint state.

    Args:
        store: the (N, 4) ``BoxStore`` the training transform reads.
        loader: un-augmented ``(indices (B,), images (B, 3, H, W))`` normalised like training
            input, e.g. ``DataLoader(IndexedImages(ds, EvalTransform(m, s)), 256)``.
        encoder: attribute (dotted path) of the module holding the encoder, or
            ``fn(pl_module) -> nn.Module``.
        features: ``fn(encoder) -> f`` with ``f(images) -> (B, C, h, w)`` map(s), or ccrop
            ResNet stages such as ``(3,)``; None: ``CropConfig().heatmap_stages`` (needs
            ``stage_maps``: give a factory for other encoders).
        warmup_epochs: epochs before the first update. interval: epochs between updates.
        box_rule: ``update_boxes`` rule keywords; None: ``CropConfig().box_rule()``.
        gt_boxes: optional (N, 4) true boxes (adds ``iou_gt``).
        train_dataset: optional dataset with ``set_epoch(epoch, use_boxes)``.
        amp: bf16 autocast on CUDA. prefix: of the logged names. progress: a progress bar.
    """

    def __init__(
        self, store: BoxStore, loader: Iterable,
        encoder: str | Callable[[LightningModule], nn.Module] = "backbone",
        features: Callable[[nn.Module], Callable] | Sequence[int] | None = None,
        warmup_epochs: int = 100, interval: int = 100, box_rule: dict[str, Any] | None = None,
        gt_boxes: torch.Tensor | None = None, train_dataset: Any = None, amp: bool = False,
        prefix: str = "ccrop/", progress: bool = False,
    ) -> None:
        super().__init__()
        if gt_boxes is not None:
            gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32)
        if int(warmup_epochs) < 0 or int(interval) < 1:
            raise ValueError(f"warmup_epochs must be >= 0 and interval >= 1, got "
                             f"{warmup_epochs}, {interval}")
        if gt_boxes is not None and gt_boxes.shape != (len(store), 4):
            raise ValueError(f"gt_boxes must have shape ({len(store)}, 4), got "
                             f"{tuple(gt_boxes.shape)}")
        if not isinstance(store, BoxStore) or not (
                train_dataset is None or callable(getattr(train_dataset, "set_epoch", None))):
            raise TypeError(f"store must be a ccrop.BoxStore and train_dataset None or have "
                            f"set_epoch(epoch, use_boxes), got {type(store).__name__}, "
                            f"{type(train_dataset).__name__}")
        if features is None:
            features = tuple(CropConfig().heatmap_stages)
        if not callable(features):
            features = stage_features(features)
        self.store, self.loader = store, loader
        self.get_encoder = operator.attrgetter(encoder) if isinstance(encoder, str) else encoder
        self.features = features
        self.warmup_epochs, self.interval = int(warmup_epochs), int(interval)
        self.box_rule = dict(CropConfig().box_rule() if box_rule is None else box_rule)
        self.gt_boxes, self.train_dataset = gt_boxes, train_dataset
        self.amp, self.prefix, self.progress = bool(amp), str(prefix), bool(progress)
        self.history: list[tuple[int, dict[str, Any]]] = []
        self._sharded: Iterable | None = None

    def due(self, completed: int, max_epochs: int | None = None) -> bool:
        """Whether boxes are re-localized after ``completed`` epochs (``max_epochs``: no update
        after the last; None or -1: unbounded)."""
        last = completed + 1 if max_epochs is None or max_epochs < 0 else int(max_epochs)
        return completed in box_update_epochs(last, self.warmup_epochs, self.interval)

    def uses_boxes(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` crops from the boxes (False during warm-up)."""
        return int(epoch) >= self.warmup_epochs

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Warn when the crop would read non-full boxes during warm-up (v2 path)."""
        if self.train_dataset is not None or self.uses_boxes(trainer.current_epoch):
            return
        if (box_area(self.store.boxes) < FULL_SHARE_AREA).any():
            warnings.warn("ContrastiveCropCallback: the store holds object boxes but training "
                          f"starts in warm-up (epoch {trainer.current_epoch} < "
                          f"{self.warmup_epochs}); ContrastiveCrop will read them. Start from a "
                          "new BoxStore (full-image boxes) for RandomResizedCrop warm-up.",
                          stacklevel=2)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Switch ``train_dataset`` (if given) between warm-up crops and box crops."""
        if self.train_dataset is not None:
            epoch = trainer.current_epoch
            self.train_dataset.set_epoch(epoch, use_boxes=self.uses_boxes(epoch))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Re-localize after this epoch when the schedule says so, and log the statistics."""
        completed = trainer.current_epoch + 1  # current_epoch counts completed epochs before
        if not self.due(completed, trainer.max_epochs):
            return
        if trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step:
            return  # the fit ends here: like the last epoch, no update
        stats = self.localize(pl_module)
        self.history.append((completed, stats))
        for key in LOGGED_STATS:
            if key in stats:
                pl_module.log(self.prefix + key, float(stats[key]), on_step=False,
                              on_epoch=True, batch_size=1, sync_dist=True)  # rank mean

    def localize(self, pl_module: LightningModule) -> dict[str, Any]:
        """Localize now with ``pl_module``'s encoder into the store (every rank must call it);
        returns ``update_boxes``'s statistics."""
        encoder = self.get_encoder(pl_module)
        return update_boxes(self.features(encoder), self._rank_loader(), self.store,
                            device=pl_module.device, amp=self.amp, gt_boxes=self.gt_boxes,
                            progress=self.progress and dist.is_main_process(), **self.box_rule)

    def _rank_loader(self) -> Iterable:
        """This rank's share of ``loader``: the loader itself in one process."""
        world = dist.get_world_size()
        if world == 1:
            return self.loader
        if self._sharded is None:
            self._sharded = shard_loader(self.loader, dist.get_rank(), world)
        return self._sharded

    def state_dict(self) -> dict[str, Any]:
        """The boxes (``BoxStore.state_dict``: (N, 4) boxes, version) and the update history."""
        return {"store": self.store.state_dict(), "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the boxes and history saved by ``state_dict`` (on resume)."""
        self.store.load_state_dict(state_dict["store"])
        self.history = list(state_dict.get("history", []))


def shard_loader(loader: Iterable, rank: int, world: int) -> Iterable:
    """Rank ``rank``'s ``ceil(N / world)`` share of a ``DataLoader`` (same settings, an
    unshuffled padded ``DistributedSampler``); ``loader`` itself if it already has one."""
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, DistributedSampler):
        return loader
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError("under DDP the localization loader must be a DataLoader with a "
                        "batch_size (the callback adds a DistributedSampler) or one with a "
                        f"DistributedSampler already; got {type(loader).__name__}")
    sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=rank, shuffle=False,
                                 drop_last=False)  # padded: equal counts for the all-gather
    workers = loader.num_workers
    return DataLoader(loader.dataset, loader.batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context,
                      prefetch_factor=loader.prefetch_factor if workers > 0 else None,
                      persistent_workers=loader.persistent_workers and workers > 0)
