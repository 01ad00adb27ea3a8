"""SimSiam (Chen & He 2021): shared encoder, predictor, stop-gradient negative cosine."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ccrop.losses import neg_cosine
from ccrop.methods.common import MethodDefaults
from ccrop.models.heads import mlp


class SimSiam(MethodDefaults):
    """SimSiam with a 3-layer projector (output BN) and a 2-layer bottleneck predictor.

    Build the backbone with ``zero_init_residual=True`` (as the official setting does); this
    class cannot do it for you. The heatmap encoder is ``self.backbone``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        proj_dim: int = 512,
        pred_hidden: int = 128,
        fixed_predictor_lr: bool = True,
    ) -> None:
        """Build the method.

        Args:
            backbone: Encoder with ``feat_dim`` and ``forward(x) -> (B, feat_dim)``.
            proj_dim: Hidden and output size of the projector (D).
            pred_hidden: Bottleneck size of the predictor (D -> pred_hidden -> D).
            fixed_predictor_lr: Mark the predictor's group ``fix_lr`` (no lr schedule for it).
        """
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.feat_dim, proj_dim, proj_dim, num_layers=3, last_bn=True)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim)
        self.fixed_predictor_lr = fixed_predictor_lr

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the symmetric loss for a batch of view pairs.

        Args:
            x1: First views (B, 3, H, W).
            x2: Second views (B, 3, H, W).

        Returns:
            ``{"loss": scalar in [-1, 1], "z_std": detached scalar}``; z_std is the per-dim std
            of normalised projections, ~1/sqrt(D) when healthy and ~0 when collapsed.
        """
        z1 = self.projector(self.backbone(x1))  # (B, D)
        z2 = self.projector(self.backbone(x2))  # (B, D)
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, D) each
        loss = 0.5 * (neg_cosine(p1, z2) + neg_cosine(p2, z1))
        z_std = F.normalize(z1.detach(), dim=1).std(dim=0).mean()
        return {"loss": loss, "z_std": z_std}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Encoder+projector group and predictor group (``fix_lr`` if ``fixed_predictor_lr``).

        Args:
            lr: Learning rate.
            weight_decay: Weight decay.

        Returns:
            Two parameter groups; the engine keeps the lr of groups with ``fix_lr`` constant.
        """
        pred_ids = {id(p) for p in self.predictor.parameters()}
        encoder = [p for p in self.parameters() if p.requires_grad and id(p) not in pred_ids]
        predictor = [p for p in self.predictor.parameters() if p.requires_grad]
        return [
            {"params": encoder, "lr": lr, "weight_decay": weight_decay},
            {
                "params": predictor,
                "lr": lr,
                "weight_decay": weight_decay,
                "fix_lr": self.fixed_predictor_lr,
            },
        ]
