"""Tests for ccrop.evaluate.knn and the feature extraction it relies on."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ccrop.evaluate.features import extract_features
from ccrop.evaluate.knn import (
    MIN_BANK_PER_K,
    KnnBankWarning,
    check_k_against_bank,
    knn_accuracy,
    knn_predict,
    run_knn,
)


class ChannelMean(nn.Module):
    """Parameter-free stand-in backbone: pooled features are the per-channel image means."""

    feat_dim = 3

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return x  # (B,3,H,W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))  # (B,3)


def reference_knn(train, train_labels, test, num_classes, k, temperature):
    """Per-sample, loop-based weighted kNN (the definition, written plainly)."""
    train = F.normalize(train, dim=1)
    preds = []
    for q in F.normalize(test, dim=1):
        sims = train @ q  # (N,)
        order = torch.argsort(sims, descending=True)[: min(k, len(train))]
        votes = torch.zeros(num_classes, dtype=torch.float64)
        for j in order.tolist():
            votes[train_labels[j]] += torch.exp(sims[j].double() / temperature)
        preds.append(int(votes.argmax()))
    return torch.tensor(preds)


def clusters(centres: torch.Tensor, per_class: int, seed: int, noise: float = 0.1):
    """Samples around class centres (C,D): features (C*per_class, D) and labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(per_class)  # (N,)
    feats = centres[labels] + noise * torch.randn(len(labels), centres.shape[1], generator=gen)
    return feats, labels


def colour_images(num_classes: int, per_class: int, seed: int):
    """Images (N,3,8,8) whose brightest channel is the class (c < 3), with pixel noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)  # (N,)
    images = 0.2 * torch.rand(len(labels), 3, 8, 8, generator=gen)  # (N,3,8,8)
    images[torch.arange(len(labels)), labels] += 1.0
    return images, labels


def test_separable_clusters_give_100_percent_with_default_k():
    centres = 3 * torch.randn(5, 16, generator=torch.Generator().manual_seed(0))  # (C,D)
    train, train_labels = clusters(centres, 100, seed=1)
    test, test_labels = clusters(centres, 40, seed=2)
    acc = knn_accuracy(train, train_labels, test, test_labels, num_classes=5)  # k=200 > per class
    assert acc == 100.0


def test_shuffled_labels_give_about_chance():
    gen = torch.Generator().manual_seed(0)
    num_classes = 5
    train = torch.randn(2000, 32, generator=gen)
    test = torch.randn(1000, 32, generator=gen)
    train_labels = torch.randint(0, num_classes, (2000,), generator=gen)
    test_labels = torch.randint(0, num_classes, (1000,), generator=gen)
    acc = knn_accuracy(train, train_labels, test, test_labels, num_classes)
    # Chance is 20 %; the binomial std over 1000 test points is ~1.3 points.
    assert 14.0 < acc < 26.0


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    m=st.integers(1, 20),
    dim=st.integers(2, 8),
    num_classes=st.integers(2, 5),
    k=st.integers(1, 80),
    temperature=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**16),
)
def test_matches_per_sample_reference(n, m, dim, num_classes, k, temperature, seed):
    gen = torch.Generator().manual_seed(seed)
    train = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    test = torch.randn(m, dim, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    expected = reference_knn(train, labels, test, num_classes, k, temperature)
    got = knn_predict(train, labels, test, num_classes, k=k, temperature=temperature, chunk=7)
    assert torch.equal(got, expected)


@settings(max_examples=30, deadline=None)
@given(chunk=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_chunk_size_does_not_change_predictions(chunk, seed):
    gen = torch.Generator().manual_seed(seed)
    train, test = torch.randn(200, 8, generator=gen), torch.randn(45, 8, generator=gen)
    labels = torch.randint(0, 4, (200,), generator=gen)
    whole = knn_predict(train, labels, test, 4, k=30, chunk=1000)
    assert torch.equal(knn_predict(train, labels, test, 4, k=30, chunk=chunk), whole)


def test_k_larger_than_bank_is_clamped():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(30, 4, generator=gen), torch.randn(10, 4, generator=gen)
    labels = torch.randint(0, 3, (30,), generator=gen)
    clamped = knn_predict(train, labels, test, 3, k=500)
    assert torch.equal(clamped, knn_predict(train, labels, test, 3, k=30))


def test_tiny_temperature_is_nearest_neighbour_and_finite():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.randn(100, 6, generator=gen), torch.randn(20, 6, generator=gen)
    labels = torch.randint(0, 4, (100,), generator=gen)
    nearest = (F.normalize(test, dim=1) @ F.normalize(train, dim=1).T).argmax(1)  # (M,)
    got = knn_predict(train, labels, test, 4, k=50, temperature=1e-4)
    assert torch.equal(got, labels[nearest])


def test_extract_features_accepts_two_and_three_tuples_and_restores_mode():
    images, labels = colour_images(3, 4, seed=0)
    backbone = ChannelMean().train()
    plain = DataLoader(TensorDataset(images, labels), batch_size=5)
    indexed = DataLoader(TensorDataset(torch.arange(len(labels)), images, labels), batch_size=5)
    feats, got_labels = extract_features(backbone, plain, "cpu")
    feats3, got_labels3 = extract_features(backbone, indexed, "cpu")
    assert feats.shape == (12, 3) and feats.dtype == torch.float32
    assert torch.allclose(feats, images.mean(dim=(2, 3)))
    assert torch.equal(feats, feats3) and torch.equal(got_labels, labels)
    assert torch.equal(got_labels3, labels) and backbone.training


def test_extract_features_rejects_multi_view_batches():
    views = [torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)]
    with pytest.raises(ValueError, match="images"):
        extract_features(ChannelMean(), [(torch.arange(2), views, torch.zeros(2))], "cpu")


def test_run_knn_end_to_end_on_colour_classes():
    train_images, train_labels = colour_images(3, 20, seed=0)
    test_images, test_labels = colour_images(3, 10, seed=1)
    train = DataLoader(TensorDataset(torch.arange(60), train_images, train_labels), batch_size=16)
    test = DataLoader(TensorDataset(test_images, test_labels), batch_size=16)
    with pytest.warns(KnnBankWarning, match="k is clamped to N=60"):  # k=200 > N=60
        result = run_knn(ChannelMean(), train, test, 3, "cpu", k=200, temperature=0.1)
    assert result["protocol"] == "knn" and result["k"] == 200 and result["temperature"] == 0.1
    assert result["top1"] == 100.0 and result["num_train"] == 60 and result["num_test"] == 30


def _colour_loaders(per_class_train=20):
    train_images, train_labels = colour_images(3, per_class_train, seed=0)
    test_images, test_labels = colour_images(3, 4, seed=1)
    n = len(train_labels)
    train = DataLoader(TensorDataset(torch.arange(n), train_images, train_labels), batch_size=16)
    return train, DataLoader(TensorDataset(test_images, test_labels), batch_size=16)


def test_run_knn_warns_when_k_is_not_well_below_the_bank():
    train, test = _colour_loaders()  # N = 60: the limit is k <= 12
    assert 60 // MIN_BANK_PER_K == 12
    with warnings.catch_warnings():
        warnings.simplefilter("error", KnnBankWarning)
        run_knn(ChannelMean(), train, test, 3, "cpu", k=12)  # at the limit: silent
    with pytest.warns(UserWarning) as caught:
        result = run_knn(ChannelMean(), train, test, 3, "cpu", k=13)
    knn_warnings = [w for w in caught if issubclass(w.category, KnnBankWarning)]
    assert len(knn_warnings) == 1
    msg = str(knn_warnings[0].message)
    assert "eval.knn_k=13" in msg and "N=60" in msg and "eval.knn_k=12 or less" in msg
    assert "at least 65 images" in msg
    assert "clamped" not in msg and "\n" not in msg
    assert result["k"] == 13 and result["num_train"] == 60


@pytest.mark.parametrize("k,n,warns", [
    (1, 1, True), (1, 4, True), (1, 5, False), (2, 9, True), (200, 1000, False),
    (200, 999, True), (200, 50_000, False),
])
def test_check_k_against_bank_threshold(k, n, warns):
    msg = check_k_against_bank(k, n)
    assert (msg is not None) == warns
    if warns:
        assert f"eval.knn_k={k}" in msg and f"N={n}" in msg
        assert ("clamped" in msg) == (k > n)
        assert f"at least {5 * k} images" in msg
        # never suggests k=0: with N < 5 only a larger split helps
        assert ("or less" in msg) == (n >= 5) and "eval.knn_k=0" not in msg
