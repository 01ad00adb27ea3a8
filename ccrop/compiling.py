"""``train.compile``: the first compiled step is guarded; a compiler failure falls back to eager.

If the compiler fails in the first step (forward graph at the call, backward graph at the first
``backward``), the buffers it touched (BN statistics, MoCo queue) are restored, a
``CompileFailedWarning`` names the error and every step runs eagerly. Other errors propagate.
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
    """Run ``step`` (the first step of a compiled model); on a compiler error restore
    ``buffers``, call ``go_eager`` (switch to the uncompiled model) and run it again."""
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
    """Whether ``err`` came from torch.compile: a Dynamo exception, or (a lazily compiled
    backward graph) an error with compiler frames in its traceback."""
    import torch._dynamo

    if isinstance(err, torch._dynamo.exc.TorchDynamoException):
        return True
    parts = ("torch/_inductor/", "torch/_dynamo/", "torch/_functorch/", "/triton/")
    tb = err.__traceback__
    while tb is not None:
        if any(p in tb.tb_frame.f_code.co_filename.replace("\\", "/") for p in parts):
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
