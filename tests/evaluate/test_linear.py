"""Tests for ccrop.evaluate.linear: schedule, transforms, frozen protocol and fast probe."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ccrop.evaluate.linear import (
    FAST_PROBE_PROTOCOL,
    eval_transform,
    linear_lr_at,
    linear_lrs,
    linear_milestones,
    linear_scheduler,
    linear_train_transform,
    probe_on_features,
    run_fast_probe,
    run_linear,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class TinyNet(nn.Module):
    """Stand-in backbone with BatchNorm: conv-BN-ReLU, pooled to (B,8)."""

    feat_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))  # (B,8,H,W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))  # (B,8)


class ChannelMean(nn.Module):
    """Parameter-free stand-in backbone: pooled features are the per-channel image means."""

    feat_dim = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))  # (B,3)


def colour_loader(per_class: int, seed: int, indexed: bool = False) -> DataLoader:
    """Loader of (N,3,8,8) images whose brightest channel is the label (3 classes)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat_interleave(per_class)  # (N,)
    images = 0.2 * torch.rand(len(labels), 3, 8, 8, generator=gen)  # (N,3,8,8)
    images[torch.arange(len(labels)), labels] += 1.0
    tensors = (torch.arange(len(labels)), images, labels) if indexed else (images, labels)
    return DataLoader(
        TensorDataset(*tensors),
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    "epoch, factor", [(0, 1.0), (59, 1.0), (60, 0.1), (79, 0.1), (80, 0.01), (99, 0.01)]
)
def test_official_schedule_decays_at_60_and_80(epoch, factor):
    assert linear_lr_at(epoch, 10.0) == pytest.approx(10.0 * factor)
    assert linear_lr_at(epoch, 30.0, epochs=100) == pytest.approx(30.0 * factor)


def test_milestones_scale_with_epochs():
    assert linear_milestones(100) == (60, 80)
    assert linear_milestones(10) == (6, 8)
    assert linear_milestones(50) == (30, 40)
    assert linear_milestones(1) == (1, 1)  # epoch 0 at the full lr, not lr / 100


def old_step_lr(epoch, base_lr, milestones):
    """The hand-written schedule ``linear_scheduler`` replaced: lr x0.1 at each milestone."""
    return base_lr * 0.1 ** sum(epoch >= m for m in milestones)


@settings(max_examples=100, deadline=None)
@given(epochs=st.integers(1, 300), base_lr=st.floats(1e-3, 100.0),
       explicit=st.lists(st.integers(1, 299), max_size=4))
def test_multisteplr_gives_the_old_step_schedule_at_every_epoch(epochs, base_lr, explicit):
    given_steps = sorted(m for m in explicit if m < epochs) or None
    steps = linear_milestones(epochs, given_steps)
    lrs = linear_lrs(base_lr, epochs, given_steps)
    assert len(lrs) == epochs
    for e, lr in enumerate(lrs):  # MultiStepLR multiplies step by step: equal to the last ulp
        assert lr == pytest.approx(old_step_lr(e, base_lr, steps), rel=1e-14, abs=0), e
    assert linear_lr_at(epochs - 1, base_lr, epochs, given_steps) == lrs[-1]


def test_run_linear_steps_a_multisteplr():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=10.0)
    scheduler = linear_scheduler(optimizer, 100)
    assert isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR)
    assert sorted(scheduler.milestones) == [60, 80] and scheduler.gamma == 0.1


@settings(max_examples=100, deadline=None)
@given(epochs=st.integers(1, 300), base_lr=st.floats(1e-3, 100.0))
def test_schedule_is_stepwise_non_increasing(epochs, base_lr):
    lrs = linear_lrs(base_lr, epochs)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    allowed = [base_lr, base_lr * 0.1, base_lr * 0.01]
    assert all(any(lr == pytest.approx(a) for a in allowed) for lr in lrs)
    assert lrs[0] == base_lr or epochs < 2


# ----------------------------------------------------------------------------- transforms


def test_transforms_output_shape_and_randomness():
    img = Image.fromarray(
        torch.randint(0, 256, (40, 50, 3), generator=torch.Generator().manual_seed(0))
        .to(torch.uint8)
        .numpy()
    )
    train_tf = linear_train_transform(28, MEAN, STD)
    eval_tf = eval_transform(28, MEAN, STD, resize=32)  # ImageNet style: Resize(256)+Crop(224)
    torch.manual_seed(0)
    a, b = train_tf(img), train_tf(img)
    assert a.shape == b.shape == (3, 28, 28) and not torch.equal(a, b)
    assert eval_tf(img).shape == (3, 28, 28) and torch.equal(eval_tf(img), eval_tf(img))
    native = Image.new("RGB", (28, 28), (128, 0, 255))
    assert torch.allclose(
        eval_transform(28, MEAN, STD)(native)[:, 0, 0],
        torch.tensor([128 / 255 - 0.5, -0.5, 0.5]) / 0.25,
        atol=1e-5,
    )


# ----------------------------------------------------------------------------- official protocol


def make_backbone(kind: str) -> nn.Module:
    """TinyNet with randomised BN statistics, or the real ResNet-18 at width 8 (CIFAR stem)."""
    if kind == "resnet18-w8":
        from ccrop.models import build_backbone

        return build_backbone("resnet18", stem="cifar", width=8)
    backbone = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics, so a change cannot hide
        backbone.bn.running_mean.uniform_(-1, 1)
        backbone.bn.running_var.uniform_(0.5, 2)
    return backbone


@pytest.mark.parametrize("kind", ["tiny", "resnet18-w8"])
def test_run_linear_keeps_backbone_frozen_and_reports_last_and_best(kind):
    torch.manual_seed(0)
    backbone = make_backbone(kind).train()  # train mode: the protocol must switch BN to eval
    before = copy.deepcopy(backbone.state_dict())
    records = []
    result = run_linear(
        backbone,
        colour_loader(8, 0, indexed=True),
        colour_loader(4, 1),
        3,
        "cpu",
        epochs=3,
        lr=1.0,
        progress=False,
        log_fn=records.append,
    )
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed"
    assert all(p.grad is None and p.requires_grad for p in backbone.parameters())
    assert backbone.training  # mode restored
    assert result["protocol"] == "linear" and result["top1"] == result["top1_last"]
    assert 0 <= result["top1_last"] <= result["top1_best"] <= 100
    assert result["best_epoch"] in (1, 2, 3)
    best = result["history"][result["best_epoch"] - 1]["test_top1"]
    assert best == result["top1_best"] and len(records) == 3
    assert [r["lr"] for r in records] == pytest.approx([1.0, 0.1, 0.01])  # milestones (1, 2)


def test_run_linear_learns_a_separable_problem():
    torch.manual_seed(0)
    result = run_linear(
        ChannelMean(),
        colour_loader(10, 0),
        colour_loader(10, 1),
        3,
        "cpu",
        epochs=10,
        lr=10.0,
        progress=False,
        eval_every=5,
    )
    assert result["top1_last"] == 100.0
    tested = [r["epoch"] for r in result["history"] if r["test_top1"] is not None]
    assert tested == [5, 10]


# ----------------------------------------------------------------------------- fast probe


def gaussian_classes(num_classes: int, per_class: int, dim: int, seed: int, scale: float = 1.0):
    """Separable Gaussian classes around fixed centres: feats (N,D), labels (N,)."""
    centres = 4 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)  # (N,)
    feats = centres[labels] + torch.randn(len(labels), dim, generator=gen)  # (N,D)
    return scale * feats, labels


@pytest.mark.parametrize("scale", [1.0, 1000.0])
def test_fast_probe_separable_features_near_100(scale):
    train, train_labels = gaussian_classes(4, 100, 16, seed=0, scale=scale)
    test, test_labels = gaussian_classes(4, 50, 16, seed=1, scale=scale)
    acc = probe_on_features(train, train_labels, test, test_labels, 4, epochs=20, batch_size=64)
    assert acc >= 99.0


def test_fast_probe_random_labels_about_chance():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(400, 16, generator=gen), torch.randn(2000, 16, generator=gen)
    train_labels = torch.randint(0, 4, (400,), generator=gen)
    test_labels = torch.randint(0, 4, (2000,), generator=gen)
    acc = probe_on_features(train, train_labels, test, test_labels, 4, epochs=20, batch_size=64,
                            min_steps=0)
    assert 19.0 < acc < 31.0  # chance 25 %, binomial std ~1 point


def test_fast_probe_is_reproducible():
    train, labels = gaussian_classes(3, 20, 5, seed=0)
    noisy = train + 3 * torch.randn(train.shape, generator=torch.Generator().manual_seed(9))
    args = (noisy, labels, noisy, labels, 3)
    first = probe_on_features(*args, epochs=5, batch_size=16, seed=4, min_steps=0)
    assert first == probe_on_features(*args, epochs=5, batch_size=16, seed=4, min_steps=0)


def test_run_fast_probe_end_to_end():
    result = run_fast_probe(
        ChannelMean(),
        colour_loader(10, 0, indexed=True),
        colour_loader(10, 1),
        3,
        "cpu",
        epochs=30,
        batch_size=16,
    )
    assert result["protocol"] == FAST_PROBE_PROTOCOL
    assert result["top1"] == 100.0 and result["num_train"] == 30 and result["num_test"] == 30
