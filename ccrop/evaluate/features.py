"""Frozen-backbone feature extraction and small helpers shared by the evaluation protocols."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ccrop.runtime import autocast, eval_mode
from ccrop.runtime import progress as runtime_progress

__all__ = [
    "check_feature_bank",
    "check_labels",
    "extract_features",
    "move_images",
    "split_batch",
    "top1_percent",
]


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Take `(images, labels)` out of one loader batch.

    Rule: a batch is a tuple/list of 2 or 3 items whose **last** item is the labels and whose
    **second-to-last** item is the images, i.e. `(images, labels)` or `(indices, images, labels)`.
    Anything else (a dict, a list of views, a single tensor) is rejected.

    Args:
        batch: one item yielded by a DataLoader.

    Returns:
        images (B,3,H,W) tensor and labels (B,) long tensor (not yet moved to a device).

    Raises:
        ValueError: the batch does not follow the rule above.
    """
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        got = type(batch).__name__
        if isinstance(batch, (tuple, list)):
            got += f" of length {len(batch)}"
        raise ValueError(
            f"batch: expected (images, labels) or (indices, images, labels), got {got}"
        )
    images, labels = batch[-2], batch[-1]
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = type(images).__name__
        if isinstance(images, torch.Tensor):
            got += f" of shape {tuple(images.shape)}"
        raise ValueError(
            f"batch: images (second-to-last item) must be a (B,3,H,W) tensor, got {got}"
        )
    labels = torch.as_tensor(labels).long().reshape(-1)  # (B,)
    if labels.numel() != images.shape[0]:
        raise ValueError(
            f"batch: {labels.numel()} labels for {images.shape[0]} images; expected one label each"
        )
    return images, labels


def move_images(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Move an image batch (B,3,H,W) to `device`, optionally in channels-last memory format.

    Args:
        images: (B,3,H,W) tensor.
        device: target device.
        channels_last: convert to `torch.channels_last` (pays off only if the model is too).

    Returns:
        (B,3,H,W) tensor on `device`.
    """
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features of every sample of `loader`, in eval mode and without grad.

    The backbone is moved to `device` and put in eval mode for the pass; its previous
    train/eval mode is restored afterwards. Batches follow `split_batch`'s rule:
    `(images, labels)` or `(indices, images, labels)`. Order follows the loader, so use a
    loader without shuffling if the order matters.

    Args:
        backbone: module whose `forward(x (B,3,H,W))` returns pooled features (B,D).
        loader: iterable of batches as above.
        device: device to run the backbone on.
        amp: run the forward under autocast (bf16, or fp16 on GPUs without bf16).
        channels_last: feed channels-last inputs.
        progress: show a tqdm bar.

    Returns:
        feats (N,D) float32 on the CPU and labels (N,) long on the CPU.

    Raises:
        ValueError: the loader is empty, a batch is malformed, or the backbone output is not 2-D.
    """
    device = torch.device(device)
    backbone.to(device)
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    with eval_mode(backbone):
        for batch in runtime_progress(loader, "features", progress):
            images, target = split_batch(batch)
            with autocast(device, amp):
                out = backbone(move_images(images, device, channels_last))  # (B,D)
            if out.dim() != 2:
                raise ValueError(
                    f"backbone: forward must return pooled (B,D) features, got {tuple(out.shape)}"
                )
            feats.append(out.float())  # stays on the device: one transfer at the end
            labels.append(target)
    if not feats:
        raise ValueError("loader: yielded no batches; expected at least one")
    return torch.cat(feats).cpu(), torch.cat(labels).cpu()  # (N,D), (N,)


def check_labels(labels: torch.Tensor, num_classes: int, name: str) -> None:
    """Raise ValueError unless `labels` is a 1-D integer tensor with values in [0, num_classes).

    Args:
        labels: (N,) tensor.
        num_classes: number of classes C.
        name: argument name used in the error message.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes: must be >= 1, got {num_classes}")
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"{name}: expected a 1-D integer tensor, got dtype {labels.dtype} "
            f"and shape {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}] (-1 means unlabelled and is not allowed)"
        )


def top1_percent(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy in percent.

    Args:
        preds: (N,) predicted labels.
        targets: (N,) true labels.

    Returns:
        100 * mean(preds == targets).
    """
    if preds.shape != targets.shape or preds.numel() == 0:
        raise ValueError(
            f"preds/targets: expected equal non-empty (N,) shapes, got {tuple(preds.shape)} "
            f"and {tuple(targets.shape)}"
        )
    return 100.0 * (preds.cpu() == targets.cpu()).float().mean().item()


def check_feature_bank(feats: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    """Raise ValueError unless `feats` is a non-empty (N,D) tensor matching (N,) `labels`.

    Args:
        feats: (N,D) features.
        labels: (N,) labels.
        name: argument name used in the error message.
    """
    if feats.dim() != 2 or feats.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty (N,D) tensor, got {tuple(feats.shape)}")
    if labels.shape != (feats.shape[0],):
        raise ValueError(
            f"{name}: {feats.shape[0]} feature rows but labels of shape {tuple(labels.shape)}"
        )

