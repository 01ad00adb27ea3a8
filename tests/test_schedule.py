"""Tests of the pure lr and localization schedules."""

import math

import pytest

from ccrop.crop import CropPlan
from ccrop.schedule import box_update_epochs, lr_at


def test_official_paper_schedule():
    assert box_update_epochs(500, 100, 100) == [100, 200, 300, 400]  # never after epoch 500
    assert box_update_epochs(100, 20, 20) == [20, 40, 60, 80]
    assert box_update_epochs(500, 500, 100) == []  # RRC baseline: warm-up = epochs
    assert box_update_epochs(10, 0, 3) == [3, 6, 9]
    assert box_update_epochs(10, 4, 3) == [6, 9]
    for kind in ("simccrop", "rcrop"):
        assert box_update_epochs(500, 100, 100, CropPlan(kind).localizes) == []


def test_uses_boxes():
    assert [CropPlan().uses_boxes(e, 2) for e in range(4)] == [False, False, True, True]
    assert all(CropPlan("simccrop").uses_boxes(e, 5) for e in range(5))
    assert not any(CropPlan("rcrop").uses_boxes(e, 0) for e in range(5))


def test_cosine_per_epoch_to_tenth():
    assert lr_at(0, 0, 10, 0.5, 500) == pytest.approx(0.5)
    assert lr_at(0, 9, 10, 0.5, 500) == lr_at(0, 0, 10, 0.5, 500)  # constant within an epoch
    assert lr_at(250, 0, 10, 0.5, 500) == pytest.approx(0.05 + 0.45 / 2)
    assert lr_at(499, 0, 10, 0.5, 500) == pytest.approx(
        0.05 + 0.45 * (1 + math.cos(math.pi * 499 / 500)) / 2
    )
    assert lr_at(499, 0, 10, 0.5, 500) > 0.05


def test_linear_warmup_per_step():
    lrs = [lr_at(e, s, 4, 1.0, 100, warmup_epochs=2) for e in range(3) for s in range(4)]
    assert lrs[0] == pytest.approx(lr_at(0, 0, 4, 1.0, 100) / 8)
    assert all(a < b for a, b in zip(lrs[:8], lrs[1:8]))
    assert lrs[8] == pytest.approx(lr_at(2, 0, 4, 1.0, 100))
