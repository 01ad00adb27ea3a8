"""Backbones exposing spatial feature maps, and projection/prediction heads."""

from ccrop.models.heads import mlp
from ccrop.models.resnet import ARCHS, STEMS, ResNet, build_backbone

__all__ = ["ARCHS", "STEMS", "ResNet", "build_backbone", "mlp"]
