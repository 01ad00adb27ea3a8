"""MLP builders for projection and prediction heads (Linear-BN-ReLU blocks)."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp"]


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    last_bn: bool = False,
    hidden_bn: bool = True,
) -> nn.Sequential:
    """Multi-layer perceptron head mapping (B, in_dim) -> (B, out_dim).

    ``num_layers - 1`` hidden blocks ``Linear -> BatchNorm1d -> ReLU`` of size ``hidden_dim``,
    then a final ``Linear``. ``num_layers=1`` is a single linear layer (MoCo v1 head).

    Args:
        in_dim: Input features D_in.
        hidden_dim: Hidden size (ignored when ``num_layers == 1``).
        out_dim: Output features D_out.
        num_layers: Number of linear layers, >= 1.
        last_bn: Append a non-affine ``BatchNorm1d`` to the output (SimSiam projector).
        hidden_bn: Use BN in the hidden blocks (False gives MoCo v2's Linear-ReLU-Linear).

    Returns:
        The head as an ``nn.Sequential``.

    Raises:
        ValueError: A size or ``num_layers`` below 1.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if min(in_dim, out_dim) < 1 or (num_layers > 1 and hidden_dim < 1):
        raise ValueError(
            f"in_dim, hidden_dim, out_dim must be >= 1, got {in_dim}, {hidden_dim}, {out_dim}"
        )
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
