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
        self.loader = DataLoader(self.dataset, per_rank, sampler=self.sampler, drop_last=True,
                                 num_workers=num_workers, pin_memory=device.type == "cuda",
                                 persistent_workers=persistent_workers and num_workers > 0)
        self.loc_loader = loc_loader(base, spec.mean, spec.std, loc_batch_size, num_workers,
                                     spec.loc_size, pin_memory=device.type == "cuda")

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


def loc_loader(base: Dataset, mean: Sequence[float], std: Sequence[float], batch_size: int,
               num_workers: int, size: int | None = None, pin_memory: bool = False) -> DataLoader:
    """Loader of un-augmented ``(indices, images)`` for the localization pass: this rank's shard
    (padded so every rank gets as many batches; repeats are harmless, boxes go by index)."""
    ds = IndexedImages(base, EvalTransform(mean, std, size))
    return DataLoader(ds, batch_size, sampler=_sampler(ds, False, 0, False),
                      num_workers=num_workers, pin_memory=pin_memory)


def eval_loader(base: Dataset, mean: Sequence[float], std: Sequence[float], batch_size: int,
                num_workers: int, size: int | None = None) -> DataLoader:
    """Loader of ``(images, labels)`` without augmentation for kNN/linear feature extraction."""
    ds = LabeledImages(base, EvalTransform(mean, std, size))
    return DataLoader(ds, batch_size, shuffle=False, num_workers=num_workers)


class DecodedImages(Dataset):
    """``index -> (index, uint8 (3, S0, S0))``: decode and resize only, for device augmentation."""

    def __init__(self, base: Dataset, size: int) -> None:
        self.base, self.size = base, int(size)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        import numpy as np
        from PIL import Image

        from .boxed import unpack_item
        from .images import to_rgb

        img = to_rgb(unpack_item(self.base[index])[0])
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (S0, S0, 3)
        return int(index), arr.permute(2, 0, 1).contiguous()


#: ``auto_chunk``: at most this many batches, and this many bytes of float32 views, per call.
AUTO_CHUNK_MAX = 8
AUTO_CHUNK_BYTES = 256 * 2**20


def auto_chunk(device: torch.device, batch_size: int, num_views: int, size: int) -> int:
    """Batches per batched view call: 1 on CPU (larger calls only lose cache there), else as
    many as keep the float32 views of one call within ``AUTO_CHUNK_BYTES`` (at most
    ``AUTO_CHUNK_MAX``): 8 for CIFAR at batch 512, 4 for STL-10 at 256."""
    if device.type == "cpu":
        return 1
    per_batch = batch_size * num_views * 3 * size * size * 4
    return max(1, min(AUTO_CHUNK_MAX, AUTO_CHUNK_BYTES // per_batch))


class GPUSource:
    """Batched views on the device (``ccrop.gpu_views``).

    Small datasets are held on the device as uint8 (``resident``); folder datasets are decoded
    and resized to ``decode_size`` by DataLoader workers and the uint8 batches are augmented on
    the device (boxes are normalised, so they apply to the resized image). Shuffling and
    augmentation draw from generators seeded by ``(seed, epoch)``, so a resumed run sees the
    same batches. During warm-up a second view maker with the plain RRC law is used.

    Args:
        base: map-style dataset.
        store: the box store (copied to the device after each update).
        spec: view specification.
        batch_size: global batch size (split evenly across ranks).
        seed: shuffling and augmentation seed.
        device: where the data and views live.
        loc_batch_size: batch size of the localization pass.
        decode_size: None = resident dataset; else the side workers decode folder images to.
        num_workers: DataLoader workers (folder datasets).
        chunk: resident datasets: batches whose views one batched call makes (fewer, larger
            kernels; the GPU path is launch-bound at CIFAR size). None = ``auto_chunk``.
        out_dtype: dtype of the views (bfloat16 under bf16 autocast saves the cast).
        channels_last: views in channels-last memory format.
    """

    def __init__(self, base: Dataset, store: BoxStore, spec: ViewSpec, batch_size: int,
                 seed: int, device: torch.device, loc_batch_size: int = 512,
                 decode_size: int | None = None, num_workers: int = 4,
                 chunk: int | None = None, out_dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        from ..gpu_views import GPUViews
        from .tensors import dataset_to_uint8

        if decode_size is None:
            images: torch.Tensor | int = dataset_to_uint8(base, image_size=spec.loc_size)
            images = images.to(device)  # (N, 3, H, W) uint8, resident
        else:
            images = len(base)
        kw = dict(recipe=spec.recipe, size=spec.size, mean=spec.mean, std=spec.std,
                  scale=spec.scale, ratio=spec.ratio, alpha=spec.alpha,
                  full_box_guard=spec.full_box_guard, device=device, out_dtype=out_dtype,
                  channels_last=channels_last)
        self.views = GPUViews(images, store, crop=spec.crop, **kw)
        self.plain = GPUViews(images, None, crop="rcrop", **kw)
        self.device, self.seed, self.loc_batch_size = device, seed, loc_batch_size
        self.per_rank = max(1, batch_size // dist.get_world_size())
        if chunk is not None and int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1 or None, got {chunk}")
        self.chunk = auto_chunk(device, self.per_rank, self.views.num_views, spec.size) \
            if chunk is None else int(chunk)
        self.epoch, self.use_boxes = 0, True
        self.loader = self.sampler = self.loc_loader = None
        if decode_size is not None:
            ds = DecodedImages(base, decode_size)
            self.sampler = _sampler(ds, True, seed, drop_last=True)
            self.loader = DataLoader(ds, self.per_rank, sampler=self.sampler, drop_last=True,
                                     num_workers=num_workers, pin_memory=device.type == "cuda",
                                     persistent_workers=num_workers > 0)
            self.loc_loader = loc_loader(base, spec.mean, spec.std, loc_batch_size, num_workers,
                                         spec.loc_size)

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        return self.views.num_batches(self.per_rank, True, dist.get_world_size())

    def set_epoch(self, epoch: int, use_boxes: bool) -> None:
        """Select the epoch's seed and the crop law (boxes or warm-up RRC)."""
        self.epoch, self.use_boxes = int(epoch), bool(use_boxes)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        aug = torch.Generator(device=self.device)
        aug.manual_seed((self.seed * 1_000_003 + self.epoch) * 131 + dist.get_rank() + 1)
        maker = self.views if self.use_boxes else self.plain
        if self.loader is not None:
            for idx, batch in self.loader:
                yield idx, maker.views_of(batch, idx, aug)
            return
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)  # same on every rank: one permutation
        batches = list(self.views.epoch_batches(self.per_rank, True, gen, True, dist.get_rank(),
                                                dist.get_world_size()))  # device slices
        for start in range(0, len(batches), self.chunk):
            group = batches[start:start + self.chunk]
            views = maker(torch.cat(group), aug)  # V x (len(group) * B, 3, S, S)
            for j, idx in enumerate(group):
                rows = slice(j * self.per_rank, (j + 1) * self.per_rank)
                yield idx, [v[rows] for v in views]

    def loc_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented ``(indices, images)`` of this rank's shard."""
        if self.loc_loader is not None:
            yield from self.loc_loader
            return
        n, world, rank = len(self.views), dist.get_world_size(), dist.get_rank()
        padded = -(-n // world) * world  # equal shard sizes for all_gather; repeats are harmless
        shard = (torch.arange(padded, device=self.device) % n)[rank::world]
        for start in range(0, shard.shape[0], self.loc_batch_size):
            idx = shard[start:start + self.loc_batch_size]
            yield idx, self.views.eval_batch(idx)

    def boxes_updated(self, store: BoxStore) -> None:
        """Copy the updated boxes to the device."""
        self.views.sync_boxes(store)
