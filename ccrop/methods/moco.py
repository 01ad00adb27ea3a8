"""MoCo v1/v2 (He et al. 2020; Chen et al. 2020): momentum key encoder and a queue of negatives."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ccrop import dist
from ccrop.losses import info_nce_queue
from ccrop.methods.common import MethodDefaults, ema_update
from ccrop.models.heads import mlp


class MoCo(MethodDefaults):
    """MoCo ``version`` 1 (linear head) or 2 (Linear-ReLU-Linear, ``proj_hidden``) to
    ``proj_dim`` = D, a frozen key encoder (deep copy of backbone + head, updated with
    ``momentum`` in [0, 1) after each step) and a queue of ``queue_size`` >= 1 negative keys
    (K, D); InfoNCE at ``temperature`` > 0; ``symmetric`` adds (x2 query, x1 key) and enqueues
    both views' keys. Shuffle-BN (keys of a batch permuted across ranks) only when distributed.
    """

    def __init__(self, backbone: nn.Module, version: int = 2, proj_hidden: int = 512,
                 proj_dim: int = 128, queue_size: int = 65536, momentum: float = 0.999,
                 temperature: float = 0.2, symmetric: bool = False) -> None:
        super().__init__()
        if version not in (1, 2) or queue_size < 1 or not 0 <= momentum < 1 \
                or not temperature > 0:
            raise ValueError("need version 1 or 2, queue_size >= 1, momentum in [0, 1), "
                             f"temperature > 0; got {version}, {queue_size}, {momentum}, "
                             f"{temperature}")
        self.backbone = backbone
        self.projector = mlp(backbone.feat_dim, proj_hidden, proj_dim, num_layers=version,
                             hidden_bn=False)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.momentum, self.temperature, self.symmetric = momentum, temperature, symmetric
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised keys (B, D) of key views (B, 3, H, W) (the same B on every rank), with
        shuffle-BN when distributed; row i is the key of ``x[i]``."""
        if dist.get_world_size() == 1:
            return F.normalize(self.key_projector(self.key_backbone(x)), dim=1)
        rank, world, b = dist.get_rank(), dist.get_world_size(), x.shape[0]
        x_all = dist.all_gather(x)  # (W*B, 3, H, W)
        perm = dist.broadcast(torch.randperm(world * b, device=x.device), src=0)  # (W*B,)
        k = self.key_projector(self.key_backbone(x_all[perm.view(world, b)[rank]]))  # (B, D)
        k_all = dist.all_gather(k)  # (W*B, D), row j is the key of image perm[j]
        unperm = torch.argsort(perm).view(world, b)[rank]  # (B,) rows of our own images
        return F.normalize(k_all[unperm], dim=1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss"}`` of query views x1 and key views x2 (B, 3, H, W) (both directions summed
        when symmetric, as in the MoCo CIFAR demo), then this step's keys (all ranks') enqueued."""
        # A snapshot: the backward pass needs the negatives as they were before the enqueue.
        queue = self.queue.clone()  # (K, D)
        q1 = self.projector(self.backbone(x1))  # (B, D)
        k2 = self.keys(x2)  # (B, D)
        loss = info_nce_queue(q1, k2, queue, self.temperature)
        new_keys = k2
        if self.symmetric:
            q2, k1 = self.projector(self.backbone(x2)), self.keys(x1)
            loss = loss + info_nce_queue(q2, k1, queue, self.temperature)
            new_keys = torch.cat([k2, k1])  # (2B, D)
        self._enqueue(dist.all_gather(new_keys))
        return {"loss": loss}

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write keys (N, D) at ``queue_ptr`` with wrap-around; device-side, no host sync."""
        size, n = self.queue.shape[0], keys.shape[0]
        start = self.queue_ptr.clone()  # (1,)
        if n > size:  # only the last K keys would survive sequential writes
            keys, start = keys[n - size :], start + (n - size)
        idx = (start + torch.arange(keys.shape[0], device=keys.device)) % size  # (min(N, K),)
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def after_step(self, progress: float) -> None:
        """Key encoder ``= m * key + (1 - m) * query`` (constant m: progress unused)."""
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)
