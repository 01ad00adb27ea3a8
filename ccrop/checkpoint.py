"""Checkpoints: atomic writes, load-tested, plain types only (``weights_only=True``), newest valid.

A checkpoint is a dict of tensors and builtins: ``model`` (the method's state dict, including
MoCo's queue and BYOL's target), ``optimizer``, ``epoch`` (completed epochs), ``step``, ``boxes``,
``rng`` (python, numpy, torch, CUDA states), ``config`` (plain dict) and ``history``.
The saved ``rng`` is the state the next epoch starts from, ``seed_rngs(seed, epoch, 0)``: a
function of (seed, epoch) only, so it is the same whether or not the run was resumed before.
Loading never unpickles arbitrary objects, so a crafted file cannot run code, and checks the
zip CRC-32 of every member, so a damaged byte is reported instead of loading wrong weights.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CcropError

CKPT_RE = re.compile(r"^ckpt-epoch(\d+)\.pt$")


class CheckpointError(CcropError, RuntimeError):
    """A checkpoint that cannot be read, written or does not match the model (the CLI prints
    one line and exits with code 2; a ``RuntimeError`` as before the error family)."""


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

    Only torch's zip format is read (``save_checkpoint`` writes nothing else). torch's warnings
    are silenced and its advice to load unsafely is never passed on: the one error names the
    path and what was expected.

    Raises:
        CheckpointError: missing, truncated, corrupt (bad CRC-32), unsafe or foreign file, or
            one whose ``model`` is not a state dict (names to tensors), naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not zipfile.is_zipfile(path):  # the legacy pickle path of torch.load is never taken
        raise CheckpointError(f"checkpoint {str(path)!r} is not a ccrop checkpoint: not a "
                              "torch.save zip archive (empty, truncated, text or raw pickle)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols and the like
            warnings.simplefilter("ignore")
            _check_crc(path)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {str(path)!r} {_load_failure(err)}") from None
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict):
        what = "no 'model'" if model is None else f"'model' is of type {type(model).__name__}"
        raise CheckpointError(f"checkpoint {str(path)!r} is not a ccrop checkpoint ({what}; "
                              "expected a dict holding 'model', a state dict)")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise CheckpointError(f"checkpoint {str(path)!r} is not a ccrop checkpoint ('model' "
                              "must map parameter names to tensors)")
    return state


def _load_failure(err: Exception) -> str:
    """Why ``torch.load`` refused a zip file, as the end of a sentence. torch's own text for a
    refused pickle recommends ``weights_only=False`` (unsafe), so that text is never shown."""
    if isinstance(err, pickle.UnpicklingError):
        return ("is not a ccrop checkpoint: it holds pickled Python objects besides tensors and "
                "plain types, which are refused unread (a crafted file could run code)")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "weights_only" in first:
        first = type(err).__name__
    return f"is damaged or not a ccrop checkpoint: {first.split('. ')[0].rstrip('.')}"


def _check_crc(path: Path) -> None:
    """Verify the CRC-32 of every member torch wrote (``torch.load`` does not: a flipped byte in
    a tensor would load silently). Raises ``zipfile.BadZipFile`` naming the damaged member."""
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


#: last word of the ``SeedSequence`` entropy of ``seed_rngs``: keeps its streams apart from
#: other generators seeded from the same (seed, epoch) (views, shuffling)
_GLOBAL_STREAM = 0x67_6C_6F_62  # "glob"


def seed_rngs(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed python ``random``, numpy and torch (CPU and every CUDA device) for ``epoch``.

    Called at every epoch boundary, so the global streams an epoch draws from depend on
    ``(seed, epoch, rank)`` only, not on what the process drew before: a resumed process draws
    extra numbers once (a persistent DataLoader's first iterator takes its ``base_seed`` from
    the global torch generator; lazily built loaders do too), which would otherwise shift every
    later draw and every saved ``rng`` state.

    Args:
        seed: ``train.seed`` (any int; taken modulo 2**64).
        epoch: completed epochs (>= 0): the epoch about to start.
        rank: process rank; each rank gets its own streams.
    """
    entropy = [seed % 2**64, int(epoch), int(rank), _GLOBAL_STREAM]
    words = [int(w) for w in np.random.SeedSequence(entropy).generate_state(6)]  # uint32 each
    random.seed(words[0] << 32 | words[1])
    np.random.seed(words[2:4])
    torch.manual_seed(words[4] << 32 | words[5])  # seeds every CUDA device too


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
                        prefix: str = "backbone.", source: str | Path | None = None) -> None:
    """Load the query/online backbone weights out of a method's state dict.

    Args:
        source: the checkpoint file the state came from, named in the error.

    Raises:
        CheckpointError: naming the missing, unexpected or mis-shaped keys (another architecture).
    """
    where = "checkpoint" if source is None else f"checkpoint {str(source)!r}"
    if not isinstance(model_state, dict):
        raise CheckpointError(f"{where}: expected a state dict (names to tensors) as 'model', "
                              f"got {type(model_state).__name__}")
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
        raise CheckpointError(f"{where} backbone does not match the model; " + "; ".join(parts))
    backbone.load_state_dict(sub)
