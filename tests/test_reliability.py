"""Fault injection: non-finite losses, bad images, degenerate heatmaps, bad config, full disks,
malicious checkpoints, and property tests of the crop law, the localization and the box store
(docs/reliability.md, items 3-8; kill-and-resume and checkpoints are in test_resume.py)."""

import errno
import gc
import json
import logging
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

import ccrop.engine as engine
import ccrop.files as files_mod
from ccrop import BoxStore, ContrastiveCrop, cli
from ccrop.build import build_run
from ccrop.checkpoint import (
    CheckpointError,
    ckpt_path,
    latest_valid_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ccrop.config import load_config
from ccrop.crop import sample_crop_params_batch
from ccrop.data.boxed import BoxedDataset
from ccrop.data.folder import BadImageError, ImageFolder
from ccrop.data.views import build_view_transform
from ccrop.engine import NonFiniteLossError
from ccrop.localize import boxes_from_features, heatmaps_from_features, localize, update_boxes

pytestmark = pytest.mark.filterwarnings("ignore:.*the whole image")

TINY = [
    "data.dataset=synthetic", "data.dataset_kwargs.num_images=32",
    "data.dataset_kwargs.image_size=16", "data.image_size=16", "data.batch_size=16",
    "data.num_workers=0", "model.width=4", "method.name=simclr", "method.params.proj_hidden=16",
    "method.params.proj_dim=8", "train.epochs=4", "crop.warmup_epochs=1", "crop.loc_interval=1",
    "crop.loc_batch_size=32", "train.knn_every=0", "train.tensorboard=false",
    "train.progress=false",
]  # fmt: skip


def overrides(out: Path, *extra: str) -> list[str]:
    return [*TINY, f"train.out_dir={out}", *extra]


def tiny(out: Path, *extra: str):
    return load_config(None, overrides(out, *extra))


def run_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of ``ccrop <argv>`` run in this process."""
    code = cli.main(list(argv))
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


def assert_one_line_error(code: int, err: list[str], *needles: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert len(err) == 1 and err[0].startswith("ccrop: error: "), err
    assert "Traceback" not in err[0]
    for needle in needles:
        assert needle in err[0], (needle, err[0])


# ----------------------------------------------------------------------------- 3. numerics


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


class Poison(nn.Module):
    """Wraps the method; at chosen global steps makes the loss NaN or only its gradient inf, and
    keeps a copy of the parameters seen at every step."""

    def __init__(self, method: nn.Module, steps: set[int], kind: str) -> None:
        super().__init__()
        self.method, self.steps, self.kind = method, steps, kind
        self.params_at: list[list[torch.Tensor]] = []

    def forward(self, x1, x2):
        self.params_at.append([p.detach().clone() for p in self.method.parameters()])
        out = self.method(x1, x2)
        if len(self.params_at) - 1 in self.steps:
            loss = out["loss"]
            loss = loss * float("nan") if self.kind == "loss" else _InfGrad.apply(loss)
            out = {**out, "loss": loss}
        return out


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in list_checkpoints(run_dir)}


@pytest.mark.parametrize("kind", ["loss", "grad"])
@pytest.mark.slow  # trains
def test_non_finite_loss_or_gradient_stops_naming_epoch_and_step(tmp_path, monkeypatch, kind):
    run = build_run(tiny(tmp_path))
    run.model = Poison(run.model, {5}, kind)  # 2 steps per epoch: epoch 3, step 2
    real, before = engine.train_epoch, {}

    def spy(r, epoch):
        if epoch == 2:
            before.update(_snapshot(tmp_path))
        return real(r, epoch)

    monkeypatch.setattr(engine, "train_epoch", spy)
    with pytest.raises(NonFiniteLossError, match="epoch 3, step 2"):
        engine.fit(run)
    assert sorted(before) == ["ckpt-epoch00001.pt", "ckpt-epoch00002.pt"]
    assert _snapshot(tmp_path) == before  # the last good checkpoints are untouched
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert sum('"event": "epoch"' in ln for ln in lines) == 2
    state = latest_valid_checkpoint(tmp_path)[1]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("kind", ["loss", "grad"])
@pytest.mark.slow  # trains
def test_skip_step_skips_and_counts_non_finite_steps(tmp_path, kind):
    run = build_run(tiny(tmp_path, "train.on_nonfinite=skip_step"))
    poison = Poison(run.model, {1, 4}, kind)
    run.model = poison
    summary = engine.fit(run)
    assert summary["skipped_steps"] == 2 and summary["epochs"] == 4
    assert latest_valid_checkpoint(tmp_path)[1]["skipped_steps"] == 2
    at = poison.params_at
    for skipped in (1, 4):  # no optimizer step: the next step sees the same parameters
        assert all(torch.equal(a, b) for a, b in zip(at[skipped], at[skipped + 1]))
    assert not all(torch.equal(a, b) for a, b in zip(at[0], at[1]))  # a good step moves them
    assert all(torch.isfinite(p).all() for p in run.method.parameters())
    assert all(np.isfinite(h["loss"]) for h in run.history if h.get("event") == "epoch")


def test_skip_step_restores_buffers_of_the_bad_forward_pass(tmp_path):
    """A skipped step leaves no trace: BN running statistics and MoCo's queue are restored
    (a NaN batch would otherwise poison every later step through the queue)."""
    run = build_run(tiny(tmp_path, "train.on_nonfinite=skip_step", "method.name=moco",
                         "method.params.queue_size=64", "train.epochs=2",
                         "crop.warmup_epochs=2"))
    bufs = []

    class NaNInput(nn.Module):  # second step: NaN images -> NaN keys, NaN BN statistics
        def __init__(self, model):
            super().__init__()
            self.model, self.calls = model, 0

        def forward(self, x1, x2):
            self.calls += 1
            bufs.append({k: v.clone() for k, v in run.method.named_buffers()})
            if self.calls == 2:
                x1, x2 = x1 * float("nan"), x2 * float("nan")
            return self.model(x1, x2)

    run.model = NaNInput(run.model)
    summary = engine.fit(run)
    assert summary["skipped_steps"] == 1
    after = dict(run.method.named_buffers())
    assert all(torch.isfinite(v.float()).all() for v in after.values())
    assert torch.isfinite(run.method.queue).all()
    # the step after the skipped one starts from exactly the buffers before it
    assert len(bufs) == 4 and all(torch.equal(bufs[2][k], bufs[1][k]) for k in bufs[1])
    assert not all(torch.equal(bufs[1][k], bufs[0][k]) for k in bufs[0])  # good steps move them


def test_cli_diverging_run_exits_1_with_one_line(tmp_path, capsys):
    code, err = run_cli(capsys, "pretrain", *overrides(tmp_path / "run", "optim.lr=1e38"))
    assert_one_line_error(code, err, "non-finite loss or gradient", exit_code=1)
    assert re.search(r"epoch \d+, step \d+", err[0])
    assert list_checkpoints(tmp_path / "run") == []


# ----------------------------------------------------------------------------- 4. bad images


def _save(path: Path, img: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)


def _rgb(w: int, h: int, seed: int) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


GOOD = ["rgb0.png", "rgb1.png", "rgb2.png", "gray.png", "gray16.png", "cmyk.jpg", "rgba.png",
        "palette.png", "palette_alpha.png", "exif_rot90.jpg", "one_px.png", "wide_10000x50.png"]
BAD = ["corrupt.png", "truncated.png", "zero.png"]


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    """ImageFolder: class a = every awkward valid kind, class b = broken files, c = empty."""
    root = tmp_path_factory.mktemp("messy")
    a, b = root / "a", root / "b"
    for i in range(3):
        _save(a / f"rgb{i}.png", _rgb(12, 10, i))
    _save(a / "gray.png", _rgb(12, 10, 3).convert("L"))
    gray16 = np.random.default_rng(4).integers(0, 65536, (10, 12)).astype(np.uint16)
    _save(a / "gray16.png", Image.fromarray(gray16))
    _save(a / "cmyk.jpg", _rgb(12, 10, 5).convert("CMYK"))
    _save(a / "rgba.png", _rgb(12, 10, 6).convert("RGBA"))
    _save(a / "palette.png", _rgb(12, 10, 7).convert("P"))
    pal = _rgb(12, 10, 8).convert("P")
    pal.info["transparency"] = 0
    _save(a / "palette_alpha.png", pal, transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    _save(a / "exif_rot90.jpg", _rgb(12, 10, 9), exif=exif)
    _save(a / "one_px.png", _rgb(1, 1, 10))
    ramp = np.linspace(0, 255, 10000, dtype=np.uint8)[None, :, None].repeat(50, 0).repeat(3, 2)
    _save(a / "wide_10000x50.png", Image.fromarray(ramp))
    b.mkdir()
    (b / "zero.png").write_bytes(b"")
    (b / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    buf = (a / "rgb0.png").read_bytes()
    (b / "truncated.png").write_bytes(buf[: len(buf) // 2])
    (root / "c_empty").mkdir()
    return root


@pytest.fixture
def fast_worker_shutdown(monkeypatch):
    """After a worker error, torch joins each idle worker for MP_STATUS_CHECK_INTERVAL (5 s)
    when the iterator is collected; shorten that and collect before the test ends."""
    monkeypatch.setattr(torch.utils.data._utils, "MP_STATUS_CHECK_INTERVAL", 0.2)
    yield
    gc.collect()


def _boxed(ds) -> BoxedDataset:
    return BoxedDataset(ds, BoxStore(len(ds)), build_view_transform(size=8), num_views=2, seed=0)


def test_messy_folder_skip_mode_through_worker_loader_gives_valid_views(messy):
    ds = ImageFolder(messy, on_bad_image="skip")
    assert len(ds) == len(GOOD) + len(BAD)
    seen = []
    for idx, (v1, v2), _ in DataLoader(_boxed(ds), batch_size=4, num_workers=2):
        for v in (v1, v2):
            assert v.shape[1:] == (3, 8, 8) and torch.isfinite(v).all()
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(ds)))
    # skipped in the workers, counted in the main process (shared-memory mask)
    assert ds.bad_images == [] and sorted(Path(p).name for p in ds.skipped_paths()) == BAD


def test_messy_folder_skip_mode_counts_and_names_each_bad_file(messy, caplog):
    ds = ImageFolder(messy, on_bad_image="skip")
    with caplog.at_level(logging.DEBUG, logger="ccrop.data"):  # each file: DEBUG level only
        items = [ds[i] for i in range(len(ds))]  # in this process: the count is visible
    assert sorted(Path(p).name for p in ds.bad_images) == BAD
    for name in BAD:
        assert any(name in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert all(img.mode == "RGB" for img, _ in items)
    names = [Path(p).name for p, _ in ds.samples]
    assert items[names.index("exif_rot90.jpg")][0].size == (10, 12)  # upright
    assert items[names.index("wide_10000x50.png")][0].size == (10000, 50)
    assert items[names.index("one_px.png")][0].size == (1, 1)


def test_messy_folder_error_mode_worker_error_names_the_file(messy, fast_worker_shutdown):
    loader = DataLoader(_boxed(ImageFolder(messy)), batch_size=4, num_workers=2)
    with pytest.raises(BadImageError, match=r"b[/\\](corrupt|truncated|zero)\.png"):
        for _ in loader:
            pass


@pytest.mark.slow  # a worker process is SIGKILLed
def test_dead_dataloader_worker_is_reported_not_silent(tmp_path, fast_worker_shutdown):
    run = build_run(tiny(tmp_path, "data.num_workers=2", "data.persistent_workers=false"))
    base = run.source.dataset.base

    class DiesAtFive(torch.utils.data.Dataset):
        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            if i == 5:
                os.kill(os.getpid(), signal.SIGKILL)  # the worker dies without a word
            return base[i]

    run.source.dataset.base = DiesAtFive()
    with pytest.raises(RuntimeError, match="DataLoader worker"):
        engine.fit(run)
    assert list_checkpoints(tmp_path) == []


@pytest.fixture
def yaml_without_demo(tmp_path) -> str:
    """A --config file, so the CLI's synthetic-demo overrides are not applied."""
    path = tmp_path / "folder.yaml"
    path.write_text("train:\n  seed: 0\n")
    return str(path)


def _folder_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["data.dataset=imagefolder", f"data.root={root}", "data.image_size=16",
            "data.loc_image_size=16", "data.batch_size=4", "model.width=4", "train.epochs=2",
            "crop.warmup_epochs=1", "crop.loc_interval=1", "train.knn_every=0",
            "train.tensorboard=false", "train.progress=false", f"train.out_dir={out}", *extra]


def test_cli_bad_image_error_mode_with_workers_is_one_line_naming_the_file(
        messy, tmp_path, capsys, yaml_without_demo, fast_worker_shutdown):
    code, err = run_cli(capsys, "pretrain", "--config", yaml_without_demo,
                        *_folder_args(messy, tmp_path / "run", "data.num_workers=2"))
    assert_one_line_error(code, err, "cannot decode image", "DataLoader worker")
    assert re.search(r"b[/\\](corrupt|truncated|zero)\.png", err[0])


def test_cli_bad_image_skip_mode_trains_and_reports_one_line_per_split(
        messy, tmp_path, capsys, caplog, yaml_without_demo):
    code, err = run_cli(capsys, "pretrain", "--config", yaml_without_demo,
                        *_folder_args(messy, tmp_path / "run", "data.num_workers=0",
                                      "data.on_bad_image=skip"))
    assert code == 0, err
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    skipped = [m for m in logged if "unreadable image" in m]
    # one line per split, none per file: the training split (2 epochs and a box update read
    # it) and the test split of the final kNN (here the same folder)
    assert [m.split(" (")[0] for m in skipped] == ["split 'train'", "split 'test'"], logged
    for line in skipped:
        assert f"skipped {len(BAD)} unreadable" in line
        assert line.endswith(f"first: {messy / 'b' / BAD[0]}")
    assert not any("skipping bad image" in m for m in logged)
    assert any("c_empty" in m for m in logged)  # the empty class folder is reported
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [
        "ckpt-epoch00001.pt", "ckpt-epoch00002.pt"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["bad_images_skipped"] == len(BAD)
    assert sorted(Path(p).name for p in summary["bad_image_paths"]) == BAD


@pytest.mark.parametrize("layout", ["no_files", "only_empty_class", "all_bad_skip"])
def test_cli_empty_or_unreadable_dataset_is_one_line_naming_root(tmp_path, capsys,
                                                                 yaml_without_demo, layout):
    root = tmp_path / "data"
    root.mkdir()
    extra = []
    if layout == "only_empty_class":
        (root / "cat").mkdir()
    if layout == "all_bad_skip":
        (root / "cat").mkdir()
        for i in range(4):
            (root / "cat" / f"{i}.png").write_bytes(b"not an image")
        extra = ["data.on_bad_image=skip", "data.num_workers=0"]
    code, err = run_cli(capsys, "pretrain", "--config", yaml_without_demo,
                        *_folder_args(root, tmp_path / "run", *extra))
    assert_one_line_error(code, err, str(root))


# ----------------------------------------------------------------------------- 5. localization


class CaseEncoder(nn.Module):
    """Feature map chosen by the image: channel 0 at pixel (0, 0) holds the case number."""

    CASES = ("zeros", "equal", "nan", "inf", "neg_inf", "one_pixel", "all_above", "blob")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = []
        for case in x[:, 0, 0, 0].round().long().tolist():
            name = self.CASES[case]
            f = torch.zeros(2, 4, 4)  # (C, h, w)
            if name == "equal":
                f += 3.0
            elif name in ("nan", "inf", "neg_inf"):
                f = torch.rand(2, 4, 4)
                f[1, 2, 1] = {"nan": float("nan"), "inf": float("inf"),
                              "neg_inf": float("-inf")}[name]
            elif name == "one_pixel":
                f[0, 1, 2] = 5.0
            elif name == "all_above":
                f += 1.0
                f[:, 1:3, 1:3] = 0.95  # min in the middle: every edge pixel is kept
                f[0, 1, 1] = 0.0
            elif name == "blob":
                f[:, 2:4, 0:2] = 1.0
            maps.append(f)
        return torch.stack(maps)  # (B, C, 4, 4)


@pytest.mark.parametrize("mode,threshold", [("fixed", 0.1), ("fixed", 0.0), ("quantile", 0.5)])
def test_update_boxes_on_faulty_heatmaps_keeps_valid_boxes_and_counts(mode, threshold):
    cases = CaseEncoder.CASES
    n = 2 * len(cases)
    images = torch.zeros(n, 3, 16, 16)
    images[:, 0, 0, 0] = torch.arange(n).remainder(len(cases)).float()
    loader = [(torch.arange(n)[i : i + 5], images[i : i + 5]) for i in range(0, n, 5)]
    store = BoxStore(n, (0.1, 0.1, 0.2, 0.2))
    stats = update_boxes(CaseEncoder(), loader, store, threshold, mode)
    heat, flagged = heatmaps_from_features(CaseEncoder()(images), (16, 16))
    assert torch.isfinite(heat).all() and (heat >= 0).all() and (heat <= 1).all()
    faulty = ("zeros", "equal", "nan", "inf", "neg_inf")
    assert flagged.tolist() == [c in faulty for c in cases] * 2
    boxes = store.boxes
    assert stats["images"] == n and store.version == 1
    assert stats["degenerate"] == 2 * 5  # zeros, equal, nan, inf, -inf; twice each
    assert torch.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    full = torch.tensor([0.0, 0.0, 1.0, 1.0])
    by_case = {c: boxes[i] for i, c in enumerate(cases)}
    for c in ("zeros", "equal", "nan", "inf", "neg_inf", "all_above"):
        assert torch.equal(by_case[c], full), c
    one = by_case["one_pixel"]  # hot feature cell = image region x [0.5, 0.75), y [0.25, 0.5)
    assert one[0] <= 0.5 and one[1] <= 0.25 and one[2] >= 0.75 and one[3] >= 0.5
    if mode == "fixed" and threshold > 0:  # bilinear spread: at most one cell on each side
        assert (one[2:] - one[:2]).prod() <= 0.25
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert stats["mean_area"] == pytest.approx(float(area.mean()), abs=1e-6)
    assert stats["full_share"] == pytest.approx(float((area >= 0.95).float().mean()))


# ----------------------------------------------------------------------------- 6. config, disk


CONFIG_CASES = {
    "unknown_key": (["train.epochz=3"], "train.epochz"),
    "unknown_section": (["trian.epochs=3"], "trian"),
    "wrong_type": (["train.epochs=three"], "train.epochs"),
    "wrong_type_bool": (["train.progress=maybe"], "train.progress"),
    "not_key_value": (["train.epochs"], "train.epochs"),
    "alpha_zero": (["crop.alpha=0"], "crop.alpha"),
    "alpha_negative": (["crop.alpha=-0.5"], "crop.alpha"),
    "alpha_nan": (["crop.alpha=nan"], "crop.alpha"),
    "threshold_one": (["crop.threshold=1.0"], "crop.threshold"),
    "threshold_negative": (["crop.threshold=-0.1"], "crop.threshold"),
    "warmup_over_epochs": (["crop.warmup_epochs=5"], "crop.warmup_epochs"),
    "batch_over_dataset": (["data.batch_size=64"], "data.batch_size"),
    "bad_choice": (["method.name=swav"], "method.name"),
    "bad_method_param": (["method.params.temperatur=0.5"], "method.params"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_cli_config_error_is_one_line_naming_the_key(tmp_path, capsys, case):
    extra, key = CONFIG_CASES[case]
    code, err = run_cli(capsys, "pretrain", *overrides(tmp_path / "run", *extra))
    assert_one_line_error(code, err, key)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("case", ["parent_is_file", "is_file", "missing_config",
                                  "missing_resume"])
def test_cli_path_error_is_one_line_naming_the_path(tmp_path, capsys, case):
    (tmp_path / "file").write_text("x")
    out, argv = tmp_path / "run", []
    if case == "parent_is_file":
        out = tmp_path / "file" / "run"
    elif case == "is_file":
        out = tmp_path / "file"
    elif case == "missing_config":
        argv = ["--config", str(tmp_path / "nope.yaml")]
    elif case == "missing_resume":
        argv = ["--resume", str(tmp_path / "nope.pt")]
    code, err = run_cli(capsys, "pretrain", *argv, *overrides(out))
    assert_one_line_error(code, err, "nope" if "missing" in case else str(out))


def _fail_second(counter: list[int]) -> bool:
    counter.append(1)
    return len(counter) == 2


@pytest.mark.parametrize("where", ["write_devfull", "torch_save_short", "fsync", "metrics"])
def test_cli_disk_full_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, capsys,
                                                                     monkeypatch, where):
    out, calls = tmp_path / "run", []
    if where == "write_devfull":  # the kernel's own ENOSPC: every write to /dev/full fails
        def fake_open(path, mode="r", *args, **kwargs):
            target = "/dev/full" if ".tmp-" in str(path) and _fail_second(calls) else path
            return open(target, mode, *args, **kwargs)
        monkeypatch.setattr(files_mod, "open", fake_open, raising=False)
    elif where == "torch_save_short":  # what torch raises when its zip writer hits a full disk
        real_save = torch.save

        def short_save(obj, f, *args, **kwargs):
            if _fail_second(calls):
                f.write(b"PK\x03\x04" + bytes(100))
                raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStream"
                                   "Writer failed writing file data/3: file write failed")
            return real_save(obj, f, *args, **kwargs)
        monkeypatch.setattr(torch, "save", short_save)
    elif where == "fsync":  # delayed allocation: the error only shows at fsync
        real_fsync = os.fsync

        def fsync(fd):
            if ".tmp-" in os.readlink(f"/proc/self/fd/{fd}") and _fail_second(calls):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)
        monkeypatch.setattr(os, "fsync", fsync)
    else:  # the metrics line of epoch 2
        def fake_open(path, mode="r", *args, **kwargs):
            if str(path).endswith("metrics.jsonl") and _fail_second(calls):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return open(path, mode, *args, **kwargs)
        monkeypatch.setattr(engine, "open", fake_open, raising=False)
    code, err = run_cli(capsys, "pretrain", *overrides(out))
    names = ["metrics.jsonl"] if where == "metrics" else [str(ckpt_path(out, 2))]
    assert_one_line_error(code, err, *names)
    assert re.search("No space left on device|file write failed", err[0])
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-epoch00001.pt"]
    assert load_checkpoint(ckpt_path(out, 1))["epoch"] == 1
    assert not list((out / "checkpoints").glob(".*.tmp-*"))


# ----------------------------------------------------------------------------- 7. untrusted


class RunsCode:
    """Unpickling this calls ``os.system`` (what a booby-trapped checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 2, "payload": RunsCode(marker)}, path)
    return path


def test_crafted_pickle_is_live(tmp_path, monkeypatch):
    """Control: ``load_checkpoint`` with only ``weights_only=True`` taken away (its other
    checks kept) runs the crafted file's code, so that flag is what the test below checks."""
    marker = tmp_path / "ran"
    evil = _evil_checkpoint(tmp_path / "evil.pt", marker)
    real_load = torch.load

    def unsafe_load(*args, **kwargs):
        return real_load(*args, **{**kwargs, "weights_only": False})

    monkeypatch.setattr(torch, "load", unsafe_load)
    assert load_checkpoint(evil)["epoch"] == 2
    assert marker.exists()


def test_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran"
    save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 1}, ckpt_path(tmp_path, 1))
    evil = _evil_checkpoint(ckpt_path(tmp_path, 2), marker)
    with pytest.raises(CheckpointError, match=re.escape(str(evil)) + ".* pickled Python objects"
                       ) as refused:
        load_checkpoint(evil)
    assert "weights_only" not in str(refused.value)  # never the advice to load unsafely
    with pytest.warns(UserWarning, match="ckpt-epoch00002"):
        path, state = latest_valid_checkpoint(tmp_path)
    assert path == ckpt_path(tmp_path, 1) and state["epoch"] == 1
    code, err = run_cli(capsys, "knn", "--checkpoint", str(evil))
    assert_one_line_error(code, err, str(evil))
    code, err = run_cli(capsys, "pretrain", *overrides(tmp_path / "run"), "--resume", str(evil))
    assert_one_line_error(code, err, str(evil))
    assert not marker.exists()


# ----------------------------------------------------------------------------- 8. properties


@st.composite
def image_and_box(draw):
    """An image no more than 4:3 off square and a box (possibly zero-sized) inside it."""
    h = draw(st.integers(8, 300))
    w = draw(st.integers(max(8, -(-3 * h // 4)), 4 * h // 3))
    x = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
    y = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
    return h, w, (x[0], y[0], x[1], y[1])


def _meets_box(top, left, ch, cw, h, w, box) -> bool:
    """The crop reaches the box (1 px slack for rounding): its centre was drawn inside it."""
    x0, y0, x1, y1 = box
    return (left <= x1 * w + 1 and left + cw >= x0 * w - 1
            and top <= y1 * h + 1 and top + ch >= y0 * h - 1)


@settings(max_examples=200, deadline=None)
@given(image_and_box(), st.floats(0.05, 5.0), st.floats(0.02, 0.5), st.integers(0, 2**31))
def test_get_params_crop_reaches_the_box_and_is_reproducible(hwb, alpha, lo, seed):
    h, w, box = hwb
    crop = ContrastiveCrop(8, scale=(lo, 0.5), alpha=alpha, full_box_guard=None)
    top, left, ch, cw = crop.get_params(h, w, box, torch.Generator().manual_seed(seed))
    assert 0 <= top <= h - ch and 0 <= left <= w - cw and ch >= 1 and cw >= 1
    assert _meets_box(top, left, ch, cw, h, w, box)
    assert crop.get_params(h, w, box, torch.Generator().manual_seed(seed)) == (top, left, ch, cw)


@settings(max_examples=100, deadline=None)
@given(image_and_box(), st.integers(1, 12), st.floats(0.05, 5.0),
       st.one_of(st.none(), st.floats(0.5, 1.0)), st.integers(0, 2**31))
def test_batched_sampler_with_a_different_box_per_row(hwb, b, alpha, guard, seed):
    h, w, _ = hwb
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(b, 2, 2, generator=g)
    corners[0] = corners[0, :1]  # a zero-sized box in every batch
    lo, hi = corners.min(dim=1).values, corners.max(dim=1).values  # (B, 2)
    boxes = torch.cat([lo, hi], dim=1)  # (B, 4)
    out = sample_crop_params_batch(h, w, boxes, (0.05, 0.5), (3 / 4, 4 / 3), alpha, g, guard)
    assert out.shape == (b, 4) and out.dtype == torch.int64
    for (top, left, ch, cw), box in zip(out.tolist(), boxes.tolist()):
        assert 0 <= top <= h - ch and 0 <= left <= w - cw
        area = (box[2] - box[0]) * (box[3] - box[1])
        if guard is None or area < guard:
            assert _meets_box(top, left, ch, cw, h, w, box)


def _tight_extent(mask: torch.Tensor) -> list[float]:
    """The official code's box: first/last kept row and column (one image, slow and simple)."""
    rows, cols = mask.nonzero(as_tuple=True)
    H, W = mask.shape
    return [int(cols.min()) / W, int(rows.min()) / H, (int(cols.max()) + 1) / W,
            (int(rows.max()) + 1) / H]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 24),
       st.integers(1, 24), st.floats(0, 0.95), st.sampled_from(["fixed", "quantile"]),
       st.integers(0, 10**6))
def test_box_is_the_tight_extent_of_kept_pixels(b, h, w, H, W, k, mode, seed):
    g = torch.Generator().manual_seed(seed)
    fmap = torch.randn(b, 2, h, w, generator=g) * 10.0 ** float(torch.randint(-6, 6, (1,),
                                                                            generator=g))
    boxes, degenerate = localize(fmap, (H, W), k, mode)[:2]
    assert torch.equal(boxes, boxes_from_features(fmap, (H, W), k, mode))
    heat, flat = heatmaps_from_features(fmap, (H, W))
    for i in range(b):
        level = torch.quantile(heat[i].flatten(), k) if mode == "quantile" else k
        mask = heat[i] > level
        if flat[i] or not mask.any():
            assert degenerate[i] and boxes[i].tolist() == [0.0, 0.0, 1.0, 1.0]
        else:
            assert not degenerate[i]
            assert boxes[i].tolist() == pytest.approx(_tight_extent(mask), abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
                          st.floats(0, 1)), min_size=1, max_size=12),
       st.integers(0, 11), st.sampled_from(["nan", "inf", "swap", "above", "below"]))
def test_boxstore_update_with_one_bad_row_writes_nothing(rows, where, fault):
    store = BoxStore(8, (0.1, 0.2, 0.3, 0.4))
    before, version = store.boxes.clone(), store.version
    idx = torch.tensor([r[0] for r in rows])
    boxes = torch.tensor([[min(r[1], r[3]), min(r[2], r[4]), max(r[1], r[3]),
                           max(r[2], r[4])] for r in rows])
    bad = where % len(rows)
    boxes[bad] = {"nan": torch.tensor([float("nan"), 0, 1, 1]),
                  "inf": torch.tensor([0, 0, float("inf"), 1]),
                  "swap": torch.tensor([0.6, 0.0, 0.5, 1.0]),
                  "above": torch.tensor([0.0, 0.0, 1.0, 1.0 + 1e-3]),
                  "below": torch.tensor([-1e-3, 0.0, 1.0, 1.0])}[fault]
    with pytest.raises(ValueError):
        store.update(idx, boxes)
    assert torch.equal(store.boxes, before) and store.version == version
    state = {"boxes": boxes[:1].expand(8, 4).clone(), "version": torch.tensor([9])}
    if bad == 0:
        with pytest.raises(ValueError):
            store.load_state_dict(state)
        assert torch.equal(store.boxes, before) and store.version == version


def test_resume_auto_refuses_to_restart_over_only_damaged_checkpoints(tmp_path, capsys):
    engine.fit(build_run(tiny(tmp_path, "train.epochs=2")))
    for path in list_checkpoints(tmp_path):
        path.write_bytes(path.read_bytes()[:100])  # every checkpoint truncated
    before = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path)}
    with pytest.raises(CheckpointError, match="can be read"):
        build_run(tiny(tmp_path, "train.epochs=2"), resume_from="auto")
    assert {p.name: p.read_bytes() for p in list_checkpoints(tmp_path)} == before
