"""Batched views on the device: ``GPUViews`` augments uint8 batches, ``DeviceImages`` holds a set.

``GPUViews`` is the batched twin of ``ccrop.data.views.ViewTransform``: the crop law of a
``ccrop.crop.CropPlan`` (sampled for the whole batch) and the photometric law of a ``Recipe``
(``ccrop.data.gpu_ops``), V views per image in a handful of batched ops. It holds no images
and no boxes: the caller passes both (``ccrop.data.sources.GPUSource`` owns them).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from ..crop import CropPlan
from .gpu_ops import (
    augment,
    check_extents,
    check_images,
    check_recipe,
    check_stats,
    crop_resize,
    default_sync_free,
    normalize,
    sample_view_params,
)
from .views import Recipe


class GPUViews:
    """``(images, rows, boxes) -> [view_1, ..., view_V]`` on the device.

    Args:
        plan: the crop law (ContrastiveCrop, SimCCrop or RRC), the object the per-sample
            transforms use too; default ``CropPlan()``.
        recipe: ``Recipe`` or a name in ``ccrop.data.views.RECIPES``.
        size: output side S.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std (> 0).
        num_views: V (>= 1).
        device: where views are made.
        out_dtype: float32, float16 or bfloat16 views.
        channels_last: return views in channels-last memory format.
        blur_kernel_size: odd Gaussian kernel size (default ``2 * ceil(3 * max sigma) + 1``,
            capped below ``2 * S``).
        sync_free: no data-dependent shapes (default: on accelerators; ``gpu_ops``).

    Example:
        >>> views = GPUViews(CropPlan(alpha=0.1), "cifar", size=32, device="cuda")
        >>> v1, v2 = views(images, idx, boxes[idx], generator=g)   # images (N, 3, H, W) uint8
    """

    def __init__(
        self, plan: CropPlan | None = None, recipe: Recipe | str = "cifar", size: int = 32,
        mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
        num_views: int = 2, device: torch.device | str = "cpu",
        out_dtype: torch.dtype = torch.float32, channels_last: bool = False,
        blur_kernel_size: int | None = None, sync_free: bool | None = None,
    ) -> None:
        if plan is not None and not isinstance(plan, CropPlan):
            raise ValueError(f"plan must be a ccrop.crop.CropPlan, got {type(plan).__name__}")
        if int(size) < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        if int(num_views) < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if out_dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"out_dtype must be float32, float16 or bfloat16, got {out_dtype}")
        self.plan = plan if plan is not None else CropPlan()
        self.recipe, self.size, self.num_views = check_recipe(recipe), int(size), int(num_views)
        self.device, self.out_dtype = torch.device(device), out_dtype
        self.channels_last = bool(channels_last)
        self.mean = check_stats(mean, "mean", False).to(self.device)
        self.std = check_stats(std, "std", True).to(self.device)
        self.blur_kernel_size = self._kernel_size(blur_kernel_size)
        self.sync_free = default_sync_free(self.device) if sync_free is None else bool(sync_free)

    def _kernel_size(self, k: int | None) -> int:
        """Validate or derive the blur kernel size (odd, reflect padding needs K // 2 < S)."""
        if k is None:
            k = min(2 * math.ceil(3 * self.recipe.blur_sigma[1]) + 1, 2 * self.size - 1)
        if int(k) < 1 or int(k) % 2 == 0 or int(k) // 2 >= self.size:
            raise ValueError(f"blur_kernel_size must be odd and in [1, {2 * self.size - 1}], "
                             f"got {k}")
        return int(k)

    def __call__(self, images: torch.Tensor, rows: torch.Tensor, boxes: torch.Tensor,
                 generator: torch.Generator | None = None,
                 extents: torch.Tensor | None = None) -> list[torch.Tensor]:
        """V independent augmented views of ``images[rows]``.

        Args:
            images: (N, C, H, W) uint8 (C = 1 or 3) on ``device``: a resident set or a decoded
                batch (then ``rows`` is ``arange(B)``).
            rows: (B,) int64 rows of ``images`` on ``device``.
            boxes: (B, 4) normalised boxes of those images (read by a ccrop plan only).
            generator: optional ``torch.Generator`` on ``device``.
            extents: optional (B, 2) int64 ``(h, w)`` valid top-left region of each image
                (folder canvases); crops stay inside it and boxes are relative to it.

        Returns:
            V tensors (B, 3, S, S), normalised, ``out_dtype``.
        """
        check_images(images)
        if not isinstance(rows, torch.Tensor) or rows.dim() != 1 or rows.dtype != torch.int64:
            raise ValueError("rows must be a 1-D int64 tensor of image rows")
        b, v = rows.shape[0], self.num_views
        if tuple(boxes.shape) != (b, 4):
            raise ValueError(f"boxes must be ({b}, 4), one per row, got {tuple(boxes.shape)}")
        if extents is not None:
            extents = check_extents(extents, b).to(self.device, non_blocking=True)
        rows, boxes = rows.repeat(v), boxes.repeat(v, 1)  # view-major: view k is [k*B:(k+1)*B]
        size = tuple(images.shape[-2:]) if extents is None else extents.repeat(v, 1)
        params = self.crop_params(boxes, size, generator)  # (V*B, 4)
        vp = sample_view_params(rows.shape[0], self.recipe, generator, self.device)
        x = crop_resize(images, rows, params, self.size, flip=vp["flip"])  # (V*B, 3, S, S)
        x = augment(x, vp, self.recipe, self.blur_kernel_size, True, self.sync_free)
        return list(self.finish(x).split(b))

    def crop_params(self, boxes: torch.Tensor, image_size: tuple[int, int] | torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Crop rectangles (B, 4) int64 ``(top, left, h, w)`` for (B, 4) ``boxes`` in images of
        ``image_size``: ``(H, W)`` shared, or a (B, 2) integer tensor of per-sample sizes."""
        if isinstance(image_size, torch.Tensor):
            return self.plan.sample_batch(image_size[:, 0], image_size[:, 1], boxes, generator)
        return self.plan.sample_batch(image_size[0], image_size[1], boxes, generator)

    def plain(self, images: torch.Tensor) -> torch.Tensor:
        """Un-augmented normalised images (localization pass, kNN): uint8 (B, C, H, W) ->
        (B, 3, H, W) ``out_dtype``."""
        x = images.expand(-1, 3, -1, -1)  # grayscale broadcast to RGB
        return self.finish(x.to(torch.float32, memory_format=torch.contiguous_format).div_(255))

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, cast and lay out: (B, 3, S, S) in [0, 1] -> output tensor."""
        x = normalize(x, self.mean, self.std, inplace=True).to(self.out_dtype)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, plan={self.plan}, "
                f"views={self.num_views}, device={self.device})")


class DeviceImages:
    """A small dataset held on the device as uint8, served by index (no host round trip).

    Args:
        images: (N, C, H, W) uint8, C = 1 or 3 (e.g. ``ccrop.data.tensors.dataset_to_uint8``).
        device: where they live (default: where they are).
    """

    def __init__(self, images: torch.Tensor, device: torch.device | str | None = None) -> None:
        self.data = check_images(images).to(device if device is not None else images.device)
        self.device = self.data.device

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored images."""
        return int(self.data.shape[-2]), int(self.data.shape[-1])

    def num_batches(self, batch_size: int, drop_last: bool = True, world_size: int = 1) -> int:
        """Number of batches ``index_batches`` yields with the same arguments."""
        per_rank = len(self) // world_size
        return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)

    def index_batches(
        self, batch_size: int, shuffle: bool = True, generator: torch.Generator | None = None,
        drop_last: bool = True, rank: int = 0, world_size: int = 1,
    ) -> Iterator[torch.Tensor]:
        """Index batches of one epoch, made on the device.

        Args:
            batch_size: indices per batch (>= 1).
            shuffle: random permutation (``torch.randperm`` on the device) or 0..N-1.
            generator: optional ``torch.Generator`` on the device; with several ranks every rank
                must pass an identically seeded one.
            drop_last: drop the last incomplete batch.
            rank: this process's rank; it takes every ``world_size``-th index.
            world_size: number of ranks (the N % world_size tail is dropped so ranks match).

        Yields:
            (batch_size,) int64 index tensors (the last one shorter if ``drop_last`` is False).
        """
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=generator, device=self.device)
        else:
            order = torch.arange(n, device=self.device)
        order = order[: n - n % world_size][rank::world_size]  # (N // world_size,)
        m = order.shape[0]
        stop = m - m % batch_size if drop_last else m
        for start in range(0, stop, batch_size):
            yield order[start:start + batch_size]
