"""Evaluation of a run's encoder: the kNN monitor (and ``ccrop knn``) and the protocols' batches.

``Evaluator`` turns a run's ``RunData`` into the loaders of the evaluation protocols: on the
device for small sets with ``data.pipeline=gpu`` (``DeviceLabeledBatches``, reusing the view
source's resident images), else PIL DataLoaders. The engine receives ``Evaluator.monitor``, a
callable ``backbone -> kNN result``, and never sees datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import dist
from ..data import DATASET_INFO
from ..data.sources import eval_loader


class Evaluator:
    """The evaluation protocols of one run's data.

    Args:
        data: the run's ``ccrop.build.RunData``.
        cfg: the run's ``Config`` (its ``data``, ``train`` and ``eval`` settings).
        resident: splits already held on the device as (N, 3, H, W) uint8 (the GPU view
            source's copy of the pretraining split), reused instead of decoding them again.
    """

    def __init__(self, data: Any, cfg: Any,
                 resident: dict[str, torch.Tensor] | None = None) -> None:
        self.data, self.cfg = data, cfg
        self.resident = dict(resident or {})
        self._device: dict[tuple, Any] = {}

    def monitor(self, device: torch.device) -> Callable[[nn.Module], dict[str, Any]] | None:
        """``backbone -> kNN result`` for the engine, or None when the data has no labels."""
        if not (self.data.num_classes and self.data.has_labels):
            return None
        return lambda backbone: self.knn(backbone, device)

    def knn(self, backbone: nn.Module, device: torch.device,
            progress: bool = False) -> dict[str, Any]:
        """Weighted kNN (``eval.knn_k``, ``eval.knn_temperature``) of ``backbone``'s pooled
        features: eval-train split as the bank, test split as queries. The pretraining monitor
        and ``ccrop knn`` both call this."""
        from .knn import run_knn

        d, t = self.cfg.data, self.cfg.train
        shard = dist.is_dist()  # each rank embeds its share; all see the whole bank
        if shard:  # rank 0's BN statistics, as in the saved checkpoint
            for buf in backbone.buffers():
                dist.broadcast(buf)
        loaders = [self.eval_batches(s, device, shard=shard)
                   for s in (d.eval_train_split, d.test_split)]
        e = self.cfg.eval
        return run_knn(backbone, *loaders, self.data.num_classes, device, e.knn_k,
                       e.knn_temperature, amp=t.amp, channels_last=t.channels_last,
                       progress=progress, gather=shard)

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
            from .batches import DeviceLabeledBatches

            key = (split, str(device), train, shard, batch_size)
            if key not in self._device:
                self._device[key] = DeviceLabeledBatches(
                    self.data.split(split), self.data.mean, self.data.std, batch_size, device,
                    train=train, seed=self.cfg.train.seed, size=d.loc_image_size, shard=shard,
                    num_workers=d.num_workers, images=self._resident(split, device))
            return self._device[key]
        if not train:
            return eval_loader(self.data.split(split), self.eval_transform(), batch_size,
                               d.num_workers, shard)
        from torch.utils.data import DataLoader

        from ..data.boxed import LabeledImages
        from .linear import linear_train_transform

        tf = linear_train_transform(self.data.image_size, self.data.mean, self.data.std)
        return DataLoader(LabeledImages(self.data.split(split), tf), batch_size, shuffle=True,
                          num_workers=d.num_workers, drop_last=False)

    def eval_transform(self) -> Any:
        """Un-augmented input of kNN and the linear test set. Small sets: the native size
        (``data.loc_image_size`` if set). Others (ImageNet, folders): the standard protocol,
        the short side resized to ``S * 256 / 224`` then a centre ``S`` crop (S = 224: Resize(256)
        + CenterCrop(224)). Localization keeps the official square resize (``loc_loader``)."""
        d = self.cfg.data
        if DATASET_INFO[d.dataset].get("small", True):
            from ..data.views import EvalTransform

            return EvalTransform(self.data.mean, self.data.std, d.loc_image_size)
        from .linear import eval_transform

        return eval_transform(self.data.image_size, self.data.mean, self.data.std,
                              resize=round(self.data.image_size * 256 / 224))

    def _resident(self, split: str, device: torch.device) -> torch.Tensor | None:
        """The view source's device copy of ``split`` (same size rule), if it is on ``device``."""
        images = self.resident.get(split)
        return images if images is not None and images.device == torch.device(device) else None
