"""Decoding straight to a size (``decode_fitted``): the same image as a full decode + resize,
up to resampling, for the folder GPU path (``DecodedImages``) and localization (``loc_loader``).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from scipy import stats

from ccrop.crop import sample_crop_params_batch
from ccrop.data.folder import (
    _TURNED,
    BadImageError,
    UnlabeledFolder,
    _draft,
    _open,
    _upright_region,
    decode_fitted,
    load_rgb,
    square_size,
)
from ccrop.data.sources import DecodedImages, fit_size, loc_loader
from ccrop.data.views import EvalTransform

S0, M = 64, 85  # decode side and canvas of 56 px views (the 224 -> 256 / 341 rule, scaled)
RULE = partial(fit_size, size=S0, max_side=M)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Photo-like content: smooth colour field, shapes, fine grain (JPEG-realistic spectra)."""
    cells = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(cells).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=tuple(rng.integers(0, 256, 3).tolist()))
    grain = rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(img, np.int16) + grain, 0, 255).astype(np.uint8))


def _jpeg(path, img: Image.Image, orientation: int = 1):
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    img.save(path, quality=90, exif=exif.tobytes())
    return path


def _old_path(path, rule) -> torch.Tensor:
    """The former decode: full PIL decode, PIL's bilinear resize: (3, h, w) uint8."""
    img = load_rgb(path)
    h, w = rule(img.height, img.width)
    img = img if img.size == (w, h) else img.resize((w, h), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 JPEGs of 1x to 8x the decode size, both orientations, odd sides, in class folders."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for i in range(40):
        short = int(rng.integers(S0, 8 * S0 + 1))
        long = int(short * rng.choice([1.0, 4 / 3, 1.5, 1.33]) + rng.integers(0, 3))
        w, h = (long, short) if i % 3 else (short, long)
        (root / f"c{i % 4}").mkdir(exist_ok=True)
        _jpeg(root / f"c{i % 4}" / f"{i:03d}.jpg", _photo(rng, w, h))
    return root


def test_draft_never_goes_below_the_target_and_takes_the_largest_reduction(tmp_path):
    rng = np.random.default_rng(1)
    for w, h in [(64, 48), (129, 97), (256, 192), (257, 193), (511, 383), (1024, 768),
                 (1030, 500), (300, 1000), (70, 700)]:
        path = _jpeg(tmp_path / f"{w}x{h}.jpg", _photo(rng, w, h))
        for rule in (RULE, partial(square_size, size=56), partial(fit_size, size=20,
                                                                  max_side=27)):
            th, tw = rule(h, w)
            with Image.open(path) as img:
                region = _draft(img, rule)
                got = img.size
            scale = max(s for s in (1, 2, 4, 8) if s <= min(w // tw, h // th) or s == 1)
            assert got == (-(-w // scale), -(-h // scale))  # PIL: ceil(side / scale)
            # never below the target (small images keep their size and are upscaled)
            assert got[0] >= min(tw, w) and got[1] >= min(th, h)
            assert (region is None) == (scale == 1)
            if region is not None:  # the original covers exactly side / scale pixels
                assert region == (0, 0, w / scale, h / scale)
            assert tuple(decode_fitted(path, rule).shape) == (3, th, tw)


def test_output_sizes_identical_and_pixels_equal_up_to_resampling(folder):
    reduced = 0
    for path in sorted(folder.rglob("*.jpg")):
        old = _old_path(path, RULE)
        new = decode_fitted(path, RULE)
        full = decode_fitted(path, RULE, draft=False)
        assert new.shape == old.shape == full.shape and new.dtype == torch.uint8
        # torch's kernel is Pillow's filter: +-1 level from rounding
        assert (full.int() - old.int()).abs().max() <= 1
        diff = (new.float() - old.float()).abs()
        assert diff.mean() < 2.0, path  # a different low-pass before the same resize
        with Image.open(path) as img:
            reduced += _draft(img, RULE) is not None
    assert reduced >= 25  # most of the folder took the DCT-reduced decode


def test_colour_statistics_agree_over_a_folder(folder):
    """Per-channel mean and std over the folder, drafted vs full decode (the former path).

    Tolerance: the DCT-domain reduction keeps each block's mean (the DC coefficient), so the
    channel means may differ by rounding only: 0.5 level bounds it (measured 0.02). The std may
    differ by the energy just below the target's Nyquist frequency, which the two low-pass
    chains treat differently: 1% of the std bounds it (measured 0.22%; resizing the full decode
    with bicubic instead of bilinear moves it by 0.61%, so the draft changes the image less
    than the choice of a standard resampling filter does).
    """
    new = torch.stack([_stats(decode_fitted(p, RULE)) for p in sorted(folder.rglob("*.jpg"))])
    old = torch.stack([_stats(_old_path(p, RULE)) for p in sorted(folder.rglob("*.jpg"))])
    mean_new, mean_old = new[:, 0].mean(0), old[:, 0].mean(0)  # (3,)
    std_new, std_old = new[:, 1].mean(0), old[:, 1].mean(0)
    assert (mean_new - mean_old).abs().max() < 0.5
    assert ((std_new - std_old).abs() / std_old).max() < 0.01


def _stats(img: torch.Tensor) -> torch.Tensor:
    x = img.float().flatten(1)  # (3, h*w)
    return torch.stack([x.mean(1), x.std(1)])  # (2, 3)


def test_crop_law_unchanged_ks(folder):
    """Crops are drawn on the resized image's normalised coordinates; drafted and full-decode
    images have identical sizes, so the law is the same: KS over many crops of each path."""
    sizes = {}
    for draft in (True, False):
        ds = DecodedImages(UnlabeledFolder(folder), S0, M, draft=draft)
        sizes[draft] = torch.stack([ds[i][2] for i in range(len(ds))])  # (N, 2) = (h, w)
    assert torch.equal(sizes[True], sizes[False])
    box = torch.tensor([[0.2, 0.1, 0.7, 0.8]])
    crops = {}
    for draft, seed in ((True, 1), (False, 2)):
        hw = sizes[draft].repeat(500, 1)  # (20000, 2)
        gen = torch.Generator().manual_seed(seed)
        top, left, h, w = sample_crop_params_batch(
            hw[:, 0], hw[:, 1], box.expand(len(hw), 4), alpha=0.6, generator=gen,
            placement="official").double().unbind(1)
        H, W = hw[:, 0].double(), hw[:, 1].double()
        crops[draft] = {"cx": (left + w / 2) / W, "cy": (top + h / 2) / H,
                        "area": h * w / (H * W), "log_ratio": torch.log(w / h)}
    for key in crops[True]:
        p = stats.ks_2samp(crops[True][key].numpy(), crops[False][key].numpy()).pvalue
        assert p > 1e-3, (key, p)


@pytest.mark.parametrize("draft", [True, False])  # PIL's reduced decode / torchvision's
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(tmp_path, orientation, draft):
    rng = np.random.default_rng(orientation)
    path = _jpeg(tmp_path / "o.jpg", _photo(rng, 301, 203), orientation)
    old, new = _old_path(path, RULE), decode_fitted(path, RULE, draft)
    upright = (301, 203) if orientation not in _TURNED else (203, 301)
    assert load_rgb(path).size == upright
    assert new.shape == old.shape == (3, *RULE(upright[1], upright[0]))
    if draft:  # a wrongly mapped region would shift the edges
        assert (new.float() - old.float()).abs().mean() < 2.0
    else:  # the same decoded pixels, rotated alike
        assert (new.int() - old.int()).abs().max() <= 1


def test_decoders_agree(folder):
    """torchvision decodes the JPEGs that are not reduced: the same pixels as PIL's (libjpeg-
    turbo both), so ``auto`` and ``pil`` differ by the resize's rounding only."""
    taken = 0
    for path in sorted(folder.rglob("*.jpg")):
        for draft in (True, False):
            auto, pil = (decode_fitted(path, RULE, draft, d) for d in ("auto", "pil"))
            assert (auto.int() - pil.int()).abs().max() <= 1
            taken += isinstance(_open(path, RULE, draft, True)[0], torch.Tensor)
    assert taken >= 40  # every file without the draft, the small ones with it


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_region_follows_exif_transpose(orientation):
    """``_upright_region`` maps a region as ``exif_transpose`` moves the pixels."""
    from PIL import ImageOps

    w, h, region = 12, 7, (2, 1, 9, 4)
    arr = np.zeros((h, w), np.uint8)
    arr[region[1]:region[3], region[0]:region[2]] = 255
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.info["exif"] = exif.tobytes()
    moved = np.asarray(ImageOps.exif_transpose(img))
    ys, xs = np.nonzero(moved)
    want = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert _upright_region(region, (w, h), orientation) == want


def test_png_grayscale_cmyk(tmp_path):
    """PNGs are never reduced (same pixels as the former path, +-1 from the resize kernel);
    grayscale JPEGs are reduced like colour ones and come out as RGB; CMYK JPEGs too."""
    rng = np.random.default_rng(3)
    png = tmp_path / "a.png"
    _photo(rng, 250, 180).save(png)
    assert isinstance(_open(png, RULE, False, True)[0], Image.Image)  # PIL: all but JPEG
    assert (decode_fitted(png, RULE).int() - _old_path(png, RULE).int()).abs().max() <= 1
    gray = tmp_path / "g.jpg"
    _photo(rng, 250, 180).convert("L").save(gray, quality=90)
    full, new = decode_fitted(gray, RULE, draft=False), decode_fitted(gray, RULE)
    assert (full.int() - _old_path(gray, RULE).int()).abs().max() <= 1
    assert new.shape == full.shape and torch.equal(new[0], new[2])
    assert (new.float() - full.float()).abs().mean() < 2.0
    cmyk = tmp_path / "k.jpg"  # PIL converts CMYK (torchvision is not asked)
    _photo(rng, 250, 180).convert("CMYK").save(cmyk, quality=90)
    assert isinstance(_open(cmyk, RULE, False, True)[0], Image.Image)
    full = decode_fitted(cmyk, RULE, draft=False)
    assert (full.int() - _old_path(cmyk, RULE).int()).abs().max() <= 1


def test_bad_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty"):
        decode_fitted(tmp_path / "empty.jpg", RULE)
    with pytest.raises(FileNotFoundError):
        decode_fitted(tmp_path / "nope.jpg", RULE)
    whole = _jpeg(tmp_path / "whole.jpg", _photo(np.random.default_rng(5), 300, 200))
    cut = tmp_path / "cut.jpg"  # cut inside the scan data: both decoders must refuse it
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    for draft in (True, False):
        with pytest.raises(BadImageError, match="truncated"):
            decode_fitted(cut, RULE, draft)


def test_decoded_images_skip_mode_reads_the_next_file(folder, tmp_path):
    import shutil

    root = tmp_path / "f"
    shutil.copytree(folder, root)
    first = sorted(root.rglob("*.jpg"))[0]
    first.write_bytes(first.read_bytes()[:200])  # truncated
    base = UnlabeledFolder(root, on_bad_image="skip")
    _, canvas, hw = DecodedImages(base, S0, M)[0]
    second = decode_fitted(sorted(root.rglob("*.jpg"))[1], RULE)
    assert torch.equal(canvas[:, :hw[0], :hw[1]], second)
    assert base.bad_images == [str(first)]


def test_decoded_images_canvas(folder):
    base = UnlabeledFolder(folder)
    for draft in (True, False):
        idx, canvas, hw = DecodedImages(base, S0, M, draft=draft)[5]
        h, w = hw.tolist()
        want = decode_fitted(base.samples[5][0], RULE, draft)
        assert idx == 5 and canvas.shape == (3, M, M)
        assert torch.equal(canvas[:, :h, :w], want) and canvas[:, h:].sum() == 0


def test_loc_loader_decodes_folders_to_the_square(folder):
    base = UnlabeledFolder(folder)
    idx, x = next(iter(loc_loader(base, MEAN, STD, 8, 0, 56)))
    assert idx.tolist() == list(range(8)) and x.shape == (8, 3, 56, 56)
    tf = EvalTransform(MEAN, STD, 56)
    for j in range(8):
        path = base.samples[j][0]
        assert torch.equal(x[j], tf(decode_fitted(path, partial(square_size, size=56))))
        old = tf(load_rgb(path))  # the former path: full decode, PIL resize in EvalTransform
        assert ((x[j] - old) * torch.tensor(STD).view(3, 1, 1)).abs().mean() < 2 / 255
    _, full = next(iter(loc_loader(base, MEAN, STD, 8, 0, 56, draft=False)))
    assert not torch.equal(full, x)  # draft=False is the full decode


def test_eval_transform_tensor_equals_pil():
    rng = np.random.default_rng(4)
    img = _photo(rng, 56, 56)
    tf = EvalTransform(MEAN, STD, 56)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    assert torch.equal(tf(x), tf(img))
