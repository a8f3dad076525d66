"""Bottleneck ResNet-50/101 in torchvision's layout, with the stems and output strides of the published recipes.

One class covers every ResNet the reproduced systems use; parameter names are torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``), which mmsegmentation's ``ResNetV1c`` shares below its stem:

- ``stem="torchvision"``: 7x7/2 ``conv1`` + ``bn1`` (``resnet50-19c8e357.pth`` / ``resnet101-5d3b4d8f.pth`` load
  directly; their ``fc.*`` is ignored);
- ``stem="v1c"``: mmsegmentation's deep stem ``stem.{0..8}`` = three 3x3 conv-BN-ReLU, 32-32-64 channels, the
  first with stride 2 (``open-mmlab://resnet{50,101}_v1c``);
- ``stem="resnet101s"``: PyTorch-Encoding's "deep base" ``conv1.{0,1,3,4,6}`` = 3x3 64-64-128 and ``bn1`` over
  128 channels (the published usr922/wseg DeepLab ResNet-101).

Strides and dilations per stage as mmsegmentation writes them: ``output_stride=8`` is strides (1, 2, 1, 1) and
dilations (1, 1, 2, 4) (the "D8" of ``R-50-D8``), 16 is (1, 2, 2, 1) / (1, 1, 1, 2), 32 no dilation. Within a
dilated stage the first block uses half the dilation (``first_dilation="contract"``, mmseg's
``contract_dilation=True``; torchvision's ``replace_stride_with_dilation`` does the same) or 1
(``first_dilation="one"``, RS+EPM's ResNet); explicit ``strides``/``dilations`` override the output stride (RS+EPM's
OS16 keeps layer4 at stride 1 *without* dilation: ``strides=(1, 2, 2, 1), dilations=(1, 1, 1, 1)``).
Levels: ``layer1`` (stride 4) .. ``layer4``. ``base_channels`` scales every width for CPU runs (64 = published).

mmsegmentation's ``ResNetV1c`` (``deep_stem=True, avg_down=False, style='pytorch'``, mmseg 1.2.2
``mmseg/models/backbones/resnet.py`` ``ResNet._make_stem_layer``/``Bottleneck``, ``mmseg/models/utils/res_layer.py``
``ResLayer``) is ``stem="v1c"`` key for key and layer for layer: the stride sits on the 3x3 ``conv2``, padding =
dilation, the downsample is a 1x1 convolution + BN (stride 2 only where the stage strides), and a dilated stage's
first block uses ``dilation // 2`` (``contract_dilation``). ``zero_init_residual=True`` is mmseg's initialisation
from scratch (every ``bn3`` weight 0); any loaded checkpoint overwrites it.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from wseg.errors import WsegError
from wseg.models.backbones.base import Backbone

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
STRIDES = {8: ((1, 2, 1, 1), (1, 1, 2, 4)), 16: ((1, 2, 2, 1), (1, 1, 1, 2)), 32: ((1, 2, 2, 2), (1, 1, 1, 1))}
STEMS = ("torchvision", "v1c", "resnet101s")


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ResNet(Backbone):
    """Bottleneck ResNet backbone returning ``{"layer1": .., "layer4": ..}`` (see the module docstring)."""

    levels = ("layer1", "layer2", "layer3", "layer4")
    checkpoint_ignore = ("fc.",)

    def __init__(self, depth: int | str = 101, layers: Optional[Sequence[int]] = None, stem: str = "torchvision",
                 output_stride: int = 8, strides: Optional[Sequence[int]] = None,
                 dilations: Optional[Sequence[int]] = None, first_dilation: str = "contract",
                 base_channels: int = 64, width_per_group: int = 64, frozen: Sequence[str] = (),
                 freeze_bn: bool = False, zero_init_residual: bool = False):
        super().__init__()
        if stem not in STEMS:
            raise WsegError(f"stem {stem!r}: choose one of {', '.join(STEMS)}")
        if strides is None or dilations is None:
            if output_stride not in STRIDES:
                raise WsegError(f"output_stride {output_stride}: choose 8, 16 or 32")
            strides, dilations = STRIDES[output_stride]
        layers = tuple(layers) if layers is not None else DEPTHS[int(depth)]
        self.depth, self.stem_type, self.freeze_bn = depth, stem, bool(freeze_bn)
        self.strides, self.dilations = tuple(int(s) for s in strides), tuple(int(d) for d in dilations)
        b = int(base_channels)
        if stem == "torchvision":
            self.conv1 = nn.Conv2d(3, b, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(b)
            inplanes = b
        elif stem == "resnet101s":
            self.conv1 = nn.Sequential(*_conv_bn_relu(3, b, 2), *_conv_bn_relu(b, b),
                                       nn.Conv2d(b, 2 * b, 3, padding=1, bias=False))
            self.bn1 = nn.BatchNorm2d(2 * b)
            inplanes = 2 * b
        else:
            self.stem = nn.Sequential(*_conv_bn_relu(3, b // 2, 2), *_conv_bn_relu(b // 2, b // 2),
                                      *_conv_bn_relu(b // 2, b))
            inplanes = b
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_channels, self.feature_strides = {}, {}
        total = 4
        for i, (n, s, d) in enumerate(zip(layers, self.strides, self.dilations)):
            planes = b * 2 ** i
            first = d // 2 if (first_dilation == "contract" and d > 1) else (1 if first_dilation == "one" else d)
            self.add_module(f"layer{i + 1}", self._make_layer(inplanes, planes, n, s, d, first, width_per_group))
            inplanes = planes * Bottleneck.expansion
            total *= s
            self.feature_channels[f"layer{i + 1}"] = inplanes
            self.feature_strides[f"layer{i + 1}"] = total
        for m in self.modules():   # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:     # mmseg's from-scratch init: each residual branch starts as zero
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
        first_layers = ("stem",) if stem == "v1c" else ("conv1", "bn1")
        self.cam_frozen = first_layers + ("layer1",)
        self.set_frozen(frozen)

    @staticmethod
    def _make_layer(inplanes: int, planes: int, blocks: int, stride: int, dilation: int, first_dilation: int,
                    width_per_group: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        down = None
        if stride != 1 or inplanes != out:
            down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        mods = [Bottleneck(inplanes, planes, stride, down, base_width=width_per_group, dilation=first_dilation)]
        mods += [Bottleneck(out, planes, base_width=width_per_group, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.stem(x) if self.stem_type == "v1c" else self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        out = {}
        for name in self.levels:
            x = getattr(self, name)(x)
            out[name] = x
        return out


#: The reduced ResNet of the tests: one block per stage at 1/4 inner width (torchvision names, full channels).
TINY = {"depth": "tiny", "layers": (1, 1, 1, 1), "width_per_group": 16}


def resnet(depth: int, **kwargs) -> ResNet:
    return ResNet(depth=depth, **kwargs)


def stem_of(state: Dict[str, torch.Tensor], prefix: str = "") -> Optional[str]:
    """Which stem a ResNet state dict has (``None`` if it holds no ResNet stem)."""
    if prefix + "stem.0.weight" in state:
        return "v1c"
    if prefix + "conv1.0.weight" in state:
        return "resnet101s"
    if prefix + "conv1.weight" in state:
        return "torchvision"
    return None


def check_stem(state: Dict[str, torch.Tensor], net: ResNet, source: str, prefix: str = "") -> None:
    """One-line error when weights of one stem are loaded into a ResNet of another (the usual mix-up)."""
    found = stem_of(state, prefix)
    if found is not None and found != net.stem_type:
        raise WsegError(f"{source}: ResNet weights with the {found!r} stem, but the network is built with stem="
                        f"{net.stem_type!r}; set the backbone's stem to {found!r} (e.g. model.stem={found}) or pass "
                        "matching weights")


__all__: Tuple[str, ...] = ("ResNet", "TINY", "resnet", "stem_of", "check_stem", "DEPTHS", "STRIDES", "STEMS")
