"""CPU view pipelines: crop -> flip -> colour jitter -> grayscale -> blur -> tensor, per sample,
with torchvision's ops on PIL images; all randomness from the ``rng`` passed per call."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFilter

from ..crop import FULL_BOX, KINDS, BoxCrop, ContrastiveCrop, CropPlan

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

    def __post_init__(self) -> None:
        probs = (self.flip_p, self.jitter_p, self.gray_p, self.blur_p, self.solarize_p)
        b, c, s, h = self.jitter
        if not (all(0 <= p <= 1 for p in probs) and min(b, c, s) >= 0 and 0 <= h <= 0.5
                and 0 < self.blur_sigma[0] <= self.blur_sigma[1]):
            raise ValueError(f"bad {self}: need probabilities (_p) in [0, 1], jitter (b, c, s "
                             ">= 0, 0 <= hue <= 0.5) and blur_sigma (lo, hi) with 0 < lo <= hi")


#: SimCLR/CIFAR recipe of the official small-dataset configs; ImageNet adds Gaussian blur.
RECIPES: dict[str, Recipe] = {"cifar": Recipe(), "imagenet": Recipe(blur_p=0.5)}


def get_recipe(recipe: Recipe | str) -> Recipe:
    """A ``Recipe``, or the one named in ``RECIPES``."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)} or a Recipe, got {recipe!r}")
    return RECIPES[recipe]


def jitter_params(rng: Any, jitter: Sequence[float]) -> tuple[list[int], list[float]]:
    """Random order of 0..3 (brightness, contrast, saturation, hue) and ``ColorJitter``'s
    factors: ``U(max(0, 1-s), 1+s)`` x3 and ``U(-h, h)``."""
    order = [0, 1, 2, 3]
    rng.shuffle(order)
    b, c, s, h = jitter
    factors = [rng.uniform(max(0.0, 1 - b), 1 + b), rng.uniform(max(0.0, 1 - c), 1 + c),
               rng.uniform(max(0.0, 1 - s), 1 + s), rng.uniform(-h, h)]
    return order, factors


_ADJUST = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


class ViewTransform:
    """One augmented view: ``(PIL RGB image, box, rng) -> (3, S, S)`` normalised float tensor,
    cropped by ``crop`` (a ``ContrastiveCrop``), coloured by ``recipe``."""

    def __init__(self, crop: ContrastiveCrop, recipe: Recipe, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        self.crop, self.recipe = crop, recipe
        self.mean, self.std = torch.tensor([mean, std], dtype=torch.float32).view(2, 3, 1, 1)

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


def to_normalized_tensor(img: Image.Image | torch.Tensor, mean: torch.Tensor,
                         std: torch.Tensor) -> torch.Tensor:
    """PIL RGB or (3, H, W) uint8 -> (3, H, W) float32 ``(x/255 - mean) / std`` (mean, std:
    (3, 1, 1))."""
    x = img if isinstance(img, torch.Tensor) else TF.pil_to_tensor(img)
    return (x.float().div_(255.0) - mean) / std


class EvalTransform:
    """Un-augmented input for localization and features: resize to ``(size, size)`` unless
    ``size`` is None (native size), normalise."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int | None = None):
        self.size = size
        self.mean, self.std = torch.tensor([mean, std], dtype=torch.float32).view(2, 3, 1, 1)

    def __call__(self, img: Image.Image | torch.Tensor) -> torch.Tensor:
        """PIL RGB image or (3, H, W) uint8 tensor -> (3, S, S) normalised float32."""
        if isinstance(img, torch.Tensor):
            if self.size is not None and tuple(img.shape[-2:]) != (self.size, self.size):
                img = torch.nn.functional.interpolate(img[None], (self.size, self.size),
                                                      mode="bilinear", antialias=True)[0]
        elif self.size is not None and img.size != (self.size, self.size):
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
    """The paper's view pipeline, ``(img, box, rng) -> (3, S, S)``: recipe ``"cifar"`` (flip,
    ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2) or ``"imagenet"`` (plus blur
    p=0.5); crop as ``build_crop``."""
    return ViewTransform(build_crop(crop, size, scale, ratio, alpha, full_box_guard, placement),
                         get_recipe(recipe), mean, std)

