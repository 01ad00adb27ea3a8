"""Frozen-backbone feature extraction and small helpers shared by the evaluation protocols."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ccrop.runtime import autocast, eval_mode
from ccrop.runtime import progress as runtime_progress

__all__ = ["extract_features", "move_images", "split_batch", "top1_percent"]


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (B, 3, H, W), labels (B,) long)`` of a loader batch ``(images, labels)`` or
    ``(indices, images, labels)``: the last item is the labels, the one before the images."""
    images = batch[-2] if isinstance(batch, (tuple, list)) and len(batch) in (2, 3) else None
    if not (isinstance(images, torch.Tensor) and images.dim() == 4):
        raise ValueError("batch: expected (images, labels) or (indices, images, labels) with "
                         f"images a (B,3,H,W) tensor, got {type(batch).__name__} of "
                         f"{type(images).__name__}")
    return images, torch.as_tensor(batch[-1]).long().reshape(-1)


def move_images(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """Images (B, 3, H, W) on `device`, channels-last if asked (pays off if the model is too)."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: Iterable,
    device: torch.device | str,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, D) float32 and labels (N,) long, both on the CPU, of every batch of
    `loader` (`split_batch`'s format, in loader order), with `backbone` moved to `device`, in
    eval mode (its mode restored afterwards) and without grad; `amp` autocasts the forward."""
    device = torch.device(device)
    backbone.to(device)
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    with eval_mode(backbone):
        for batch in runtime_progress(loader, "features", progress):
            images, target = split_batch(batch)
            with autocast(device, amp):
                out = backbone(move_images(images, device, channels_last))  # (B, D)
            feats.append(out.float())  # stays on the device: one transfer at the end
            labels.append(target)
    return torch.cat(feats).cpu(), torch.cat(labels).cpu()  # (N, D), (N,)


def top1_percent(preds: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy in percent of predictions (N,) against labels (N,)."""
    return 100.0 * (preds.cpu() == targets.cpu()).float().mean().item()
