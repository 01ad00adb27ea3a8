"""SimSiam (Chen & He 2021): shared encoder, predictor, stop-gradient negative cosine."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ccrop.losses import neg_cosine
from ccrop.methods.common import MethodDefaults
from ccrop.models.heads import mlp


class SimSiam(MethodDefaults):
    """SimSiam with a 3-layer projector (hidden and output ``proj_dim`` = D, output BN) and a
    2-layer bottleneck predictor (D -> ``pred_hidden`` -> D). Build the backbone with
    ``zero_init_residual=True`` (the official setting). ``fixed_predictor_lr`` marks the
    predictor's optimizer group ``fix_lr``: the engine keeps its lr off the schedule."""

    def __init__(self, backbone: nn.Module, proj_dim: int = 512, pred_hidden: int = 128,
                 fixed_predictor_lr: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = mlp(backbone.feat_dim, proj_dim, proj_dim, num_layers=3, last_bn=True)
        self.predictor = mlp(proj_dim, pred_hidden, proj_dim)
        self.fixed_predictor_lr = fixed_predictor_lr

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss": symmetric negative cosine in [-1, 1], "z_std"}`` for views (B, 3, H, W);
        z_std (detached) is the per-dim std of normalised projections, ~1/sqrt(D) when healthy
        and ~0 when collapsed."""
        z1 = self.projector(self.backbone(x1))  # (B, D)
        z2 = self.projector(self.backbone(x2))  # (B, D)
        p1, p2 = self.predictor(z1), self.predictor(z2)  # (B, D) each
        loss = 0.5 * (neg_cosine(p1, z2) + neg_cosine(p2, z1))
        z_std = F.normalize(z1.detach(), dim=1).std(dim=0).mean()
        return {"loss": loss, "z_std": z_std}

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The encoder + projector group and the predictor group (``fix_lr``)."""
        predictor = list(self.predictor.parameters())
        pred_ids = {id(p) for p in predictor}
        encoder = [p for p in self.parameters() if p.requires_grad and id(p) not in pred_ids]
        return [{"params": encoder, "lr": lr, "weight_decay": weight_decay},
                {"params": [p for p in predictor if p.requires_grad], "lr": lr,
                 "weight_decay": weight_decay, "fix_lr": self.fixed_predictor_lr}]
