"""Pure schedules: learning rate per epoch/step and the localization (box-update) epochs."""

from __future__ import annotations

import math


def lr_at(epoch: int, step: int, steps_per_epoch: int, base_lr: float, epochs: int,
          min_lr_ratio: float = 0.1, warmup_epochs: int = 0) -> float:
    """The official per-epoch cosine, ``low + (base - low) * (1 + cos(pi * epoch / epochs)) / 2``
    with ``low = min_lr_ratio * base``, constant within an epoch; an optional linear warm-up
    ramps it per step over ``warmup_epochs`` (0-based ``epoch``, ``step`` within it)."""
    low = base_lr * min_lr_ratio
    lr = low + (base_lr - low) * (1 + math.cos(math.pi * epoch / epochs)) / 2
    if epoch < warmup_epochs:
        lr *= (epoch * steps_per_epoch + step + 1) / (warmup_epochs * steps_per_epoch)
    return lr


def box_update_epochs(epochs: int, warmup_epochs: int, loc_interval: int,
                      localizes: bool = True) -> list[int]:
    """Completed-epoch counts after which boxes are re-localized, as in the official code:
    ``e >= warmup``, ``e % interval == 0``, never after the last epoch; none when the crop law
    reads no boxes (``localizes``). E.g. ``[100, 200, 300, 400]`` for 500/100/100."""
    if not localizes:
        return []
    return [e for e in range(1, epochs) if e >= warmup_epochs and e % loc_interval == 0]
