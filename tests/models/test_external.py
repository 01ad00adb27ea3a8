"""Tests for ccrop.models.external: timm (``timm:NAME``) and torchvision (``tv:NAME``) backbones
behind ccrop's interface, their heatmaps, config keys and the CLI end to end."""

import contextlib
import importlib.util
import io
import json
import sys

import pytest
import torch
from torch import nn

from ccrop.cli import main
from ccrop.config import ConfigError, load_config
from ccrop.localize import boxes_from_features, feature_fn
from ccrop.models import build_backbone
from ccrop.models.external import TorchvisionBackbone

needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                                reason="timm is not installed (pip install ccrop[timm])")
VIT = "timm:vit_tiny_patch16_224"
PATCH4 = {"patch_size": 4}  # 32 px -> an 8x8 patch grid, like ResNet-18's layer3 at 32 px

# (arch, stem, kwargs, input side, heatmap source (C, h, w) of forward_features, D)
CASES = [
    pytest.param("timm:resnet18", "cifar", {}, 32, (512, 4, 4), 512, marks=needs_timm),
    pytest.param("timm:resnet18", "imagenet", {}, 64, (512, 2, 2), 512, marks=needs_timm),
    pytest.param(VIT, "cifar", PATCH4, 32, (3, 8, 8), 192, marks=needs_timm),  # 3 heads
    pytest.param("tv:resnet18", "cifar", {}, 32, (512, 4, 4), 512),
]


@pytest.mark.parametrize(("arch", "stem", "kwargs", "side", "fmap", "dim"), CASES)
def test_shapes_and_boxes(arch, stem, kwargs, side, fmap, dim) -> None:
    torch.manual_seed(0)
    net = build_backbone(arch, stem=stem, image_size=side, kwargs=kwargs).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert net.forward_features(x).shape == (2, *fmap)
        assert net(x).shape == (2, dim) and net.feat_dim == dim
        # ccrop's default heatmap stage [3] works out of the box (a ViT gives its one map)
        maps = feature_fn(net, [3])(x)
        boxes = boxes_from_features(maps, (side, side), threshold=0.5, mode="quantile")
    assert boxes.shape == (2, 4) and torch.isfinite(boxes).all()
    assert (boxes >= 0).all() and (boxes <= 1).all() and (boxes[:, :2] <= boxes[:, 2:]).all()


@pytest.mark.parametrize("arch", [pytest.param("timm:resnet18", marks=needs_timm), "tv:resnet18"])
def test_resnet_stages_match_ccrop_numbering(arch) -> None:
    net = build_backbone(arch, stem="cifar").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        s3, s1, s4 = net.stage_maps(x, (3, 1, 4))  # layer3, layer1, layer4 as in ccrop's ResNet
        assert (s1.shape, s3.shape, s4.shape) == ((1, 64, 32, 32), (1, 256, 8, 8), (1, 512, 4, 4))
        torch.testing.assert_close(s4, net.forward_features(x))


def test_tv_stages_open_nested_sequentials() -> None:
    """RegNet's blocks sit two Sequentials deep: stages are still one per resolution."""
    net = build_backbone("tv:regnet_y_400mf", stem="imagenet").eval()
    with torch.no_grad():
        maps = net.stage_maps(torch.randn(1, 3, 64, 64), (1, 2, 3, 4))
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2] and maps[-1].shape[1] == net.feat_dim


def test_stages_beyond_the_network_name_the_config_key() -> None:
    net = TorchvisionBackbone("tv:tiny", nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU()), 4)
    assert net.stage_maps(torch.zeros(1, 3, 8, 8), (4,))[0].shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"crop\.heatmap_stages"):
        net.stage_maps(torch.zeros(1, 3, 8, 8), (3,))


def test_tv_resnet_keeps_torchvision_names_and_zero_init() -> None:
    import torchvision

    net = build_backbone("tv:resnet18", stem="imagenet", zero_init_residual=True)
    ref = torchvision.models.resnet18(weights=None).state_dict()
    assert {k[len("trunk."):] for k in net.state_dict()} == set(ref) - {"fc.weight", "fc.bias"}
    assert all(not b.bn2.weight.any() for b in net.trunk.layer1)


@needs_timm
def test_vit_heatmap_sources_and_token_grid() -> None:
    att = build_backbone(VIT, image_size=32, kwargs=PATCH4).eval()  # default: CLS attention
    tok = build_backbone(VIT, image_size=32, kwargs=PATCH4, vit_heatmap="tokens").eval()
    tok.load_state_dict(att.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = att.forward_features(x)  # (B, heads, h, w)
        torch.testing.assert_close(tok.forward_features(x), att.feature_map(x))  # (B, C, h, w)
        assert att.feature_map(torch.randn(1, 3, 64, 64)).shape == (1, 192, 16, 16)  # any size
    assert (att.vit_heatmap, tok.vit_heatmap) == ("attention", "tokens")
    assert a.shape == (2, 3, 8, 8) and (a >= 0).all()
    assert (a.sum(dim=(2, 3)) <= 1 + 1e-5).all()  # softmax rows, the CLS column left out


@needs_timm
def test_vit_without_class_token_falls_back_to_tokens() -> None:
    net = build_backbone(VIT, image_size=32,
                         kwargs={**PATCH4, "class_token": False, "global_pool": "avg"})
    assert net.vit_heatmap == "tokens"
    assert net.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 192, 8, 8)


@needs_timm
def test_vit_attention_matches_timms_own_attention() -> None:
    """The hook-free CLS attention equals what the last block computes inside (checked here,
    in the test only, with a forward hook on the block's input)."""
    torch.manual_seed(0)
    net = build_backbone(VIT, image_size=32, kwargs=PATCH4, vit_heatmap="attention").eval()
    blk, seen = net.net.blocks[-1], {}
    handle = blk.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        net.net.forward_features(x)
        handle.remove()
        a = blk.attn
        B, N, C = seen["x"].shape
        q, k, _ = a.qkv(blk.norm1(seen["x"])).reshape(B, N, 3, a.num_heads, -1).permute(
            2, 0, 3, 1, 4)
        ref = ((a.q_norm(q) * a.scale) @ a.k_norm(k).transpose(-2, -1)).softmax(-1)
        torch.testing.assert_close(net.cls_attention(x).flatten(2), ref[:, :, 0, 1:])


@pytest.mark.parametrize(("arch", "kwargs", "stem", "key"), [
    pytest.param("timm:no_such_net", {}, "cifar", "model.arch", marks=needs_timm),
    ("tv:no_such_net", {}, "cifar", "model.arch"),
    ("tv:vit_b_16", {}, "imagenet", "model.arch"),
    pytest.param("timm:convnext_atto", {}, "cifar", "model.stem", marks=needs_timm),
    pytest.param("timm:resnet18", {"num_classes": 10}, "cifar", "model.kwargs",
                 marks=needs_timm),
    pytest.param("timm:resnet18", {"patch_size": 4}, "cifar", "model.kwargs", marks=needs_timm),
    ("tv:resnet18", {"no_such_kw": 1}, "cifar", "model.kwargs"),
])
def test_build_errors_name_the_config_key(arch, kwargs, stem, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_backbone(arch, stem=stem, kwargs=kwargs)


def test_missing_timm_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ConfigError, match=r"model\.arch.*pip install ccrop\[timm\]"):
        build_backbone("timm:resnet18")


@pytest.mark.parametrize(("override", "key"), [
    ("model.arch=timm:", "model.arch"), ("model.arch=tv: ", "model.arch"),
    ("model.arch=hub:resnet18", "model.arch"), ("model.kwargs.patch_size=4", "model.kwargs"),
    ("model.vit_heatmap=cls", "model.vit_heatmap"),
])
def test_config_rejects(override, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_config_accepts_external_archs() -> None:
    cfg = load_config(None, ["model.arch=timm:vit_tiny_patch16_224", "model.kwargs.patch_size=4",
                             "model.width=16"])  # width is ignored (the CLI demo sets it)
    assert (cfg.model.arch, cfg.model.kwargs, cfg.model.vit_heatmap) == (
        "timm:vit_tiny_patch16_224", {"patch_size": 4}, "attention")


TINY = ["data.dataset_kwargs.num_images=32", "data.batch_size=16", "data.num_workers=0",
        "train.max_steps_per_epoch=1", "train.knn_every=0", "train.tensorboard=false",
        "train.progress=false", "train.device=cpu", "method.params.proj_dim=16",
        "crop.loc_batch_size=32"]


def _pretrain(tmp_path, *overrides: str) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["pretrain", *TINY, *overrides, f"train.out_dir={tmp_path}"]) == 0
    return json.loads((tmp_path / "summary.json").read_text())


@pytest.mark.parametrize("model", [
    pytest.param(["model.arch=timm:resnet18", "method.params.proj_hidden=32"],
                 marks=needs_timm),
    ["model.arch=tv:resnet18", "method.name=simsiam", "method.params.pred_hidden=8"],
])
@pytest.mark.slow  # trains
def test_pretrain_one_epoch(model, tmp_path) -> None:
    summary = _pretrain(tmp_path, "train.epochs=1", "crop.warmup_epochs=1", *model)
    assert summary["epochs"] == 1 and 0 <= summary["knn_top1"] <= 100


@needs_timm
@pytest.mark.slow  # trains
def test_pretrain_vit_updates_boxes_and_draws_its_heatmaps(tmp_path) -> None:
    """Warm-up epoch, box update from patch tokens (default stages [3]: the one ViT map), the
    engine's heatmap figure, a ContrastiveCrop epoch."""
    summary = _pretrain(tmp_path, f"model.arch={VIT}", "model.kwargs.patch_size=4",
                        "method.params.proj_hidden=32", "train.epochs=2",
                        "crop.warmup_epochs=1", "crop.loc_interval=1")
    assert summary["box_updates"] == [1] and 0 <= summary["box_iou_gt"] <= 1
    figure = tmp_path / "figures" / "localization-epoch0001.png"
    assert summary["box_figure"] == str(figure) and figure.stat().st_size > 10_000


@needs_timm
def test_viz_draws_a_vit_heatmap(tmp_path) -> None:
    """``ccrop viz`` of a random-init ViT: patch 16 at 64 px gives a 4x4 token grid."""
    out = tmp_path / "fig"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["viz", f"model.arch={VIT}", "data.dataset_kwargs.num_images=16",
                     "data.dataset_kwargs.image_size=64", "data.batch_size=16",
                     "data.num_workers=0", "train.device=cpu", "--out", str(out),
                     "--num", "2"]) == 0
    png = out / "localization.png"
    assert png.is_file() and png.stat().st_size > 10_000
