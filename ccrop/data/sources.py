"""View sources: what the engine iterates, ``(indices, [view_1, view_2])`` batches on the device.

Two paths, one interface (the engine never knows which made a batch):

- ``CPUSource``: DataLoader workers run the PIL pipeline per sample (``BoxedDataset``), reading
  boxes from the shared-memory store;
- ``GPUSource``: the dataset is held on the device as uint8 and both views of a batch come from
  one batched crop-and-resize (``ccrop.gpu_views``), crop parameters sampled with the same law.

Both also serve the un-augmented images of the localization pass and of the kNN monitor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import dist
from ..boxes import BoxStore
from .boxed import BoxedDataset, IndexedImages, LabeledImages
from .views import EvalTransform, build_view_transform


@dataclass
class ViewSpec:
    """Everything a source needs to know about the views."""

    recipe: str
    crop: str
    size: int
    mean: Sequence[float]
    std: Sequence[float]
    scale: Sequence[float]
    ratio: Sequence[float]
    alpha: float
    full_box_guard: float | None
    loc_size: int | None = None  # localization input side (None: native)


def _sampler(ds: Dataset, shuffle: bool, seed: int, drop_last: bool) -> DistributedSampler:
    # DistributedSampler also works in one process (1 replica): one code path, seeded per epoch
    return DistributedSampler(ds, num_replicas=dist.get_world_size(), rank=dist.get_rank(),
                              shuffle=shuffle, seed=seed, drop_last=drop_last)


class CPUSource:
    """PIL views made by DataLoader workers.

    Args:
        base: map-style dataset of ``(image, label)``.
        store: the box store.
        spec: view specification.
        batch_size: global batch size (split evenly across ranks).
        num_workers: DataLoader workers per rank.
        persistent_workers: keep workers alive across epochs (boxes stay fresh: shared memory).
        seed: augmentation and shuffling seed; views depend only on (seed, epoch, index).
        device: where batches go.
        loc_batch_size: batch size of the localization pass.
    """

    def __init__(self, base: Dataset, store: BoxStore, spec: ViewSpec, batch_size: int,
                 num_workers: int, persistent_workers: bool, seed: int, device: torch.device,
                 loc_batch_size: int = 512) -> None:
        self.device, self.spec = device, spec
        args = (spec.recipe, spec.crop, spec.size, spec.mean, spec.std, spec.scale, spec.ratio,
                spec.alpha, spec.full_box_guard)
        plain = build_view_transform(spec.recipe, "rcrop", *args[2:])
        self.dataset = BoxedDataset(base, store, build_view_transform(*args), 2, seed, plain)
        self.sampler = _sampler(self.dataset, True, seed, drop_last=True)
        per_rank = max(1, batch_size // dist.get_world_size())
        self.loader_kw = dict(num_workers=num_workers, pin_memory=device.type == "cuda",
                              persistent_workers=persistent_workers and num_workers > 0)
        self.loader = DataLoader(self.dataset, per_rank, sampler=self.sampler, drop_last=True,
                                 **self.loader_kw)
        loc_ds = IndexedImages(base, EvalTransform(spec.mean, spec.std, spec.loc_size))
        self.loc_loader = DataLoader(loc_ds, loc_batch_size, sampler=_sampler(loc_ds, False, 0,
                                     False), num_workers=num_workers,
                                     pin_memory=device.type == "cuda")

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, use_boxes: bool) -> None:
        """Reshuffle for ``epoch`` and switch between box crops and warm-up RRC."""
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch, use_boxes)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        for indices, views, _ in self.loader:
            yield indices, [v.to(self.device, non_blocking=True) for v in views]

    def loc_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented ``(indices (B,), images (B,3,H,W))`` of this rank's shard."""
        yield from self.loc_loader

    def boxes_updated(self, store: BoxStore) -> None:
        """Nothing to do: workers read the shared-memory store directly."""


def eval_loader(base: Dataset, mean: Sequence[float], std: Sequence[float], batch_size: int,
                num_workers: int, size: int | None = None) -> DataLoader:
    """Loader of ``(images, labels)`` without augmentation for kNN/linear feature extraction."""
    ds = LabeledImages(base, EvalTransform(mean, std, size))
    return DataLoader(ds, batch_size, shuffle=False, num_workers=num_workers)


class GPUSource:
    """Batched views on the device: the dataset is held there as uint8 (``ccrop.gpu_views``).

    Shuffling and augmentation draw from a device generator seeded by ``(seed, epoch)``, so a
    resumed run sees the same batches. During warm-up a second view maker with the plain RRC law
    (sharing the same image tensor) is used.

    Args:
        base: map-style dataset (converted once with ``ccrop.data.dataset_to_uint8``).
        store: the box store (copied to the device after each update).
        spec: view specification.
        batch_size: global batch size (split evenly across ranks).
        seed: shuffling and augmentation seed.
        device: where the data and views live.
        loc_batch_size: batch size of the localization pass.
    """

    def __init__(self, base: Dataset, store: BoxStore, spec: ViewSpec, batch_size: int,
                 seed: int, device: torch.device, loc_batch_size: int = 512) -> None:
        from ..gpu_views import GPUViews
        from .tensors import dataset_to_uint8

        images = dataset_to_uint8(base, image_size=spec.loc_size).to(device)  # (N, 3, H, W)
        kw = dict(recipe=spec.recipe, size=spec.size, mean=spec.mean, std=spec.std,
                  scale=spec.scale, ratio=spec.ratio, alpha=spec.alpha,
                  full_box_guard=spec.full_box_guard, device=device)
        self.views = GPUViews(images, store, crop=spec.crop, **kw)
        self.plain = GPUViews(images, None, crop="rcrop", **kw)
        self.device, self.seed, self.loc_batch_size = device, seed, loc_batch_size
        self.per_rank = max(1, batch_size // dist.get_world_size())
        self.epoch, self.use_boxes = 0, True

    def __len__(self) -> int:
        return self.views.num_batches(self.per_rank, True, dist.get_world_size())

    def set_epoch(self, epoch: int, use_boxes: bool) -> None:
        """Select the epoch's seed and the crop law (boxes or warm-up RRC)."""
        self.epoch, self.use_boxes = int(epoch), bool(use_boxes)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)  # same on every rank: one permutation
        aug = torch.Generator(device=self.device)
        aug.manual_seed((self.seed * 1_000_003 + self.epoch) * 131 + dist.get_rank() + 1)
        maker = self.views if self.use_boxes else self.plain
        for idx in self.views.epoch_batches(self.per_rank, True, gen, True, dist.get_rank(),
                                            dist.get_world_size()):
            yield idx, maker(idx, aug)

    def loc_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented ``(indices, images)`` of this rank's shard, straight from the device."""
        n, world, rank = len(self.views), dist.get_world_size(), dist.get_rank()
        padded = -(-n // world) * world  # equal shard sizes for all_gather; repeats are harmless
        shard = (torch.arange(padded, device=self.device) % n)[rank::world]
        for start in range(0, shard.shape[0], self.loc_batch_size):
            idx = shard[start:start + self.loc_batch_size]
            yield idx, self.views.eval_batch(idx)

    def boxes_updated(self, store: BoxStore) -> None:
        """Copy the updated boxes to the device."""
        self.views.sync_boxes(store)
