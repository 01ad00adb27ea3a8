"""BoxStore: one normalised box per training image, in shared memory, read and written by index.

Box convention (everywhere in ccrop): ``(x0, y0, x1, y1)`` normalised to [0, 1], ``x0 <= x1``,
``y0 <= y1``; ``x1 = 1`` is the right image edge (pixel extent ``[x0*W, x1*W)``); the full image
is ``(0, 0, 1, 1)``.

The official code hands boxes to DataLoader workers only because workers are re-created every
epoch; with ``persistent_workers=True`` they silently go stale. Here the tensor lives in shared
memory, so an update made in the main process is seen by every worker, persistent or not, forked
or spawned (PyTorch pickles shared tensors as handles).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch

from .crop import FULL_BOX, check_box


def check_boxes(boxes: torch.Tensor, name: str = "boxes") -> torch.Tensor:
    """Validate a (B, 4) tensor of normalised boxes and return it as float32 on the CPU.

    Raises:
        ValueError: wrong shape, NaN/inf, values outside [0, 1] or x0 > x1 / y0 > y1.
    """
    boxes = torch.as_tensor(boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (B, 4), got {tuple(boxes.shape)}")
    boxes = boxes.detach().to("cpu", torch.float32)
    if not torch.isfinite(boxes).all():
        rows = int((~torch.isfinite(boxes)).any(dim=1).sum())
        raise ValueError(f"{name} must be finite; found NaN/inf in {rows} rows")
    if ((boxes < 0) | (boxes > 1)).any():
        raise ValueError(f"{name} values must lie in [0, 1] (normalised x0, y0, x1, y1)")
    if (boxes[:, 0] > boxes[:, 2]).any() or (boxes[:, 1] > boxes[:, 3]).any():
        raise ValueError(f"{name} need x0 <= x1 and y0 <= y1 in every row")
    return boxes


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area share of each box: (B, 4) -> (B,)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of paired boxes: (B, 4), (B, 4) -> (B,). Empty union gives 0."""
    lo = torch.maximum(a[:, :2], b[:, :2])  # (B, 2)
    hi = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (hi - lo).clamp_min(0).prod(dim=1)
    union = box_area(a) + box_area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))


class BoxStore:
    """N x 4 float32 boxes in shared memory, one per dataset index.

    Args:
        n: number of images, an integer >= 1 (a float such as 2.5 is refused).
        init_box: box every entry starts from (default the full image).

    Example:
        >>> store = BoxStore(len(dataset))
        >>> store.update(torch.tensor([3, 7]), torch.tensor([[0.1, 0.1, 0.6, 0.8]] * 2))
        >>> store[3]   # tensor([0.1, 0.1, 0.6, 0.8])
    """

    def __init__(self, n: int, init_box: Sequence[float] = FULL_BOX) -> None:
        try:  # an int, numpy or 0-d integer tensor; never a float (2.5 would be truncated)
            count = -1 if isinstance(n, bool) else operator.index(n)
        except TypeError:
            count = -1
        if count < 1:
            raise ValueError(f"n (number of images) must be an integer >= 1, got {n!r}")
        box = torch.tensor(check_box(init_box, "init_box"), dtype=torch.float32)
        self._boxes = box.repeat(count, 1).share_memory_()  # (N, 4)
        self._version = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return self._boxes.shape[0]

    def __getitem__(self, index: Any) -> torch.Tensor:
        """Box(es) at ``index``: an int gives (4,), an index tensor/list gives (B, 4) (copies)."""
        return self._boxes[index].clone()

    @property
    def boxes(self) -> torch.Tensor:
        """(N, 4) shared tensor (read-only by convention; write through ``update``)."""
        return self._boxes

    @property
    def version(self) -> int:
        """Number of updates so far; lets workers and tests see that an update landed."""
        return int(self._version[0])

    def update(self, indices: Any, boxes: torch.Tensor) -> None:
        """Write ``boxes`` (B, 4) at dataset ``indices`` (B,), validating both first.

        Nothing is written when any row is invalid. Repeated indices (DistributedSampler padding)
        are allowed; the last occurrence wins.
        """
        idx = torch.as_tensor(indices).reshape(-1).to("cpu", torch.int64)
        boxes = check_boxes(boxes)
        if idx.numel() != boxes.shape[0]:
            raise ValueError(
                f"indices ({idx.numel()}) and boxes ({boxes.shape[0]}) differ in length")
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self) - 1}], got "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        self._boxes[idx] = boxes
        self._version += 1

    def fill(self, box: Sequence[float]) -> None:
        """Set every entry to ``box`` (e.g. the fixed SimCCrop centre box)."""
        self._boxes.copy_(torch.tensor(check_box(box), dtype=torch.float32).expand_as(self._boxes))
        self._version += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain tensors only (loadable with ``torch.load(weights_only=True)``)."""
        return {"boxes": self._boxes.clone(), "version": self._version.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore boxes saved by ``state_dict``; the length must match."""
        boxes = check_boxes(state["boxes"], "state['boxes']")
        if boxes.shape[0] != len(self):
            raise ValueError(f"state['boxes'] holds {boxes.shape[0]} boxes, store has {len(self)}")
        self._boxes.copy_(boxes)
        self._version.copy_(torch.as_tensor(state.get("version", self._version)).reshape(1))
