"""A run's datasets and their defaults: ``RunData`` (plain data) and ``build_data``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from ..config import Config, ConfigError
from .images import to_rgb
from .registry import DATASET_INFO, build_dataset


@dataclass
class RunData:
    """The datasets of a run and their defaults (plain data; evaluation: ``Evaluator``);
    ``make_split(name)`` builds another split of the same dataset."""

    train: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    num_classes: int
    gt_boxes: torch.Tensor | None
    has_labels: bool
    train_split: str
    make_split: Callable[[str], Any]
    _splits: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Any:
        """A dataset split, built once (the pretraining split is reused)."""
        if name == self.train_split:
            return self.train
        if name not in self._splits:
            self._splits[name] = self.make_split(name)
        return self._splits[name]

    def bad_image_paths(self) -> list[str]:
        """Images skipped as unreadable (folder datasets with ``data.on_bad_image=skip``)."""
        return self.train.skipped_paths()

    def report_bad_images(self) -> None:
        """One warning line per split whose skipped unreadable images grew since the last call."""
        for name, dataset in [(self.train_split, self.train), *self._splits.items()]:
            dataset.report_skipped(name)

    def preview_images(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float images in [0, 1] for figures."""
        size = (self.image_size, self.image_size)
        imgs = [np.asarray(to_rgb(self.train[i][0]).resize(size)) for i in idx.tolist()]
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


def _dataset(cfg: Config, split: str) -> Any:
    d = cfg.data
    kwargs = dict(d.dataset_kwargs)
    if split == d.test_split and d.test_num_images is not None:
        kwargs["num_images"] = d.test_num_images
    if d.dataset in ("imagefolder", "unlabeled-folder", "imagenet200"):
        kwargs.setdefault("on_bad_image", d.on_bad_image)
    try:
        return build_dataset(d.dataset, d.root, split, d.download, **kwargs)
    except TypeError as err:
        raise ConfigError(f"data.dataset_kwargs do not fit dataset {d.dataset!r}: {err}") from None


def build_data(cfg: Config) -> RunData:
    """Build the pretraining dataset and its defaults (mean, std, size, classes, gt boxes)."""
    d = cfg.data
    if d.dataset not in DATASET_INFO:
        raise ConfigError(f"data.dataset must be one of {sorted(DATASET_INFO)}, got {d.dataset!r}")
    info = DATASET_INFO[d.dataset]
    train = _dataset(cfg, d.train_split)
    if d.batch_size > len(train):
        raise ConfigError(f"data.batch_size ({d.batch_size}) is larger than the dataset "
                          f"({len(train)} images)")
    gt = train.gt_boxes
    return RunData(train, tuple(d.mean or info["mean"]), tuple(d.std or info["std"]),
                   # generated sets know their size (dataset_kwargs.image_size=64)
                   int(d.image_size or train.image_size or info["image_size"]),
                   int(info["num_classes"]), None if gt is None else torch.as_tensor(gt).float(),
                   len(train.targets) > 0 and int(np.min(train.targets)) >= 0,
                   d.train_split, partial(_dataset, cfg))
