"""ccrop: ContrastiveCrop (Peng et al., CVPR 2022) for self-supervised Siamese pretraining."""

from .boxes import BoxStore, box_iou
from .crop import BoxCrop, BoxRandomResizedCrop, ContrastiveCrop, SimCCrop
from .localize import boxes_from_features, heatmaps_from_features, update_boxes

__version__ = "0.1.0"

__all__ = [
    "BoxCrop",
    "BoxRandomResizedCrop",
    "BoxStore",
    "ContrastiveCrop",
    "SimCCrop",
    "box_iou",
    "boxes_from_features",
    "heatmaps_from_features",
    "update_boxes",
    "__version__",
]
