"""What the method files share: defaults of the method interface, EMA, one optimizer group."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place ``target = momentum * target + (1 - momentum) * online`` over parameters.

    Buffers (BN running statistics) are left alone, as in MoCo and BYOL.

    Args:
        target: Momentum network, same architecture as ``online``.
        online: Network trained by the optimizer.
        momentum: Weight of the old target, in [0, 1].

    Raises:
        ValueError: The two modules have different numbers of parameters.
    """
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("target and online must have the same parameters")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)


def one_group(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """All trainable parameters of ``module`` as one optimizer group (frozen targets excluded).

    Args:
        module: the method.
        lr: learning rate.
        weight_decay: weight decay.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": params, "lr": lr, "weight_decay": weight_decay}]


class MethodDefaults(nn.Module):
    """The parts of the method interface (``ccrop.methods.SSLMethod``) most methods share:
    the heatmap encoder is ``self.backbone``, all trainable parameters form one optimizer group,
    and nothing happens after a step. A method overrides what differs; momentum and queue
    updates stay explicit in the method's own file (its ``after_step``)."""

    backbone: nn.Module

    @property
    def heatmap_encoder(self) -> nn.Module:
        """The encoder whose feature maps give the localization heatmaps."""
        return self.backbone

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer parameter groups: one group with every trainable parameter.

        Args:
            lr: Learning rate.
            weight_decay: Weight decay.
        """
        return one_group(self, lr, weight_decay)

    def after_step(self, progress: float) -> None:
        """Called by the engine after each optimizer step; nothing by default.

        Args:
            progress: global step / total steps, in (0, 1].
        """
