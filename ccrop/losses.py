"""Self-supervised losses as pure tensor functions (NT-Xent, MoCo InfoNCE, BYOL, SimSiam)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ccrop import dist

__all__ = ["byol_loss", "info_nce_queue", "moco_logits", "neg_cosine", "nt_xent"]


def _fp32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Cast to float32: similarities at temperature 0.1-0.5 need more than bf16's 8 bits."""
    return [t.float() for t in tensors]


def _no_autocast(t: torch.Tensor) -> torch.autocast:
    """Context that keeps the loss math in float32 under mixed precision."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{names} must both be (B, D) with equal shapes, got {a.shape}, {b.shape}")


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather: bool = True
) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy (Chen et al. 2020, eq. 1).

    Each of the 2B local embeddings is an anchor; its positive is the other view of the same
    image; every other embedding (2B-2 locally, plus 2B per other rank when distributed and
    ``gather``) is a negative. Cosine similarities are divided by ``temperature``.

    Args:
        z1: Embeddings of view 1 (B, D), not necessarily normalised.
        z2: Embeddings of view 2 (B, D); row i is the same image as ``z1[i]``.
        temperature: Softmax temperature, > 0.
        gather: Use other ranks' embeddings as extra negatives (gradient flows back to them).

    Returns:
        Scalar loss, mean over the 2B local anchors.
    """
    _check_temperature(temperature)
    _check_pair(z1, z2, "z1, z2")
    with _no_autocast(z1):
        return _nt_xent_fp32(*_fp32(z1, z2), temperature, gather)


def _nt_xent_fp32(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool
) -> torch.Tensor:
    """``nt_xent`` body on float32 (B, D) inputs."""
    b = z1.shape[0]
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    anchors = torch.cat([z1, z2])  # (2B, D)
    # each anchor's positive logit straight from the pair: no target gather, no cross_entropy
    # (Triton 3.6 failed to compile the fused nll_loss kernel that cross_entropy became)
    pos = (anchors * torch.cat([z2, z1])).sum(dim=1) / temperature  # (2B,)
    rank, world = (dist.get_rank(), dist.get_world_size()) if gather else (0, 1)
    if world > 1:
        z1, z2 = dist.gather_with_grad(z1), dist.gather_with_grad(z2)  # (W*B, D) each
    n = world * b
    candidates = torch.cat([z1, z2])  # (2N, D): all first views, then all second views
    logits = anchors @ candidates.T / temperature  # (2B, 2N)
    local = torch.arange(b, device=logits.device) + rank * b  # (B,) own rows among N
    self_idx = torch.cat([local, local + n])  # (2B,) where each anchor sits in candidates
    # a comparison, not F.one_hot: one_hot range-checks its input with a host sync
    self_mask = self_idx[:, None] == torch.arange(2 * n, device=logits.device)  # (2B, 2N)
    # cross entropy with the positive as target: log-sum-exp over all but self, minus positive
    return (torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1) - pos).mean()


def moco_logits(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo logits: positive key first, then the queue of negatives (He et al. 2020, Alg. 1).

    Args:
        q: Queries (B, D); L2-normalised here.
        k: Positive keys (B, D); L2-normalised here and treated as constants (detached).
        queue: Negative keys (K, D), rows assumed unit-norm.
        temperature: Softmax temperature, > 0.

    Returns:
        Logits (B, 1+K), column 0 the positive.
    """
    _check_temperature(temperature)
    _check_pair(q, k, "q, k")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}), got {tuple(queue.shape)}")
    with _no_autocast(q):
        q, k, queue = _fp32(q, k.detach(), queue.detach())
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        l_neg = q @ queue.T  # (B, K)
        return torch.cat([l_pos, l_neg], dim=1) / temperature  # (B, 1+K)


def info_nce_queue(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """MoCo InfoNCE: cross entropy of ``moco_logits`` with label 0 (the positive key).

    Args:
        q: Queries (B, D).
        k: Positive keys (B, D), detached.
        queue: Negative keys (K, D), unit-norm rows.
        temperature: Softmax temperature, > 0.

    Returns:
        Scalar loss, mean over the B queries.
    """
    logits = moco_logits(q, k, queue, temperature)  # (B, 1+K), float32
    with _no_autocast(logits):  # cross entropy with target 0, without the nll_loss kernel
        return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss ``2 - 2 cos(p, z)`` (Grill et al. 2020, eq. 2).

    Args:
        p: Online predictions (B, D).
        z: Target projections (B, D), treated as constants (detached).

    Returns:
        Scalar loss in [0, 4], mean over B; 0 when p and z are parallel.
    """
    _check_pair(p, z, "p, z")
    with _no_autocast(p):
        p, z = _fp32(p, z.detach())
        return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()


def neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's negative cosine similarity with stop-gradient on z (Chen & He 2021, eq. 1).

    Args:
        p: Predictions (B, D).
        z: Projections (B, D); detached here (the stop-gradient).

    Returns:
        Scalar loss in [-1, 1], mean over B; -1 when p and z are parallel.
    """
    _check_pair(p, z, "p, z")
    with _no_autocast(p):
        p, z = _fp32(p, z.detach())
        return -F.cosine_similarity(p, z, dim=1).mean()
