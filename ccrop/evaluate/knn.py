"""Weighted k-nearest-neighbour evaluation of frozen features (InstDisc-style kNN monitor)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ccrop import dist
from ccrop.evaluate.features import (
    check_feature_bank,
    check_labels,
    extract_features,
    top1_percent,
)

__all__ = ["MIN_BANK_PER_K", "KnnBankWarning", "check_k_against_bank", "knn_accuracy",
           "knn_predict", "run_knn"]

#: ``run_knn`` warns when k > N / MIN_BANK_PER_K (N: the memory-bank size). With k = N / 5 a
#: test image is already voted on by a fifth of the training set, about twice a class's share
#: on a 10-class dataset, so the weighted vote drifts towards the majority classes; at k >= N
#: every prediction uses the whole bank (k is clamped to N) and the "kNN" accuracy is close to
#: that of a class prior weighted by similarity. The paper setting, k = 200 on CIFAR's 50k
#: images (k = N / 250), is far below the limit.
MIN_BANK_PER_K = 5


class KnnBankWarning(UserWarning):
    """k (``eval.knn_k``) is not well below the kNN memory-bank size."""


def check_k_against_bank(k: int, num_bank: int) -> str | None:
    """The warning text when ``k`` is too large for a bank of ``num_bank`` samples, else None.

    Args:
        k: Number of neighbours (``eval.knn_k``), >= 1.
        num_bank: Memory-bank size N (training samples with features).

    Returns:
        None when ``k <= num_bank / MIN_BANK_PER_K``; otherwise a one-line message naming
        ``eval.knn_k``, k and N, and what happens (clamping when ``k > N``).
    """
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


def _check_knn_args(k: int, temperature: float, chunk: int) -> None:
    """Raise ValueError for a non-positive k, temperature or chunk size."""
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature: must be > 0, got {temperature}")
    if chunk < 1:
        raise ValueError(f"chunk: must be >= 1, got {chunk}")


@torch.no_grad()
def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Similarity-weighted kNN classification on L2-normalised features.

    Each test sample takes its `k` most cosine-similar training samples; neighbour `j` votes for
    its class with weight `exp(sim_j / temperature)`; the class with the largest total wins
    (ties go to the lowest class index). This is the kNN monitor of Wu et al., "Unsupervised
    Feature Learning via Non-Parametric Instance Discrimination" (CVPR 2018), with k = 200 and
    temperature = 0.1 as commonly used. Test features are processed `chunk` rows at a time against
    the whole bank on the bank's device, so peak memory is about `chunk * N` floats. If `k`
    exceeds N it is clamped to N (every training sample votes).

    Args:
        train_feats: (N,D) training features (the bank); its device is used for the compute.
        train_labels: (N,) integer labels in [0, num_classes).
        test_feats: (M,D) features to classify.
        num_classes: number of classes C.
        k: number of neighbours, >= 1.
        temperature: softmax-style temperature, > 0.
        chunk: test rows per batched similarity computation, >= 1.

    Returns:
        (M,) long tensor of predicted labels on the device of `train_feats`.

    Raises:
        ValueError: bad shapes, labels outside [0, num_classes), or k, temperature or chunk
            out of range.
    """
    _check_knn_args(k, temperature, chunk)
    check_feature_bank(train_feats, train_labels, "train_feats")
    check_labels(train_labels, num_classes, "train_labels")
    if test_feats.dim() != 2 or test_feats.shape[1] != train_feats.shape[1]:
        raise ValueError(
            f"test_feats: expected (M,{train_feats.shape[1]}), got {tuple(test_feats.shape)}"
        )
    device = train_feats.device
    bank = F.normalize(train_feats.float(), dim=1)  # (N,D)
    bank_labels = train_labels.to(device).long()  # (N,)
    k = min(k, bank.shape[0])
    preds = []
    for start in range(0, test_feats.shape[0], chunk):
        query = F.normalize(test_feats[start : start + chunk].to(device).float(), dim=1)  # (B,D)
        sim = query @ bank.T  # (B,N) cosine similarities
        top_sim, top_idx = sim.topk(k, dim=1)  # (B,K)
        # Subtracting the row max leaves the vote ratios unchanged and avoids exp overflow.
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # (B,K)
        votes = torch.zeros(query.shape[0], num_classes, device=device)  # (B,C)
        votes.scatter_add_(1, bank_labels[top_idx], weights)  # (B,C)
        preds.append(votes.argmax(dim=1))  # (B,)
    if not preds:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(preds)  # (M,)


def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> float:
    """Top-1 accuracy (percent) of `knn_predict` on labelled test features.

    Args:
        train_feats: (N,D) training features.
        train_labels: (N,) labels in [0, num_classes).
        test_feats: (M,D) test features, M >= 1.
        test_labels: (M,) labels in [0, num_classes).
        num_classes: number of classes C.
        k: number of neighbours (clamped to N).
        temperature: vote temperature, > 0.
        chunk: test rows per batched step.

    Returns:
        Top-1 accuracy in percent, in [0, 100].
    """
    check_feature_bank(test_feats, test_labels, "test_feats")
    check_labels(test_labels, num_classes, "test_labels")
    preds = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk)
    return top1_percent(preds, test_labels)


def run_knn(
    backbone: nn.Module,
    train_loader: Iterable,
    test_loader: Iterable,
    num_classes: int,
    device: torch.device | str,
    k: int = 200,
    temperature: float = 0.1,
    amp: bool = False,
    channels_last: bool = False,
    progress: bool = False,
    chunk: int = 1024,
    gather: bool = False,
) -> dict[str, Any]:
    """kNN protocol end to end: extract train/test features, then weighted kNN top-1.

    Both loaders should yield un-augmented images (eval transform) as `(images, labels)` or
    `(indices, images, labels)`. The feature bank is kept on `device` during the search.

    Args:
        backbone: module mapping (B,3,H,W) images to pooled (B,D) features.
        train_loader: loader over the labelled training set (the bank).
        test_loader: loader over the labelled test set.
        num_classes: number of classes C.
        device: device for extraction and search.
        k: number of neighbours (clamped to the bank size).
        temperature: vote temperature, > 0.
        amp: autocast the backbone forward.
        channels_last: feed channels-last inputs.
        progress: show tqdm bars.
        chunk: test rows per batched search step.
        gather: the loaders hold this rank's share (``eval_loader(..., shard=True)``); the
            features of all ranks are gathered in dataset order before the search.

    Returns:
        {"protocol": "knn", "k": k, "temperature": temperature, "top1": accuracy in percent,
        "num_train": N, "num_test": M}. ``k`` is the value asked for, also when the search
        clamped it to N.

    Warns:
        KnnBankWarning: (a ``UserWarning``, main process only) when k > N / ``MIN_BANK_PER_K``:
            the result is then a weak measure of the features (see ``check_k_against_bank``).
    """
    _check_knn_args(k, temperature, chunk)
    device = torch.device(device)
    train_feats, train_labels = extract_features(
        backbone, train_loader, device, amp=amp, channels_last=channels_last, progress=progress
    )
    test_feats, test_labels = extract_features(
        backbone, test_loader, device, amp=amp, channels_last=channels_last, progress=progress
    )
    if gather:
        train_feats, train_labels, test_feats, test_labels = (
            dist.gather_shards(t.to(device), len(loader.dataset)).cpu() for t, loader in (
                (train_feats, train_loader), (train_labels, train_loader),
                (test_feats, test_loader), (test_labels, test_loader)))
    message = check_k_against_bank(k, int(train_feats.shape[0]))
    if message is not None and dist.is_main_process():
        warnings.warn(message, KnnBankWarning, stacklevel=2)
    top1 = knn_accuracy(
        train_feats.to(device), train_labels.to(device), test_feats, test_labels,
        num_classes, k, temperature, chunk,
    )
    return {
        "protocol": "knn",
        "k": k,
        "temperature": temperature,
        "top1": top1,
        "num_train": int(train_feats.shape[0]),
        "num_test": int(test_feats.shape[0]),
    }
