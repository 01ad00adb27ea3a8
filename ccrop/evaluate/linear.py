"""Linear evaluation: the official frozen-backbone protocol and a fast probe on cached features."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR
from torchvision import transforms as T

from ccrop.evaluate.features import extract_features, move_images, split_batch, top1_percent
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


def linear_milestones(epochs: int, milestones: Sequence[int] | None = None) -> tuple[int, ...]:
    """0-based epochs at which the linear-protocol lr is divided by 10: ``milestones``
    (``eval.linear_milestones``), else 60 % and 80 % of `epochs` rounded down (100 -> 60, 80),
    never epoch 0 (a 1-epoch probe trains at the full lr)."""
    if milestones is None:
        return max(1, epochs * 6 // 10), max(1, epochs * 8 // 10)
    return tuple(int(v) for v in milestones)


def linear_scheduler(optimizer: torch.optim.Optimizer, epochs: int,
                     milestones: Sequence[int] | None = None) -> MultiStepLR:
    """The official step schedule: lr x0.1 at each `linear_milestones`; step once per epoch."""
    return MultiStepLR(optimizer, list(linear_milestones(epochs, milestones)), gamma=0.1)


def linear_lrs(base_lr: float, epochs: int = 100,
               milestones: Sequence[int] | None = None) -> list[float]:
    """The lr of every epoch under `linear_scheduler` (100 epochs: 0-59 base_lr, 60-79 /10,
    80-99 /100), read off it on a parameterless SGD."""
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
    """The lr during 0-based `epoch` of `epochs` (official base lr: 10 at batch 512, 30 at
    batch 256 on ImageNet)."""
    return linear_lrs(base_lr, epochs, milestones)[epoch]


def linear_train_transform(size: int, mean: Sequence[float], std: Sequence[float],
                           scale: tuple[float, float] = (0.08, 1.0)) -> T.Compose:
    """The linear protocol's train augmentation, PIL -> (3, size, size): RandomResizedCrop
    (`scale`, official (0.08, 1)) + horizontal flip, normalised by `mean`, `std`."""
    return T.Compose([T.RandomResizedCrop(size, scale=scale), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(mean, std)])


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float],
                   resize: int | None = None) -> T.Compose:
    """Deterministic evaluation input, PIL -> (3, size, size): short side resized to `resize`
    (default `size`), centre crop, normalised. ImageNet: ``eval_transform(224, m, s, 256)``."""
    resize = size if resize is None else resize
    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])


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


def _frozen_features(backbone: nn.Module, images: torch.Tensor, device: torch.device, amp: bool,
                     channels_last: bool) -> torch.Tensor:
    """Pooled features (B, D) float32 of a frozen backbone, no graph kept."""
    with torch.no_grad(), autocast(device, amp):
        return backbone(move_images(images, device, channels_last)).float()  # (B, D)


def _fit(classifier: nn.Linear, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
         optimizer: torch.optim.Optimizer, scheduler: Any = None,
         bar: Any = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass of cross-entropy steps over ``(x (B, D), y (B,))`` batches (`scheduler` stepped
    per step); returns the loss sum and correct count (on the device, no sync) and the count."""
    loss_sum = torch.zeros((), device=classifier.weight.device)
    correct = torch.zeros((), dtype=torch.long, device=classifier.weight.device)
    seen, shown = 0, LossDisplay(classifier.weight.device) if bar is not None else None
    for i, (x, y) in enumerate(batches):
        logits = classifier(x)  # (B, C)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * y.numel()
        correct += (logits.argmax(1) == y).sum()
        seen += y.numel()
        if shown is not None and i % 10 == 0:
            bar.set_postfix(loss=shown.update(loss))
    return loss_sum, correct, seen


def _train_epoch(backbone: nn.Module, classifier: nn.Linear, loader: Iterable,
                 optimizer: torch.optim.Optimizer, device: torch.device,
                 opts: dict[str, Any]) -> dict[str, float]:
    """One official-protocol epoch on frozen features (BN statistics kept); mean loss, top-1."""
    backbone.eval()
    classifier.train()
    bar = progress_bar(loader, opts["desc"], opts["progress"])
    batches = ((_frozen_features(backbone, images, device, opts["amp"], opts["channels_last"]),
                labels.to(device, non_blocking=True)) for images, labels in map(split_batch, bar))
    loss_sum, correct, seen = _fit(classifier, batches, optimizer,
                                   bar=bar if bar is not loader else None)
    return {"train_loss": float(loss_sum) / seen, "train_top1": 100.0 * int(correct) / seen}


@torch.no_grad()
def evaluate_classifier(backbone: nn.Module, classifier: nn.Module, loader: Iterable,
                        device: torch.device | str, amp: bool = False,
                        channels_last: bool = False, progress: bool = False) -> float:
    """Top-1 (percent) of ``classifier(backbone(x))``, (B, 3, H, W) -> (B, D) -> (B, C), over a
    loader of ``(images, labels)`` or ``(indices, images, labels)``; both in eval mode."""
    device = torch.device(device)
    preds, targets = [], []
    with eval_mode(backbone, classifier):
        for batch in progress_bar(loader, "eval", progress):
            images, labels = split_batch(batch)
            feats = _frozen_features(backbone, images, device, amp, channels_last)  # (B, D)
            preds.append(classifier(feats).argmax(1).cpu())  # (B,)
            targets.append(labels)
    return top1_percent(torch.cat(preds), torch.cat(targets))


def run_linear(
    backbone: nn.Module, train_loader: Iterable, test_loader: Iterable, num_classes: int,
    device: torch.device | str, epochs: int = 100, lr: float = LINEAR_LR_SMALL,
    momentum: float = 0.9, weight_decay: float = 0.0, amp: bool = False,
    channels_last: bool = False, progress: bool = True, eval_every: int = 1,
    log_fn: Callable[[dict[str, Any]], None] | None = None,
    milestones: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Official linear protocol: ``nn.Linear(feat_dim, num_classes)`` (N(0, 0.01) weights) on
    the pooled features of a frozen backbone, SGD(`momentum`, `weight_decay`) with
    `linear_scheduler` (x0.1 at `milestones`, default 60 % and 80 % of `epochs`).

    The backbone (``forward`` (B, 3, H, W) -> (B, D), ``feat_dim`` = D) is moved to `device`,
    kept frozen in eval mode (BN statistics never change), and its flags and mode are restored
    on return. The train loader should apply `linear_train_transform`, the test loader
    `eval_transform`; test every `eval_every` epochs and after the last; `log_fn` gets each
    epoch's record. Official lr: `LINEAR_LR_SMALL` (batch 512), `LINEAR_LR_IMAGENET` (256).

    Returns:
        {"protocol": "linear", "top1" (= "top1_last", the number to report), "top1_last",
        "top1_best" (max over tested epochs: selected on the test set, optimistic),
        "best_epoch" (1-based), "epochs", "lr", "history": [{"epoch", "lr", "train_loss",
        "train_top1", "test_top1" (None if not tested)}, ...]}.
    """
    device = torch.device(device)
    backbone.to(device)
    classifier = nn.Linear(backbone.feat_dim, num_classes)
    nn.init.normal_(classifier.weight, std=0.01)
    nn.init.zeros_(classifier.bias)
    classifier.to(device)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=lr, momentum=momentum,
                                weight_decay=weight_decay)
    scheduler = linear_scheduler(optimizer, epochs, milestones)
    opts = {"amp": amp, "channels_last": channels_last, "progress": progress}
    history: list[dict[str, Any]] = []
    with _frozen(backbone):
        for epoch in range(1, epochs + 1):
            record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
            opts["desc"] = f"linear {epoch}/{epochs}"
            record.update(_train_epoch(backbone, classifier, train_loader, optimizer, device,
                                       opts))
            tested = epoch % eval_every == 0 or epoch == epochs
            record["test_top1"] = evaluate_classifier(
                backbone, classifier, test_loader, device, amp, channels_last) if tested else None
            history.append(record)
            scheduler.step()
            if log_fn is not None:
                log_fn(record)
    best = max((r for r in history if r["test_top1"] is not None),
               key=lambda r: r["test_top1"])  # first epoch wins ties
    last = history[-1]["test_top1"]
    return {"protocol": "linear", "top1": last, "top1_last": last, "top1_best": best["test_top1"],
            "best_epoch": best["epoch"], "epochs": epochs, "lr": lr, "history": history}


def probe_on_features(
    train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
    test_labels: torch.Tensor, num_classes: int, epochs: int = 30, batch_size: int = 1024,
    lr: float = 1e-3, weight_decay: float = 1e-4, device: torch.device | str | None = None,
    seed: int = 0, min_steps: int = 300,
) -> float:
    """Test top-1 (percent) of a softmax linear classifier trained on cached features.

    Features train (N, D) / test (M, D), labels (N,) / (M,) in [0, num_classes). Features are
    standardised with the training set's per-dimension mean and std (per mini-batch); the
    classifier starts at zero (the problem is convex: reproducible) and is trained with AdamW
    (decoupled `weight_decay`, peak `lr`) on shuffled mini-batches (`seed`; `batch_size` clamped
    to N) with a cosine decay to zero; `epochs` is raised to take at least `min_steps` steps.
    Not the official protocol (no augmentation, another optimiser): for fast comparisons.
    `device` None means the device of `train_feats`.
    """
    device = train_feats.device if device is None else torch.device(device)
    x = train_feats.to(device).float()  # (N, D)
    y = train_labels.to(device).long()  # (N,)
    mean = x.mean(dim=0)  # (D,)
    std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.ones_like(mean)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant dims: std 1
    batch_size = min(batch_size, x.shape[0])
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    classifier = nn.Linear(x.shape[1], num_classes).to(device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen).to(device)  # (N,)
        _fit(classifier, (((x[i] - mean) / std, y[i]) for i in order.split(batch_size)),
             optimizer, scheduler)
    with torch.no_grad():
        preds = [classifier((chunk.to(device).float() - mean) / std).argmax(1).cpu()
                 for chunk in test_feats.split(8192)]  # (B,) each
    return top1_percent(torch.cat(preds), test_labels.cpu())


def run_fast_probe(
    backbone: nn.Module, train_loader: Iterable, test_loader: Iterable, num_classes: int,
    device: torch.device | str, epochs: int = 30, batch_size: int = 1024, lr: float = 1e-3,
    weight_decay: float = 1e-4, min_steps: int = 300, amp: bool = False,
    channels_last: bool = False, progress: bool = False, seed: int = 0,
) -> dict[str, Any]:
    """Fast linear probe: features extracted once from un-augmented loaders (`eval_transform`),
    kept on `device` (ImageNet-1K at D=2048: about 10.5 GB), then `probe_on_features`.

    Returns:
        {"protocol": FAST_PROBE_PROTOCOL, "top1", "epochs", "batch_size", "lr",
        "weight_decay", "min_steps", "num_train", "num_test"}.
    """
    device = torch.device(device)
    speed = {"amp": amp, "channels_last": channels_last, "progress": progress}
    train_feats, train_labels = extract_features(backbone, train_loader, device, **speed)
    test_feats, test_labels = extract_features(backbone, test_loader, device, **speed)
    top1 = probe_on_features(train_feats, train_labels, test_feats, test_labels, num_classes,
                             epochs, batch_size, lr, weight_decay, device, seed, min_steps)
    return {"protocol": FAST_PROBE_PROTOCOL, "top1": top1, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
            "min_steps": min_steps, "num_train": int(train_feats.shape[0]),
            "num_test": int(test_feats.shape[0])}
