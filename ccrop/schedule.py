"""Pure schedules: learning rate per epoch/step and the localization (box-update) epochs."""

from __future__ import annotations

import math


def lr_at(epoch: int, step: int, steps_per_epoch: int, base_lr: float, epochs: int,
          min_lr_ratio: float = 0.1, warmup_epochs: int = 0) -> float:
    """Learning rate of the official configs: cosine *per epoch* down to ``min_lr_ratio * lr``.

    ``lr(e) = min + (base - min) * (1 + cos(pi * e / epochs)) / 2`` with ``min = ratio * base``
    (the official ``Cosine`` with ``decay_rate = 0.1``), constant within an epoch. An optional
    linear warm-up ramps per step from ``base / (warmup steps)`` to the epoch's value.

    Args:
        epoch: 0-based epoch.
        step: step within the epoch.
        steps_per_epoch: steps per epoch (>= 1).
        base_lr: peak learning rate.
        epochs: total epochs.
        min_lr_ratio: final lr as a fraction of ``base_lr``.
        warmup_epochs: linear warm-up length in epochs (0 = off).
    """
    low = base_lr * min_lr_ratio
    lr = low + (base_lr - low) * (1 + math.cos(math.pi * epoch / epochs)) / 2
    if epoch < warmup_epochs:
        done = epoch * steps_per_epoch + step + 1
        lr *= done / (warmup_epochs * steps_per_epoch)
    return lr


def box_update_epochs(epochs: int, warmup_epochs: int, loc_interval: int,
                      localizes: bool = True) -> list[int]:
    """Completed-epoch counts after which boxes are re-localized (before the next epoch starts).

    As in the official code: after epoch ``e`` (1-based count of completed epochs) when
    ``e >= warmup``, ``e % interval == 0`` and ``e != epochs`` (never after the last epoch).
    ``warmup = epochs`` gives the RRC baseline.

    Args:
        epochs, warmup_epochs, loc_interval: the run's schedule.
        localizes: the crop law reads boxes (``CropPlan.localizes``); else no updates.

    Returns:
        Sorted list of completed-epoch counts, e.g. ``[100, 200, 300, 400]`` for 500/100/100.
    """
    if not localizes:
        return []
    return [e for e in range(1, epochs) if e >= warmup_epochs and e % loc_interval == 0]
