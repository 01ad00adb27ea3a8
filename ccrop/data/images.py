"""Image mode normalisation: any PIL image or tensor -> 8-bit RGB PIL image."""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps


def to_rgb(img: Image.Image | torch.Tensor | np.ndarray, exif: bool = True) -> Image.Image:
    """Convert an image of any common mode to 8-bit RGB.

    Handles grayscale (L, LA, 1), 16/32-bit integer (I;16, I: rescaled by their bit depth),
    float (F: assumed in [0, 1]), CMYK, RGBA/LA (alpha dropped, colour kept), palette (P, with or
    without transparency), EXIF orientation, (C,H,W)/(H,W) tensors and (H,W[,C]) uint8 arrays.

    Args:
        img: the image.
        exif: apply the EXIF orientation tag (photos from cameras and phones).

    Returns:
        PIL image in mode ``RGB``.
    """
    if isinstance(img, torch.Tensor):
        img = TF.to_pil_image(img if img.dim() == 3 or img.dtype != torch.uint8 else img[None])
    elif isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    if not isinstance(img, Image.Image):
        raise ValueError(f"image must be a PIL image, tensor or array, got {type(img).__name__}")
    if exif:
        try:
            if img.getexif().get(0x0112, 1) != 1:
                img = ImageOps.exif_transpose(img)
        except Exception:  # a malformed EXIF block must not lose the image
            pass
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        arr = np.asarray(img).astype(np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.clip(np.asarray(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    return img.convert("RGB")
