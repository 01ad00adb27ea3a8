"""ResNet-18/34/50 backbones with a configurable width and a CIFAR or ImageNet stem."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

__all__ = ["ARCHS", "STEMS", "ResNet", "build_backbone"]

# arch -> (block class, blocks per stage), as in He et al. 2016, Table 1.
ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
STEMS = ("cifar", "imagenet")


class ResNet(nn.Module):
    """ResNet trunk (no classifier) with torchvision's blocks and, at ``width=64``, its
    ``state_dict`` names and shapes minus ``fc``.

    ``block``: torchvision's ``BasicBlock`` or ``Bottleneck``; ``layers``: blocks per stage;
    ``stem``: "cifar" (3x3 stride-1 conv, no max-pool: 32 px -> 4x4 layer4 map) or "imagenet"
    (7x7 stride-2 conv + max-pool: 224 px -> 7x7); ``width``: channels of the first stage
    (stages: w, 2w, 4w, 8w times the expansion); ``zero_init_residual``: zero every block's last
    BN scale (blocks start as identity). ``feat_dim``: channels C of the layer4 map = D.
    """

    num_stages = 4  # layer1..layer4; ``stage_maps`` numbers them from 1

    def __init__(self, block: type[nn.Module], layers: tuple[int, int, int, int],
                 stem: str = "cifar", width: int = 64, zero_init_residual: bool = False) -> None:
        super().__init__()
        if stem not in STEMS or width < 1:
            raise ValueError(f"stem must be one of {STEMS} and width >= 1, got {stem!r}, {width}")
        self._inplanes = width
        if stem == "cifar":
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feat_dim: int = 8 * width * block.expansion
        self._init_weights(zero_init_residual)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        """One stage; a 1x1 conv + BN shortcut where the shape changes (torchvision naming)."""
        out_planes = planes * block.expansion
        downsample = None
        if stride != 1 or self._inplanes != out_planes:
            downsample = nn.Sequential(nn.Conv2d(self._inplanes, out_planes, kernel_size=1,
                                                 stride=stride, bias=False),
                                       nn.BatchNorm2d(out_planes))
        # base_width=64 keeps a Bottleneck's inner width equal to `planes` at any network width.
        mods = [block(self._inplanes, planes, stride, downsample, base_width=64)]
        self._inplanes = out_planes
        mods += [block(self._inplanes, planes, base_width=64) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """He-normal convs (fan_out), unit BN; optionally zero each block's last BN scale."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if not zero_init_residual:
            return
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The layer4 map (B, C, h, w), C = ``feat_dim``, h = H/8 (cifar) or H/32 (imagenet)."""
        return self.stage_maps(x, (4,))[0]

    def stage_maps(self, x: torch.Tensor, stages: tuple[int, ...] = (4,)) -> list[torch.Tensor]:
        """Output maps of ``stages`` (1 = layer1 ... 4 = layer4) in the order asked, running
        only up to the deepest; stage s of images (B, 3, H, W) is (B, width * 2^(s-1) *
        expansion, H / 2^(s-1), W / 2^(s-1)) with the cifar stem (a further /4 for imagenet)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for s, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            if s > max(stages):
                break
            x = layer(x)
            out[s] = x
        return [out[s] for s in stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features (B, D) of images (B, 3, H, W)."""
        return torch.flatten(self.avgpool(self.forward_features(x)), 1)  # (B, D)


def build_backbone(arch: str = "resnet18", stem: str = "cifar", width: int = 64,
                   zero_init_residual: bool = False) -> ResNet:
    """ccrop's ResNet "resnet18", "resnet34" or "resnet50" (see ``ResNet``; ``width`` 8 or 16
    for tiny tests; SimSiam uses ``zero_init_residual``)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    block, layers = ARCHS[arch]
    return ResNet(block, layers, stem=stem, width=width, zero_init_residual=zero_init_residual)
