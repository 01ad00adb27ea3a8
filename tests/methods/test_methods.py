"""Tests for ccrop.methods: common interface over METHODS, MoCo queue/momentum, BYOL, SimSiam."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ccrop.methods import METHODS, MoCo, build_method, method_hparams
from ccrop.methods.byol import BYOL, cosine_momentum
from ccrop.models import build_backbone

# Tiny settings per method; the registry test checks this covers METHODS.
SMALL = {
    "simclr": {"proj_hidden": 32, "proj_dim": 16},
    "moco": {"proj_hidden": 32, "proj_dim": 16, "queue_size": 64},
    "byol": {"proj_hidden": 32, "proj_dim": 16},
    "simsiam": {"proj_dim": 32, "pred_hidden": 8},
}


def make(name: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", width=8, zero_init_residual=name == "simsiam")
    return build_method(name, backbone, **{**SMALL[name], **overrides})


def views(b: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(b, 3, 16, 16, generator=g)
    return x1, x1 + 0.3 * torch.randn(b, 3, 16, 16, generator=g)


def test_registry_and_build_errors() -> None:
    assert set(SMALL) == set(METHODS)
    with pytest.raises(ValueError, match="simclr"):
        build_method("swav", build_backbone(width=8))
    with pytest.raises(ValueError, match="temperature"):
        build_method("byol", build_backbone(width=8), temperature=0.1)
    assert method_hparams("moco")["queue_size"] == 65536


@pytest.mark.parametrize("name", list(METHODS))
def test_forward_interface(name: str) -> None:
    method = make(name)
    out = method(*views())
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]) and out["loss"].requires_grad
    for key, value in out.items():
        assert value.ndim == 0, key
        if key != "loss":
            assert not value.requires_grad, key
    assert method.heatmap_encoder is method.backbone
    groups = method.param_groups(0.1, 1e-4)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(p) for p in method.parameters() if p.requires_grad}
    assert all(g["lr"] == 0.1 and g["weight_decay"] == 1e-4 for g in groups)


@pytest.mark.parametrize("name", list(METHODS))
def test_sgd_steps_lower_loss_on_fixed_batch(name: str) -> None:
    method = make(name)
    x1, x2 = views()
    # Re-enqueueing the same batch would put copies of the positives among the negatives,
    # so MoCo's queue is held fixed here to compare losses against the same negatives.
    frozen = {k: v.clone() for k, v in method.named_buffers() if k.startswith("queue")}

    def loss_now() -> float:
        with torch.no_grad():
            return copy.deepcopy(method)(x1, x2)["loss"].item()

    before = loss_now()
    opt = torch.optim.SGD(method.param_groups(0.05, 0.0), lr=0.05, momentum=0.9)
    for step in range(5):
        opt.zero_grad()
        method(x1, x2)["loss"].backward()
        opt.step()
        method.after_step(step / 5)
        method.load_state_dict({**method.state_dict(), **frozen})
    assert loss_now() < before - 1e-3


@pytest.mark.parametrize("name", list(METHODS))
def test_state_dict_round_trip(name: str) -> None:
    a, b = make(name, seed=0), make(name, seed=1)
    b.load_state_dict(a.state_dict())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    x1, x2 = views()
    torch.testing.assert_close(a(x1, x2)["loss"], b(x1, x2)["loss"])


def expected_keys(moco: MoCo, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(moco.key_projector(moco.key_backbone(x)), dim=1)  # (B, D)


def test_moco_enqueue_pointer_and_keys() -> None:
    moco = make("moco")
    x1, x2 = views()
    keys = expected_keys(moco, x2)
    untouched = moco.queue[8:].clone()
    moco(x1, x2)
    assert moco.queue_ptr.item() == 8
    torch.testing.assert_close(moco.queue[:8], keys)
    torch.testing.assert_close(moco.queue[8:], untouched)
    torch.testing.assert_close(moco.queue.norm(dim=1), torch.ones(64))


def test_moco_queue_wraps_around() -> None:
    moco = make("moco", queue_size=20)
    for step in range(3):
        x1, x2 = views(seed=step)
        keys = expected_keys(moco, x2)
        moco(x1, x2)
    slots = [(16 + i) % 20 for i in range(8)]  # the third batch spans the end of the queue
    torch.testing.assert_close(moco.queue[slots], keys)
    assert moco.queue_ptr.item() == 24 % 20


def test_moco_batch_larger_than_queue_keeps_last_keys() -> None:
    moco = make("moco", queue_size=5)
    x1, x2 = views(b=8)
    keys = expected_keys(moco, x2)
    moco(x1, x2)
    # Writing 8 keys in order from slot 0 leaves keys 3..7 in slots 3, 4, 0, 1, 2.
    torch.testing.assert_close(moco.queue[[3, 4, 0, 1, 2]], keys[3:])
    assert moco.queue_ptr.item() == 8 % 5


def test_moco_symmetric_enqueues_both_views() -> None:
    moco = make("moco", symmetric=True)
    x1, x2 = views()
    keys = torch.cat([expected_keys(moco, x2), expected_keys(moco, x1)])
    moco(x1, x2)["loss"].backward()
    assert moco.queue_ptr.item() == 16
    torch.testing.assert_close(moco.queue[:16], keys)


def test_moco_momentum_update_and_no_key_grad() -> None:
    moco = make("moco", momentum=0.9)
    key_params = list(moco.key_backbone.parameters()) + list(moco.key_projector.parameters())
    query_params = list(moco.backbone.parameters()) + list(moco.projector.parameters())
    assert all(torch.equal(k, q) for k, q in zip(key_params, query_params, strict=True))
    moco(*views())["loss"].backward()
    assert all(not p.requires_grad and p.grad is None for p in key_params)
    torch.optim.SGD(moco.param_groups(0.5, 0.0), lr=0.5).step()
    old_key = [p.clone() for p in key_params]
    moco.after_step(0.3)
    for new, old, q in zip(key_params, old_key, query_params, strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * q, rtol=0, atol=1e-6)
    assert any(not torch.equal(n, o) for n, o in zip(key_params, old_key, strict=True))


def test_moco_versions() -> None:
    assert isinstance(make("moco", version=1).projector[0], nn.Linear)
    assert len(make("moco", version=1).projector) == 1
    assert len([m for m in make("moco").projector if isinstance(m, nn.Linear)]) == 2
    with pytest.raises(ValueError, match="version"):
        make("moco", version=3)
    with pytest.raises(ValueError, match="momentum"):
        make("moco", momentum=1.0)


def test_byol_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert cosine_momentum(0.996, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998)
    taus = [cosine_momentum(0.996, p / 10) for p in range(11)]
    assert taus == sorted(taus)


def test_byol_target_update() -> None:
    byol: BYOL = make("byol", momentum=0.9)
    online = list(byol.backbone.parameters()) + list(byol.projector.parameters())
    target = list(byol.target_backbone.parameters()) + list(byol.target_projector.parameters())
    assert all(torch.equal(t, o) for t, o in zip(target, online, strict=True))
    byol(*views())["loss"].backward()
    assert all(p.grad is None for p in target)
    torch.optim.SGD(byol.param_groups(0.5, 0.0), lr=0.5).step()
    old = [t.clone() for t in target]
    byol.after_step(0.25)
    tau = 1 - 0.1 * (math.cos(math.pi * 0.25) + 1) / 2
    for new, prev, o in zip(target, old, online, strict=True):
        torch.testing.assert_close(new, tau * prev + (1 - tau) * o, rtol=0, atol=1e-6)


def test_byol_progress_one_freezes_target() -> None:
    byol = make("byol")
    byol(*views())["loss"].backward()
    torch.optim.SGD(byol.param_groups(0.5, 0.0), lr=0.5).step()
    before = [t.clone() for t in byol.target_backbone.parameters()]
    byol.after_step(1.0)
    assert all(
        torch.equal(a, b) for a, b in zip(byol.target_backbone.parameters(), before, strict=True)
    )


@pytest.mark.parametrize("fixed", [True, False])
def test_simsiam_predictor_group(fixed: bool) -> None:
    simsiam = make("simsiam", fixed_predictor_lr=fixed)
    encoder_group, predictor_group = simsiam.param_groups(0.05, 1e-4)
    assert {id(p) for p in predictor_group["params"]} == {
        id(p) for p in simsiam.predictor.parameters()
    }
    assert predictor_group["fix_lr"] is fixed
    assert not encoder_group.get("fix_lr", False)


@pytest.mark.parametrize("name", list(METHODS))
def test_bf16_autocast_channels_last(name: str) -> None:
    method = make(name).to(memory_format=torch.channels_last)
    x1, x2 = (v.to(memory_format=torch.channels_last) for v in views(b=4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = method(x1, x2)["loss"]
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)
