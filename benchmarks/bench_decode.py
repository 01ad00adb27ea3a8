"""JPEG decoding for the 224 px folder path: images/s of each decoder, one process and loaders.

Ways to turn a JPEG into the folder path's inputs, each measured on a synthetic folder of
ImageNet-like sizes (procedural content, quality 90), up to the tensor its consumer takes:

- ``pil_full``: the former path, a full PIL decode, PIL's bilinear resize, numpy -> tensor;
- ``full_torch_resize``: full PIL decode, torch's antialiased uint8 bilinear resize
  (Pillow's filter, +-1 level);
- ``pil_draft``: PIL ``Image.draft`` decodes at the largest DCT reduction (1/2, 1/4, 1/8)
  that keeps both sides >= the target (a full decode when none does), then torch's resize;
- ``tv_cpu``: ``torchvision.io.decode_jpeg`` on the CPU, then torchvision's uint8 resize;
- ``auto``: ``decode_fitted``, the folder path's decoder: ``pil_draft`` where the draft
  reduces, torchvision's decoder (the same pixels) elsewhere, torch's resize.

for two targets: ``train`` (``DecodedImages``: short side 256, long side at most 341) and
``loc`` (the localization input, 224 x 224). With ``--workers`` it also times the loaders the
engine uses (``DecodedImages``, ``loc_loader``, ``GPUSource``), the official pipeline
(torchvision ``ImageFolder`` + PIL RandomResizedCrop/ColorJitter/grayscale/blur/flip, two views)
and, on CUDA, batched ``decode_jpeg(device="cuda")``.

Usage:
    python benchmarks/bench_decode.py --n 300 --out benchmarks/results/decode_cpu.json
    python benchmarks/bench_decode.py --make /tmp/jpegs --n 20000 --workers 16   # folder only
    python benchmarks/bench_decode.py --root /tmp/jpegs --workers 16 --device cuda --out x.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

#: ImageNet-like (width, height) and their shares: most training photos are 500 px on the long
#: side (4:3 and 3:2, both orientations); a minority is larger (up to 2048 x 1536).
IMAGENET_SIZES = (((500, 375), 0.34), ((375, 500), 0.14), ((500, 333), 0.16),
                  ((333, 500), 0.05), ((500, 500), 0.05), ((400, 300), 0.05),
                  ((640, 480), 0.05), ((800, 600), 0.05), ((1024, 768), 0.05),
                  ((1600, 1200), 0.04), ((2048, 1536), 0.02))
QUALITY = 90


# ----------------------------------------------------------------------------- the folder


def synth_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A procedural photo-like RGB image: a smooth colour field, a few shapes, texture noise
    (JPEG files of about the size and entropy of ImageNet's at quality 90)."""
    cells = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3),
                         dtype=np.uint8)
    img = Image.fromarray(cells).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=tuple(rng.integers(0, 256, 3).tolist()))
    # texture at the detail of a 500 px photo (larger photos of a scene are smoother per
    # pixel, as real ones), plus fine grain; JPEG sizes about ImageNet's at quality 90
    k = 2 * max(1, round(max(width, height) / 500))
    small = rng.integers(-30, 31, (-(-height // k), -(-width // k), 1), dtype=np.int16)
    noise = np.repeat(np.repeat(small, k, 0), k, 1)[:height, :width]  # (H, W, 1)
    grain = 40 // k
    fine = rng.integers(-grain, grain + 1, (height, width, 1), dtype=np.int16)
    arr = np.asarray(img, dtype=np.int16) + noise + fine
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _write_one(job: tuple[str, int, int, int, int]) -> int:
    path, seed, width, height, quality = job
    rng = np.random.default_rng(seed)
    synth_photo(rng, width, height).save(path, quality=quality)
    return os.path.getsize(path)


def draw_sizes(n: int, seed: int, scale: float = 1.0) -> list[tuple[int, int]]:
    """``n`` (width, height) drawn from ``IMAGENET_SIZES``, each side times ``scale``."""
    rng = np.random.default_rng(seed)
    sizes, weights = zip(*IMAGENET_SIZES)
    picks = rng.choice(len(sizes), n, p=np.asarray(weights) / sum(weights))
    return [(max(8, round(sizes[k][0] * scale)), max(8, round(sizes[k][1] * scale)))
            for k in picks]


def make_folder(root: str | Path, n: int, classes: int = 100, workers: int = 1,
                scale: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Write ``n`` synthetic JPEGs as ``root/cNNN/imgNNNNNN.jpg`` (class folders), in parallel.

    A folder already made with the same arguments is kept (``root/.made.json``).

    Returns:
        What was made: counts, mean file size, seconds.
    """
    root = Path(root)
    meta = {"n": n, "classes": classes, "scale": scale, "seed": seed, "quality": QUALITY}
    done = root / ".made.json"
    if done.is_file() and json.loads(done.read_text()).get("params") == meta:
        return json.loads(done.read_text())
    start = time.perf_counter()
    jobs = []
    for i, (w, h) in enumerate(draw_sizes(n, seed, scale)):
        folder = root / f"c{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((str(folder / f"img{i:06d}.jpg"), seed * 1_000_003 + i, w, h, QUALITY))
    if workers > 1:
        from multiprocessing import get_context

        with get_context("fork").Pool(workers) as pool:
            sizes = pool.map(_write_one, jobs, chunksize=64)
    else:
        sizes = [_write_one(j) for j in jobs]
    made = {"params": meta, "images": n, "mean_file_kb": float(np.mean(sizes)) / 1024,
            "seconds": time.perf_counter() - start, "workers": workers}
    done.write_text(json.dumps(made))
    return made


# ----------------------------------------------------------------------------- decoders


def train_rule(size: int = 256) -> Callable[[int, int], tuple[int, int]]:
    """``DecodedImages``'s size rule for views of ``size * 224 / 256`` px."""
    from ccrop.data.sources import fit_size

    return partial(fit_size, size=size, max_side=round(size * 4 / 3))


def loc_rule(size: int = 224) -> Callable[[int, int], tuple[int, int]]:
    """The localization input's rule: ``size x size``."""
    from ccrop.data.folder import square_size

    return partial(square_size, size=size)


def _finish(img: Any, target: str) -> Any:
    """What the consumer of each target gets: the ``train`` path's (3, h, w) uint8 tensor
    (pasted into ``DecodedImages``' canvas) or the ``loc`` path's normalised float input."""
    import torch

    if target == "train":
        return img
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (img.float().div_(255.0) - mean) / std


def pil_full(path: str, rule: Callable, target: str) -> Any:
    """The former path: full PIL decode, PIL's bilinear resize, then the consumer's tensor
    (``DecodedImages``' numpy copy; ``EvalTransform``)."""
    import torch

    from ccrop.data.folder import load_rgb
    from ccrop.data.views import EvalTransform

    img = load_rgb(path)
    h, w = rule(img.height, img.width)
    if target == "loc":
        return EvalTransform([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], h)(img)
    img = img if img.size == (w, h) else img.resize((w, h), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def full_torch_resize(path: str, rule: Callable, target: str) -> Any:
    """Full PIL decode, torch's antialiased uint8 resize (the resize's share of the gain)."""
    from ccrop.data.folder import decode_fitted

    return _finish(decode_fitted(path, rule, draft=False, decoder="pil"), target)


def pil_draft(path: str, rule: Callable, target: str) -> Any:
    """PIL ``draft`` (DCT-reduced decode, >= the target) where it reduces, else a full PIL
    decode; torch's resize."""
    from ccrop.data.folder import decode_fitted

    return _finish(decode_fitted(path, rule, decoder="pil"), target)


def tv_cpu(path: str, rule: Callable, target: str) -> Any:
    """``torchvision.io.decode_jpeg`` on the CPU (EXIF applied) + torchvision's uint8 resize."""
    import torchvision.transforms.v2.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    img = decode_jpeg(read_file(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    h, w = rule(img.shape[1], img.shape[2])
    return _finish(F.resize(img, [h, w], antialias=True), target)  # (3, h, w) uint8


def auto(path: str, rule: Callable, target: str) -> Any:
    """``decode_fitted`` as the folder path runs it: PIL ``draft`` where it reduces, else
    torchvision's decoder; torch's resize."""
    from ccrop.data.folder import decode_fitted

    return _finish(decode_fitted(path, rule), target)


DECODERS = {"pil_full": pil_full, "full_torch_resize": full_torch_resize,
            "pil_draft": pil_draft, "tv_cpu": tv_cpu, "auto": auto}


def time_decoder(fn: Callable[[str], Any], paths: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (this process) to run ``fn`` over every path once."""
    wall, cpu = time.perf_counter(), time.process_time()
    for p in paths:
        fn(p)
    return time.perf_counter() - wall, time.process_time() - cpu


def one_process(paths: list[str], repeats: int, sizes: dict[str, tuple[int, int]],
                loc_side: int = 224, train_side: int = 256) -> dict[str, Any]:
    """Images/s of every decoder and target in this process (one thread), interleaved over
    ``repeats`` rounds (median), overall and per original size; also images per CPU-second,
    which a shared, loaded machine distorts less than wall time."""
    import torch

    torch.set_num_threads(1)
    rules = {"train": train_rule(train_side), "loc": loc_rule(loc_side)}
    out: dict[str, Any] = {}
    groups: dict[tuple[int, int], list[str]] = {}
    for p in paths:
        groups.setdefault(sizes[p], []).append(p)
    for target, rule in rules.items():
        runs = {name: {"wall": [], "cpu": []} for name in DECODERS}
        per_size: dict[str, dict[str, list[float]]] = {name: {} for name in DECODERS}
        for _ in range(repeats):
            for name, dec in DECODERS.items():  # interleaved: the machine's load hits all alike
                fn = partial(dec, rule=rule, target=target)
                wall = cpu = 0.0
                for size, group in groups.items():
                    w, c = time_decoder(fn, group)
                    wall, cpu = wall + w, cpu + c
                    per_size[name].setdefault(f"{size[0]}x{size[1]}", []).append(
                        len(group) / max(c, 1e-9))
                runs[name]["wall"].append(len(paths) / wall)
                runs[name]["cpu"].append(len(paths) / max(cpu, 1e-9))
        out[target] = {name: {"images_per_s": statistics.median(r["wall"]),
                              "images_per_cpu_s": statistics.median(r["cpu"]),
                              "runs_images_per_s": r["wall"],
                              "per_size_images_per_cpu_s": {
                                  k: statistics.median(v) for k, v in sorted(by_size.items())}}
                       for (name, r), by_size in zip(runs.items(), per_size.values())}
        for key in ("images_per_s", "images_per_cpu_s"):
            base = out[target]["pil_full"][key]
            for name in DECODERS:
                out[target][name][f"speedup_{key}"] = out[target][name][key] / base
    return out


# ----------------------------------------------------------------------------- loaders


def loader_rate(batches: Iterable, seconds: float, skip: int = 1,
                sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Steady images/s of an iterable of batches (first element: B items): timed from the
    arrival of batch ``skip`` (DataLoader: one per worker, so that worker start-up and the
    burst of first batches the workers made side by side are left out) for ``seconds``."""
    it = iter(batches)
    first = next(it)
    for _ in range(skip - 1):
        if next(it, None) is None:
            break
    sync()
    start, images, n_batches = time.perf_counter(), 0, 0
    for batch in it:
        images += len(batch[0])
        n_batches += 1
        if time.perf_counter() - start > seconds:
            break
    sync()
    elapsed = time.perf_counter() - start
    return {"images_per_s": images / max(elapsed, 1e-9), "images": images,
            "batches": n_batches, "seconds": elapsed, "batch_size": len(first[0])}


class _TwoViews:
    """The official pipeline's ``TwoCropsTransform``: two independent views of one image."""

    def __init__(self, tf: Callable) -> None:
        self.tf = tf

    def __call__(self, img: Image.Image) -> list[Any]:
        return [self.tf(img), self.tf(img)]


class _PILBlur:
    """MoCo v2's Gaussian blur: PIL ``GaussianBlur`` with a radius ~ U(0.1, 2)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        import random

        from PIL import ImageFilter

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def official_loader(root: str, batch: int, workers: int, size: int = 224) -> Any:
    """torchvision ``ImageFolder`` + the MoCo v2 / ContrastiveCrop ImageNet augmentation in PIL
    (RandomResizedCrop(0.2, 1), ColorJitter p 0.8, grayscale p 0.2, blur p 0.5, flip), two views
    per image, as the official code's DataLoader (``pin_memory``, shuffled)."""
    import torch
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([_PILBlur()], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    ds = datasets.ImageFolder(root, _TwoViews(tf))
    return torch.utils.data.DataLoader(ds, batch, shuffle=True, num_workers=workers,
                                       pin_memory=torch.cuda.is_available(), drop_last=True)


def _swap(batch: Any) -> Any:  # ImageFolder yields ([v1, v2], labels): count the images
    return (batch[1],)


def loader_paths(root: str, batch: int, workers: int, seconds: float, device: str,
                 train_side: int, loc_side: int, view_side: int,
                 record: Callable[[str, dict], None]) -> None:
    """Images/s of each data path alone with ``workers`` DataLoader workers; each result is
    handed to ``record`` as soon as it is measured (a cut-short run keeps the first ones)."""
    from torch.utils.data import DataLoader

    from ccrop.data.folder import UnlabeledFolder
    from ccrop.data.sources import DecodedImages, loc_loader

    base = UnlabeledFolder(root)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pin = device != "cpu"
    paths: dict[str, Callable[[], Any]] = {
        "gpu_source": lambda: gpu_source_rate(base, batch, workers, seconds, device,
                                              train_side, view_side),
        "official": lambda: loader_rate(
            (_swap(b) for b in official_loader(root, batch, workers, view_side)), seconds,
            workers),
    }
    for draft, name in ((True, "draft"), (False, "full")):
        paths[f"decoded_{name}"] = lambda d=draft: loader_rate(DataLoader(
            DecodedImages(base, train_side, draft=d), batch, shuffle=True, drop_last=True,
            num_workers=workers, pin_memory=pin), seconds, workers)
        paths[f"loc_{name}"] = lambda d=draft: loader_rate(
            loc_loader(base, mean, std, batch, workers, loc_side, pin, d), seconds, workers)
    if device.startswith("cuda"):
        paths["nvjpeg_train"] = lambda: nvjpeg_rate(base, batch, seconds, device,
                                                    train_rule(train_side))
        paths["nvjpeg_loc"] = lambda: nvjpeg_rate(base, batch, seconds, device,
                                                  loc_rule(loc_side))
    for name, run in paths.items():
        try:
            record(name, run())
        except Exception as err:  # one failing path must not hide the others
            record(name, {"error": f"{type(err).__name__}: {err}"[:500]})


def gpu_source_rate(base: Any, batch: int, workers: int, seconds: float, device: str,
                    train_side: int, view_side: int) -> dict[str, float]:
    """The engine's whole GPU data path: ``DecodedImages`` workers + ``GPUViews`` on
    ``device`` (ImageNet recipe, ContrastiveCrop, bf16 views on CUDA), two views an image."""
    import torch

    from ccrop.boxes import BoxStore
    from ccrop.crop import CropPlan
    from ccrop.data.sources import DecodedGPUSource, ViewSpec

    dev = torch.device(device)
    spec = ViewSpec("imagenet", CropPlan("ccrop", (0.2, 1.0), (3 / 4, 4 / 3), 0.6, None,
                                         "official"), view_side, (0.485, 0.456, 0.406),
                    (0.229, 0.224, 0.225), 224)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    src = DecodedGPUSource(base, BoxStore(len(base)), spec, batch, dev, decode_size=train_side,
                           seed=0, num_workers=workers, out_dtype=dtype,
                           channels_last=dev.type == "cuda")
    src.set_epoch(0, True)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    return loader_rate(iter(src), seconds, workers, sync)


def nvjpeg_rate(base: Any, batch: int, seconds: float, device: str,
                rule: Callable) -> dict[str, float]:
    """Batched ``torchvision.io.decode_jpeg(device="cuda")`` of file bytes read in this process,
    then an antialiased bilinear resize per image on the GPU."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    paths = [p for p, _ in base.samples]

    def batches() -> Iterable:
        for s in range(0, len(paths) - batch + 1, batch):
            data = [read_file(p) for p in paths[s:s + batch]]
            imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            out = []
            for img in imgs:  # (3, H, W) uint8 on the GPU
                h, w = rule(img.shape[1], img.shape[2])
                out.append(F.interpolate(img[None].float(), (h, w), mode="bilinear",
                                         antialias=True, align_corners=False))
            yield (out,)

    return loader_rate(batches(), seconds, 1, lambda: torch.cuda.synchronize(device))


# ----------------------------------------------------------------------------- main


def environment() -> dict[str, Any]:
    """The machine: processor, cores, load, library versions."""
    import PIL
    import torch
    import torchvision

    env = {"processor": platform.processor() or platform.machine(),
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count(), "load_average": list(os.getloadavg()),
           "python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "pillow": PIL.__version__}
    try:
        with open("/proc/cpuinfo") as fh:
            env["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in fh
                                     if ln.startswith("model name")), None)
    except OSError:
        pass
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def folder_sizes(root: str) -> dict[str, tuple[int, int]]:
    """Path -> stored (width, height) of every JPEG under ``root`` (headers only)."""
    from ccrop.data.folder import list_images

    out = {}
    for p in list_images(root):
        with Image.open(p) as img:
            out[p] = img.size
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="existing folder (default: make one in /tmp)")
    ap.add_argument("--make", default=None, help="only write a synthetic folder here")
    ap.add_argument("--n", type=int, default=300, help="images to make")
    ap.add_argument("--scale", type=float, default=1.0, help="image sides x this")
    ap.add_argument("--one-process", type=int, default=300,
                    help="images decoded per round in one process (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="loader paths with this many workers")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=6.0, help="per loader path")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--view-size", type=int, default=224)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    train_side = round(args.view_size * 256 / 224)
    if args.make:
        made = make_folder(args.make, args.n, workers=max(1, args.workers), scale=args.scale)
        print(json.dumps(made))
        return made
    root = args.root or f"/tmp/ccrop_decode_{args.n}_{args.scale:g}"
    if args.root:  # an existing folder, as it is
        made = json.loads(p.read_text()) if (p := Path(root) / ".made.json").is_file() else {}
    else:
        made = make_folder(root, args.n, workers=max(1, args.workers), scale=args.scale)
    result: dict[str, Any] = {"environment": environment(), "folder": {**made, "root": root},
                              "targets": {"train": f"short side {train_side}, long side <= "
                                                   f"{round(train_side * 4 / 3)} (DecodedImages)",
                                          "loc": f"{args.view_size} x {args.view_size} "
                                                 "(localization)"}}

    def save() -> None:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")

    if args.one_process:
        sizes = folder_sizes(root)
        paths = sorted(sizes)[:args.one_process]
        result["one_process"] = {"images": len(paths), "threads": 1, **one_process(
            paths, args.repeats, sizes, args.view_size, train_side)}
        save()
    if args.workers:
        result["loaders"] = {"workers": args.workers, "batch": args.batch}

        def record(name: str, value: dict) -> None:
            result["loaders"][name] = value
            save()

        loader_paths(root, args.batch, args.workers, args.seconds, args.device, train_side,
                     args.view_size, args.view_size, record)
    save()
    print(json.dumps(result, indent=1) if args.out is None else _summary(result))
    return result


def _summary(result: dict[str, Any]) -> str:
    lines = []
    for target, rows in result.get("one_process", {}).items():
        if isinstance(rows, dict):
            lines += [f"{target:5s} {name:17s} {r['images_per_s']:8.1f} img/s "
                      f"{r['images_per_cpu_s']:8.1f} img/cpu-s x{r['speedup_images_per_cpu_s']:.2f}"
                      for name, r in rows.items() if isinstance(r, dict)]
    for name, r in result.get("loaders", {}).items():
        if isinstance(r, dict):
            lines.append(f"loader {name:14s} {r.get('images_per_s', 0.0):8.1f} img/s "
                         f"{r.get('error', '')}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
