"""CPU view pipelines: crop -> flip -> colour jitter -> grayscale -> blur -> tensor, per sample.

All randomness comes from one ``random.Random``-like source passed per call, so a sample's views
are a pure function of ``(seed, epoch, index)`` when ``BoxedDataset`` is given a seed: identical
across worker counts, persistent or not, ranks, and resumes. Image operations are torchvision's
functional ops on PIL images (the same ops ``torchvision.transforms.ColorJitter`` applies).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from ..crop import CENTER_BOX, FULL_BOX, KINDS, BoxCrop, ContrastiveCrop, CropPlan

CROPS = KINDS  # the crop kinds (``CropPlan.kind``)


@dataclass(frozen=True)
class Recipe:
    """Photometric part of a view recipe (probabilities and jitter strengths)."""

    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # b, c, s, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0


#: SimCLR/CIFAR recipe of the official small-dataset configs; ImageNet adds Gaussian blur.
RECIPES: dict[str, Recipe] = {"cifar": Recipe(), "imagenet": Recipe(blur_p=0.5)}


def jitter_params(rng: Any, jitter: Sequence[float]) -> tuple[list[int], list[float]]:
    """Random order (permutation of 0..3 = brightness, contrast, saturation, hue) and factors.

    Factors follow ``torchvision.transforms.ColorJitter``: ``U(max(0, 1-s), 1+s)`` for the first
    three, ``U(-h, h)`` for hue.
    """
    order = [0, 1, 2, 3]
    rng.shuffle(order)
    b, c, s, h = jitter
    factors = [rng.uniform(max(0.0, 1 - b), 1 + b), rng.uniform(max(0.0, 1 - c), 1 + c),
               rng.uniform(max(0.0, 1 - s), 1 + s), rng.uniform(-h, h)]
    return order, factors


_ADJUST = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


class ViewTransform:
    """One augmented view: ``(PIL RGB image, box, rng) -> (3, S, S)`` normalised float tensor.

    Args:
        crop: a ``ContrastiveCrop`` (or ``SimCCrop``/``RandomResizedCrop``).
        recipe: photometric recipe.
        mean: per-channel mean for normalisation.
        std: per-channel std.
    """

    def __init__(self, crop: ContrastiveCrop, recipe: Recipe, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        self.crop, self.recipe = crop, recipe
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: Image.Image, box: Sequence[float] = FULL_BOX,
                 rng: Any = None) -> torch.Tensor:
        rng = random if rng is None else rng
        r = self.recipe
        img = self.crop(img, box, rng)
        if rng.random() < r.flip_p:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if rng.random() < r.jitter_p:
            order, factors = jitter_params(rng, r.jitter)
            for k in order:
                img = _ADJUST[k](img, factors[k])
        if rng.random() < r.gray_p:
            img = img.convert("L").convert("RGB")
        if r.blur_p and rng.random() < r.blur_p:
            img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*r.blur_sigma)))
        if r.solarize_p and rng.random() < r.solarize_p:
            img = TF.solarize(img, 128)
        return to_normalized_tensor(img, self.mean, self.std)


def to_normalized_tensor(img: Image.Image, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 ``(x/255 - mean) / std``; mean/std are (3, 1, 1)."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (H, W, 3)
    return (arr.permute(2, 0, 1).float().div_(255.0) - mean) / std


class EvalTransform:
    """Un-augmented input for localization and feature extraction: optional resize, normalise.

    Args:
        mean, std: normalisation.
        size: resize to ``(size, size)`` (ImageNet: 224, as the official localization pass);
            None keeps the native size (small datasets).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int | None = None):
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        """PIL RGB image, or (3, H, W) uint8 tensor (``ccrop.data.folder.decode_fitted``) ->
        (3, S, S) normalised float32; the same values for the same pixels."""
        if isinstance(img, torch.Tensor):
            if self.size is not None and tuple(img.shape[-2:]) != (self.size, self.size):
                img = torch.nn.functional.interpolate(img[None], (self.size, self.size),
                                                      mode="bilinear", antialias=True)[0]
            return (img.float().div_(255.0) - self.mean) / self.std
        if self.size is not None and img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        return to_normalized_tensor(img, self.mean, self.std)


def build_crop(kind: str | CropPlan, size: int, scale: Sequence[float] = (0.2, 1.0),
               ratio: Sequence[float] = (3 / 4, 4 / 3), alpha: float = 0.6,
               full_box_guard: float | None = 0.95, placement: str = "paper") -> ContrastiveCrop:
    """The crop of a view pipeline: a ``CropPlan``, or a kind (``ccrop``: ContrastiveCrop,
    ``simccrop``: fixed centre box, ``rcrop``: RandomResizedCrop) with the law's arguments."""
    plan = kind if isinstance(kind, CropPlan) else CropPlan(
        kind, tuple(scale), tuple(ratio), alpha, full_box_guard, placement)
    return BoxCrop(plan, size)


def build_view_transform(
    recipe: str = "cifar", crop: str | CropPlan = "ccrop", size: int = 32,
    mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
    scale: Sequence[float] = (0.2, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
    alpha: float = 0.6, full_box_guard: float | None = 0.95, placement: str = "paper",
) -> ViewTransform:
    """Build the paper's view pipeline with a ContrastiveCrop, SimCCrop or plain RRC crop.

    Args:
        recipe: ``"cifar"`` (flip, ColorJitter(0.4,0.4,0.4,0.1) p=0.8, grayscale p=0.2) or
            ``"imagenet"`` (the same plus Gaussian blur p=0.5).
        crop: ``"ccrop"``, ``"simccrop"``, ``"rcrop"``, or a ``CropPlan`` (then the law's
            arguments below are not used).
        size: output side S.
        mean, std: normalisation.
        scale, ratio, alpha, full_box_guard, placement: crop law (see ``ccrop.crop``).

    Returns:
        A ``ViewTransform`` mapping ``(img, box, rng)`` to a (3, S, S) tensor.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    return ViewTransform(build_crop(crop, size, scale, ratio, alpha, full_box_guard, placement),
                         RECIPES[recipe], mean, std)


__all__ = ["CENTER_BOX", "CROPS", "RECIPES", "EvalTransform", "Recipe", "ViewTransform",
           "build_crop", "build_view_transform", "jitter_params", "to_normalized_tensor"]
