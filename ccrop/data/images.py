"""Image mode normalisation: any PIL image or tensor -> upright 8-bit RGB PIL image."""

from __future__ import annotations

import struct

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

#: What reading a malformed EXIF block raises; such an image is used as stored.
EXIF_ERRORS = (OSError, SyntaxError, ValueError, TypeError, LookupError, ArithmeticError,
               struct.error)
#: EXIF orientation -> the transposition that makes the image upright (as ``exif_transpose``).
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}


def orientation(img: Image.Image) -> int:
    """The EXIF orientation tag, 1 when absent, unknown or unreadable."""
    try:
        value = img.getexif().get(0x0112, 1)
    except EXIF_ERRORS:
        return 1
    return value if value in TRANSPOSE else 1


def upright(img: Image.Image) -> tuple[Image.Image, int]:
    """The image with its EXIF orientation applied, and that orientation (1: none)."""
    turn = orientation(img)
    return (img if turn == 1 else img.transpose(TRANSPOSE[turn])), turn


def to_rgb(img: Image.Image | torch.Tensor | np.ndarray, exif: bool = True) -> Image.Image:
    """A PIL image of any mode, a (C, H, W)/(H, W) tensor or an (H, W[, C]) uint8 array as 8-bit
    RGB: 16/32-bit integers rescaled by their bit depth, float (F) taken in [0, 1], alpha dropped
    keeping the colour, CMYK converted; ``exif`` applies the EXIF orientation."""
    if isinstance(img, torch.Tensor):
        img = TF.to_pil_image(img if img.dim() == 3 or img.dtype != torch.uint8 else img[None])
    elif isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    if exif:
        img = upright(img)[0]
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
