"""View sources: what the engine iterates, ``(indices, [view_1, view_2])`` batches on the device.

``CPUSource``: the PIL pipeline per sample in DataLoader workers; ``GPUSource`` (images held on
the device) and ``DecodedGPUSource`` (folder images decoded by workers): batched views
(``ccrop.data.gpu_views``) with the same crop law.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, runtime_checkable

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .. import dist
from ..boxes import BoxStore
from ..crop import CropPlan
from .boxed import BoxedDataset, IndexedImages, LabeledImages, unpack_item
from .folder import FittedImages, decode_fitted, decodes_to_size, square_size
from .gpu_views import DeviceImages, GPUViews
from .images import to_rgb
from .tensors import dataset_to_uint8
from .views import EvalTransform, build_view_transform

Batch = tuple[torch.Tensor, list[torch.Tensor]]  # indices (B,), V views (B, 3, S, S)


@runtime_checkable
class ViewSource(Protocol):
    """What the engine iterates: ``len`` batches per epoch of ``(indices (B,), [view_1,
    view_2])`` on the device; ``set_epoch`` picks the shuffle and the crop law (boxes or warm-up
    RRC); ``loc_batches`` yields un-augmented ``(indices, images)``; ``boxes_updated`` is called
    after every box update."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Batch]: ...
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
    """``DistributedSampler`` dealing the same indices from one int64 array, not a list of
    ``randperm(N).tolist()`` Python ints (~49 MB for 1.28M images)."""

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
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
    """PIL views made by DataLoader workers, a function of (seed, epoch, index); ``batch_size``
    is global (split across ranks)."""

    def __init__(self, base: Dataset, store: BoxStore, spec: ViewSpec, batch_size: int,
                 device: torch.device, *, seed: int, num_workers: int,
                 persistent_workers: bool, loc_batch_size: int = 512) -> None:
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
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch, use_boxes)

    def __iter__(self) -> Iterator[Batch]:
        for indices, views, _ in self.loader:
            yield indices, [v.to(self.device, non_blocking=True) for v in views]

    def loc_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self.loc_loader

    def boxes_updated(self, store: BoxStore) -> None:
        """Nothing to do: workers read the shared-memory store directly."""


def loc_loader(base: Dataset, mean: Sequence[float], std: Sequence[float], batch_size: int,
               num_workers: int, size: int | None = None, pin_memory: bool = False,
               draft: bool = True) -> DataLoader:
    """Un-augmented ``(indices, images)`` of this rank's shard (padded to equal shares) for the
    localization pass. With ``size`` a folder dataset decodes straight to ``size x size``
    (``decode_fitted``; a reduced-DCT JPEG decode when ``draft``)."""
    transform = EvalTransform(mean, std, size)
    if size is not None and decodes_to_size(base):
        ds = FittedImages(base, partial(square_size, size=size), transform, draft)
    else:
        ds = IndexedImages(base, transform)
    return DataLoader(ds, batch_size, sampler=_sampler(ds, False, 0, False),
                      num_workers=num_workers, pin_memory=pin_memory)


def eval_loader(base: Dataset, transform: Any, batch_size: int, num_workers: int,
                shard: bool = False) -> DataLoader:
    """Unshuffled ``(images, labels)`` for kNN/linear features; ``shard``: this rank's padded
    share only (``dist.gather_shards`` restores dataset order)."""
    ds = LabeledImages(base, transform)
    sampler = _sampler(ds, False, 0, drop_last=False) if shard else None
    return DataLoader(ds, batch_size, shuffle=False, sampler=sampler, num_workers=num_workers)


def fit_size(height: int, width: int, size: int, max_side: int) -> tuple[int, int]:
    """Aspect-kept ``(h, w)``: short side ``size``, unless the long side would pass
    ``max_side``, which then sets the scale (each side >= 1)."""
    short, long = min(height, width), max(height, width)
    new_short, new_long = size, round(long * size / short)
    if new_long > max_side:  # too elongated: the long side sets the scale
        new_long = max_side
        new_short = min(size, max(1, round(short * max_side / long)))
    return (new_short, new_long) if height <= width else (new_long, new_short)


class DecodedImages(Dataset):
    """``index -> (index, canvas (3, M, M) uint8, hw (2,) int64)``: the image resized by
    ``fit_size`` (short side ``size``, long side <= ``max_side`` = M, default ``size * 4 / 3``),
    top-left in a zero canvas, ``hw`` its size. Folder datasets decode straight to that size
    (``decode_fitted``; reduced-DCT JPEG decode when ``draft``)."""

    def __init__(self, base: Dataset, size: int, max_side: int | None = None,
                 draft: bool = True) -> None:
        max_side = round(size * 4 / 3) if max_side is None else max_side
        if int(size) != size or size < 1 or int(max_side) != max_side or max_side < size:
            raise ValueError(f"need integers size >= 1 and max_side >= size, got size={size!r}, "
                             f"max_side={max_side!r}")
        self.base, self.size, self.max_side = base, int(size), int(max_side)
        self.draft = bool(draft)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        rule = partial(fit_size, size=self.size, max_side=self.max_side)
        if decodes_to_size(self.base):
            img = self.base.load(int(index), partial(decode_fitted, fit=rule, draft=self.draft))[0]
        else:
            img = to_rgb(unpack_item(self.base[index])[0])
            if img.size != (size := rule(img.height, img.width)[::-1]):
                img = img.resize(size, Image.BILINEAR)
            img = TF.pil_to_tensor(img)
        h, w = img.shape[1:]  # (3, h, w) resized by fit_size
        canvas = torch.zeros((3, self.max_side, self.max_side), dtype=torch.uint8)
        canvas[:, :h, :w] = img
        return int(index), canvas, torch.tensor([h, w], dtype=torch.int64)


def padded_share(n: int, device: torch.device) -> torch.Tensor:
    """This rank's indices of ``0..n-1`` as an unshuffled ``DistributedSampler`` deals them,
    padded to ``ceil(n / world)`` each: (ceil(n / world),) int64 on ``device``."""
    world = dist.get_world_size()
    padded = -(-n // world) * world
    return (torch.arange(padded, device=device) % n)[dist.get_rank()::world]


def auto_chunk(device: torch.device, batch_size: int, num_views: int, size: int) -> int:
    """Batches per batched view call: 1 on CPU, else as many as keep one call's float32 views
    within 256 MiB (at most 8)."""
    if device.type == "cpu":
        return 1
    return max(1, min(8, 256 * 2**20 // (batch_size * num_views * 3 * size * size * 4)))


class _DeviceSource:
    """Views made on the device from a copy of the boxes; shuffling and augmentation are seeded
    by ``(seed, epoch)`` (a resumed run sees the same batches); warm-up follows
    ``CropPlan.plain``. ``batch_size`` is global; ``out_dtype`` bfloat16 saves autocast's cast."""

    def __init__(self, n: int, store: BoxStore, spec: ViewSpec, batch_size: int,
                 device: torch.device, seed: int, loc_batch_size: int,
                 out_dtype: torch.dtype, channels_last: bool) -> None:
        kw = dict(recipe=spec.recipe, size=spec.size, mean=spec.mean, std=spec.std,
                  device=device, out_dtype=out_dtype, channels_last=channels_last)
        self.views = GPUViews(spec.plan, **kw)
        self.plain = GPUViews(spec.plan.plain(), **kw)
        self.device, self.seed, self.loc_batch_size = device, seed, loc_batch_size
        fixed = torch.tensor(spec.plan.fixed_box, dtype=torch.float32, device=device)
        self.boxes = fixed.repeat(n, 1)  # (N, 4) device copy of the store
        self.boxes_updated(store)
        self.per_rank = max(1, batch_size // dist.get_world_size())
        self.epoch, self.use_boxes = 0, True

    def set_epoch(self, epoch: int, use_boxes: bool) -> None:
        self.epoch, self.use_boxes = int(epoch), bool(use_boxes)

    def _epoch_views(self) -> tuple[GPUViews, torch.Generator]:
        """The epoch's view maker (boxes or warm-up law) and augmentation generator."""
        aug = torch.Generator(device=self.device).manual_seed(
            (self.seed * 1_000_003 + self.epoch) * 131 + dist.get_rank() + 1)
        return (self.views if self.use_boxes else self.plain), aug

    def use_sync_free_paths(self) -> None:
        """Take the accelerator code paths on the CPU too (sync audits: ``ccrop.syncs``)."""
        self.views.sync_free = self.plain.sync_free = True

    def boxes_updated(self, store: BoxStore) -> None:
        """Copy the store's (N, 4) boxes to the device."""
        self.boxes.copy_(store.boxes.to(self.device, torch.float32))


class GPUSource(_DeviceSource):
    """A small dataset held on the device as uint8 (``DeviceImages``, decoded once by
    ``num_workers``), ``chunk`` batches per batched view call (None: ``auto_chunk``)."""

    def __init__(self, base: Dataset, store: BoxStore, spec: ViewSpec, batch_size: int,
                 device: torch.device, *, seed: int, num_workers: int = 4,
                 loc_batch_size: int = 512, chunk: int | None = None,
                 out_dtype: torch.dtype = torch.float32, channels_last: bool = False) -> None:
        self.images = DeviceImages(dataset_to_uint8(
            base, image_size=spec.loc_size, progress=dist.is_main_process(),
            num_workers=num_workers), device)
        super().__init__(len(base), store, spec, batch_size, device, seed, loc_batch_size,
                         out_dtype, channels_last)
        self.chunk = auto_chunk(device, self.per_rank, self.views.num_views, spec.size) \
            if chunk is None else chunk

    def __len__(self) -> int:
        return self.images.num_batches(self.per_rank, True, dist.get_world_size())

    def __iter__(self) -> Iterator[Batch]:
        maker, aug = self._epoch_views()
        # the same on every rank: one permutation
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + self.epoch)
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
        shard = padded_share(len(self.images), self.device)  # repeats are harmless: by index
        for start in range(0, shard.shape[0], self.loc_batch_size):
            idx = shard[start:start + self.loc_batch_size]
            yield idx, self.views.plain(self.images.data.index_select(0, idx))

    def views_for(self, idx: torch.Tensor,
                  generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Views (boxes law) of images ``idx`` (B,): V x (B, 3, S, S)."""
        return self.views(self.images.data, idx, self.boxes[idx], generator)


class DecodedGPUSource(_DeviceSource):
    """A folder dataset decoded by DataLoader workers to canvases of short side
    ``decode_size`` (``DecodedImages``), each crop inside its image's valid region."""

    def __init__(self, base: Dataset, store: BoxStore, spec: ViewSpec, batch_size: int,
                 device: torch.device, *, decode_size: int, seed: int, num_workers: int = 4,
                 loc_batch_size: int = 512, out_dtype: torch.dtype = torch.float32,
                 channels_last: bool = False) -> None:
        super().__init__(len(base), store, spec, batch_size, device, seed, loc_batch_size,
                         out_dtype, channels_last)
        ds = DecodedImages(base, decode_size)
        self.sampler = _sampler(ds, True, seed, drop_last=True)
        self.loader = DataLoader(ds, self.per_rank, sampler=self.sampler, drop_last=True,
                                 num_workers=num_workers, pin_memory=device.type == "cuda",
                                 persistent_workers=num_workers > 0)
        self.loc_loader = loc_loader(base, spec.mean, spec.std, loc_batch_size, num_workers,
                                     spec.loc_size)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int, use_boxes: bool) -> None:
        super().set_epoch(epoch, use_boxes)
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        maker, aug = self._epoch_views()
        for idx, batch, hw in self.loader:  # (B,), (B, 3, M, M) canvases, (B, 2)
            idx = idx.to(self.device, non_blocking=True)
            batch = batch.to(self.device, non_blocking=True)
            rows = torch.arange(batch.shape[0], device=self.device)
            yield idx, maker(batch, rows, self.boxes[idx], aug, extents=hw)

    def loc_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        yield from self.loc_loader
