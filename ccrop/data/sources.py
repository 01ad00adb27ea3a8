"""View sources: what the engine iterates, ``(indices, [view_1, view_2])`` batches on the device.

Two paths, one interface (the engine never knows which made a batch):

- ``CPUSource``: DataLoader workers run the PIL pipeline per sample (``BoxedDataset``), reading
  boxes from the shared-memory store;
- ``GPUSource``: the dataset is held on the device as uint8 and both views of a batch come from
  one batched crop-and-resize (``ccrop.data.gpu_views``), crop parameters sampled with the same law.

Both also serve the un-augmented images of the localization pass. ``DeviceLabeledBatches``
serves the evaluation protocols (kNN, linear) on the same GPU path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from numbers import Integral
from typing import Any, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import dist
from ..boxes import BoxStore
from ..crop import CropPlan
from .boxed import BoxedDataset, IndexedImages, LabeledImages
from .folder import FittedImages, decode_fitted, decodes_to_size, square_size
from .views import EvalTransform, build_view_transform


@runtime_checkable
class ViewSource(Protocol):
    """What the engine iterates: ``CPUSource`` and ``GPUSource`` both are one.

    ``len`` batches per epoch; iterating yields ``(indices (B,), [view_1, view_2])`` with views
    (B, 3, S, S) on the device; ``set_epoch`` picks the epoch's shuffle and crop law (boxes or
    warm-up RRC); ``loc_batches`` yields the un-augmented ``(indices, images)`` of the
    localization pass; ``boxes_updated`` is called after every box update.
    """

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]: ...

    def set_epoch(self, epoch: int, use_boxes: bool) -> None: ...

    def loc_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def boxes_updated(self, store: BoxStore) -> None: ...


@dataclass
class ViewSpec:
    """Everything a source needs to know about the views."""

    recipe: str
    plan: CropPlan  # the crop law (its warm-up law is plan.plain())
    size: int
    mean: Sequence[float]
    std: Sequence[float]
    loc_size: int | None = None  # localization input side (None: native)


class LeanDistributedSampler(DistributedSampler):
    """``DistributedSampler`` with the same order, held as one int64 array instead of a list.

    torch's sampler builds ``randperm(N).tolist()`` each epoch: 1.28M Python ints (~49 MB)
    kept while the epoch runs. This one keeps a numpy array (8 bytes an index) and makes each
    int only when it is read. Same seed, epoch, padding and rank slicing: identical indices.
    """

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.drop_last:
            order = order[:self.total_size]
        elif self.total_size > n:  # pad by repeating from the start, as torch does
            order = order.repeat(-(-self.total_size // n))[:self.total_size]
        picked = order[self.rank:self.total_size:self.num_replicas].numpy()
        return (int(i) for i in picked)


def _sampler(ds: Dataset, shuffle: bool, seed: int, drop_last: bool) -> DistributedSampler:
    # one code path for one process (1 replica) and DDP, seeded per epoch
    return LeanDistributedSampler(ds, num_replicas=dist.get_world_size(), rank=dist.get_rank(),
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
        views, plain = (build_view_transform(spec.recipe, plan, spec.size, spec.mean, spec.std)
                        for plan in (spec.plan, spec.plan.plain()))
        self.dataset = BoxedDataset(base, store, views, 2, seed, plain)
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
               num_workers: int, size: int | None = None, pin_memory: bool = False,
               draft: bool = True) -> DataLoader:
    """Loader of un-augmented ``(indices, images)`` for the localization pass: this rank's shard
    (padded so every rank gets as many batches; repeats are harmless, boxes go by index).

    With ``size`` (the square input side) and a folder dataset, each image is decoded straight
    to ``size x size`` (``ccrop.data.folder.decode_fitted``: a JPEG at a reduced DCT scale when
    ``draft`` and it is at least twice the side), the same image up to resampling.
    """
    transform = EvalTransform(mean, std, size)
    if size is not None and decodes_to_size(base):
        ds = FittedImages(base, partial(square_size, size=size), transform, draft)
    else:
        ds = IndexedImages(base, transform)
    return DataLoader(ds, batch_size, sampler=_sampler(ds, False, 0, False),
                      num_workers=num_workers, pin_memory=pin_memory)


def eval_loader(base: Dataset, transform: Any, batch_size: int, num_workers: int,
                shard: bool = False) -> DataLoader:
    """Loader of ``(images, labels)`` without augmentation for kNN/linear feature extraction.

    Args:
        base: map-style dataset of ``(PIL image, label)``.
        transform: PIL -> (3, H, W) tensor, e.g. ``EvalTransform`` (native size) or
            ``ccrop.evaluate.linear.eval_transform`` (Resize + CenterCrop, ImageNet).
        batch_size, num_workers: of the loader.
        shard: this rank's share only (unshuffled ``DistributedSampler``, padded to equal
            shares); ``ccrop.dist.gather_shards`` puts the ranks' results back in dataset order.
    """
    ds = LabeledImages(base, transform)
    sampler = _sampler(ds, False, 0, drop_last=False) if shard else None
    return DataLoader(ds, batch_size, shuffle=False, sampler=sampler, num_workers=num_workers)


def fit_size(height: int, width: int, size: int, max_side: int) -> tuple[int, int]:
    """Aspect-preserving target size: the shorter side becomes ``size`` unless the longer side
    would then exceed ``max_side``, in which case the longer side becomes ``max_side``.

    Args:
        height: image height (>= 1).
        width: image width (>= 1).
        size: target short side (>= 1).
        max_side: cap on the long side (>= ``size``).

    Returns:
        ``(h, w)`` with ``1 <= h, w <= max_side`` and ``min(h, w) <= size``.
    """
    short, long = min(height, width), max(height, width)
    new_short, new_long = size, round(long * size / short)
    if new_long > max_side:  # too elongated: the long side sets the scale
        new_long = max_side
        new_short = min(size, max(1, round(short * max_side / long)))
    return (new_short, new_long) if height <= width else (new_long, new_short)


class DecodedImages(Dataset):
    """``index -> (index, canvas, hw)``: decode and resize only, for device augmentation.

    Each image keeps its aspect ratio (``fit_size``: short side ``size``, long side at most
    ``max_side``) and is pasted top-left into a zero ``max_side x max_side`` canvas, so that
    batches stack; ``hw`` tells the device path the valid region (``GPUViews``, ``extents``).
    Folder datasets decode straight to that size (``ccrop.data.folder.decode_fitted``: a JPEG
    at least twice the target is decoded at a reduced DCT scale when ``draft``; torch's resize),
    the same image up to resampling (``tests/data/test_decode.py``), about twice as fast
    (``benchmarks/bench_decode.py``).

    Args:
        base: map-style dataset of ``(image, label)``.
        size: short side S0 of the decoded images (>= 1).
        max_side: canvas side M, the cap on the long side (>= size); default
            ``round(size * 4 / 3)``.
        draft: allow the reduced JPEG decode of folder datasets (False: full decode).

    Returns (per item):
        ``(index, canvas (3, M, M) uint8, hw (2,) int64 = (h, w))``.
    """

    def __init__(self, base: Dataset, size: int, max_side: int | None = None,
                 draft: bool = True) -> None:
        if isinstance(size, bool) or not isinstance(size, Integral) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        if max_side is None:
            max_side = round(size * 4 / 3)
        if isinstance(max_side, bool) or not isinstance(max_side, Integral) or max_side < size:
            raise ValueError(f"max_side must be an int >= size ({size}), got {max_side!r}")
        self.base, self.size, self.max_side = base, int(size), int(max_side)
        self.draft = bool(draft)

    def __len__(self) -> int:
        return len(self.base)

    def fitted(self, index: int) -> torch.Tensor:
        """The image at ``index`` resized to ``fit_size`` (bilinear, antialiased): (3, h, w)."""
        import numpy as np
        from PIL import Image

        from .boxed import unpack_item
        from .images import to_rgb

        rule = partial(fit_size, size=self.size, max_side=self.max_side)
        if decodes_to_size(self.base):
            read = partial(decode_fitted, fit=rule, draft=self.draft)
            return self.base.load(int(index), read)[0]
        img = to_rgb(unpack_item(self.base[index])[0])
        h, w = rule(img.height, img.width)
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        img = self.fitted(index)  # (3, h, w)
        h, w = img.shape[1:]
        canvas = torch.zeros((3, self.max_side, self.max_side), dtype=torch.uint8)  # (3, M, M)
        canvas[:, :h, :w] = img
        return int(index), canvas, torch.tensor([h, w], dtype=torch.int64)


def padded_share(n: int, device: torch.device) -> torch.Tensor:
    """This rank's indices of ``0..n-1`` as an unshuffled ``DistributedSampler`` deals them:
    padded to a multiple of the world size by repeating the first indices, so every rank gets
    ``ceil(n / world)`` (equal sizes for ``all_gather``; ``dist.gather_shards`` undoes it).

    Returns:
        (ceil(n / world),) int64 on ``device``; ``0..n-1`` in a single process.
    """
    world = dist.get_world_size()
    padded = -(-n // world) * world
    return (torch.arange(padded, device=device) % n)[dist.get_rank()::world]


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


def _decoded_loaders(base: Dataset, spec: ViewSpec, decode_size: int, per_rank: int, seed: int,
                     num_workers: int, device: torch.device, loc_batch_size: int):
    """Sampler, training loader of uint8 ``DecodedImages`` canvases, and localization loader
    of a folder dataset (``GPUSource`` with ``decode_size``)."""
    ds = DecodedImages(base, decode_size)
    sampler = _sampler(ds, True, seed, drop_last=True)
    loader = DataLoader(ds, per_rank, sampler=sampler, drop_last=True, num_workers=num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
    return sampler, loader, loc_loader(base, spec.mean, spec.std, loc_batch_size, num_workers,
                                       spec.loc_size)


class GPUSource:
    """Batched views on the device (``ccrop.data.gpu_views``).

    Small datasets live on the device as uint8 (``DeviceImages``); folder datasets are decoded
    by workers to canvases of short side ``decode_size`` (``DecodedImages``) and augmented on the
    device, each crop inside its image's valid region. Boxes are kept on the device
    (``boxes_updated``); shuffling and augmentation are seeded by ``(seed, epoch)``, so a resumed
    run sees the same batches. Warm-up views follow ``CropPlan.plain``.

    Args:
        base: map-style dataset.
        store: the box store (copied to the device after each update).
        spec: view specification.
        batch_size: global batch size (split evenly across ranks).
        seed: shuffling and augmentation seed.
        device: where the data and views live.
        loc_batch_size: batch size of the localization pass.
        decode_size: None = resident dataset; else the short side workers decode folder
            images to.
        num_workers: DataLoader workers (folder datasets; decoding a resident set once).
        chunk: resident sets: batches per batched view call (launch-bound GPU path at CIFAR
            size). None = ``auto_chunk``.
        out_dtype: dtype of the views (bfloat16 under bf16 autocast saves the cast).
        channels_last: views in channels-last memory format.
    """

    def __init__(self, base: Dataset, store: BoxStore, spec: ViewSpec, batch_size: int,
                 seed: int, device: torch.device, loc_batch_size: int = 512,
                 decode_size: int | None = None, num_workers: int = 4,
                 chunk: int | None = None, out_dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        from .gpu_views import DeviceImages, GPUViews
        from .tensors import dataset_to_uint8

        self.images: DeviceImages | None = None
        if decode_size is None:  # decoded once, in parallel
            self.images = DeviceImages(dataset_to_uint8(
                base, image_size=spec.loc_size, progress=dist.is_main_process(),
                num_workers=num_workers), device)
        kw = dict(recipe=spec.recipe, size=spec.size, mean=spec.mean, std=spec.std,
                  device=device, out_dtype=out_dtype, channels_last=channels_last)
        self.views = GPUViews(spec.plan, **kw)
        self.plain = GPUViews(spec.plan.plain(), **kw)
        self.device, self.seed, self.loc_batch_size = device, seed, loc_batch_size
        fixed = torch.tensor(spec.plan.fixed_box, dtype=torch.float32, device=device)
        self.boxes = fixed.repeat(len(base), 1)  # (N, 4) device copy of the store
        self.boxes_updated(store)
        self.per_rank = max(1, batch_size // dist.get_world_size())
        if chunk is not None and int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1 or None, got {chunk}")
        self.chunk = auto_chunk(device, self.per_rank, self.views.num_views, spec.size) \
            if chunk is None else int(chunk)
        self.epoch, self.use_boxes = 0, True
        self.loader = self.sampler = self.loc_loader = None
        if decode_size is not None:
            self.sampler, self.loader, self.loc_loader = _decoded_loaders(
                base, spec, decode_size, self.per_rank, seed, num_workers, device,
                loc_batch_size)

    def __len__(self) -> int:
        if self.loader is not None:
            return len(self.loader)
        return self.images.num_batches(self.per_rank, True, dist.get_world_size())

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
            for idx, batch, hw in self.loader:  # (B,), (B, 3, M, M) canvases, (B, 2)
                idx = idx.to(self.device, non_blocking=True)
                batch = batch.to(self.device, non_blocking=True)
                rows = torch.arange(batch.shape[0], device=self.device)
                yield idx, maker(batch, rows, self.boxes[idx], aug, extents=hw)
            return
        yield from self._resident_batches(maker, aug)

    def _resident_batches(self, maker, aug: torch.Generator
                          ) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
        """One epoch of a resident set, ``chunk`` batches per batched view call."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.seed * 1_000_003 + self.epoch)  # same on every rank: one permutation
        batches = list(self.images.index_batches(self.per_rank, True, gen, True, dist.get_rank(),
                                                 dist.get_world_size()))  # device slices
        for start in range(0, len(batches), self.chunk):
            group = batches[start:start + self.chunk]
            idx = torch.cat(group)
            views = maker(self.images.data, idx, self.boxes[idx], aug)  # V x (G*B, 3, S, S)
            for j, one in enumerate(group):
                rows = slice(j * self.per_rank, (j + 1) * self.per_rank)
                yield one, [v[rows] for v in views]

    def loc_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Un-augmented ``(indices, images)`` of this rank's shard."""
        if self.loc_loader is not None:
            yield from self.loc_loader
            return
        shard = padded_share(len(self.images), self.device)  # repeats are harmless: by index
        for start in range(0, shard.shape[0], self.loc_batch_size):
            idx = shard[start:start + self.loc_batch_size]
            yield idx, self.views.plain(self.images.data.index_select(0, idx))

    def views_for(self, idx: torch.Tensor,
                  generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Views (boxes law) of resident images ``idx`` (B,) on the device: V x (B, 3, S, S)."""
        return self.views(self.images.data, idx, self.boxes[idx], generator)

    def use_sync_free_paths(self) -> None:
        """Take the accelerator code paths on the CPU too (sync audits: ``ccrop.syncs``)."""
        self.views.sync_free = self.plain.sync_free = True

    def boxes_updated(self, store: BoxStore) -> None:
        """Copy the store's boxes (N, 4) to the device; called after every box update."""
        if tuple(store.boxes.shape) != tuple(self.boxes.shape):
            raise ValueError(f"store must hold {tuple(self.boxes.shape)} boxes, got "
                             f"{tuple(store.boxes.shape)}")
        self.boxes.copy_(store.boxes.to(self.device, torch.float32))
