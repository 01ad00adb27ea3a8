"""BYOL (Grill et al. 2020): online network + predictor regress a momentum target network."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ccrop.losses import byol_loss
from ccrop.methods.common import MethodDefaults, ema_update
from ccrop.models.heads import mlp


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's target momentum at training progress in [0, 1]: ``base`` rising to 1,
    ``1 - (1 - base) * (cos(pi * progress) + 1) / 2``."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class BYOL(MethodDefaults):
    """BYOL with MLP projector and predictor (``proj_hidden`` -> ``proj_dim``) and the paper's
    symmetric loss sum. The target (backbone + projector) is a frozen deep copy of the online
    network, updated after each step with the base ``momentum`` in [0, 1] raised to 1 by
    `cosine_momentum`."""

    def __init__(self, backbone: nn.Module, proj_hidden: int = 512, proj_dim: int = 128,
                 momentum: float = 0.996) -> None:
        super().__init__()
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.backbone = backbone
        self.projector = mlp(backbone.feat_dim, proj_hidden, proj_dim)
        self.predictor = mlp(proj_dim, proj_hidden, proj_dim)
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.base_momentum = momentum

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss": byol_loss(p1, t2) + byol_loss(p2, t1)}`` for views (B, 3, H, W)."""
        p1 = self.predictor(self.projector(self.backbone(x1)))  # (B, D)
        p2 = self.predictor(self.projector(self.backbone(x2)))  # (B, D)
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(x1))  # (B, D)
            t2 = self.target_projector(self.target_backbone(x2))  # (B, D)
        return {"loss": byol_loss(p1, t2) + byol_loss(p2, t1)}

    def after_step(self, progress: float) -> None:
        """Target ``= tau * target + (1 - tau) * online``, tau = `cosine_momentum` at progress
        (step / total steps)."""
        tau = cosine_momentum(self.base_momentum, progress)
        ema_update(self.target_backbone, self.backbone, tau)
        ema_update(self.target_projector, self.projector, tau)
