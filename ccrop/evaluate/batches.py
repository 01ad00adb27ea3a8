"""The evaluation protocols' batches on the GPU path: a labelled split held on the device."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset

from .. import dist
from ..crop import CropPlan
from ..data.gpu_views import DeviceImages, GPUViews
from ..data.sources import padded_share
from ..data.tensors import dataset_labels, dataset_to_uint8
from ..data.views import Recipe


class DeviceLabeledBatches:
    """``(images (B, 3, S, S), labels (B,))`` batches made on the device from a resident small
    dataset: the GPU path of the evaluation protocols, a drop-in for their DataLoaders (``len``,
    ``dataset``, iteration).

    With ``train`` the linear protocol's augmentation (RandomResizedCrop(``scale``) + flip,
    batched by ``ccrop.data.gpu_views``; a new shuffle and draws each pass, seeded by
    ``(seed, pass)``), else the un-augmented images in dataset order (kNN bank and queries,
    linear test set); ``shard`` (plain batches only) gives this rank's share, padded as an
    unshuffled ``DistributedSampler`` pads (``ccrop.dist.gather_shards`` restores the order).
    ``base`` is a map-style dataset of ``(image, label)``; ``size`` resizes the images once
    (default: native); ``num_workers`` processes decode image files at construction; ``images``
    (N, 3, H, W) uint8 already on ``device`` (the GPU source's copy) skips that decoding.
    """

    def __init__(self, base: Dataset, mean: Sequence[float], std: Sequence[float],
                 batch_size: int, device: torch.device, train: bool = False, seed: int = 0,
                 scale: Sequence[float] = (0.08, 1.0), size: int | None = None,
                 shard: bool = False, num_workers: int = 0,
                 images: torch.Tensor | None = None) -> None:
        self.dataset, self.device = base, torch.device(device)
        self.batch_size, self.train, self.seed, self.shard = int(batch_size), train, seed, shard
        if images is None:
            images = dataset_to_uint8(base, image_size=size, progress=dist.is_main_process(),
                                      num_workers=num_workers)  # (N, 3, H, W)
        self.images = DeviceImages(images, self.device)
        self.labels = dataset_labels(base).to(self.device)  # (N,)
        flip_only = Recipe(flip_p=0.5, jitter_p=0.0, gray_p=0.0)
        self.views = GPUViews(CropPlan("rcrop", tuple(scale)), flip_only,
                              self.images.image_size[0], mean, std, num_views=1,
                              device=self.device)
        self._passes = 0

    def __len__(self) -> int:
        n = len(self.images)
        per_rank = -(-n // dist.get_world_size()) if self.shard else n
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images (B, 3, S, S), labels (B,))`` on the device."""
        gen = None
        if self.train:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(self.seed * 1_000_003 + self._passes)
            order = torch.randperm(len(self.images), generator=gen, device=self.device)
        elif self.shard:
            order = padded_share(len(self.images), self.device)  # (ceil(N / world),)
        else:
            order = torch.arange(len(self.images), device=self.device)  # (N,)
        self._passes += 1
        no_box = torch.zeros(1, 4, device=self.device)  # RRC reads no box
        for start in range(0, order.shape[0], self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.train:
                images = self.views(self.images.data, idx, no_box.expand(idx.shape[0], 4),
                                    gen)[0]
            else:
                images = self.views.plain(self.images.data.index_select(0, idx))
            yield images, self.labels[idx]
