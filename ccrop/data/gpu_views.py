"""Batched views on the device: ``GPUViews`` (the batched twin of ``ViewTransform``) augments
uint8 batches, ``DeviceImages`` holds a set."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from ..crop import CropPlan
from .gpu_ops import augment, crop_resize, default_sync_free, sample_view_params
from .views import Recipe, get_recipe


class GPUViews:
    """``(images, rows, boxes) -> [view_1, ..., view_V]`` (B, 3, S, S) on the device: the crop
    law of ``plan`` (default ``CropPlan()``), the photometric law of ``recipe`` (a ``Recipe`` or
    a name), normalised by ``mean``/``std``, cast to ``out_dtype``. ``blur_kernel_size``
    defaults to ``2 * ceil(3 * max sigma) + 1`` (capped below 2 S); ``sync_free`` to
    ``gpu_ops.default_sync_free``.

    Example:
        >>> views = GPUViews(CropPlan(alpha=0.1), "cifar", size=32, device="cuda")
        >>> v1, v2 = views(images, idx, boxes[idx], generator=g)   # images (N, 3, H, W) uint8
    """

    def __init__(self, plan: CropPlan | None = None, recipe: Recipe | str = "cifar",
                 size: int = 32, mean: Sequence[float] = (0.5,) * 3,
                 std: Sequence[float] = (0.5,) * 3, num_views: int = 2,
                 device: torch.device | str = "cpu", out_dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, blur_kernel_size: int | None = None,
                 sync_free: bool | None = None) -> None:
        self.recipe = get_recipe(recipe)
        k = blur_kernel_size
        if k is None:
            k = min(2 * math.ceil(3 * self.recipe.blur_sigma[1]) + 1, 2 * size - 1)
        m, s = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (mean, std))
        bad = {"size": size < 1, "num_views": num_views < 1,
               "out_dtype": out_dtype not in (torch.float32, torch.float16, torch.bfloat16),
               "blur_kernel_size": k < 1 or k % 2 == 0 or k // 2 >= size,
               "mean": m.numel() != 3 or not m.isfinite().all(),
               "std": s.numel() != 3 or not s.isfinite().all() or (s <= 0).any()}
        if any(bad.values()):
            raise ValueError(
                f"GPUViews: bad {[n for n, b in bad.items() if b]}: need size, num_views >= 1, a "
                f"float out_dtype, an odd blur_kernel_size < 2 * size, 3 finite mean and std > 0; "
                f"got size={size}, num_views={num_views}, out_dtype={out_dtype}, "
                f"blur_kernel_size={k}, mean={mean}, std={std}")
        self.plan = plan if plan is not None else CropPlan()
        self.size, self.num_views, self.blur_kernel_size = int(size), int(num_views), int(k)
        self.device, self.out_dtype = torch.device(device), out_dtype
        self.channels_last = bool(channels_last)
        self.mean, self.std = (t.to(self.device).view(1, 3, 1, 1) for t in (m, s))
        self.sync_free = default_sync_free(self.device) if sync_free is None else bool(sync_free)

    def __call__(self, images: torch.Tensor, rows: torch.Tensor, boxes: torch.Tensor,
                 generator: torch.Generator | None = None,
                 extents: torch.Tensor | None = None) -> list[torch.Tensor]:
        """V independent augmented views of ``images[rows]`` ((N, C, H, W) uint8, C = 1 or 3;
        rows (B,) int64; boxes (B, 4) normalised). ``extents`` (B, 2) int64: the valid top-left
        ``(h, w)`` of each image (folder canvases), where crops stay and boxes refer to."""
        b, v = rows.shape[0], self.num_views
        rows, boxes = rows.repeat(v), boxes.repeat(v, 1)  # view-major: view k is [k*B:(k+1)*B]
        size = tuple(images.shape[-2:]) if extents is None else \
            extents.to(self.device, non_blocking=True).repeat(v, 1)
        params = self.crop_params(boxes, size, generator)  # (V*B, 4)
        vp = sample_view_params(rows.shape[0], self.recipe, generator, self.device)
        x = crop_resize(images, rows, params, self.size, flip=vp["flip"])  # (V*B, 3, S, S)
        x = augment(x, vp, self.recipe, self.blur_kernel_size, self.sync_free)
        return list(self.finish(x).split(b))

    def crop_params(self, boxes: torch.Tensor, image_size: tuple[int, int] | torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Crops (B, 4) int64 ``(top, left, h, w)`` for (B, 4) ``boxes`` in images of
        ``image_size``: ``(H, W)`` shared, or (B, 2) per sample."""
        if isinstance(image_size, torch.Tensor):
            return self.plan.sample_batch(image_size[:, 0], image_size[:, 1], boxes, generator)
        return self.plan.sample_batch(image_size[0], image_size[1], boxes, generator)

    def plain(self, images: torch.Tensor) -> torch.Tensor:
        """Un-augmented normalised images: uint8 (B, C, H, W) -> (B, 3, H, W) ``out_dtype``."""
        x = images.expand(-1, 3, -1, -1)  # grayscale broadcast to RGB
        return self.finish(x.to(torch.float32, memory_format=torch.contiguous_format).div_(255))

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (in place), cast and lay out (B, 3, S, S) in [0, 1]."""
        x = x.sub_(self.mean).div_(self.std).to(self.out_dtype)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)


class DeviceImages:
    """A small dataset held on ``device`` as uint8 ``data`` (N, C, H, W), C = 1 or 3, served by
    index (e.g. from ``ccrop.data.tensors.dataset_to_uint8``)."""

    def __init__(self, images: torch.Tensor, device: torch.device | str | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3) \
                or images.shape[0] < 1:
            raise ValueError(f"images must be a uint8 (N, 1|3, H, W) tensor with at least one "
                             f"image, got {images.dtype} {tuple(images.shape)}")
        self.data = images.to(device if device is not None else images.device)
        self.device = self.data.device

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.data.shape[-2]), int(self.data.shape[-1])

    def num_batches(self, batch_size: int, drop_last: bool = True, world_size: int = 1) -> int:
        """Number of batches ``index_batches`` yields with the same arguments."""
        per_rank = len(self) // world_size
        return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)

    def index_batches(self, batch_size: int, shuffle: bool = True,
                      generator: torch.Generator | None = None, drop_last: bool = True,
                      rank: int = 0, world_size: int = 1) -> Iterator[torch.Tensor]:
        """One epoch's (batch_size,) int64 index batches, made on the device: a permutation
        (``generator`` seeded alike on every rank) or 0..N-1; rank r takes every
        ``world_size``-th index (the N % world_size tail is dropped)."""
        n = len(self)
        order = torch.randperm(n, generator=generator, device=self.device) if shuffle \
            else torch.arange(n, device=self.device)
        order = order[: n - n % world_size][rank::world_size]  # (N // world_size,)
        m = order.shape[0]
        stop = m - m % batch_size if drop_last else m
        for start in range(0, stop, batch_size):
            yield order[start:start + batch_size]
