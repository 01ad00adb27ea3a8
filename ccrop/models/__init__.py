"""Backbones exposing spatial feature maps, and projection/prediction heads."""

from __future__ import annotations

from typing import Any

from torch import nn

from ccrop.models import resnet
from ccrop.models.external import ExternalBackbone, build_external, is_external
from ccrop.models.heads import mlp
from ccrop.models.resnet import ARCHS, STEMS, ResNet

__all__ = ["ARCHS", "STEMS", "ExternalBackbone", "ResNet", "build_backbone", "is_external",
           "mlp"]


def build_backbone(
    arch: str = "resnet18",
    stem: str = "cifar",
    width: int = 64,
    zero_init_residual: bool = False,
    image_size: int | None = None,
    kwargs: dict[str, Any] | None = None,
    vit_heatmap: str = "attention",
) -> nn.Module:
    """ccrop's ResNet ("resnet18", "resnet34", "resnet50"; ``resnet.build_backbone``) or any
    timm (``timm:NAME``) / torchvision (``tv:NAME``) backbone (``external.build_external``:
    ``image_size`` sizes timm ViTs, ``kwargs`` go to the model's constructor, ``vit_heatmap``
    "attention" or "tokens"; ``width`` is ignored). ``stem``: "cifar" (3x3 conv, no max-pool)
    or "imagenet"; ``zero_init_residual``: zero each residual branch's last norm (SimSiam).

    Returns:
        A module with ``forward_features`` (B, C, h, w), ``forward`` (B, D), ``feat_dim`` = D
        and ``stage_maps``.
    """
    if is_external(arch):
        return build_external(arch, stem, zero_init_residual, image_size, kwargs, vit_heatmap)
    return resnet.build_backbone(arch, stem, width, zero_init_residual)
