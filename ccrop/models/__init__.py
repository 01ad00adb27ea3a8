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
    """ccrop's ResNet, or any timm (``timm:NAME``) / torchvision (``tv:NAME``) backbone.

    Args:
        arch: "resnet18", "resnet34", "resnet50", "timm:NAME" or "tv:NAME".
        stem: "cifar" (3x3 conv, no max-pool; small images) or "imagenet" (the usual stem).
        width: Channels of the first stage of ccrop's ResNets; ignored for timm/tv.
        zero_init_residual: Zero-initialise each residual branch's last norm scale (SimSiam).
        image_size: Training image side, for models that take ``img_size`` (timm ViTs).
        kwargs: Extra keywords for ``timm.create_model`` / ``torchvision.models.get_model``.
        vit_heatmap: Heatmap of timm ViTs, "attention" (CLS attention, the default: better box
            IoU) or "tokens" (channel sum of patch tokens); see ``ccrop.models.external``.

    Returns:
        A module with ``forward_features`` (B,C,h,w), ``forward`` (B,D), ``feat_dim`` and
        ``stage_maps``.

    Raises:
        ValueError: Unknown ``arch`` or ``stem``, ``width < 1``, ``kwargs`` with a ccrop
            ResNet; ``ConfigError`` (a ValueError naming the config key) for timm/tv build
            failures: timm missing ("pip install ccrop[timm]"), unknown model name.
    """
    if is_external(arch):  # sized by name or kwargs: width is ignored
        return build_external(arch, stem, zero_init_residual, image_size, kwargs, vit_heatmap)
    if kwargs:
        raise ValueError(f"kwargs apply to timm:/tv: archs only, got {kwargs} with {arch!r}")
    return resnet.build_backbone(arch, stem, width, zero_init_residual)
