"""Two torchrun "nodes" on this machine (c10d rendezvous on 127.0.0.1, gloo on the loopback
device, CPU) train exactly as a two-process single-node run: same boxes, same weights, bit for
bit; only rank 0 prints and writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ccrop.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # torchrun subprocesses

TINY = ["data.dataset_kwargs.num_images=66", "data.batch_size=16", "data.num_workers=0",
        "model.width=8", "train.epochs=2", "crop.warmup_epochs=1", "crop.loc_interval=1",
        "train.progress=false", "train.tensorboard=false", "crop.threshold_mode=quantile",
        "crop.threshold=0.5", "train.device=cpu", "data.pipeline=cpu"]
TIMEOUT = 240  # seconds for all three launches together (about 40 s on a loaded 2-core box)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    # one thread each (torchrun sets it only for several processes per node; float sums must
    # run in the same order in both launches), gloo on the loopback device only
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    return env


def _start(torchrun_args: list[str], out: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args,
           "-m", "ccrop.cli", "pretrain", *TINY, f"train.out_dir={out}"]
    with open(log.with_suffix(".out"), "w") as so, open(log.with_suffix(".err"), "w") as se:
        return subprocess.Popen(cmd, stdout=so, stderr=se, env=_env(), start_new_session=True)


def _node(rank: int, port: int, out: Path, log: Path) -> subprocess.Popen:
    """One "node" of two: one process, c10d rendezvous hosted by node 0 on 127.0.0.1."""
    return _start(["--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                   "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                   "--rdzv_id", "ccrop-multinode-test", "--rdzv_conf", f"is_host={int(rank == 0)}",
                   "--local_addr", "127.0.0.1"], out, log)


def _wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    """Exit codes; every process group is killed on a timeout or an error."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _final(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "ckpt-epoch00002.pt")


def test_two_nodes_equal_one_node_with_two_processes(tmp_path):
    port = _free_port()
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    single = tmp_path / "single"
    procs = [_node(0, port, nodes[0], tmp_path / "node0"),
             _node(1, port, nodes[1], tmp_path / "node1"),
             _start(["--standalone", "--nproc_per_node", "2"], single, tmp_path / "single")]
    codes = _wait_all(procs, TIMEOUT)
    errs = {n: (tmp_path / f"{n}.err").read_text()[-1500:] for n in ("node0", "node1", "single")}
    assert codes == [0, 0, 0], errs
    # c10d may give global rank 0 to either node: exactly one printed and wrote its folder
    outs = [(tmp_path / f"node{r}.out").read_text() for r in (0, 1)]
    main = [r for r in (0, 1) if nodes[r].exists()]
    assert len(main) == 1, main
    assert outs[main[0]].count("run folder:") == 1 and outs[1 - main[0]] == ""
    summary = json.loads((nodes[main[0]] / "summary.json").read_text())
    assert summary["box_updates"] == [1] and summary["steps"] == 8  # 33 images per rank
    a, b = _final(nodes[main[0]]), _final(single)
    assert torch.equal(a["boxes"]["boxes"], b["boxes"]["boxes"])
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
