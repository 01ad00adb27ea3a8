"""ContrastiveCrop and SimCCrop as torchvision v2 transforms, and a BoxStore-backed dataset."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import Transform, query_size
from torchvision.transforms.v2 import functional as F

from .boxes import BoxStore
from .crop import Box, CropPlan, _check_size, as_rng, check_box
from .data.boxed import unpack_item
from .data.images import to_rgb

BOX_KEY = "ccrop_box"  # dict key of a normalised (x0, y0, x1, y1) object box in a sample
_ROTATED = ("XYWHR", "CXCYWHR", "XYXYXYXY")
_MISSING = (
    "ContrastiveCrop needs the object box in the sample: a tv_tensors.BoundingBoxes in pixels "
    "(e.g. crop((image, BoundingBoxes([[x0, y0, x1, y1]], format='XYXY', canvas_size=(H, W))))) "
    f"or a normalised (x0, y0, x1, y1) under the dict key {BOX_KEY!r} "
    f"(e.g. crop({{'image': image, {BOX_KEY!r}: (0.1, 0.2, 0.8, 0.9)}})). "
    "SimCCrop needs no box."
)


class _NormalisedBox:
    """Leaf holding the ``"ccrop_box"`` value while the transform runs, so that pytree keeps a
    tuple of 4 floats together and v2's pure-tensor heuristic never mistakes it for an image."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _wrap_box(sample: Any) -> Any:
    """Copy of ``sample`` (nested dicts, lists, tuples) with every ``"ccrop_box"`` entry wrapped
    in a ``_NormalisedBox``; other objects are returned as they are."""
    if isinstance(sample, dict):
        out = copy.copy(sample)  # keeps the dict type and key order
        for key, value in sample.items():
            out[key] = _NormalisedBox(value) if key == BOX_KEY else _wrap_box(value)
        return out
    if type(sample) in (list, tuple):
        return type(sample)(_wrap_box(v) for v in sample)
    return sample


def object_box(boxes: Sequence[tv_tensors.BoundingBoxes]) -> Box:
    """The object box of a sample: the union of all its bounding boxes, normalised.

    Args:
        boxes: one or more ``BoundingBoxes`` of one canvas (any format; rotated boxes count by
            their corners), K boxes in all (K >= 1).

    Returns:
        ``(x0, y0, x1, y1)`` in [0, 1], the enclosing box clamped to the canvas.

    Raises:
        ValueError: no box at all, or NaN / infinite coordinates.
    """
    corners = []
    for bb in boxes:
        fmt = bb.format.value
        target = "XYXYXYXY" if fmt in _ROTATED else "XYXY"
        xy = F.convert_bounding_box_format(bb, new_format=target).as_subclass(torch.Tensor)
        h, w = bb.canvas_size
        scale = torch.tensor([w, h], dtype=torch.float64)
        corners.append(xy.reshape(-1, 2).to(torch.float64) / scale)  # (K * corners, 2) x, y
    xy = torch.cat(corners) if corners else torch.empty(0, 2)
    if xy.shape[0] == 0:
        raise ValueError("the sample's BoundingBoxes hold no box; " + _MISSING)
    if not torch.isfinite(xy).all():
        raise ValueError("BoundingBoxes hold NaN or infinite coordinates")
    box = torch.cat([xy.amin(dim=0), xy.amax(dim=0)]).clamp(0.0, 1.0)  # (4,) x0, y0, x1, y1
    return check_box(box, "BoundingBoxes (union, normalised)")


class ContrastiveCrop(Transform):
    """ContrastiveCrop (Peng et al., CVPR 2022) as a torchvision v2 transform.

    Draws one crop with ``ccrop.crop.CropPlan`` (the same law as ``ccrop.ContrastiveCrop``) and
    applies it with v2's ``resized_crop`` to every image, video, mask, keypoint and bounding-box
    input of the sample, so it composes with any v2 pipeline::

        crop = v2.Compose([ContrastiveCrop(32), v2.RandomHorizontalFlip(), v2.ToImage()])
        image, boxes = crop(image, boxes)   # PIL, (C, H, W) tensor or tv_tensors.Image

    The object box (where the crop centre is drawn) comes from the sample:

    * a ``"ccrop_box"`` dict entry, normalised ``(x0, y0, x1, y1)`` (4-tuple or (4,) tensor),
      returned unchanged (it describes the input image); it wins over bounding boxes. Other v2
      transforms treat the first pure tensor of a sample as the image: with a plain-tensor image,
      give this box as a tuple (or the image as ``tv_tensors.Image``, or first in the dict); or
    * the ``tv_tensors.BoundingBoxes`` of the sample (any format, pixels): the object box is the
      union of all of them. They are cropped and resized with the image and clamped as v2 does.

    Randomness: each call draws one seed from torch's default CPU generator (as other v2
    transforms draw from torch) and samples the crop from ``random.Random(seed)``; so
    ``torch.manual_seed`` reproduces a call, and DataLoader workers (seeded by torch) differ.

    Args:
        size: output side (int) or ``(h, w)``.
        scale: area fraction range of the whole image, ``0 < lo <= hi <= 1``.
        ratio: aspect ratio (w/h) range.
        alpha: Beta(alpha, alpha) concentration of the crop centre in the box (paper: 0.6
            ImageNet, 0.1 small sets).
        full_box_guard: box area share from which the position is uniform as in RRC (None: the
            paper exactly); also makes a full-image box (warm-up) behave as RandomResizedCrop.
        placement: ``"paper"`` or ``"official"`` (``ccrop.crop`` module docstring).
        interpolation: resize interpolation of images and videos (masks use nearest).
        antialias: antialiased downscaling of tensor images, as in v2.

    ``make_params(flat_inputs)`` returns the drawn ``top, left, height, width`` (integer pixels,
    inside the image) and the normalised ``box`` used.
    """

    _transformed_types = (*Transform._transformed_types, _NormalisedBox)

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        alpha: float = 0.6,
        full_box_guard: float | None = 0.95,
        placement: str = "paper",
        interpolation: InterpolationMode | int = InterpolationMode.BILINEAR,
        antialias: bool | None = True,
    ) -> None:
        super().__init__()
        self.size = list(_check_size(size))
        self.plan = CropPlan("ccrop", tuple(scale), tuple(ratio), alpha, full_box_guard,
                             placement)
        self.interpolation, self.antialias = interpolation, antialias

    def forward(self, *inputs: Any) -> Any:
        """Crop a sample (any nesting of tuples, lists and dicts); see the class docstring."""
        return super().forward(_wrap_box(inputs if len(inputs) > 1 else inputs[0]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw the crop of one sample.

        Args:
            flat_inputs: the sample's inputs to transform (images, boxes, masks, ...).

        Returns:
            ``{"top", "left", "height", "width"}`` integer pixels and ``"box"`` (normalised).
        """
        height, width = query_size(flat_inputs)
        box = self._object_box(flat_inputs) if self.plan.localizes else self.plan.fixed_box
        rng = as_rng(torch.default_generator)  # one seed from torch's global RNG
        top, left, h, w = self.plan.sample(height, width, box, rng)
        return dict(top=top, left=left, height=h, width=w, box=box)

    def _object_box(self, flat_inputs: list[Any]) -> Box:
        given = [x for x in flat_inputs if isinstance(x, _NormalisedBox)]
        if len(given) > 1:
            raise ValueError(f"the sample holds {len(given)} {BOX_KEY!r} entries; expected one")
        if given:
            return check_box(given[0].value, BOX_KEY)
        boxes = [x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes)]
        if not boxes:
            raise ValueError(_MISSING)
        return object_box(boxes)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Apply the drawn crop to one input; the normalised box passes through unchanged."""
        if isinstance(inpt, _NormalisedBox):
            return inpt.value
        return self._call_kernel(F.resized_crop, inpt, top=params["top"], left=params["left"],
                                 height=params["height"], width=params["width"], size=self.size,
                                 interpolation=self.interpolation, antialias=self.antialias)

    def extra_repr(self) -> str:
        p = self.plan
        return (f"size={self.size}, scale={p.scale}, ratio={tuple(round(r, 4) for r in p.ratio)}"
                f", alpha={p.alpha}, full_box_guard={p.guard}, placement={p.placement!r}, "
                f"interpolation={self.interpolation}, antialias={self.antialias}")


class SimCCrop(ContrastiveCrop):
    """SimCCrop (the paper's fixed centre box (0.25, 0.25, 0.75, 0.75)) as a v2 transform.

    Needs no box in the sample (any box there is cropped along but not read). Arguments as
    ``ContrastiveCrop``; no guard (the fixed box covers a quarter of the image).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.2, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        alpha: float = 0.6,
        placement: str = "paper",
        interpolation: InterpolationMode | int = InterpolationMode.BILINEAR,
        antialias: bool | None = True,
    ) -> None:
        super().__init__(size, scale, ratio, alpha, None, placement, interpolation, antialias)
        self.plan = CropPlan("simccrop", tuple(scale), tuple(ratio), alpha, None, placement)


def _image_size(img: Any) -> tuple[int, int]:
    h, w = F.get_size(img)
    return int(h), int(w)


class BoxedSamples(Dataset):
    """Feed ``(image, BoundingBoxes)`` samples built from a ``BoxStore`` to any v2 transform.

    Item ``i`` reads ``store[i]`` at access time (the store is in shared memory, so persistent
    DataLoader workers see every box update), turns it into a one-box XYXY ``BoundingBoxes`` in
    pixels of image ``i`` and calls ``transform((image, boxes))`` ``num_views`` times.

    Args:
        dataset: map-style dataset of images or ``(image, label, ...)`` tuples / dicts (PIL,
            tensor, ``tv_tensors.Image``; numpy arrays are converted to RGB PIL).
        store: ``BoxStore`` with ``len(dataset)`` normalised boxes.
        transform: v2 transform of an ``(image, BoundingBoxes)`` sample, e.g. a ``v2.Compose``
            starting with ``ContrastiveCrop``; it returns ``(view, boxes)`` (or just the view).
        num_views: V (>= 1) independent views of the same box.

    Returns (per item):
        ``(index, [view_1, ..., view_V], label)``: the views are the transformed images (the
        transformed boxes are dropped); label is -1 when the dataset has none.
    """

    def __init__(self, dataset: Dataset, store: BoxStore, transform: Callable,
                 num_views: int = 2) -> None:
        if len(store) != len(dataset):
            raise ValueError(f"store has {len(store)} boxes but the dataset has {len(dataset)}")
        if int(num_views) < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.dataset, self.store, self.transform = dataset, store, transform
        self.num_views = int(num_views)

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int) -> tuple[Any, tv_tensors.BoundingBoxes, int]:
        """``(image, boxes, label)`` of item ``index`` before the transform; boxes is (1, 4)."""
        img, label = unpack_item(self.dataset[index])
        if isinstance(img, np.ndarray):
            img = to_rgb(img)
        h, w = _image_size(img)
        box = self.store.boxes[index]  # (4,) read now: sees the latest update
        pixels = box * torch.tensor([w, h, w, h], dtype=box.dtype)  # normalised -> pixels
        boxes = tv_tensors.BoundingBoxes(pixels[None], format="XYXY", canvas_size=(h, w))
        return img, boxes, label

    def __getitem__(self, index: int) -> tuple[int, list[Any], int]:
        img, boxes, label = self.sample(index)
        views = []
        for _ in range(self.num_views):
            out = self.transform((img, boxes))
            views.append(out[0] if isinstance(out, (tuple, list)) else out)
        return int(index), views, label
