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
    """BYOL's target momentum ``1 - (1 - base) * (cos(pi * progress) + 1) / 2``.

    Args:
        base: Momentum at progress 0.
        progress: Training progress in [0, 1].

    Returns:
        Momentum tau, ``base`` at 0 rising to 1 at 1.
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class BYOL(MethodDefaults):
    """BYOL with MLP projector and predictor; symmetric loss.

    The target (backbone + projector) is a deep copy of the online network at init and is never
    trained. The heatmap encoder is the online encoder ``self.backbone``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        momentum: float = 0.996,
    ) -> None:
        """Build the method.

        Args:
            backbone: Online encoder with ``feat_dim`` and ``forward(x) -> (B, feat_dim)``.
            proj_hidden: Hidden size of projector and predictor.
            proj_dim: Output size of projector and predictor.
            momentum: Base target momentum in [0, 1], raised to 1 by a cosine schedule.
        """
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
        """Compute the symmetric loss for a batch of view pairs.

        Args:
            x1: First views (B, 3, H, W).
            x2: Second views (B, 3, H, W).

        Returns:
            ``{"loss": scalar}``, ``byol_loss(p1, z2') + byol_loss(p2, z1')`` (paper's sum).
        """
        p1 = self.predictor(self.projector(self.backbone(x1)))  # (B, D)
        p2 = self.predictor(self.projector(self.backbone(x2)))  # (B, D)
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(x1))  # (B, D)
            t2 = self.target_projector(self.target_backbone(x2))  # (B, D)
        return {"loss": byol_loss(p1, t2) + byol_loss(p2, t1)}

    def after_step(self, progress: float) -> None:
        """After each optimizer step: the momentum update (``momentum_update``)."""
        self.momentum_update(progress)

    def momentum_update(self, progress: float) -> None:
        """Target ``= tau * target + (1 - tau) * online``; call after ``optimizer.step()``.

        Args:
            progress: Global step / total steps, in [0, 1]; sets tau by ``cosine_momentum``.
        """
        tau = cosine_momentum(self.base_momentum, progress)
        ema_update(self.target_backbone, self.backbone, tau)
        ema_update(self.target_projector, self.projector, tau)
