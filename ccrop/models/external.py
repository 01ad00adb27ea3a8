"""Any timm or torchvision backbone behind ccrop's interface (``model.arch=timm:NAME|tv:NAME``).

``ExternalBackbone`` gives a foreign network what ccrop's ResNets have: ``forward_features(x)``
(B, C, h, w), the heatmap source; ``forward(x)`` (B, D), pooled the model's own way (timm's
``forward_head(..., pre_logits=True)``; global average for torchvision CNNs); ``feat_dim`` = D;
and ``stage_maps(x, stages)`` for ``crop.heatmap_stages``, counted from the end (4 = the last
map, 3 = the map one resolution level before it: layer3 of any ResNet, as in ccrop's own). A
ViT has one patch grid, which every stage selection gives.

A timm ViT's heatmap source (``vit_heatmap``): ``"attention"`` (default), the last block's CLS
-> patch attention per head (B, heads, h, w), computed without hooks from the tokens entering
that block (models without a class token or timm's ``Attention`` fall back to tokens); or
``"tokens"``, the patch tokens on their grid (B, C, h, w). On synthetic images (8x8 grid) the
attention gave +0.06 to +0.14 box IoU over tokens at every checkpoint, so it is the default.

``model.stem=cifar`` turns a ResNet-style stem (``conv1`` + ``maxpool``) into a 3x3 stride-1
conv without max-pool; models that take ``img_size`` (ViT, Swin) keep their stem and are built
at the data's size (with ``dynamic_img_size``); any other model rejects ``stem=cifar``.
``model.width`` is ignored; ``model.kwargs`` goes to ``timm.create_model`` /
``torchvision.models.get_model``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ccrop.config import ARCH_PREFIXES, ConfigError

#: keywords ccrop sets itself; ``model.kwargs`` may not hold them
RESERVED_KWARGS = ("pretrained", "num_classes", "weights", "features_only")
NUM_STAGES = 4


def is_external(arch: str) -> bool:
    """True for ``timm:NAME`` and ``tv:NAME`` archs."""
    return arch.startswith(ARCH_PREFIXES)


class ExternalBackbone(nn.Module):
    """Base of the timm and torchvision wrappers: ``feat_dim`` (D), ``num_stages`` (4)."""

    num_stages = NUM_STAGES

    def __init__(self, arch: str, feat_dim: int) -> None:
        super().__init__()
        self.arch, self.feat_dim = arch, int(feat_dim)

    def _level_index(self, stages: tuple[int, ...], levels: int) -> dict[int, int]:
        """Stage (4 = last) -> index among the model's ``levels`` feature levels."""
        if min(stages) <= NUM_STAGES - levels:
            raise ValueError(f"crop.heatmap_stages={list(stages)}: {self.arch} has {levels} "
                             f"feature levels, so stages {NUM_STAGES - levels + 1}..{NUM_STAGES} "
                             "(4 = the last map) exist")
        return {s: levels - 1 - (NUM_STAGES - s) for s in stages}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled last map: (B, 3, H, W) -> (B, D)."""
        return self.forward_features(x).mean(dim=(2, 3))  # (B, D)


class TimmBackbone(ExternalBackbone):
    """A ``timm`` model built with ``num_classes=0`` (CNN or ViT); ``vit_heatmap`` holds the
    ViT heatmap source in use, None for other models."""

    def __init__(self, arch: str, net: nn.Module, vit_heatmap: str = "attention") -> None:
        super().__init__(arch, getattr(net, "head_hidden_size", None) or net.num_features)
        self.net = net
        self.is_vit = getattr(net, "num_prefix_tokens", None) is not None
        attention = vit_heatmap == "attention" and self.is_vit and _has_cls_attention(net)
        self.vit_heatmap = ("attention" if attention else "tokens") if self.is_vit else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features the model's own way (CLS token, average, ...): (B, 3, H, W) -> (B, D)."""
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)  # (B, D)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Heatmap source (B, C, h, w): a CNN's last map; a ViT's CLS attention per head
        (``vit_heatmap="attention"``) or patch-token grid (``"tokens"``)."""
        return self.cls_attention(x) if self.vit_heatmap == "attention" else self.feature_map(x)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last spatial features (B, C, h, w): a CNN's last map, a ViT's patch tokens on the
        grid (class/register tokens dropped)."""
        return self._as_map(self.net.forward_features(x), x.shape[-2:])

    def _as_map(self, out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``forward_features`` output -> (B, C, h, w): tokens to the grid, NHWC to NCHW."""
        if self.is_vit:
            return self._grid(out[:, self.net.num_prefix_tokens:], size)
        if getattr(self.net, "output_fmt", "NCHW") == "NHWC":  # e.g. Swin
            return out.permute(0, 3, 1, 2)
        return out

    def _grid(self, patches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Patch tokens (B, n, C) -> (B, C, h, w) on the patch grid of an (H, W) input."""
        pe = self.net.patch_embed
        if hasattr(pe, "dynamic_feat_size"):
            h, w = pe.dynamic_feat_size(tuple(size))
        else:  # timm < 1.0
            h, w = size[0] // pe.patch_size[0], size[1] // pe.patch_size[1]
        return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)

    def cls_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Last block's CLS -> patch attention per head: (B, 3, H, W) -> (B, nh, h, w)."""
        net, blk = self.net, self.net.blocks[-1]
        last = len(net.blocks) - 2  # the output of this block is the last block's input
        (spatial, prefix), = net.forward_intermediates(
            x, indices=[last], norm=False, output_fmt="NLC", return_prefix_tokens=True,
            stop_early=True, intermediates_only=True)
        tokens = torch.cat([prefix, spatial], dim=1)  # (B, N, C)
        attn = blk.attn
        B, N, _ = tokens.shape
        qkv = attn.qkv(blk.norm1(tokens)).reshape(B, N, 3, attn.num_heads, -1)
        q, k = qkv[:, :1, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, nh, 1|N, hd)
        q, k = getattr(attn, "q_norm", nn.Identity())(q), getattr(attn, "k_norm", nn.Identity())(k)
        scale = getattr(attn, "scale", q.shape[-1] ** -0.5)
        weights = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, nh, 1, N)
        return self._grid(weights[:, :, 0, net.num_prefix_tokens:].transpose(1, 2),
                          x.shape[-2:])  # (B, nh, h, w)

    def stage_maps(self, x: torch.Tensor, stages: tuple[int, ...] = (4,)) -> list[torch.Tensor]:
        """One (B, C_s, h_s, w_s) map per stage in 1..4 of images (B, 3, H, W), counted from
        the end (4 = ``forward_features``, earlier ones via timm's ``forward_intermediates``);
        a ViT gives its one map."""
        stages = tuple(int(s) for s in stages)
        if self.is_vit or stages == (NUM_STAGES,):  # a ViT has one map
            return [self.forward_features(x)]
        has_levels = hasattr(self.net, "forward_intermediates")
        levels = len(getattr(self.net, "feature_info", [])) if has_levels else 1
        index = self._level_index(stages, levels)
        take = sorted({i for s, i in index.items() if s != NUM_STAGES})  # in network order
        final, inter = self.net.forward_intermediates(x, indices=take, output_fmt="NCHW")
        maps = {s: inter[take.index(i)] for s, i in index.items() if s != NUM_STAGES}
        maps[NUM_STAGES] = self._as_map(final, x.shape[-2:])
        return [maps[s] for s in stages]


def _has_cls_attention(net: nn.Module) -> bool:
    blocks = getattr(net, "blocks", None)
    if not blocks or len(blocks) < 2 or not hasattr(net, "forward_intermediates"):
        return False
    attn = getattr(blocks[-1], "attn", None)
    return (getattr(net, "cls_token", None) is not None and hasattr(blocks[-1], "norm1")
            and hasattr(attn, "qkv") and hasattr(attn, "num_heads"))


class TorchvisionBackbone(ExternalBackbone):
    """A torchvision CNN's trunk (classifier and pooling removed) as one ``nn.Sequential``."""

    def __init__(self, arch: str, trunk: nn.Sequential, feat_dim: int) -> None:
        super().__init__(arch, feat_dim)
        self.trunk = trunk

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Last convolutional map (B, C, h, w), before pooling."""
        return self.trunk(x)

    def stage_maps(self, x: torch.Tensor, stages: tuple[int, ...] = (4,)) -> list[torch.Tensor]:
        """One (B, C_s, h_s, w_s) map per stage in 1..4 of images (B, 3, H, W), counted from
        the end: 4 = the trunk's output, 3 = the last map at the resolution before it, ..."""
        stages = tuple(int(s) for s in stages)
        levels: list[torch.Tensor] = []  # the last output at each resolution, in order
        for layer in _sequential_leaves(self.trunk):
            y = layer(x)
            if levels and y.shape[-2:] == x.shape[-2:]:
                levels[-1] = y
            else:
                levels.append(y)
            x = y
        index = self._level_index(stages, len(levels))
        return [levels[index[s]] for s in stages]


def _sequential_leaves(module: nn.Module) -> list[nn.Module]:
    """``module`` run as a flat list: plain ``nn.Sequential`` containers opened recursively
    (RegNet's ``trunk_output``, ResNet's layers), every other module kept whole."""
    if not (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward):
        return [module]
    return [leaf for child in module for leaf in _sequential_leaves(child)]


def build_external(arch: str, stem: str = "cifar", zero_init_residual: bool = False,
                   image_size: int | None = None, kwargs: dict[str, Any] | None = None,
                   vit_heatmap: str = "attention") -> ExternalBackbone:
    """Build ``timm:NAME`` or ``tv:NAME`` (any ``timm.list_models()`` /
    ``torchvision.models.list_models()`` name) randomly initialised behind ccrop's interface.

    ``stem``: "cifar" or "imagenet" (see the module doc); ``zero_init_residual``: zero the last
    norm of each residual block (SimSiam); ``image_size``: input side of models that take
    ``img_size`` (None: the model's default); ``kwargs``: ``model.kwargs``.

    Raises:
        ConfigError: timm missing, unknown name, bad ``model.kwargs``, ``stem=cifar`` on a
            model without a ResNet-style stem, a torchvision transformer; names the config key.
    """
    kwargs = dict(kwargs or {})
    bad = sorted(set(kwargs) & set(RESERVED_KWARGS))
    if bad:
        raise ConfigError(f"model.kwargs must not set {bad}: ccrop builds randomly initialised "
                          "models without classifier")
    source, name = arch.split(":", 1)
    if source == "timm":
        net, sized = _create_timm(arch, name, image_size, kwargs)
    else:
        import torchvision.models

        net = _create(arch, lambda: torchvision.models.get_model(name, weights=None, **kwargs))
        sized = False
    if stem == "cifar" and not sized:
        _cifar_stem(arch, net)
    if zero_init_residual:
        _zero_init_residual(net)
    if source == "timm":
        return TimmBackbone(arch, net, vit_heatmap)
    trunk = _tv_trunk(arch, net)
    if isinstance(getattr(net, "fc", None), nn.Linear):
        feat_dim = net.fc.in_features
    else:
        with torch.no_grad():  # D = channels of the last map; one tiny forward finds it
            feat_dim = trunk.eval()(torch.zeros(1, 3, 64, 64)).shape[1]
    return TorchvisionBackbone(arch, trunk.train(), feat_dim)


def _create(arch: str, make: Any) -> nn.Module:
    """``make()``, its errors turned into a ConfigError naming ``model.kwargs`` (a TypeError:
    a bad keyword) or ``model.arch`` (an unknown name)."""
    try:
        return make()
    except (TypeError, RuntimeError, ValueError, KeyError) as err:
        key = f"model.kwargs for {arch!r}" if isinstance(err, TypeError) else f"model.arch={arch!r}"
        raise ConfigError(f"{key}: {err}") from None


def _create_timm(arch: str, name: str, image_size: int | None,
                 kwargs: dict[str, Any]) -> tuple[nn.Module, bool]:
    """``timm.create_model`` without classifier; ViT-like models get ``img_size`` (and
    ``dynamic_img_size``, so other sizes work too). Returns the model and whether it took
    these size keywords (a transformer: it keeps its own stem)."""
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.arch={arch!r} needs timm: pip install ccrop[timm]") from None
    if not timm.is_model(name):
        raise ConfigError(f"model.arch={arch!r}: timm has no model {name!r} "
                          "(timm.list_models() lists them)")
    sized = {} if image_size is None else {"img_size": image_size}
    def make(extra: dict[str, Any]) -> nn.Module:
        return _create(arch, lambda: timm.create_model(name, pretrained=False, num_classes=0,
                                                       **{**extra, **kwargs}))

    for extra in ({**sized, "dynamic_img_size": True}, *([sized] if sized else [])):
        try:  # CNNs reject both keywords: a TypeError before anything is built
            return make(extra), True
        except ConfigError as err:
            if "unexpected keyword" not in str(err):
                raise
    return make({}), "img_size" in kwargs


def _tv_trunk(arch: str, net: nn.Module) -> nn.Sequential:
    """The convolutional trunk of a torchvision classifier, as one Sequential: for ResNet-like
    models (``fc``) every child before the pooling (auxiliary classifiers left out, torchvision's
    names kept), else ``features`` (VGG, DenseNet, MobileNet, ...) or ``layers`` (MNASNet)."""
    children = dict(net.named_children())
    if "fc" in children:
        trunk = {}
        for key, child in children.items():
            if key in ("avgpool", "dropout", "fc"):
                break
            if not key.lower().startswith("aux") and child is not None:
                trunk[key] = child
        return nn.Sequential(OrderedDict(trunk))
    for key in ("features", "layers"):
        if isinstance(children.get(key), nn.Sequential) and "permute" not in children:
            return children[key]
    raise ConfigError(f"model.arch={arch!r}: ccrop takes torchvision CNNs (ResNet, RegNet, "
                      "VGG, DenseNet, MobileNet, EfficientNet, ConvNeXt, ...); for "
                      "transformers use timm:NAME")


def _cifar_stem(arch: str, net: nn.Module) -> None:
    """3x3 stride-1 ``conv1`` and no ``maxpool``, in place (ResNet-style stems only)."""
    conv, pool = getattr(net, "conv1", None), getattr(net, "maxpool", None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(pool, nn.MaxPool2d):
        raise ConfigError(f"model.stem=cifar: {arch} has no ResNet-style stem (conv1 + maxpool) "
                          "to replace; set model.stem=imagenet to keep its own stem")
    net.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1,
                          bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()


def _zero_init_residual(net: nn.Module) -> None:
    """Zero each residual block's last norm scale (timm ``zero_init_last``, torchvision
    ``BasicBlock.bn2`` / ``Bottleneck.bn3``) so blocks start as identity."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    for m in net.modules():
        if callable(getattr(m, "zero_init_last", None)):
            m.zero_init_last()
        elif isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)
