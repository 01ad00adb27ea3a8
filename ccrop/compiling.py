"""``train.compile``: the first compiled step is guarded; a compiler failure falls back to eager.

Compiling happens in the first step (the forward graph at the call, the backward graph at the
first ``backward``). If the compiler fails (a Triton bug, no C++ toolchain...), the buffers that
step touched (BN statistics, MoCo queue) are restored, a ``CompileFailedWarning`` names the
error, and this and every later step run eagerly: the run goes on as if
``train.compile=false``. Errors that do not come from the compiler are raised as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


class CompileFailedWarning(UserWarning):
    """``train.compile=true`` but the compiler failed; the run continues without compiling."""


def first_compiled_step(step: Callable[[], T], buffers: list[torch.Tensor],
                        go_eager: Callable[[], None]) -> T:
    """Run ``step`` (the first step of a compiled model); on a compiler error undo and retry.

    Args:
        step: one training step, compiled model inside.
        buffers: the model's buffers, restored to their values before the failed attempt.
        go_eager: switches the caller to the uncompiled model (and clears gradients).

    Returns:
        What ``step`` returns (from the eager retry after a compiler failure).
    """
    saved = [b.detach().clone() for b in buffers]
    try:
        return step()
    except Exception as err:
        if not is_compiler_error(err):
            raise
        for buf, old in zip(buffers, saved):
            buf.copy_(old)
        go_eager()
        warnings.warn(CompileFailedWarning(
            f"train.compile=true, but torch.compile failed ({compiler_error_summary(err)}); "
            "training continues without compiling"), stacklevel=3)
        return step()


def is_compiler_error(err: BaseException) -> bool:
    """Whether ``err`` came from torch.compile's stack. Dynamo wraps forward-graph failures in
    its own exceptions; a backward graph compiled lazily raises the compiler's raw error, which
    is recognised by the compiler frames in its traceback."""
    import torch._dynamo

    if isinstance(err, torch._dynamo.exc.TorchDynamoException):
        return True
    parts = ("torch/_inductor/", "torch/_dynamo/", "torch/_functorch/", "/triton/")
    tb = err.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if any(p in name for p in parts):
            return True
        tb = tb.tb_next
    return False


def compiler_error_summary(err: BaseException) -> str:
    """One line for a long compiler error: its type, first and last lines, without the
    ``TORCHDYNAMO_VERBOSE`` hints torch appends."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()
             and not ln.strip().startswith(("Set TORCHDYNAMO", "For even more developer"))]
    parts = [type(err).__name__] + lines[:1] + lines[-1:]
    return " | ".join(dict.fromkeys(p[:200] for p in parts))
