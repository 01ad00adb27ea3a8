"""BoxStore: one normalised box per training image, in shared memory, read and written by index.

Box convention (everywhere in ccrop): ``(x0, y0, x1, y1)`` normalised to [0, 1], ``x0 <= x1``,
``y0 <= y1``, pixel extent ``[x0*W, x1*W)``; the full image is ``(0, 0, 1, 1)``. The store lives
in shared memory, so an update made in the main process is seen by every DataLoader worker,
persistent or not, forked or spawned (the official code's boxes go stale with persistent workers).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch

Box = tuple[float, float, float, float]
FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)
_COLUMNS = ("x0", "y0", "x1", "y1")


def check_boxes(
    boxes: Any,
    name: str = "boxes",
    *,
    where: Callable[[int], str] | None = None,
    tol: float = 0.0,
    dtype: torch.dtype = torch.float32,
    error: type[Exception] = ValueError,
) -> torch.Tensor:
    """Validate (N, 4) normalised boxes, all rows at once; the one box validator of ccrop.

    ``boxes``: a tensor (any device), array or nested sequence; ``where(r)`` labels row r in the
    message (default ``"{name} row {r}"``); values at most ``tol`` outside [0, 1] are clamped
    onto it; ``dtype``: the floating dtype checked in and returned. Returns a CPU tensor; raises
    ``error`` for a wrong shape or, naming the first bad row, a NaN/inf, a value outside [0, 1]
    or x1 < x0 / y1 < y0.
    """
    boxes = torch.as_tensor(boxes, dtype=dtype)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise error(f"{name} must have shape (B, 4), got {tuple(boxes.shape)}")
    boxes = boxes.detach().to("cpu")
    inside = (boxes >= -tol) & (boxes <= 1 + tol)  # (N, 4), False for NaN and +-inf
    bad = ~(inside.all(dim=1) & (boxes[:, :2] <= boxes[:, 2:]).all(dim=1))  # (N,)
    if bad.any():
        row = int(bad.to(torch.uint8).argmax())
        label = f"{name} row {row}" if where is None else where(row)
        raise error(f"{label}: {_problem(boxes[row].numpy(), tol)}")
    if tol > 0:  # only values outside [0, 1] change (a -0.0 stays as it is)
        boxes = torch.where((boxes < 0) | (boxes > 1), boxes.clamp(0.0, 1.0), boxes)
    return boxes


def _problem(box: Any, tol: float) -> str:
    """What is wrong with one box (a numpy row: ``str`` gives a value's shortest repr)."""
    for col, v in zip(_COLUMNS, box):
        if not math.isfinite(v):
            return f"value '{v!s}' is not a finite number (column {col})"
    for col, v in zip(_COLUMNS, box):
        if not -tol <= v <= 1 + tol:
            beyond = f" by more than {tol:g}" if tol else ""
            return f"{col}={v!s} is outside [0, 1]{beyond} (normalised x0, y0, x1, y1)"
    lo, hi = (0, 2) if box[2] < box[0] else (1, 3)
    return (f"{_COLUMNS[hi]}={box[hi]!s} is less than {_COLUMNS[lo]}={box[lo]!s} "
            "(need x0 <= x1 and y0 <= y1)")


def check_box(box: Any, name: str = "box") -> Box:
    """One normalised box ``(x0, y0, x1, y1)`` (sequence or (4,) tensor), ``0 <= x0 <= x1 <= 1``
    and the same for y, as Python floats; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(box, torch.Tensor):
        box = box.detach().cpu().tolist()
    try:
        vals = tuple(float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be 4 numbers (x0, y0, x1, y1), got {box!r}") from err
    ok = len(vals) == 4 and 0.0 <= vals[0] <= vals[2] <= 1.0 and 0.0 <= vals[1] <= vals[3] <= 1.0
    if not ok:  # the one box validator words the message
        check_boxes(torch.tensor([vals], dtype=torch.float64), name, dtype=torch.float64,
                    where=lambda _: f"{name} {vals}")
    return vals  # type: ignore[return-value]


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
    """(N, 4) float32 boxes in shared memory, one per dataset index, all ``init_box`` at first
    (default the full image); ``n``: an integer >= 1.

    >>> store = BoxStore(len(dataset))
    >>> store.update(torch.tensor([3, 7]), torch.tensor([[0.1, 0.1, 0.6, 0.8]] * 2))
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
        """Write ``boxes`` (B, 4) at dataset ``indices`` (B,), validating both first (nothing is
        written when any row is invalid); of repeated indices the last occurrence wins."""
        idx = torch.as_tensor(indices).reshape(-1).to("cpu", torch.int64)
        boxes, n = check_boxes(boxes), idx.numel()
        if n != len(boxes) or n and not (int(idx.min()) >= 0 and int(idx.max()) < len(self)):
            got = f" in [{int(idx.min())}, {int(idx.max())}]" if n else ""
            raise ValueError(f"need one index in [0, {len(self) - 1}] per box, got {n} indices"
                             f"{got} for {len(boxes)} boxes")
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
