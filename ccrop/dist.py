"""Rank/world helpers and collectives that are identity or no-ops in a single process."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as tdist

from .errors import ConfigError


def is_dist() -> bool:
    """Whether a torch.distributed process group is initialised."""
    return tdist.is_available() and tdist.is_initialized()


def get_rank() -> int:
    """Global rank of this process (0 in a single process)."""
    return tdist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    """Number of processes in the group (1 in a single process)."""
    return tdist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """Whether this is rank 0 (the process that logs and writes checkpoints)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for all ranks; no-op in a single process."""
    if is_dist():
        tdist.barrier()


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` in place with rank ``src``'s tensor (same shape everywhere); returns it."""
    if is_dist():
        tdist.broadcast(t, src=src)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank; every rank must call it."""
    if not is_dist():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def all_gather(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) from every rank -> (W*B, ...), rank r's rows at ``[r*B, (r+1)*B)``; no grad."""
    if not is_dist():
        return t
    parts = [torch.empty_like(t) for _ in range(get_world_size())]
    tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def gather_shards(t: torch.Tensor, n: int) -> torch.Tensor:
    """Per-rank rows (P, ...) of an unshuffled ``DistributedSampler`` -> (N, ...) in dataset
    order. The sampler pads N to ``W * P`` by repeating the first items and gives rank r the
    padded positions ``r, r + W, ...``; the padding is dropped."""
    world = get_world_size()
    if world == 1:
        return t
    per = t.shape[0]
    g = all_gather(t)  # (W*P, ...) rank-major
    rank = torch.arange(world, device=g.device).repeat_interleave(per)
    slot = torch.arange(per, device=g.device).repeat(world)
    order = torch.argsort(slot * world + rank)  # rows by padded position
    return g.index_select(0, order[:n])


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks (a new tensor; ``t`` itself in a single process)."""
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
        return all_gather(t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # every rank's loss may depend on our rows: sum over ranks, keep the local slice
        grad = grad.contiguous().clone()
        tdist.all_reduce(grad, op=tdist.ReduceOp.SUM)
        start = get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) from every rank -> (W*B, ...) keeping the graph; with DDP's gradient averaging
    the gradient is that of the mean of the ranks' losses. ``t`` itself in one process."""
    return _GatherWithGrad.apply(t) if is_dist() else t


def init_from_env(device: str = "auto") -> bool:
    """Initialise the process group from torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
    (NCCL, one GPU per ``LOCAL_RANK``, when ``device`` is not ``cpu`` and CUDA exists; else
    Gloo); returns whether running distributed. ``ConfigError``: more ranks than GPUs."""
    if is_dist():
        return True
    if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        return False
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        local, count = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local >= count:
            raise ConfigError(
                f"torchrun started a process with LOCAL_RANK={local}, but this machine has "
                f"{count} CUDA device(s): use --nproc_per_node {count} (one process per GPU), "
                "or train.device=cpu for processes on the CPU")
        torch.cuda.set_device(local)
    tdist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return True


def cleanup() -> None:
    """Destroy the process group if one is initialised."""
    if is_dist():
        tdist.destroy_process_group()
