"""Tests for ccrop.losses against hand-written references."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ccrop.losses import byol_loss, info_nce_queue, moco_logits, neg_cosine, nt_xent


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Straightforward NT-Xent: loop over the 2B anchors."""
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        sims = {j: float(z[i] @ z[j]) / t for j in range(n) if j != i}
        denom = sum(math.exp(s) for s in sims.values())
        total += -math.log(math.exp(sims[pos]) / denom)
    return total / n


def info_nce_reference(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> float:
    """Straightforward MoCo loss: loop over queries, positive first."""
    q, k = F.normalize(q, dim=1).double(), F.normalize(k, dim=1).double()
    total = 0.0
    for i in range(q.shape[0]):
        logits = [float(q[i] @ k[i]) / t] + [float(q[i] @ c) / t for c in queue.double()]
        total += -logits[0] + math.log(sum(math.exp(x) for x in logits))
    return total / q.shape[0]


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 6),
    d=st.integers(2, 8),
    t=st.floats(0.05, 2.0),
    seed=st.integers(0, 10_000),
)
def test_nt_xent_matches_reference(b: int, d: int, t: float, seed: int) -> None:
    z1, z2 = _randn(seed, b, d), _randn(seed + 1, b, d)
    assert nt_xent(z1, z2, t).item() == pytest.approx(
        nt_xent_reference(z1, z2, t), rel=1e-4, abs=1e-5
    )


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_nt_xent_symmetric_and_scale_invariant(b: int, seed: int) -> None:
    z1, z2 = _randn(seed, b, 5), _randn(seed + 1, b, 5)
    loss = nt_xent(z1, z2, 0.5)
    torch.testing.assert_close(nt_xent(z2, z1, 0.5), loss)
    torch.testing.assert_close(nt_xent(3.0 * z1, 0.1 * z2, 0.5), loss)


@pytest.mark.parametrize("seed", range(5))
def test_nt_xent_lower_for_equal_views(seed: int) -> None:
    z = _randn(seed, 16, 32)
    assert nt_xent(z, z, 0.5) < nt_xent(z, _randn(seed + 100, 16, 32), 0.5)


@pytest.mark.parametrize("seed", range(3))
def test_nt_xent_gradient_matches_cross_entropy_form(seed: int) -> None:
    """Gradients equal those of the textbook form: cross entropy of the self-masked logits with
    the other view as target, in float64."""
    z1, z2 = _randn(seed, 6, 8).requires_grad_(), _randn(seed + 1, 6, 8).requires_grad_()
    nt_xent(z1, z2, 0.2).backward()
    r1, r2 = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    z = F.normalize(torch.cat([r1, r2]), dim=1)
    logits = (z @ z.T / 0.2).masked_fill(torch.eye(12, dtype=torch.bool), float("-inf"))
    F.cross_entropy(logits, (torch.arange(12) + 6) % 12).backward()
    torch.testing.assert_close(z1.grad, r1.grad.float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(z2.grad, r2.grad.float(), rtol=1e-4, atol=1e-6)


def test_nt_xent_gradient_finite() -> None:
    z1 = _randn(0, 4, 8).requires_grad_()
    z2 = _randn(1, 4, 8).requires_grad_()
    nt_xent(z1, z2, 0.1).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    assert torch.isfinite(z2.grad).all() and z2.grad.abs().sum() > 0


@settings(max_examples=50, deadline=None)
@given(
    b=st.integers(1, 5),
    k=st.integers(1, 7),
    t=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
)
def test_info_nce_queue_matches_reference(b: int, k: int, t: float, seed: int) -> None:
    q, key = _randn(seed, b, 4), _randn(seed + 1, b, 4)
    queue = F.normalize(_randn(seed + 2, k, 4), dim=1)
    assert moco_logits(q, key, queue, t).shape == (b, 1 + k)
    expected = info_nce_reference(q, key, queue, t)
    assert info_nce_queue(q, key, queue, t).item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_info_nce_queue_no_grad_to_keys() -> None:
    q = _randn(0, 3, 4).requires_grad_()
    k = _randn(1, 3, 4).requires_grad_()
    info_nce_queue(q, k, F.normalize(_randn(2, 6, 4), dim=1), 0.2).backward()
    assert q.grad is not None and k.grad is None


def test_byol_loss_known_points() -> None:
    p = _randn(0, 6, 5)
    ortho = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert byol_loss(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, 2.5 * p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, abs=1e-6)
    assert byol_loss(ortho, ortho.flip(0)).item() == pytest.approx(2.0, abs=1e-6)


def test_neg_cosine_known_points_and_stop_gradient() -> None:
    p = _randn(0, 6, 5).requires_grad_()
    z = p.detach().clone().requires_grad_()
    loss = neg_cosine(p, z)
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    assert neg_cosine(p, -z).item() == pytest.approx(1.0, abs=1e-6)
    (loss + neg_cosine(p, _randn(1, 6, 5).requires_grad_())).backward()
    assert p.grad is not None and z.grad is None


def test_byol_loss_no_grad_to_target() -> None:
    p = _randn(0, 4, 3).requires_grad_()
    z = _randn(1, 4, 3).requires_grad_()
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None


def test_bad_inputs_raise() -> None:
    a, b = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(a, a, 0.0)
    with pytest.raises(ValueError, match="z1, z2"):
        nt_xent(a, b)
    with pytest.raises(ValueError, match="p, z"):
        byol_loss(a, b)


def test_losses_compute_in_float32_under_autocast() -> None:
    z1, z2 = _randn(0, 6, 8).bfloat16(), _randn(1, 6, 8).bfloat16()
    queue = F.normalize(_randn(2, 5, 8), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [nt_xent(z1, z2, 0.1), info_nce_queue(z1, z2, queue, 0.1), byol_loss(z1, z2)]
    want = [
        nt_xent(z1.float(), z2.float(), 0.1),
        info_nce_queue(z1.float(), z2.float(), queue, 0.1),
        byol_loss(z1.float(), z2.float()),
    ]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w)
