"""Siamese self-supervised methods (one module per file) and their registry."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ccrop.methods.byol import BYOL
from ccrop.methods.moco import MoCo
from ccrop.methods.simclr import SimCLR
from ccrop.methods.simsiam import SimSiam

__all__ = ["BYOL", "METHODS", "MoCo", "SSLMethod", "SimCLR", "SimSiam", "build_method",
           "method_hparams"]


@runtime_checkable
class SSLMethod(Protocol):
    """What the engine needs of a method (an ``nn.Module``).

    ``method(x1, x2)`` takes two batches of views (B, 3, H, W) and returns ``{"loss": scalar,
    ...}``; ``backbone`` is the encoder evaluated by kNN and the linear protocol;
    ``heatmap_encoder`` the one localization reads; ``param_groups(lr, wd)`` the optimizer
    groups (a group with ``fix_lr`` keeps its lr); ``after_step(progress)`` runs after every
    optimizer step (momentum encoders, with progress = step / total steps).
    """

    backbone: nn.Module

    @property
    def heatmap_encoder(self) -> nn.Module: ...

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]: ...

    def after_step(self, progress: float) -> None: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def buffers(self) -> Iterator[torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...

METHODS: dict[str, type[nn.Module]] = {
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "simsiam": SimSiam,
}


def method_hparams(name: str) -> dict[str, Any]:
    """``{hparam: default}`` of a ``METHODS`` entry's constructor (backbone excluded)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    params = inspect.signature(METHODS[name].__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "backbone")}


def build_method(name: str, backbone: nn.Module, **hparams: Any) -> nn.Module:
    """Method ``name`` ("simclr", "moco", "byol", "simsiam") around a backbone (``feat_dim``,
    ``forward`` (B, D), ``forward_features``) with ``hparams`` overriding its defaults
    (``method_hparams``); ValueError for an unknown name or hyperparameter."""
    unknown = sorted(set(hparams) - set(method_hparams(name)))
    if unknown:
        raise ValueError(f"unknown hparams {unknown} for method {name!r}; allowed: "
                         f"{sorted(method_hparams(name))}")
    return METHODS[name](backbone, **hparams)
