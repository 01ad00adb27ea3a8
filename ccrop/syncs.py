"""Host syncs: find the ops that would stall a CUDA stream (on any device), and avoid them.

``SyncSpy`` records, through PyTorch's dispatcher, every op that synchronises on CUDA, so tests
on a CPU-only machine can prove the training step has none: ``.item()``/``float(t)``/``if t:``
(``_local_scalar_dense``), data-dependent sizes (``nonzero``, boolean-mask indexing) and
``torch.tensor(python_value, device=...)`` (``lift_fresh``, a pageable copy plus a sync).
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

#: Ops that synchronise with the host on CUDA, whatever their arguments.
SYNC_OPS = frozenset({
    "aten._local_scalar_dense.default", "aten.nonzero.default", "aten.nonzero_static.default",
    "aten.masked_select.default", "aten.lift_fresh.default", "aten.unique_dim.default",
    "aten._unique2.default", "aten.repeat_interleave.Tensor"})
#: Ops that synchronise when one of their index arguments is a boolean mask.
MASK_INDEX_OPS = frozenset({"aten.index.Tensor", "aten.index_put_.default",
                            "aten.index_put.default", "aten._index_put_impl_.default"})


def _has_bool_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in indices or ())


class SyncSpy(TorchDispatchMode):
    """Context manager recording would-be host syncs as ``events``, ``(op, "file:line in
    function")`` in call order, and ``ops``, the number of ops dispatched (roughly the kernels a
    GPU would launch). E.g. ``with SyncSpy() as spy: step()``, then ``spy.count == 0``."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str]] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.ops += 1
        name = str(func)
        if name in SYNC_OPS or (name in MASK_INDEX_OPS and _has_bool_index(args)):
            self.events.append((name, _caller()))
        return func(*args, **(kwargs or {}))

    @property
    def count(self) -> int:
        """Number of would-be syncs seen."""
        return len(self.events)

    def report(self) -> str:
        """One line per distinct op and call site, most frequent first."""
        lines = [f"{n:5d} x {op} at {site}" for (op, site), n in Counter(self.events).most_common()]
        return "\n".join(lines) or "no host syncs"


def _caller() -> str:
    """The innermost stack frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        f = frame.filename.replace("\\", "/")
        if "/torch/" not in f and not f.endswith("/ccrop/syncs.py"):
            return f"{f.rsplit('/', 2)[-2]}/{f.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}"
    return "?"


class LossDisplay:
    """The progress bar's loss, read without stalling the device: on CUDA copied to pinned
    memory asynchronously and shown once landed (a few steps later); on CPU read directly."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.text = "..."
        self._host = torch.zeros((), pin_memory=True) if self.cuda else None
        self._event = torch.cuda.Event() if self.cuda else None
        self._pending = False

    def update(self, loss: torch.Tensor) -> str:
        """Queue the scalar ``loss`` (0-dim) and return the newest value that is ready."""
        if not self.cuda:
            self.text = f"{float(loss.detach()):.4f}"
            return self.text
        if self._pending and self._event.query():
            self.text, self._pending = f"{float(self._host):.4f}", False
        if not self._pending:
            self._host.copy_(loss.detach().float(), non_blocking=True)
            self._event.record()
            self._pending = True
        return self.text
