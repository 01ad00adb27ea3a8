"""Checkpoints: atomic writes, load-tested, plain types only (``weights_only=True``), newest valid.

A checkpoint is a dict of tensors and builtins: ``model`` (the method's state dict), ``optimizer``,
``epoch`` (completed), ``step``, ``boxes``, ``rng`` (the state the next epoch starts from,
``seed_rngs(seed, epoch, 0)``), ``config`` (plain dict), ``history`` and ``skipped_steps``.
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
from .files import atomic_write

CKPT_RE = re.compile(r"^ckpt-epoch(\d+)\.pt$")


class CheckpointError(CcropError, RuntimeError):
    """A checkpoint that cannot be read, written or does not match the model."""


def ckpt_path(run_dir: str | Path, epoch: int) -> Path:
    """``<run_dir>/checkpoints/ckpt-epoch{epoch:05d}.pt``."""
    return Path(run_dir) / "checkpoints" / f"ckpt-epoch{epoch:05d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` atomically (``atomic_write``), load-tested before the rename;
    ``CheckpointError`` naming ``path`` when it cannot be written, synced or read back (e.g.
    disk full), earlier checkpoints untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda fh: torch.save(state, fh), load_checkpoint)
    except (OSError, RuntimeError) as err:  # ENOSPC, EIO; torch's error on a short write
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: {_first_line(err)}; "
                              "earlier checkpoints are untouched") from err
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely: torch's zip format only, every member's CRC-32 checked (a
    flipped byte is reported, not loaded), ``weights_only=True`` (no code in the file runs).
    ``CheckpointError`` naming the path: missing, truncated, corrupt, unsafe or foreign file, or
    a ``model`` that is not a state dict (names to tensors)."""
    path, problem = Path(path), None
    if not path.is_file():
        problem = "does not exist"
    elif not zipfile.is_zipfile(path):  # the legacy pickle path of torch.load is never taken
        problem = ("is not a ccrop checkpoint: not a torch.save zip archive (empty, truncated, "
                   "text or raw pickle)")
    else:
        try:
            with warnings.catch_warnings(), zipfile.ZipFile(path) as zf:
                warnings.simplefilter("ignore")  # torch warns about pickle protocols
                for info in zf.infolist():  # BadZipFile("Bad CRC-32 ...") at a member's end
                    if info.CRC:  # 0: written with set_crc32_options(False)
                        with zf.open(info) as member:
                            while member.read(1 << 22):
                                pass
                state = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:  # torch's text advises weights_only=False: never shown
            problem = ("is not a ccrop checkpoint: it holds pickled Python objects besides "
                       "tensors and plain types, which are refused unread (a crafted file could "
                       "run code)")
        except Exception as err:  # BadZipFile (CRC), torch's errors on damaged files
            first = _first_line(err)
            first = type(err).__name__ if "weights_only" in first else first
            problem = f"is damaged or not a ccrop checkpoint: {first.split('. ')[0].rstrip('.')}"
        else:
            model = state.get("model") if isinstance(state, dict) else None
            if not isinstance(model, dict):
                what = ("no 'model'" if model is None
                        else f"'model' is of type {type(model).__name__}")
                problem = (f"is not a ccrop checkpoint ({what}; expected a dict holding "
                           "'model', a state dict)")
            elif not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                         for k, v in model.items()):
                problem = ("is not a ccrop checkpoint ('model' must map parameter names to "
                           "tensors)")
    if problem is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} {problem}")
    return state


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
    """Delete all but the newest ``keep_last`` checkpoints and temp files of killed writers
    (other process ids); returns the deleted checkpoint paths."""
    old = list_checkpoints(run_dir)[:-keep_last]  # keep_last >= 1 (config)
    for p in old:
        p.unlink(missing_ok=True)
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir():
        for p in folder.glob(".ckpt-epoch*.pt.tmp-*"):
            if not p.name.endswith(f"-{os.getpid()}"):  # .NAME.tmp-TOKEN-PID
                p.unlink(missing_ok=True)
    return old


#: last word of the ``SeedSequence`` entropy of ``seed_rngs``: keeps its streams apart from
#: other generators seeded from the same (seed, epoch) (views, shuffling)
_GLOBAL_STREAM = 0x67_6C_6F_62  # "glob"


def seed_rngs(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed python ``random``, numpy and torch (every device) for the epoch about to start
    (``epoch`` completed), so its global streams depend on ``(seed, epoch, rank)`` only, not
    on what the process drew before (a resumed process's persistent DataLoader draws its
    ``base_seed`` once more), which would shift every later draw and saved ``rng`` state."""
    entropy = [seed % 2**64, int(epoch), int(rank), _GLOBAL_STREAM]
    words = [int(w) for w in np.random.SeedSequence(entropy).generate_state(6)]  # uint32 each
    random.seed(words[0] << 32 | words[1])
    np.random.seed(words[2:4])
    torch.manual_seed(words[4] << 32 | words[5])  # seeds every CUDA device too


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch and CUDA RNG states as plain types and tensors."""
    py, npst = random.getstate(), np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], torch.from_numpy(npst[1].astype(np.int64)), int(npst[2]),
                  int(npst[3]), float(npst[4])], "torch": torch.get_rng_state()}
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
    """Load the query/online backbone weights out of a method's state dict (a loaded
    checkpoint's ``model``); ``CheckpointError`` naming the checkpoint ``source`` and the
    missing, unexpected or mis-shaped keys (another architecture)."""
    where = "checkpoint" if source is None else f"checkpoint {str(source)!r}"
    sub = {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}
    own = backbone.state_dict()
    bad = {"missing": sorted(set(own) - set(sub)), "unexpected": sorted(set(sub) - set(own)),
           "shape mismatch": sorted(k for k in set(own) & set(sub)
                                    if own[k].shape != sub[k].shape)}
    if any(bad.values()):
        raise CheckpointError(f"{where} backbone does not match the model; " + "; ".join(
            f"{name}: {', '.join(keys[:5])}" + (f" (+{len(keys) - 5} more)" if len(keys) > 5
                                                else "") for name, keys in bad.items() if keys))
    backbone.load_state_dict(sub)
