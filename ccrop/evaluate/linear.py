"""Linear evaluation: the official frozen-backbone protocol and a fast probe on cached features."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import MultiStepLR
from torchvision import transforms as T

from ccrop.evaluate.features import (
    check_feature_bank,
    check_labels,
    extract_features,
    move_images,
    split_batch,
    top1_percent,
)
from ccrop.runtime import autocast, eval_mode
from ccrop.runtime import progress as progress_bar
from ccrop.syncs import LossDisplay

__all__ = [
    "FAST_PROBE_PROTOCOL",
    "LINEAR_LR_IMAGENET",
    "LINEAR_LR_SMALL",
    "eval_transform",
    "evaluate_classifier",
    "linear_lr_at",
    "linear_lrs",
    "linear_milestones",
    "linear_scheduler",
    "linear_train_transform",
    "probe_on_features",
    "run_fast_probe",
    "run_linear",
]

#: Official linear-protocol learning rate for the small datasets (batch 512).
LINEAR_LR_SMALL = 10.0
#: Official linear-protocol learning rate for ImageNet (batch 256).
LINEAR_LR_IMAGENET = 30.0
#: Protocol label of `run_fast_probe`, distinct from the official "linear".
FAST_PROBE_PROTOCOL = "linear-fast (cached features, no augmentation)"


# ----------------------------------------------------------------------------- schedule


def linear_milestones(epochs: int, milestones: Sequence[int] | None = None) -> tuple[int, ...]:
    """Epochs at which the linear-protocol lr is divided by 10.

    The official schedule (100 epochs) decays at epochs 60 and 80. Without ``milestones`` they
    scale as fractions 0.6 and 0.8 of `epochs`, rounded down (`epochs * 6 // 10`,
    `epochs * 8 // 10`), so 100 -> (60, 80) and 10 -> (6, 8).

    Args:
        epochs: total number of epochs, >= 1.
        milestones: explicit increasing epochs in (0, epochs) (``eval.linear_milestones``).

    Returns:
        The milestone epochs, 0-based.
    """
    if epochs < 1:
        raise ValueError(f"epochs: must be >= 1, got {epochs}")
    if milestones is None:
        return epochs * 6 // 10, epochs * 8 // 10
    m = tuple(int(v) for v in milestones)
    if list(m) != sorted(m) or not all(0 < v < epochs for v in m):
        raise ValueError(f"milestones: must be increasing epochs in (0, {epochs}), got {m}")
    return m


def linear_scheduler(optimizer: torch.optim.Optimizer, epochs: int,
                     milestones: Sequence[int] | None = None) -> MultiStepLR:
    """The official linear protocol's step schedule: `MultiStepLR`, lr x0.1 at each milestone
    (`linear_milestones`); step it once after every epoch."""
    return MultiStepLR(optimizer, list(linear_milestones(epochs, milestones)), gamma=0.1)


def linear_lrs(base_lr: float, epochs: int = 100,
               milestones: Sequence[int] | None = None) -> list[float]:
    """The lr of every epoch under `linear_scheduler` (read off it, on a parameterless SGD).

    With 100 epochs: epochs 0-59 -> base_lr, 60-79 -> base_lr/10, 80-99 -> base_lr/100.
    """
    if base_lr <= 0:
        raise ValueError(f"base_lr: must be > 0, got {base_lr}")
    optimizer = torch.optim.SGD([torch.zeros(0, requires_grad=True)], lr=base_lr)
    scheduler = linear_scheduler(optimizer, epochs, milestones)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: nothing changes, but the scheduler sees a step
        scheduler.step()
    return lrs


def linear_lr_at(epoch: int, base_lr: float, epochs: int = 100,
                 milestones: Sequence[int] | None = None) -> float:
    """Learning rate of the official linear protocol during 0-based `epoch` in [0, epochs)
    (`linear_lrs`; base lr official: 10 at batch 512, 30 at batch 256 on ImageNet)."""
    linear_milestones(epochs, milestones)  # validates epochs and milestones first
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch: must be in [0, {epochs}), got {epoch}")
    return linear_lrs(base_lr, epochs, milestones)[epoch]


# ----------------------------------------------------------------------------- transforms


def _check_size(size: int, mean: Sequence[float], std: Sequence[float]) -> None:
    """Validate a transform's output size and per-channel normalisation."""
    if size < 1:
        raise ValueError(f"size: must be >= 1, got {size}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean/std: expected 3 values each with std > 0, got {mean}, {std}")


def linear_train_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float] = (0.08, 1.0),
) -> T.Compose:
    """Train augmentation of the linear protocol: RandomResizedCrop(scale) + horizontal flip.

    Args:
        size: output side length.
        mean: per-channel normalisation mean (3 values).
        std: per-channel normalisation std (3 values).
        scale: RandomResizedCrop area range (official: (0.08, 1.0)).

    Returns:
        A PIL -> (3,size,size) float tensor transform.
    """
    _check_size(size, mean, std)
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale: expected 0 < lo <= hi <= 1, got {scale}")
    return T.Compose([
        T.RandomResizedCrop(size, scale=scale),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def eval_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize: int | None = None,
) -> T.Compose:
    """Deterministic evaluation transform: resize the short side, centre crop, normalise.

    Small datasets at native size need no option (resizing to the native size is a no-op);
    for ImageNet use `eval_transform(224, mean, std, resize=256)` (Resize(256) + CenterCrop(224)).

    Args:
        size: centre-crop side length.
        mean: per-channel normalisation mean (3 values).
        std: per-channel normalisation std (3 values).
        resize: short-side length before cropping; None means `size`.

    Returns:
        A PIL -> (3,size,size) float tensor transform.
    """
    _check_size(size, mean, std)
    resize = size if resize is None else resize
    if resize < size:
        raise ValueError(f"resize: must be >= size ({size}), got {resize}")
    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])


# ----------------------------------------------------------------------------- official protocol


@contextlib.contextmanager
def _frozen(backbone: nn.Module) -> Iterator[None]:
    """Freeze `backbone` (no grad, eval mode) and restore its flags and mode on exit."""
    flags = [p.requires_grad for p in backbone.parameters()]
    backbone.requires_grad_(False)
    try:
        with eval_mode(backbone):
            yield
    finally:
        for p, flag in zip(backbone.parameters(), flags):
            p.requires_grad_(flag)


def _frozen_features(
    backbone: nn.Module, images: torch.Tensor, device: torch.device, amp: bool, channels_last: bool
) -> torch.Tensor:
    """Pooled features (B,D) float32 of a frozen backbone, no graph kept."""
    with torch.no_grad(), autocast(device, amp):
        return backbone(move_images(images, device, channels_last)).float()  # (B,D)


def _train_epoch(
    backbone: nn.Module,
    classifier: nn.Linear,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    opts: dict[str, Any],
) -> dict[str, float]:
    """One epoch of classifier training on frozen features; returns mean loss and train top-1."""
    backbone.eval()  # BN keeps its running statistics, every epoch
    classifier.train()
    # tallies stay on the device and are read once: no host sync per step
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    shown = LossDisplay(device)
    bar = progress_bar(loader, opts["desc"], opts["progress"])
    for i, batch in enumerate(bar):
        images, labels = split_batch(batch)
        labels = labels.to(device, non_blocking=True)  # (B,)
        feats = _frozen_features(backbone, images, device, opts["amp"], opts["channels_last"])
        logits = classifier(feats)  # (B,C)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * labels.numel()
        correct += (logits.argmax(1) == labels).sum()
        seen += labels.numel()
        if bar is not loader and i % 10 == 0:  # a bar is shown
            bar.set_postfix(loss=shown.update(loss))
    if seen == 0:
        raise ValueError("train_loader: yielded no batches; expected at least one")
    return {"train_loss": float(loss_sum) / seen, "train_top1": 100.0 * int(correct) / seen}


@torch.no_grad()
def evaluate_classifier(
    backbone: nn.Module,
    classifier: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> float:
    """Top-1 accuracy (percent) of `classifier(backbone(x))` over a labelled loader.

    Args:
        backbone: frozen feature extractor, (B,3,H,W) -> (B,D); put in eval mode here.
        classifier: (B,D) -> (B,C) logits.
        loader: yields `(images, labels)` or `(indices, images, labels)`.
        device: device to run on.
        amp: autocast the backbone forward.
        channels_last: feed channels-last inputs.
        progress: show a tqdm bar.

    Returns:
        Top-1 accuracy in percent.
    """
    device = torch.device(device)
    preds, targets = [], []
    with eval_mode(backbone, classifier), torch.no_grad():
        for batch in progress_bar(loader, "eval", progress):
            images, labels = split_batch(batch)
            feats = _frozen_features(backbone, images, device, amp, channels_last)  # (B,D)
            preds.append(classifier(feats).argmax(1).cpu())  # (B,)
            targets.append(labels)
    if not preds:
        raise ValueError("test_loader: yielded no batches; expected at least one")
    return top1_percent(torch.cat(preds), torch.cat(targets))


def _new_classifier(backbone: nn.Module, num_classes: int, device: torch.device) -> nn.Linear:
    """Linear layer D -> C with N(0, 0.01) weights and zero bias, on `device`."""
    feat_dim = getattr(backbone, "feat_dim", None)
    if not isinstance(feat_dim, int) or feat_dim < 1:
        raise ValueError(f"backbone: needs a positive int attribute .feat_dim, got {feat_dim!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes: must be >= 2, got {num_classes}")
    classifier = nn.Linear(feat_dim, num_classes)
    nn.init.normal_(classifier.weight, std=0.01)
    nn.init.zeros_(classifier.bias)
    return classifier.to(device)


def run_linear(
    backbone: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    device: torch.device | str,
    epochs: int = 100,
    lr: float = LINEAR_LR_SMALL,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = True,
    eval_every: int = 1,
    log_fn: Callable[[dict[str, Any]], None] | None = None,
    milestones: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Official linear protocol: a linear layer trained on a frozen backbone.

    The backbone is frozen (requires_grad False) and kept in eval mode every epoch, so its
    BatchNorm running statistics never change; it is moved to `device`, and its requires_grad
    flags and train/eval mode are restored on return. Classifier: `nn.Linear(feat_dim, C)` on
    pooled features, SGD(momentum 0.9, wd 0), lr from `linear_scheduler` (`MultiStepLR`, x0.1 at
    60 % and 80 % of `epochs`). Official lr: 10 at batch 512 on the small sets
    (`LINEAR_LR_SMALL`), 30 at batch 256 on ImageNet (`LINEAR_LR_IMAGENET`). The train loader
    should apply `linear_train_transform`, the test loader `eval_transform`.

    "top1_last" (the final classifier) is the number to report; "top1_best" is the maximum over
    evaluated epochs and is selected on the test set, hence optimistic.

    Args:
        backbone: module with `forward(x (B,3,H,W)) -> (B,D)` and `.feat_dim` = D.
        train_loader: yields `(images, labels)` or `(indices, images, labels)`, augmented.
        test_loader: same batch format, un-augmented.
        num_classes: number of classes C, >= 2.
        device: device to train on.
        epochs: number of epochs (official 100).
        lr: base lr at the loader's batch size.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (official 0).
        amp: autocast the backbone forward (the classifier runs in fp32).
        channels_last: feed channels-last inputs.
        progress: tqdm bar per epoch.
        eval_every: test every this many epochs; the last epoch is always tested.
        log_fn: called with each epoch's record (see "history").
        milestones: lr x0.1 epochs (default: 60% and 80% of `epochs`, official 60 and 80).

    Returns:
        {"protocol": "linear", "top1": top1_last, "top1_last", "top1_best", "best_epoch"
        (1-based), "epochs", "lr", "history": [{"epoch" (1-based), "lr", "train_loss",
        "train_top1", "test_top1" (None if not tested)}, ...]}.
    """
    if eval_every < 1:
        raise ValueError(f"eval_every: must be >= 1, got {eval_every}")
    linear_milestones(epochs, milestones)  # validates epochs and milestones
    if lr <= 0:
        raise ValueError(f"base_lr: must be > 0, got {lr}")
    device = torch.device(device)
    backbone.to(device)
    classifier = _new_classifier(backbone, num_classes, device)
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    scheduler = linear_scheduler(optimizer, epochs, milestones)
    opts = {"amp": amp, "channels_last": channels_last, "progress": progress}
    history: list[dict[str, Any]] = []
    with _frozen(backbone):
        for epoch in range(epochs):
            opts["desc"] = f"linear {epoch + 1}/{epochs}"
            record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            record.update(_train_epoch(backbone, classifier, train_loader, optimizer, device, opts))
            tested = (epoch + 1) % eval_every == 0 or epoch + 1 == epochs
            record["test_top1"] = (
                evaluate_classifier(backbone, classifier, test_loader, device, amp, channels_last)
                if tested else None
            )
            history.append(record)
            scheduler.step()
            if log_fn is not None:
                log_fn(record)
    return _linear_summary(history, epochs, lr)


def _linear_summary(history: list[dict[str, Any]], epochs: int, lr: float) -> dict[str, Any]:
    """Result dict of `run_linear` from its per-epoch history."""
    tested = [r for r in history if r["test_top1"] is not None]
    best = max(tested, key=lambda r: r["test_top1"])  # first epoch wins ties
    return {
        "protocol": "linear",
        "top1": history[-1]["test_top1"],
        "top1_last": history[-1]["test_top1"],
        "top1_best": best["test_top1"],
        "best_epoch": best["epoch"],
        "epochs": epochs,
        "lr": lr,
        "history": history,
    }


# ----------------------------------------------------------------------------- fast probe


def _standardizer(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean (D,) and std (D,) of (N,D) features; constant dims get std 1."""
    mean = feats.mean(dim=0)  # (D,)
    std = feats.std(dim=0, unbiased=False) if feats.shape[0] > 1 else torch.ones_like(mean)
    return mean, torch.where(std > 1e-8, std, torch.ones_like(std))  # (D,), (D,)


def _check_probe_args(epochs: int, batch_size: int, lr: float, weight_decay: float) -> None:
    """Raise ValueError for out-of-range fast-probe hyper-parameters."""
    if epochs < 1:
        raise ValueError(f"epochs: must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr: must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay: must be >= 0, got {weight_decay}")


def probe_on_features(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 30,
    batch_size: int = 1024,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    device: torch.device | str | None = None,
    seed: int = 0,
    min_steps: int = 300,
) -> float:
    """Train a softmax linear classifier on cached features and return its test top-1.

    Features are standardised with the training set's per-dimension mean and std (applied per
    mini-batch, so no standardised copy of the bank is kept). The classifier starts at zero (the
    problem is convex, so the start does not matter, and the result is reproducible) and is
    trained with AdamW (decoupled `weight_decay`) on shuffled mini-batches with a cosine lr decay
    to zero over all steps. `epochs` is raised where needed so that at least `min_steps`
    optimiser steps are taken (small sets). Not the official protocol: no augmentation,
    different optimiser; use it for fast comparisons. Cost: about 4 s for 60k x 512 features
    and 30 epochs on two CPU cores.

    Args:
        train_feats: (N,D) training features.
        train_labels: (N,) labels in [0, num_classes).
        test_feats: (M,D) test features.
        test_labels: (M,) labels in [0, num_classes).
        num_classes: number of classes C, >= 2.
        epochs: passes over the training features.
        batch_size: mini-batch size (clamped to N).
        lr: peak AdamW lr.
        weight_decay: AdamW decoupled weight decay.
        device: where to train; None means the device of `train_feats`.
        seed: seed of the mini-batch shuffling.
        min_steps: lower bound on the number of optimiser steps.

    Returns:
        Test top-1 accuracy in percent.
    """
    _check_probe_args(epochs, batch_size, lr, weight_decay)
    if min_steps < 0:
        raise ValueError(f"min_steps: must be >= 0, got {min_steps}")
    check_feature_bank(train_feats, train_labels, "train_feats")
    check_feature_bank(test_feats, test_labels, "test_feats")
    check_labels(train_labels, num_classes, "train_labels")
    check_labels(test_labels, num_classes, "test_labels")
    if num_classes < 2 or test_feats.shape[1] != train_feats.shape[1]:
        raise ValueError(
            f"num_classes/test_feats: need num_classes >= 2 and test width "
            f"{train_feats.shape[1]}, got {num_classes} and {test_feats.shape[1]}"
        )
    device = train_feats.device if device is None else torch.device(device)
    x = train_feats.to(device).float()  # (N,D)
    y = train_labels.to(device).long()  # (N,)
    mean, std = _standardizer(x)
    batch_size = min(batch_size, x.shape[0])
    epochs = max(epochs, math.ceil(min_steps / math.ceil(x.shape[0] / batch_size)))
    classifier = _fit_softmax(x, y, mean, std, num_classes, epochs, batch_size, lr,
                              weight_decay, seed)
    preds = []
    with torch.no_grad():
        for start in range(0, test_feats.shape[0], 8192):
            chunk = test_feats[start : start + 8192].to(device).float()  # (B,D)
            preds.append(classifier((chunk - mean) / std).argmax(1).cpu())  # (B,)
    return top1_percent(torch.cat(preds), test_labels.cpu())


def _fit_softmax(
    x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, num_classes: int,
    epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
) -> nn.Linear:
    """Mini-batch AdamW + cosine fit of a zero-initialised linear layer on standardised x (N,D).

    `batch_size` must already be <= N.
    """
    classifier = nn.Linear(x.shape[1], num_classes).to(x.device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(x.device)  # (N,)
        for idx in order.split(batch_size):
            logits = classifier((x[idx] - mean) / std)  # (B,C)
            loss = F.cross_entropy(logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sched.step()
    return classifier


def run_fast_probe(
    backbone: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    device: torch.device | str,
    epochs: int = 30,
    batch_size: int = 1024,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    min_steps: int = 300,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Fast linear probe: extract features once (no augmentation), then `probe_on_features`.

    Both loaders should apply `eval_transform` (no augmentation). The cached features are kept
    on `device` while training (ImageNet-1K at D=2048: about 10.5 GB in float32).

    Args:
        backbone: module mapping (B,3,H,W) images to pooled (B,D) features.
        train_loader: yields `(images, labels)` or `(indices, images, labels)`, un-augmented.
        test_loader: same format.
        num_classes: number of classes C, >= 2.
        device: device for extraction and training.
        epochs: passes over the cached training features.
        batch_size: probe mini-batch size.
        lr: peak AdamW lr.
        weight_decay: AdamW decoupled weight decay.
        min_steps: lower bound on the number of optimiser steps.
        amp: autocast the backbone forward.
        channels_last: feed channels-last inputs.
        progress: show tqdm bars during extraction.
        seed: shuffling seed.

    Returns:
        {"protocol": FAST_PROBE_PROTOCOL, "top1", "epochs", "batch_size", "lr", "weight_decay",
        "num_train", "num_test"}.
    """
    _check_probe_args(epochs, batch_size, lr, weight_decay)
    device = torch.device(device)
    extract = {"amp": amp, "channels_last": channels_last, "progress": progress}
    train_feats, train_labels = extract_features(backbone, train_loader, device, **extract)
    test_feats, test_labels = extract_features(backbone, test_loader, device, **extract)
    top1 = probe_on_features(
        train_feats, train_labels, test_feats, test_labels, num_classes, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, device=device, seed=seed,
        min_steps=min_steps,
    )
    return {
        "protocol": FAST_PROBE_PROTOCOL,
        "top1": top1,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "min_steps": min_steps,
        "num_train": int(train_feats.shape[0]),
        "num_test": int(test_feats.shape[0]),
    }
