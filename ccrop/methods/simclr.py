"""SimCLR (Chen et al. 2020): one encoder, NT-Xent over both views of the batch."""

from __future__ import annotations

import torch
from torch import nn

from ccrop.losses import nt_xent
from ccrop.methods.common import MethodDefaults
from ccrop.models.heads import mlp


class SimCLR(MethodDefaults):
    """SimCLR with a Linear-BN-ReLU-Linear projection head (``proj_hidden`` -> ``proj_dim``)
    and NT-Xent at ``temperature`` > 0 (0.5 on small datasets)."""

    def __init__(self, backbone: nn.Module, proj_hidden: int = 512, proj_dim: int = 128,
                 temperature: float = 0.5) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.backbone = backbone
        self.projector = mlp(backbone.feat_dim, proj_hidden, proj_dim)
        self.temperature = temperature

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss"}`` for views (B, 3, H, W); both go through the encoder as one batch of 2B
        (shared BN statistics, one pass)."""
        z = self.projector(self.backbone(torch.cat([x1, x2])))  # (2B, proj_dim)
        z1, z2 = z.chunk(2)  # (B, proj_dim) each
        return {"loss": nt_xent(z1, z2, self.temperature)}
