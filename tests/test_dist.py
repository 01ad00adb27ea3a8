"""Tests for ccrop.dist: identity in one process, correct collectives with two Gloo ranks."""

from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ccrop import dist
from ccrop.losses import nt_xent
from ccrop.methods.moco import MoCo
from ccrop.models import build_backbone


def test_single_process_helpers_are_identity() -> None:
    assert not dist.is_dist()
    assert dist.get_rank() == 0 and dist.get_world_size() == 1 and dist.is_main_process()
    t = torch.randn(3, 2)
    assert dist.all_gather(t) is t
    assert dist.all_reduce_mean(t) is t
    assert dist.broadcast(t) is t
    assert dist.gather_with_grad(t) is t
    assert dist.gather_shards(t, 3) is t
    dist.barrier()
    dist.cleanup()


def test_gather_with_grad_single_process_passes_grad_unchanged() -> None:
    t = torch.randn(4, 3, requires_grad=True)
    upstream = torch.randn(4, 3)
    (dist.gather_with_grad(t) * upstream).sum().backward()
    torch.testing.assert_close(t.grad, upstream)


def test_init_from_env_false_without_torchrun_vars(monkeypatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert dist.init_from_env() is False
    assert not dist.is_dist()


def _check_collectives(rank: int, world: int) -> None:
    t = torch.full((2, 3), float(rank), requires_grad=True)
    out = dist.gather_with_grad(t)  # (2W, 3)
    torch.testing.assert_close(
        out, torch.arange(world).repeat_interleave(2)[:, None].expand(-1, 3).float()
    )
    # Each rank's loss weighs all rows by (rank + 1): our rows get the sum over ranks.
    (out * (rank + 1)).sum().backward()
    torch.testing.assert_close(t.grad, torch.full_like(t, world * (world + 1) / 2))
    mean = dist.all_reduce_mean(torch.tensor([float(rank)]))
    torch.testing.assert_close(mean, torch.tensor([(world - 1) / 2]))
    assert dist.broadcast(torch.tensor([rank]), src=1).item() == 1


def _check_nt_xent(rank: int, world: int, b: int = 3) -> None:
    """Mean of per-rank losses and DDP-averaged grads equal the single-process global loss."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(world * b, 5, generator=g), torch.randn(world * b, 5, generator=g)
    ref1, ref2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ref = nt_xent(ref1, ref2, 0.3, gather=False)
    ref.backward()
    rows = slice(rank * b, (rank + 1) * b)
    l1, l2 = z1[rows].clone().requires_grad_(), z2[rows].clone().requires_grad_()
    loss = nt_xent(l1, l2, 0.3)
    loss.backward()
    torch.testing.assert_close(dist.all_reduce_mean(loss.detach()), ref.detach())
    torch.testing.assert_close(l1.grad / world, ref1.grad[rows])  # DDP divides by world
    torch.testing.assert_close(l2.grad / world, ref2.grad[rows])


def _check_moco_shuffle_bn(rank: int, world: int, b: int = 4) -> None:
    """With per-sample (eval) BN, shuffled keys equal direct keys; queue gets all ranks' keys."""
    torch.manual_seed(0)
    moco = MoCo(build_backbone(width=4), proj_hidden=8, proj_dim=6, queue_size=32).eval()
    x = torch.randn(world * b, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = F.normalize(moco.key_projector(moco.key_backbone(x)), dim=1)  # (W*B, D)
    local = x[rank * b : (rank + 1) * b]
    torch.testing.assert_close(moco.keys(local), expected[rank * b : (rank + 1) * b])
    moco(local, local)
    torch.testing.assert_close(moco.queue[: world * b], expected)
    assert moco.queue_ptr.item() == world * b


def _check_gather_shards(rank: int, world: int) -> None:
    """Shards of an unshuffled DistributedSampler (padded) come back in dataset order."""
    from torch.utils.data import DistributedSampler

    for n in (7, 8, 1):  # padded (7 -> 8), exact, fewer items than ranks
        values = torch.arange(n) * 10  # item i's result is 10 * i
        mine = list(DistributedSampler(range(n), world, rank, shuffle=False))
        out = dist.gather_shards(values[mine][:, None].float(), n)  # (N, 1)
        torch.testing.assert_close(out[:, 0], values.float())


def _worker(rank: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)  # before any op: a forked child must not reuse the parent's pool
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _check_collectives(rank, world)
        _check_nt_xent(rank, world)
        _check_moco_shuffle_bn(rank, world)
        _check_gather_shards(rank, world)
    finally:
        dist.cleanup()


@pytest.mark.slow  # two processes (torch.multiprocessing)
def test_two_gloo_ranks(tmp_path: Path) -> None:
    # fork: the children reuse the parent's imports (spawn re-imports torch, ~5 s per child);
    # but once CUDA autograd has run in this process (a GPU machine), a forked child cannot
    # use autograd, so spawn then
    method = "spawn" if torch.cuda.is_initialized() else "fork"
    mp.start_processes(
        _worker, args=(2, str(tmp_path / "pg_init")), nprocs=2, join=True, start_method=method
    )


@pytest.mark.parametrize("device,gpus,local_rank,backend", [
    ("auto", 0, "1", "gloo"),  # no CUDA
    ("cpu", 2, "1", "gloo"),  # CUDA present, but the run is on the CPU
    ("auto", 2, "1", "nccl"),
    ("cuda", 2, "0", "nccl"),
])
def test_init_from_env_picks_the_backend_of_the_run_device(monkeypatch, device, gpus,
                                                           local_rank, backend):
    seen = {}
    monkeypatch.setenv("RANK", local_rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: seen.setdefault("gpu", i))
    monkeypatch.setattr(tdist, "init_process_group",
                        lambda backend, init_method: seen.setdefault("backend", backend))
    assert dist.init_from_env(device)
    assert seen["backend"] == backend
    assert seen.get("gpu") == (int(local_rank) if backend == "nccl" else None)


def test_init_from_env_more_ranks_than_gpus_names_the_fix(monkeypatch):
    for key, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(tdist, "init_process_group", lambda **kw: pytest.fail("initialised"))
    with pytest.raises(ValueError, match=r"LOCAL_RANK=1.*1 CUDA device.*--nproc_per_node 1"):
        dist.init_from_env("auto")


def test_cli_pretrain_with_more_ranks_than_gpus_exits_2(monkeypatch, capsys, tmp_path):
    from ccrop import cli

    for key, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli.main(["pretrain", f"train.out_dir={tmp_path / 'run'}"]) == 2
    assert "--nproc_per_node 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written
