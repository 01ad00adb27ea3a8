"""What the method files share: defaults of the method interface and the EMA update."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place ``target = momentum * target + (1 - momentum) * online`` over the parameters of
    two same-architecture modules; buffers (BN statistics) are left alone, as in MoCo and BYOL."""
    t_params = list(target.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, list(online.parameters()), alpha=1.0 - momentum)


class MethodDefaults(nn.Module):
    """The parts of the method interface (``ccrop.methods.SSLMethod``) most methods share: the
    heatmap encoder is ``self.backbone``, every trainable parameter is in one optimizer group,
    nothing happens after a step. Momentum and queue updates stay in each method's file."""

    backbone: nn.Module

    @property
    def heatmap_encoder(self) -> nn.Module:
        """The encoder whose feature maps give the localization heatmaps."""
        return self.backbone

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """One optimizer group with every trainable parameter (frozen targets excluded)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}]

    def after_step(self, progress: float) -> None:
        """Called by the engine after each optimizer step (progress = step / total steps)."""
