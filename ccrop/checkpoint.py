"""Checkpoints: atomic writes, load-tested, plain types only (``weights_only=True``), newest valid.

A checkpoint is a dict of tensors and builtins: ``model`` (the method's state dict, including
MoCo's queue and BYOL's target), ``optimizer``, ``epoch`` (completed epochs), ``step``, ``boxes``,
``rng`` (python, numpy, torch, CUDA states), ``config`` (plain dict) and ``history``.
Loading never unpickles arbitrary objects, so a crafted file cannot run code, and checks the
zip CRC-32 of every member, so a damaged byte is reported instead of loading wrong weights.
"""

from __future__ import annotations

import os
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_RE = re.compile(r"^ckpt-epoch(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not match the model."""


def ckpt_path(run_dir: str | Path, epoch: int) -> Path:
    """``<run_dir>/checkpoints/ckpt-epoch{epoch:05d}.pt``."""
    return Path(run_dir) / "checkpoints" / f"ckpt-epoch{epoch:05d}.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically: temp file, flush + fsync, load test, rename, fsync folder.

    If anything fails (disk full, interrupted), the previous file at ``path`` is untouched and
    the temp file is removed (a temp file left by a killed process is removed by the next
    ``prune_checkpoints``).

    Returns:
        The final path.

    Raises:
        CheckpointError: the file could not be written, synced or read back (e.g. disk full),
            naming ``path``; earlier checkpoints are untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        load_checkpoint(tmp)  # load test: never rename a file that cannot be read back
        os.replace(tmp, path)
    except Exception as err:  # OSError (ENOSPC, EIO), torch's RuntimeError on a short write
        tmp.unlink(missing_ok=True)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: {first}; earlier "
                              "checkpoints are untouched") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no code in the file is executed).

    Raises:
        CheckpointError: missing, truncated, corrupt (bad CRC-32) or unsafe file, naming the
            path.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        _check_crc(path)
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded safely: {first}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a ccrop checkpoint (no 'model')")
    return state


def _check_crc(path: Path) -> None:
    """Verify the CRC-32 of every member torch wrote (``torch.load`` does not: a flipped byte in
    a tensor would load silently). Raises ``zipfile.BadZipFile`` naming the damaged member."""
    if not zipfile.is_zipfile(path):
        return  # not a zip at all: torch.load reports it
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.CRC == 0:  # written with torch.serialization.set_crc32_options(False)
                continue
            with zf.open(info) as member:
                while member.read(1 << 22):  # BadZipFile("Bad CRC-32 ...") at the end
                    pass


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run folder, oldest first (by epoch number)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_valid_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint that loads; corrupt or truncated newer ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping unreadable checkpoint: {err}", stacklevel=2)
    return None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints, and temp files that killed writers
    left behind (other process ids); returns the deleted checkpoint paths."""
    old = list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []
    for p in old:
        p.unlink(missing_ok=True)
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir():
        for p in folder.glob(".ckpt-epoch*.pt.tmp-*"):
            if not p.name.endswith(f".tmp-{os.getpid()}"):
                p.unlink(missing_ok=True)
    return old


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA RNG states as plain types and tensors."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), npst[2], npst[3], npst[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_backbone_state(backbone: torch.nn.Module, model_state: dict[str, torch.Tensor],
                        prefix: str = "backbone.") -> None:
    """Load the query/online backbone weights out of a method's state dict.

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped keys (another architecture).
    """
    sub = {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(sub))
    unexpected = sorted(set(sub) - set(own))
    shape = sorted(k for k in set(own) & set(sub) if own[k].shape != sub[k].shape)
    if missing or unexpected or shape:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"{name}: {few(keys)}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape))
                 if keys]
        raise CheckpointError("checkpoint backbone does not match the model; " + "; ".join(parts))
    backbone.load_state_dict(sub)
