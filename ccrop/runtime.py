"""Run policies in one place: mixed precision (``autocast``), eval mode that restores the previous
mode (``eval_mode``), progress bars on the main process only, switched off per loop or for a
whole command (``bars_enabled``, which also silences helpers that do not see the config)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from . import dist


def autocast(device: torch.device | str, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 (fp16 without bf16) autocast on CUDA when ``amp``; otherwise a context that disables
    autocast, so an outer autocast cannot leak into float32 code."""
    device = torch.device(device)
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Put ``modules`` (None skipped) in eval mode for the block, then restore their modes."""
    mods = [m for m in modules if m is not None]
    before = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        yield
    finally:
        for m, was in zip(mods, before):
            m.train(was)


_BARS_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("ccrop_bars_on", default=True)


@contextlib.contextmanager
def bars_enabled(on: bool) -> Iterator[None]:
    """Allow (``on``) or silence every ``progress`` bar inside the block; blocks nest, and a
    silenced outer block cannot be re-enabled inside."""
    token = _BARS_ON.set(_BARS_ON.get() and bool(on))
    try:
        yield
    finally:
        _BARS_ON.reset(token)


def progress(items: Iterable | None = None, desc: str = "", on: bool = True,
             total: int | None = None) -> Any:
    """A tqdm bar over ``items`` (or a manual bar of ``total`` steps when ``items`` is None);
    when off, silenced or not the main process: ``items`` itself (None for a manual bar)."""
    if not (on and _BARS_ON.get()) or not dist.is_main_process():
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
