"""Statistical equivalence of the two view paths (fixed seeds, CPU).

1. The crop law: ``sample_crop_params`` (per sample, ``random.Random``) against
   ``sample_crop_params_batch`` (torch) over 100k crops; two-sample KS on centre x, centre y,
   area and aspect ratio.
2. Whole views: the PIL ``ViewTransform`` pipeline against ``GPUViews`` on the same images;
   KS on per-view per-channel mean and std and on a colourfulness score.
Each test also shows it can fail: a changed parameter is detected with p < 1e-3.
"""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from ccrop.crop import (
    CENTER_BOX,
    FULL_BOX,
    CropPlan,
    sample_crop_params,
    sample_crop_params_batch,
)
from ccrop.data.gpu_views import GPUViews
from ccrop.data.views import Recipe, ViewTransform, build_crop

N_CROPS = 100_000
H, W = 48, 64  # not square: catches a swapped axis
P_MIN = 1e-3


def crop_stats(params: np.ndarray) -> dict[str, np.ndarray]:
    """(n, 4) float64 (top, left, h, w) -> centre x, centre y (normalised), area share, w/h."""
    top, left, h, w = params.T
    return {"cx": (left + w / 2) / W, "cy": (top + h / 2) / H, "area": h * w / (H * W),
            "aspect": w / h}


def python_crops(box, alpha: float, guard: float | None, seed: int = 0) -> np.ndarray:
    rng = random.Random(seed)
    out = [sample_crop_params(H, W, box, (0.2, 1.0), (3 / 4, 4 / 3), alpha, rng, guard)
           for _ in range(N_CROPS)]
    return np.asarray(out, dtype=np.float64)


def torch_crops(box, alpha: float, guard: float | None, seed: int = 0) -> np.ndarray:
    boxes = torch.tensor([box], dtype=torch.float32).expand(N_CROPS, 4)
    out = sample_crop_params_batch(H, W, boxes, (0.2, 1.0), (3 / 4, 4 / 3), alpha,
                                   torch.Generator().manual_seed(seed), guard)
    return out.double().numpy()


def ks_pvalues(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: stats.ks_2samp(a[k], b[k]).pvalue for k in a}


@pytest.mark.parametrize("box,alpha,guard", [
    (FULL_BOX, 0.1, None),             # paper law on a full box: centres pushed to the borders
    (FULL_BOX, 0.1, 0.95),             # ccrop's guard: uniform top-left as RRC
    ((0.6, 0.1, 0.9, 0.35), 0.6, 0.95),  # small off-centre box: crops shifted back inside
    (CENTER_BOX, 0.6, None),           # SimCCrop
])
def test_crop_law_batched_equals_per_sample(box, alpha, guard):
    p = ks_pvalues(crop_stats(python_crops(box, alpha, guard)),
                   crop_stats(torch_crops(box, alpha, guard, seed=1)))
    assert min(p.values()) > P_MIN, p


@pytest.mark.parametrize("alpha_b,guard_b", [(0.6, None), (0.1, 0.95)])
def test_crop_law_ks_detects_a_different_law(alpha_b, guard_b):
    p = ks_pvalues(crop_stats(python_crops(FULL_BOX, 0.1, None)),
                   crop_stats(torch_crops(FULL_BOX, alpha_b, guard_b, seed=1)))
    assert min(p["cx"], p["cy"]) < P_MIN, p


# ----------------------------------------------------------------------------- whole views

N_IMAGES, SIZE, N_VIEWS = 64, 32, 3000
NO_NORM = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def synthetic_images() -> torch.Tensor:
    """(64, 3, 32, 32) uint8 smooth colour images of varied saturation."""
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.interpolate(torch.rand(N_IMAGES, 3, 4, 4, generator=g),
                                        size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * (0.5 + 2 * torch.rand(N_IMAGES, 1, 1, 1, generator=g))
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def view_stats(v: torch.Tensor) -> dict[str, np.ndarray]:
    """(M, 3, S, S) views in [0, 1] -> per-view channel means/stds and colourfulness."""
    out = {f"mean{c}": v[:, c].mean((1, 2)).numpy() for c in range(3)}
    out.update({f"std{c}": v[:, c].std((1, 2)).numpy() for c in range(3)})
    out["chroma"] = (v.amax(1) - v.amin(1)).mean((1, 2)).numpy()
    return out


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return synthetic_images()


@pytest.fixture(scope="module")
def pil_stats(images) -> dict[str, np.ndarray]:
    """Views of the CPU PIL pipeline (RandomResizedCrop, CIFAR recipe)."""
    pils = [Image.fromarray(images[i].permute(1, 2, 0).numpy()) for i in range(N_IMAGES)]
    vt = ViewTransform(build_crop("rcrop", SIZE), Recipe(), *NO_NORM)
    rng = random.Random(0)
    views = torch.stack([vt(pils[i % N_IMAGES], FULL_BOX, rng) for i in range(N_VIEWS)])
    return view_stats(views)


def gpu_stats(images: torch.Tensor, recipe: Recipe) -> dict[str, np.ndarray]:
    gv = GPUViews(CropPlan("rcrop"), recipe, size=SIZE, mean=NO_NORM[0], std=NO_NORM[1],
                  num_views=1)
    idx = torch.arange(N_VIEWS) % N_IMAGES
    boxes = torch.tensor([FULL_BOX]).repeat(N_VIEWS, 1)  # read by no rcrop draw
    return view_stats(gv(images, idx, boxes, torch.Generator().manual_seed(0))[0])


def test_views_match_pil_pipeline(images, pil_stats):
    p = ks_pvalues(pil_stats, gpu_stats(images, Recipe()))
    assert min(p.values()) > P_MIN, p


@pytest.mark.parametrize("recipe", [Recipe(jitter=(0.4, 0.6, 0.4, 0.1)), Recipe(gray_p=0.3),
                                    Recipe(jitter=(0.4, 0.4, 0.8, 0.1))])
def test_views_ks_detects_a_different_recipe(images, pil_stats, recipe):
    p = ks_pvalues(pil_stats, gpu_stats(images, recipe))
    assert min(p.values()) < P_MIN, p
