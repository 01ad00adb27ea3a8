"""ContrastiveCrop's box updates in a Lightning ``Trainer``: a callback that re-localizes boxes.

Usage (``pip install -e ".[lightning]"``; train on ``BoxedSamples(ds, store, v2_views)``):
    plain = DataLoader(IndexedImages(ds, EvalTransform(mean, std)), 256)  # (index, image)
    cb = ContrastiveCropCallback(store, plain, encoder="backbone", warmup_epochs=100, interval=100)
    Trainer(max_epochs=500, callbacks=[cb]).fit(module)  # boxes updated after epochs 100..400
"""

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

#: ``update_boxes`` statistics logged after each box update, those it returns (``iou_gt`` only
#: with ``gt_boxes``).
LOGGED_STATS = ("mean_area", "full_share", "degenerate", "iou_gt", "images", "seconds",
                "fallback_share", "flipped_share", "mean_confidence")


def stage_features(stages: Sequence[int]) -> Callable[[nn.Module], Callable]:
    """A ``features`` factory for ccrop's ResNets: ``encoder -> feature_fn(encoder, stages)``.

    Args:
        stages: 1-based ResNet stages whose maps make the heatmap, e.g. ``(3,)`` (ccrop's
            default) or ``(4,)`` (the paper's last map).

    Returns:
        ``factory(encoder) -> fn``, with ``fn(images (B, 3, H, W)) -> (B, C, h, w)`` map(s).
    """
    return partial(feature_fn, stages=tuple(int(s) for s in stages))  # picklable (ddp_spawn)


def _encoder_getter(encoder: str | Callable[[LightningModule], nn.Module]
                    ) -> Callable[[LightningModule], nn.Module]:
    if isinstance(encoder, str):
        if not encoder:
            raise ValueError("encoder attribute name must not be empty")
        return operator.attrgetter(encoder)  # "backbone" or a dotted path "model.backbone"
    if callable(encoder):
        return encoder
    raise TypeError(f"encoder must be an attribute name or a callable(module) -> nn.Module, got "
                    f"{type(encoder).__name__}")


class ContrastiveCropCallback(Callback):
    """Re-localize ContrastiveCrop's boxes on ccrop's schedule during ``Trainer.fit``.

    After completed epoch ``e`` (1-based) with ``e >= warmup_epochs``, ``e % interval == 0`` and
    ``e != trainer.max_epochs`` (``ccrop.schedule.box_update_epochs``; never after the last
    epoch, nor once ``max_steps`` is reached) it runs ``ccrop.localize.update_boxes`` with the
    module's current encoder over ``loader`` and writes one box per image into ``store``. The
    store lives in shared memory, so persistent DataLoader workers of the training loader see the
    new boxes. The statistics are logged with ``pl_module.log`` as ``{prefix}mean_area``,
    ``{prefix}full_share``, ``{prefix}degenerate``, ``{prefix}images``, ``{prefix}seconds`` and
    ``{prefix}iou_gt`` (only with ``gt_boxes``), and kept in ``history``.

    Warm-up: with ``ccrop.transforms.ContrastiveCrop`` (v2) the crop reads whatever the store
    holds; a new ``BoxStore`` holds full-image boxes ``(0, 0, 1, 1)`` until the first update,
    which the crop's default ``full_box_guard=0.95`` turns into plain RandomResizedCrop. So the
    v2 path needs nothing else (the callback warns if the store is not full during warm-up).
    With ccrop's own ``BoxedDataset`` pass it as ``train_dataset``: the callback then calls
    ``train_dataset.set_epoch(epoch, use_boxes=epoch >= warmup_epochs)`` at each epoch start.

    DDP: ``update_boxes`` all-gathers boxes through ``ccrop.dist``, which reads
    ``torch.distributed``'s default process group, the one Lightning initialises. Each rank
    localizes its shard only: when the world size is above 1 and ``loader`` is a plain
    ``DataLoader``, the callback rebuilds it once with an unshuffled ``DistributedSampler``
    (padded, so every rank feeds the same count, as the all-gather needs); a loader that already
    has a ``DistributedSampler`` is used as it is. Every rank ends with every box. Tested with
    ``strategy="ddp"`` (gloo on CPU); with ``"ddp_spawn"`` the callback is pickled into the
    workers, so pass picklable ``encoder``/``features`` (names, ``functools.partial``, no
    lambdas); the store's shared memory is then one for all ranks and the launching process
    (each rank writes the same gathered boxes), while ``history`` stays in the workers.

    Checkpoints: the boxes and ``history`` are saved in the callback's state, so a resumed run
    continues with the boxes it had.

    Args:
        store: the ``BoxStore`` (N, 4) that the training transform reads.
        loader: un-augmented images, yielding ``(indices (B,), images (B, 3, H, W))`` normalised
            like training input, e.g. ``DataLoader(IndexedImages(ds, EvalTransform(m, s)), 256)``.
        encoder: attribute (dotted path) of the ``LightningModule`` holding the encoder, or
            ``fn(pl_module) -> nn.Module``.
        features: heatmap features of the encoder: a factory ``fn(encoder) -> f`` with
            ``f(images (B, 3, H, W)) -> (B, C, h, w)`` map(s) (e.g. ``lambda m:
            feature_fn(m, (3,))``), or a sequence of ccrop ResNet stages such as ``(3,)``. None:
            ccrop's default stages (``CropConfig().heatmap_stages``, layer3), which need an
            encoder with ``stage_maps`` (ccrop's ResNets); give a factory for other encoders.
        warmup_epochs: epochs before the first update (the crop is RRC-like until then).
        interval: epochs between updates (>= 1).
        box_rule: heatmap -> box keywords of ``update_boxes`` (``threshold``, ``mode``,
            ``align``, ``region``); None: ccrop's default ``CropConfig().box_rule()``.
        gt_boxes: optional (N, 4) true boxes; adds ``iou_gt`` to the statistics.
        train_dataset: optional dataset with ``set_epoch(epoch, use_boxes)`` (``BoxedDataset``).
        amp: bf16 autocast on CUDA while localizing.
        prefix: name prefix of the logged statistics.
        progress: show a progress bar while localizing (rank 0).

    Attributes:
        history: ``[(completed_epoch, stats), ...]`` of every update so far.
    """

    def __init__(
        self,
        store: BoxStore,
        loader: Iterable,
        encoder: str | Callable[[LightningModule], nn.Module] = "backbone",
        features: Callable[[nn.Module], Callable] | Sequence[int] | None = None,
        warmup_epochs: int = 100,
        interval: int = 100,
        box_rule: dict[str, Any] | None = None,
        gt_boxes: torch.Tensor | None = None,
        train_dataset: Any = None,
        amp: bool = False,
        prefix: str = "ccrop/",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(store, BoxStore):
            raise TypeError(f"store must be a ccrop.BoxStore, got {type(store).__name__}")
        if int(warmup_epochs) < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if gt_boxes is not None:
            gt_boxes = torch.as_tensor(gt_boxes, dtype=torch.float32)
            if gt_boxes.shape != (len(store), 4):
                raise ValueError(f"gt_boxes must have shape ({len(store)}, 4), got "
                                 f"{tuple(gt_boxes.shape)}")
        if train_dataset is not None and not callable(getattr(train_dataset, "set_epoch", None)):
            raise TypeError("train_dataset must have set_epoch(epoch, use_boxes) "
                            "(ccrop.data.BoxedDataset)")
        if features is None:
            features = tuple(CropConfig().heatmap_stages)
        if not callable(features):
            features = stage_features(features)
        self.store, self.loader = store, loader
        self.get_encoder = _encoder_getter(encoder)
        self.features = features
        self.warmup_epochs, self.interval = int(warmup_epochs), int(interval)
        self.box_rule = dict(CropConfig().box_rule() if box_rule is None else box_rule)
        self.gt_boxes, self.train_dataset = gt_boxes, train_dataset
        self.amp, self.prefix, self.progress = bool(amp), str(prefix), bool(progress)
        self.history: list[tuple[int, dict[str, Any]]] = []
        self._sharded: Iterable | None = None

    # -- schedule --------------------------------------------------------------------------

    def due(self, completed: int, max_epochs: int | None = None) -> bool:
        """Whether boxes are re-localized after ``completed`` epochs (1-based count).

        Args:
            completed: number of epochs done.
            max_epochs: the run's epochs (no update after the last); None or -1: unbounded.

        Returns:
            True when ``completed`` is in ``box_update_epochs(max_epochs, warmup, interval)``.
        """
        last = completed + 1 if max_epochs is None or max_epochs < 0 else int(max_epochs)
        return completed in box_update_epochs(last, self.warmup_epochs, self.interval)

    def uses_boxes(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` crops from the boxes (False during warm-up)."""
        return int(epoch) >= self.warmup_epochs

    # -- hooks -----------------------------------------------------------------------------

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
        """Localize now with ``pl_module``'s encoder and write every box into the store.

        Every rank must call it (it all-gathers under DDP).

        Args:
            pl_module: the module whose encoder makes the heatmaps.

        Returns:
            ``update_boxes``'s statistics (``mean_area``, ``full_share``, ``degenerate``,
            ``images``, ``seconds``, ``iou_gt`` with ``gt_boxes``), equal on every rank but
            ``seconds``.
        """
        encoder = self.get_encoder(pl_module)
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must resolve to an nn.Module, got {type(encoder).__name__}")
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

    # -- checkpoint state ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The boxes (``BoxStore.state_dict``: (N, 4) boxes, version) and the update history."""
        return {"store": self.store.state_dict(), "history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the boxes and history saved by ``state_dict`` (on resume)."""
        self.store.load_state_dict(state_dict["store"])
        self.history = list(state_dict.get("history", []))


def shard_loader(loader: Iterable, rank: int, world: int) -> Iterable:
    """``loader`` with an unshuffled, padded ``DistributedSampler``: rank ``rank``'s share.

    Args:
        loader: a ``DataLoader`` yielding ``(indices (B,), images (B, 3, H, W))``.
        rank: this process's rank.
        world: the number of processes.

    Returns:
        A ``DataLoader`` over ``ceil(N / world)`` images of this rank (the same settings as
        ``loader``), or ``loader`` itself when it already has a ``DistributedSampler``.

    Raises:
        TypeError: ``loader`` is not a ``DataLoader`` with ``batch_size`` (cannot be sharded).
    """
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
