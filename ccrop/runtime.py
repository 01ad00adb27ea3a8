"""Run policies in one place: mixed precision, eval mode, progress bars.

Every forward pass (training step, localization, kNN, linear protocol, benchmarks) takes its
autocast from ``autocast``, every pass that must not train switches modes with ``eval_mode``,
and every long loop shows its bar through ``progress``; so the rules below hold everywhere:

- ``train.amp`` means bfloat16 autocast on CUDA (float16 on CUDA devices without bf16); CPU
  and other devices always run in float32.
- A module put in eval mode gets its previous mode back, also when the pass fails.
- Bars are drawn on the main process only, never left on screen, and can be switched off:
  per loop (``progress(..., on=cfg.train.progress)``) and for a whole command or run
  (``bars_enabled(cfg.train.progress)``), which also silences bars of helpers that do not
  see the config (e.g. the uint8 decoding of ``dataset_to_uint8``).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from . import dist


def autocast(device: torch.device | str, amp: bool) -> contextlib.AbstractContextManager:
    """The mixed-precision context of a forward pass on ``device``.

    Args:
        device: where the forward runs.
        amp: the run's ``train.amp``.

    Returns:
        bf16 (fp16 without bf16 support) autocast on CUDA when ``amp``; otherwise a context
        that disables autocast (so an outer autocast cannot leak into float32 code).
    """
    device = torch.device(device)
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block, then restore each one's previous mode.

    Args:
        *modules: modules (None entries are skipped).
    """
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
    """Allow (``on``) or silence every ``progress`` bar drawn inside the block.

    A command wraps its work in ``bars_enabled(cfg.train.progress)`` so that ``train.progress
    =false`` silences all of its bars, including those of helpers called with ``on=True``.
    Blocks nest; a silenced outer block cannot be re-enabled inside. The previous state comes
    back on exit, also when the block fails.

    Args:
        on: the run's ``train.progress``.
    """
    token = _BARS_ON.set(_BARS_ON.get() and bool(on))
    try:
        yield
    finally:
        _BARS_ON.reset(token)


def progress(items: Iterable | None = None, desc: str = "", on: bool = True,
             total: int | None = None) -> Any:
    """A tqdm bar over ``items`` (or a manual bar of ``total`` steps), or None / ``items``
    unchanged when off, silenced by ``bars_enabled(False)``, or not the main process.

    Args:
        items: the iterable to wrap, or None for a manual bar (``bar.update``).
        desc: the bar's label.
        on: show it at all (``train.progress``).
        total: number of steps of a manual bar.

    Returns:
        A tqdm object; when off: ``items`` itself, or None for a manual bar.
    """
    if not (on and _BARS_ON.get()) or not dist.is_main_process():
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True)
