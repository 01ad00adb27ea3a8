"""Weighted k-nearest-neighbour evaluation of frozen features (InstDisc-style kNN monitor)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ccrop import dist
from ccrop.evaluate.features import extract_features, top1_percent

__all__ = ["MIN_BANK_PER_K", "KnnBankWarning", "check_k_against_bank", "knn_accuracy",
           "knn_predict", "run_knn"]

#: ``run_knn`` warns when k > N / MIN_BANK_PER_K (N: the bank size): the weighted vote then
#: pools a large share of the training set (the paper: k = 200 of 50k images, N / 250).
MIN_BANK_PER_K = 5


class KnnBankWarning(UserWarning):
    """k (``eval.knn_k``) is not well below the kNN memory-bank size."""


def check_k_against_bank(k: int, num_bank: int) -> str | None:
    """None when ``k <= num_bank / MIN_BANK_PER_K``, else a one-line warning naming
    ``eval.knn_k``, k and the bank size N (and the clamping when k > N)."""
    if k * MIN_BANK_PER_K <= num_bank:  # integers: exact at the limit
        return None
    clamp = f"; k is clamped to N={num_bank}, so every training sample votes" if k > num_bank \
        else ""
    best = num_bank // MIN_BANK_PER_K
    fix = f"eval.knn_k={best} or less, or " if best >= 1 else ""
    return (
        f"eval.knn_k={k} is not well below the kNN memory bank of N={num_bank} training "
        f"samples (k > N / {MIN_BANK_PER_K} = {num_bank / MIN_BANK_PER_K:g}{clamp}): the vote "
        "then pools a large share of the training set and the kNN accuracy says little about "
        f"the features; use {fix}a training split of at least {k * MIN_BANK_PER_K} images"
    )


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                num_classes: int, k: int = 200, temperature: float = 0.1,
                chunk: int = 1024) -> torch.Tensor:
    """Similarity-weighted kNN labels (M,) of test features (M, D) against a bank (N, D) with
    labels (N,) in [0, num_classes), on the bank's device.

    Features are L2-normalised; each test sample's `k` most similar bank samples (k clamped to
    N) vote for their class with weight ``exp(sim / temperature)``, the largest total wins
    (ties: lowest class): the kNN monitor of Wu et al. (CVPR 2018), usually k = 200, T = 0.1.
    `chunk` test rows are compared at a time (peak memory about ``chunk * N`` floats).
    """
    device = train_feats.device
    bank = F.normalize(train_feats.float(), dim=1)  # (N,D)
    bank_labels = train_labels.to(device).long()  # (N,)
    k = min(k, bank.shape[0])
    preds = []
    for rows in test_feats.split(chunk):
        query = F.normalize(rows.to(device).float(), dim=1)  # (B,D)
        sim = query @ bank.T  # (B,N) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # (B,K)
        # Subtracting the row max leaves the vote ratios unchanged and avoids exp overflow.
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # (B,K)
        votes = torch.zeros(query.shape[0], num_classes, device=device)  # (B,C)
        votes.scatter_add_(1, bank_labels[top_idx], weights)  # (B,C)
        preds.append(votes.argmax(dim=1))  # (B,)
    return torch.cat(preds)  # (M,)


def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor,
                 test_feats: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                 k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> float:
    """Top-1 accuracy (percent) of `knn_predict` on labelled test features (M, D), (M,)."""
    preds = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk)
    return top1_percent(preds, test_labels)


def run_knn(backbone: nn.Module, train_loader: Iterable, test_loader: Iterable,
            num_classes: int, device: torch.device | str, k: int = 200,
            temperature: float = 0.1, amp: bool = False, channels_last: bool = False,
            progress: bool = False, chunk: int = 1024, gather: bool = False) -> dict[str, Any]:
    """kNN protocol: features of the bank (`train_loader`) and queries (`test_loader`), both
    un-augmented ``(images, labels)`` or ``(indices, images, labels)``, then `knn_accuracy` on
    `device`. With `gather` the loaders hold this rank's share (``eval_loader(..., shard=True)``)
    and the features of all ranks are gathered in dataset order first. Warns `KnnBankWarning`
    (main process) when k > N / `MIN_BANK_PER_K`.

    Returns:
        {"protocol": "knn", "k" (as asked, also when clamped), "temperature", "top1",
        "num_train", "num_test"}.
    """
    device = torch.device(device)
    speed = {"amp": amp, "channels_last": channels_last, "progress": progress}
    train_feats, train_labels = extract_features(backbone, train_loader, device, **speed)
    test_feats, test_labels = extract_features(backbone, test_loader, device, **speed)
    if gather:
        train_feats, train_labels, test_feats, test_labels = (
            dist.gather_shards(t.to(device), len(loader.dataset)).cpu() for t, loader in (
                (train_feats, train_loader), (train_labels, train_loader),
                (test_feats, test_loader), (test_labels, test_loader)))
    message = check_k_against_bank(k, int(train_feats.shape[0]))
    if message is not None and dist.is_main_process():
        warnings.warn(message, KnnBankWarning, stacklevel=2)
    top1 = knn_accuracy(train_feats.to(device), train_labels.to(device), test_feats,
                        test_labels, num_classes, k, temperature, chunk)
    return {"protocol": "knn", "k": k, "temperature": temperature, "top1": top1,
            "num_train": int(train_feats.shape[0]), "num_test": int(test_feats.shape[0])}
