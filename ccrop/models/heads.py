"""MLP builders for projection and prediction heads (Linear-BN-ReLU blocks)."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = False,
        hidden_bn: bool = True) -> nn.Sequential:
    """Head (B, in_dim) -> (B, out_dim): ``num_layers - 1`` blocks ``Linear -> BatchNorm1d ->
    ReLU`` of size ``hidden_dim`` (no BN with ``hidden_bn=False``: MoCo v2), then a ``Linear``
    (``num_layers=1``: MoCo v1), then a non-affine ``BatchNorm1d`` with ``last_bn`` (SimSiam)."""
    if num_layers < 1 or min(in_dim, out_dim) < 1 or (num_layers > 1 and hidden_dim < 1):
        raise ValueError(f"need num_layers >= 1 and in_dim, hidden_dim, out_dim >= 1, got "
                         f"{num_layers} and {in_dim}, {hidden_dim}, {out_dim}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        # A bias right before BN is redundant.
        layers.append(nn.Linear(dim, hidden_dim, bias=not hidden_bn))
        if hidden_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
