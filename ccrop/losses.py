"""Self-supervised losses as pure tensor functions (NT-Xent, MoCo InfoNCE, BYOL, SimSiam)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ccrop import dist

__all__ = ["byol_loss", "info_nce_queue", "moco_logits", "neg_cosine", "nt_xent"]


def _fp32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Float32 copies: similarities at temperature 0.1-0.5 need more than bf16's 8 bits."""
    return [t.float() for t in tensors]


def _no_autocast(t: torch.Tensor) -> torch.autocast:
    """Context that keeps the loss math in float32 under mixed precision."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str, temperature: float = 1.0) -> None:
    """ValueError unless ``a`` and ``b`` are (B, D) of one shape and ``temperature > 0``."""
    if a.ndim != 2 or a.shape != b.shape or not temperature > 0:
        raise ValueError(f"{names} must both be (B, D) with equal shapes and temperature > 0, "
                         f"got {tuple(a.shape)}, {tuple(b.shape)}, temperature={temperature}")


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, gather: bool = True
) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1): scalar mean over the 2B local anchors.

    ``z1``, ``z2``: (B, D) embeddings of the two views (row i: one image). Each anchor's
    positive is its other view; every other embedding is a negative, plus those of the other
    ranks when distributed and ``gather`` (gradient flows back to them).
    """
    _check_pair(z1, z2, "z1, z2", temperature)
    with _no_autocast(z1):
        return _nt_xent_fp32(*_fp32(z1, z2), temperature, gather)


def _nt_xent_fp32(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
                  gather: bool) -> torch.Tensor:
    """``nt_xent`` on float32 (B, D) inputs."""
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
    """MoCo logits (B, 1+K) (He et al. 2020, Alg. 1): the positive first, then the queue.

    ``q`` (B, D) queries and ``k`` (B, D) positive keys (detached) are L2-normalised here;
    ``queue`` (K, D) holds unit-norm negative keys.
    """
    _check_pair(q, k, "q, k", temperature)
    with _no_autocast(q):
        q, k, queue = _fp32(q, k.detach(), queue.detach())
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        l_pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
        l_neg = q @ queue.T  # (B, K)
        return torch.cat([l_pos, l_neg], dim=1) / temperature  # (B, 1+K)


def info_nce_queue(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2
) -> torch.Tensor:
    """MoCo InfoNCE: cross entropy of ``moco_logits`` with label 0, mean over the B queries."""
    logits = moco_logits(q, k, queue, temperature)  # (B, 1+K), float32
    with _no_autocast(logits):  # cross entropy with target 0, without the nll_loss kernel
        return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's ``2 - 2 cos(p, z)`` (Grill et al. 2020, eq. 2), mean over B, in [0, 4]:
    (B, D) online predictions ``p``, (B, D) target projections ``z`` (detached)."""
    _check_pair(p, z, "p, z")
    with _no_autocast(p):
        p, z = _fp32(p, z.detach())
        return (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()


def neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``-cos(p, z)`` (Chen & He 2021, eq. 1), mean over B, in [-1, 1]: (B, D)
    predictions ``p``, (B, D) projections ``z`` (detached: the stop-gradient)."""
    _check_pair(p, z, "p, z")
    with _no_autocast(p):
        p, z = _fp32(p, z.detach())
        return -F.cosine_similarity(p, z, dim=1).mean()
