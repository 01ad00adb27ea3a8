"""Tests for ccrop.models: backbone shapes, torchvision compatibility, heads."""

import pytest
import torch
import torchvision
from torch import nn

from ccrop.models import build_backbone, mlp


@pytest.mark.parametrize(("arch", "expansion"), [("resnet18", 1), ("resnet34", 1), ("resnet50", 4)])
def test_cifar_stem_shapes(arch: str, expansion: int) -> None:
    net = build_backbone(arch, stem="cifar", width=8)
    assert net.feat_dim == 8 * 8 * expansion
    x = torch.randn(2, 3, 32, 32)
    assert net.forward_features(x).shape == (2, net.feat_dim, 4, 4)
    assert net(x).shape == (2, net.feat_dim)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_imagenet_stem_shapes(arch: str) -> None:
    net = build_backbone(arch, stem="imagenet", width=8).eval()
    with torch.no_grad():
        fmap = net.forward_features(torch.randn(1, 3, 224, 224))
    assert fmap.shape == (1, net.feat_dim, 7, 7)


def test_forward_is_mean_of_feature_map() -> None:
    net = build_backbone(width=8)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net(x), net.forward_features(x).mean(dim=(2, 3)))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_state_dict_compatible(arch: str) -> None:
    torch.manual_seed(0)
    ref = getattr(torchvision.models, arch)(weights=None)
    net = build_backbone(arch, stem="imagenet", width=64)
    result = net.load_state_dict(ref.state_dict(), strict=False)
    assert result.missing_keys == []
    assert sorted(result.unexpected_keys) == ["fc.bias", "fc.weight"]
    ref.fc = nn.Identity()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), ref.eval()(x))


def test_cifar_stem_differs_from_torchvision_only_in_conv1() -> None:
    ref = torchvision.models.resnet18(weights=None).state_dict()
    ours = build_backbone("resnet18", stem="cifar", width=64).state_dict()
    assert set(ours) == set(ref) - {"fc.weight", "fc.bias"}
    differ = [k for k in ours if ours[k].shape != ref[k].shape]
    assert differ == ["conv1.weight"] and ours["conv1.weight"].shape == (64, 3, 3, 3)


def test_channels_last_matches_contiguous() -> None:
    net = build_backbone(width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = net.forward_features(x)
        net = net.to(memory_format=torch.channels_last)
        out = net.forward_features(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("arch", "last_bn"), [("resnet18", "bn2"), ("resnet50", "bn3")])
def test_zero_init_residual(arch: str, last_bn: str) -> None:
    net = build_backbone(arch, width=8, zero_init_residual=True)
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    assert all((getattr(b, last_bn).weight == 0).all() for b in blocks)
    plain = build_backbone(arch, width=8)
    assert (plain.layer1[0].get_submodule(last_bn).weight == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"arch": "resnet101"}, "arch"), ({"stem": "tiny"}, "stem"), ({"width": 0}, "width")],
)
def test_bad_backbone_args_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_backbone(**kwargs)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_mlp_structure(num_layers: int) -> None:
    head = mlp(10, 7, 5, num_layers=num_layers)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    bns = [m for m in head if isinstance(m, nn.BatchNorm1d)]
    assert len(linears) == num_layers and len(bns) == num_layers - 1
    assert head(torch.randn(4, 10)).shape == (4, 5)


def test_mlp_options() -> None:
    head = mlp(10, 7, 5, num_layers=3, last_bn=True)
    assert isinstance(head[-1], nn.BatchNorm1d) and not head[-1].affine
    out = head(torch.randn(16, 10))
    torch.testing.assert_close(out.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    no_bn = mlp(10, 7, 5, hidden_bn=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in no_bn)
    with pytest.raises(ValueError, match="num_layers"):
        mlp(10, 7, 5, num_layers=0)
    with pytest.raises(ValueError, match="in_dim"):
        mlp(0, 7, 5)
