"""Rank/world helpers and collectives that are identity or no-ops in a single process."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as tdist

__all__ = [
    "all_gather",
    "all_reduce_mean",
    "barrier",
    "broadcast",
    "cleanup",
    "gather_with_grad",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_dist",
    "is_main_process",
]


def is_dist() -> bool:
    """Whether a torch.distributed process group is initialised.

    Returns:
        True when running under an initialised process group, else False.
    """
    return tdist.is_available() and tdist.is_initialized()


def get_rank() -> int:
    """Global rank of this process.

    Returns:
        The rank, 0 in a single process.
    """
    return tdist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes in the group.

    Returns:
        The world size, 1 in a single process.
    """
    return tdist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """Whether this is rank 0 (the process that logs and writes checkpoints).

    Returns:
        True on rank 0 or in a single process.
    """
    return get_rank() == 0


def barrier() -> None:
    """Wait for all ranks; no-op in a single process."""
    if is_dist():
        tdist.barrier()


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` in place with rank ``src``'s tensor; identity in a single process.

    Args:
        t: Tensor of the same shape and dtype on every rank.
        src: Rank whose values are kept.

    Returns:
        ``t`` itself (modified in place when distributed).
    """
    if is_dist():
        tdist.broadcast(t, src=src)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (e.g. a chosen file name); ``obj``
    itself in a single process. Every rank must call it."""
    if not is_dist():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def all_gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from all ranks along dim 0, without gradient.

    Every rank must pass the same shape. Rank r's rows land at ``[r*B, (r+1)*B)``.

    Args:
        t: Tensor (B, ...).

    Returns:
        Tensor (world*B, ...); ``t`` itself in a single process.
    """
    if not is_dist():
        return t
    parts = [torch.empty_like(t) for _ in range(get_world_size())]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)  # (W*B, ...)


def gather_shards(t: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble per-rank results of an unshuffled ``DistributedSampler`` in dataset order.

    Such a sampler pads the N items to ``W * P`` by repeating the first ones and gives rank r the
    padded positions ``r, r + W, r + 2W, ...``; this gathers every rank's P rows, puts each row
    at its padded position and drops the padding.

    Args:
        t: (P, ...) this rank's rows in sampler order (on the process group's device).
        n: N, the dataset length.

    Returns:
        (N, ...) rows in dataset order; ``t`` itself in a single process.
    """
    world = get_world_size()
    if world == 1:
        return t
    per = t.shape[0]
    g = all_gather(t)  # (W*P, ...) rank-major
    rank = torch.arange(world, device=g.device).repeat_interleave(per)  # (W*P,)
    slot = torch.arange(per, device=g.device).repeat(world)  # (W*P,)
    order = torch.argsort(slot * world + rank)  # rows by padded position
    return g.index_select(0, order[:n])


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a new tensor; ``t`` is not modified).

    Args:
        t: Tensor of the same shape on every rank.

    Returns:
        The element-wise mean over ranks; ``t`` itself in a single process.
    """
    if not is_dist():
        return t
    out = t.detach().clone()
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out / get_world_size()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        ctx.batch = t.shape[0]
        parts = [torch.empty_like(t) for _ in range(get_world_size())]
        tdist.all_gather(parts, t.contiguous())
        return torch.cat(parts, dim=0)  # (W*B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Every rank's loss may depend on our rows: sum those contributions over ranks,
        # then keep the gradient of the local slice.
        grad = grad.contiguous().clone()  # (W*B, ...)
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
        start = get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from all ranks along dim 0, keeping the autograd graph.

    The backward pass all-reduces (sums) the incoming gradient and returns the local slice, so
    that with DDP's gradient averaging the result equals the gradient of the mean of the ranks'
    losses. Every rank must pass the same shape.

    Args:
        t: Tensor (B, ...).

    Returns:
        Tensor (world*B, ...), rank r's rows at ``[r*B, (r+1)*B)``; ``t`` itself in one process.
    """
    if not is_dist():
        return t
    return _GatherWithGrad.apply(t)


def init_from_env(device: str = "auto") -> bool:
    """Initialise the process group from torchrun's environment variables.

    Uses NCCL when this run trains on CUDA (``device`` not ``cpu`` and CUDA available; each
    process takes the GPU ``LOCAL_RANK``), otherwise Gloo. Does nothing when ``RANK``,
    ``WORLD_SIZE`` or ``LOCAL_RANK`` is unset.

    Args:
        device: the run's ``train.device`` (``auto``, ``cpu``, ``cuda``...).

    Returns:
        True if running distributed (initialised here or before), False for a single process.

    Raises:
        ValueError: more processes on this node than CUDA devices.
    """
    if is_dist():
        return True
    if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return False
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        local, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local >= count:
            raise ValueError(
                f"torchrun started a process with LOCAL_RANK={local}, but this machine has "
                f"{count} CUDA device(s): use --nproc_per_node {count} (one process per GPU), "
                "or train.device=cpu for processes on the CPU")
        torch.cuda.set_device(local)
    tdist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return True


def cleanup() -> None:
    """Destroy the process group if one is initialised; no-op otherwise."""
    if is_dist():
        tdist.destroy_process_group()
