"""Tests for ccrop.viz: figures are valid, non-flat PNGs; box_grid draws boxes where expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ccrop import viz
from ccrop.localize import heatmaps_from_features, localize

GREEN = (0, 255, 0)
MAGENTA = (255, 0, 255)


def assert_png(path: Path, min_w: int = 200, min_h: int = 150) -> np.ndarray:
    """Open ``path`` as a PNG and check it is big enough and not one flat colour; return pixels."""
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_w and im.height >= min_h, im.size
        arr = np.asarray(im.convert("RGB"))
    colours = np.unique(arr.reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"only {len(colours)} colours: figure is (nearly) flat"
    return arr


def random_images(n: int, size: int = 32, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            for _ in range(n)]  # fmt: skip


def square_image(size: int, rows: tuple[int, int], cols: tuple[int, int]) -> Image.Image:
    """Black image with one white rectangle rows[0]:rows[1], cols[0]:cols[1]."""
    arr = np.zeros((size, size, 3), np.uint8)
    arr[rows[0] : rows[1], cols[0] : cols[1]] = 255
    return Image.fromarray(arr)


class RandomEncoder(torch.nn.Module):
    """Tiny random-init stand-in for a backbone: (B,3,H,W) -> (B,4,H/4,W/4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 4, stride=4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class BrightnessEncoder(torch.nn.Module):
    """Feature map = local mean brightness (so the heatmap is high where the image is bright)."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(2, 1, 1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.mean(1, keepdim=True), 4) * self.gain  # (B, 2, H/4, W/4)


class ListDataset:
    """Map-style dataset of (PIL image, label), optionally with ground-truth boxes."""

    def __init__(self, images: list[Image.Image], gt_boxes: torch.Tensor | None = None) -> None:
        self.images = images
        if gt_boxes is not None:
            self.gt_boxes = gt_boxes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return self.images[i], i % 2


# ----------------------------------------------------------------------------- plot_localization


def loc_inputs(n: int = 2, size: int = 32) -> tuple[list[Image.Image], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    heat = torch.rand(n, size, size, generator=g)
    boxes = torch.tensor([[0.1, 0.2, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0], [0.4, 0.4, 0.6, 0.5]])[:n]
    return random_images(n, size), heat, boxes


def test_plot_localization_writes_png(tmp_path: Path) -> None:
    images, heat, boxes = loc_inputs()
    gt = boxes.flip(0)
    out = viz.plot_localization(images, heat, boxes, tmp_path / "sub" / "loc.png", gt_boxes=gt)
    assert out == tmp_path / "sub" / "loc.png"
    arr = assert_png(out, 800, 300)
    # the predicted-box colour appears somewhere (boxes are drawn)
    green = (np.abs(arr.astype(int) - (0, 230, 118)).sum(axis=2) < 40).sum()
    assert green > 50


def test_plot_localization_layout_follows_arguments(tmp_path: Path) -> None:
    images, heat, boxes = loc_inputs()
    kw = dict(crops_per_image=2, resized_crops=0)
    one = assert_png(viz.plot_localization(images[:1], heat[:1], boxes[:1], tmp_path / "a", **kw),
                     400, 100)  # fmt: skip
    two = assert_png(viz.plot_localization(images, heat, boxes, tmp_path / "b.png", **kw))
    wide = assert_png(viz.plot_localization(images[:1], heat[:1], boxes[:1], tmp_path / "c.png",
                                            crops_per_image=2, resized_crops=1), 400, 100)
    assert one.shape[1] < wide.shape[1]  # resized crops add columns
    assert one.shape[0] < two.shape[0]  # one row per image
    assert (tmp_path / "a.png").exists()  # suffix added


def test_plot_localization_seed_controls_crops(tmp_path: Path) -> None:
    images, heat, boxes = loc_inputs(1)
    kw = dict(resized_crops=0)
    a = assert_png(viz.plot_localization(images, heat, boxes, tmp_path / "a.png", seed=1, **kw))
    b = assert_png(viz.plot_localization(images, heat, boxes, tmp_path / "b.png", seed=1, **kw))
    c = assert_png(viz.plot_localization(images, heat, boxes, tmp_path / "c.png", seed=2, **kw))
    assert np.array_equal(a, b)
    assert a.shape == c.shape and not np.array_equal(a, c)


@pytest.mark.parametrize(
    "change",
    [
        dict(boxes=torch.tensor([[0.5, 0.0, 0.2, 1.0]] * 2)),  # x0 > x1
        dict(gt_boxes=torch.full((2, 4), 1.5)),  # outside [0, 1]
        dict(alpha=0.0),
    ],
)
def test_plot_localization_rejects_bad_input(tmp_path: Path, change: dict) -> None:
    images, heat, boxes = loc_inputs()
    kw = dict(images=images, heatmaps=heat, boxes=boxes, path=tmp_path / "x.png") | change
    with pytest.raises(ValueError):
        viz.plot_localization(**kw)
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- localization_figure


def test_localization_figure_random_encoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = RandomEncoder().train()
    ds = ListDataset(random_images(3, 32))
    out = viz.localization_figure(enc, ds, [0, 1, 2], tmp_path / "loc.png", mean=(0.5,) * 3,
                                  std=(0.25,) * 3, crops_per_image=2, resized_crops=1)  # fmt: skip
    assert_png(out, 600, 400)
    assert enc.training  # train mode restored
    assert all(p.grad is None for p in enc.parameters())  # no backward pass, no grads


def test_localization_figure_boxes_follow_the_encoder(tmp_path, monkeypatch) -> None:
    captured: dict = {}

    def fake_plot(images, heatmaps, boxes, path, **kw):
        captured.update(images=images, heat=heatmaps, boxes=boxes, **kw)
        return Path(path)

    monkeypatch.setattr(viz, "plot_localization", fake_plot)
    imgs = [square_image(32, (8, 16), (16, 28)), square_image(32, (20, 32), (0, 12))]
    imgs.append(random_images(1, 32)[0])  # colour noise: its map depends on the normalisation
    gt = torch.tensor([[0.5, 0.25, 0.875, 0.5], [0.0, 0.625, 0.375, 1.0], [0.0, 0.0, 1.0, 1.0]])
    enc = BrightnessEncoder().eval()
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.9])
    viz.localization_figure(enc, ListDataset(imgs, gt), [1, 0, 2], tmp_path / "x.png",
                            threshold=0.3, mean=mean.tolist(), std=std.tolist())  # fmt: skip
    assert not enc.training
    heat, boxes = captured["heat"], captured["boxes"]
    assert heat.shape == (3, 32, 32) and heat.min() >= 0 and heat.max() <= 1
    torch.testing.assert_close(captured["gt_boxes"], gt[[1, 0, 2]])  # dataset.gt_boxes by index
    assert captured["row_labels"] == ["index 1", "index 0", "index 2"]
    x = torch.stack([torch.from_numpy(np.asarray(imgs[i])).permute(2, 0, 1) / 255
                     for i in (1, 0, 2)])  # fmt: skip
    x = (x - mean[:, None, None]) / std[:, None, None]  # (3, 3, 32, 32) normalised by hand
    fmap = enc.forward_features(x).detach()
    torch.testing.assert_close(heat, heatmaps_from_features(fmap, (32, 32))[0])
    torch.testing.assert_close(boxes, localize(fmap, (32, 32), 0.3)[0])
    # the box encloses the bright rectangle and is not the whole image
    g = gt[[1, 0]]
    b = boxes[:2]
    assert (b[:, :2] <= g[:, :2] + 1e-6).all() and (b[:, 2:] >= g[:, 2:] - 1e-6).all()
    assert ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) < 0.6).all()


@pytest.mark.parametrize("min_confidence", [0.0, 0.2, 0.9])
def test_localization_figure_boxes_and_fallbacks_are_localizes(tmp_path, monkeypatch,
                                                              min_confidence) -> None:
    captured: dict = {}
    monkeypatch.setattr(viz, "plot_localization",
                        lambda images, heatmaps, boxes, path, **kw: captured.update(
                            heat=heatmaps, boxes=boxes, **kw) or Path(path))
    imgs = [square_image(32, (8, 16), (16, 28))] + random_images(3, 32, seed=4)
    enc = BrightnessEncoder().eval()
    rule = dict(heatmap="contrast", polarity="auto", center_prior=1.0)
    viz.localization_figure(enc, ListDataset(imgs), [0, 1, 2, 3], tmp_path / "x.png",
                            threshold=0.5, mode="quantile", region="peak", mean=(0.5,) * 3,
                            std=(0.25,) * 3, min_confidence=min_confidence, **rule)
    x = torch.stack([torch.from_numpy(np.asarray(im)).permute(2, 0, 1) / 255 for im in imgs])
    fmap = enc.forward_features((x - 0.5) / 0.25).detach()
    found = localize(fmap, (32, 32), 0.5, "quantile", region="peak",
                     min_confidence=min_confidence, **rule)
    torch.testing.assert_close(captured["heat"], heatmaps_from_features(fmap, (32, 32), **rule)[0])
    torch.testing.assert_close(captured["boxes"], found.boxes)
    assert torch.equal(captured["degenerate"], found.degenerate)
    fell = f"{int(found.fallback.sum())}/4 fell back to the full image"
    assert (fell in captured["title"]) == (min_confidence > 0)
    if min_confidence == 0.9:
        assert found.fallback.any()  # the case is not blind


def test_localization_figure_sizes_and_errors(tmp_path: Path) -> None:
    enc = RandomEncoder()
    mixed = ListDataset(random_images(1, 32) + random_images(1, 40, seed=1))
    with pytest.raises(ValueError, match="image_size"):
        viz.localization_figure(enc, mixed, [0, 1], tmp_path / "a.png")
    assert_png(viz.localization_figure(enc, mixed, [0, 1], tmp_path / "b.png", image_size=32,
                                       resized_crops=0), 400, 300)  # fmt: skip


# ----------------------------------------------------------------------------- centre law


def test_plot_centre_distribution_writes_png(tmp_path: Path) -> None:
    out = viz.plot_centre_distribution(tmp_path / "c.png", alphas=(0.1,), n=300, size=64)
    assert_png(out, 300, 500)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.6, 1.0, 2.5, 7.0])
def test_centre_law_panel_draws_the_beta_density_on_the_box(alpha: float) -> None:
    from scipy import stats

    ax = viz._figure(4, 3).add_subplot(1, 1, 1)
    lo, hi = 0.2, 0.7
    viz._marginal_panel(ax, np.random.default_rng(0).uniform(lo, hi, 500), lo, hi, alpha, None)
    (curve,) = [ln for ln in ax.lines if ln.get_label().startswith("drawn centre: Beta")]
    x, y = np.asarray(curve.get_xdata()), np.asarray(curve.get_ydata())
    u = (x - lo) / (hi - lo)  # the density of x = lo + (hi - lo) * u, u ~ Beta(alpha, alpha)
    np.testing.assert_allclose(y, stats.beta.pdf(u, alpha, alpha) / (hi - lo), rtol=1e-9)
    assert x.min() > lo and x.max() < hi


# ----------------------------------------------------------------------------- box_grid


def test_box_grid_shape_dtype_and_pixels() -> None:
    images = torch.zeros(3, 3, 16, 16)
    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0], [0.5, 0.0, 0.5, 0.5]])
    grid = viz.box_grid(images, boxes, nrow=3, padding=0)
    assert grid.shape == (3, 16, 48) and grid.dtype == torch.uint8
    first = grid[:, :, :16].permute(1, 2, 0)  # (H, W, 3) of image 0
    assert tuple(first[4, 4].tolist()) == GREEN and tuple(first[11, 11].tolist()) == GREEN
    assert tuple(first[4, 8].tolist()) == GREEN  # top edge
    assert first[8, 8].sum() == 0 and first[2, 2].sum() == 0 and first[12, 12].sum() == 0
    second = grid[:, :, 16:32].permute(1, 2, 0)  # full box: the image border
    assert tuple(second[0, 0].tolist()) == GREEN and tuple(second[15, 15].tolist()) == GREEN
    third = grid[:, :, 32:].permute(1, 2, 0)  # zero-width box: a vertical line at x = 8
    assert tuple(third[0, 8].tolist()) == GREEN and tuple(third[7, 8].tolist()) == GREEN
    assert third[9, 8].sum() == 0


def test_box_grid_gt_upscale_padding_and_gray() -> None:
    images = torch.full((2, 1, 8, 8), 0.5)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 2)
    gt = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2)
    grid = viz.box_grid(images, boxes, gt_boxes=gt, nrow=1, upscale=2, padding=2)
    assert grid.shape == (3, 2 * (16 + 2) + 2, 16 + 4)  # two rows of 16x16 images
    img = grid[:, 2:18, 2:18].permute(1, 2, 0)  # first image, (16, 16, 3)
    assert tuple(img[0, 0].tolist()) == GREEN and tuple(img[7, 7].tolist()) == GREEN
    assert tuple(img[8, 8].tolist()) == MAGENTA and tuple(img[15, 15].tolist()) == MAGENTA
    assert tuple(img[4, 12].tolist()) == (128, 128, 128)  # untouched grey pixel


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4), st.integers(4, 24))
def test_box_grid_draws_only_on_the_box_outline(coords: list[float], side: int) -> None:
    x0, x1 = sorted(coords[:2])
    y0, y1 = sorted(coords[2:])
    box = torch.tensor([[x0, y0, x1, y1]])  # float32, as stored everywhere
    x0, y0, x1, y1 = (float(v) for v in box[0])
    grid = viz.box_grid(torch.zeros(1, 3, side, side), box, padding=0)
    green = (grid.permute(1, 2, 0) == torch.tensor(GREEN, dtype=torch.uint8)).all(dim=2)
    ys, xs = torch.nonzero(green, as_tuple=True)
    assert ys.numel() > 0
    # first / last pixel column and row of the extent [x0*W, x1*W), kept inside the image
    lo_x, lo_y = min(int(x0 * side), side - 1), min(int(y0 * side), side - 1)
    hi_x = max(min(int(np.ceil(x1 * side)) - 1, side - 1), lo_x)
    hi_y = max(min(int(np.ceil(y1 * side)) - 1, side - 1), lo_y)
    assert green[lo_y, lo_x] and green[hi_y, hi_x]  # both corners drawn
    assert xs.min() == lo_x and xs.max() == hi_x and ys.min() == lo_y and ys.max() == hi_y
    on_edge = (xs == lo_x) | (xs == hi_x) | (ys == lo_y) | (ys == hi_y)
    assert on_edge.all()  # width 1: nothing inside the box is painted


def test_box_grid_rejects_bad_boxes() -> None:
    with pytest.raises(ValueError, match="x1=0.5 is less than x0=0.6"):
        viz.box_grid(torch.zeros(1, 3, 16, 16), torch.tensor([[0.6, 0.0, 0.5, 1.0]]))


def test_plot_epoch_times_writes_a_png_and_rejects_bad_input(tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "plot_gpu_check.py"
    spec = importlib.util.spec_from_file_location("plot_gpu_check", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plot_epoch_times = module.plot_epoch_times

    out = plot_epoch_times({"official": 66.0, "cpu path": 4.3, "gpu path": 3.1},
                           tmp_path / "speed", "title", reference="official", target=2.5)
    assert out.suffix == ".png" and out.stat().st_size > 5000
    with pytest.raises(ValueError, match="times"):
        plot_epoch_times({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="> 0"):
        plot_epoch_times({"a": 0.0}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="reference"):
        plot_epoch_times({"a": 1.0}, tmp_path / "x.png", reference="b")
