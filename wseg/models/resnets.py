"""ResNet-50/101 backbones from torchvision's definitions, dilated to output stride 8.

``torchvision.models.resnet101(weights=None, replace_stride_with_dilation=[False, True, True])`` minus the
ImageNet classifier (``fc``/``avgpool``); parameter names are torchvision's, so ``resnet101-5d3b4d8f.pth`` /
``resnet50-19c8e357.pth`` load directly (their ``fc.*`` entries are ignored, see ``checkpoint_ignore``).

``forward_features`` has the same interface as :class:`wseg.models.resnet38.ResNet38`: ``conv3`` = layer1
(256 ch, stride 4), ``conv4`` = layer2 (512 ch, stride 8), ``conv5`` = layer3 (1024 ch, dilation 2),
``conv6`` = layer4 (2048 ch, dilation 4); SEAM's PCM (512 + 1024 inputs) therefore fits unchanged.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torchvision.models.resnet import Bottleneck, ResNet

from wseg.models.resnet38 import FrozenBNMixin

DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}
#: Fixed during CAM training (our choice by analogy with ResNet-38's conv1a + b2*: the stem and first stage).
CAM_FROZEN = ("conv1", "bn1", "layer1")


class ResNetBackbone(FrozenBNMixin, ResNet):
    """torchvision Bottleneck ResNet at output stride 8 (dilation in layer3/layer4), BatchNorm frozen."""

    checkpoint_ignore = ("fc.",)
    CAM_FROZEN = CAM_FROZEN

    def __init__(self, depth: int = 101, layers: Optional[Sequence[int]] = None, width_per_group: int = 64,
                 frozen: Sequence[str] = ("conv1", "bn1"), freeze_bn: bool = True):
        layers = list(layers) if layers is not None else DEPTHS[int(depth)]
        super().__init__(Bottleneck, layers, width_per_group=width_per_group,
                         replace_stride_with_dilation=[False, True, True])
        del self.fc, self.avgpool
        self.depth = depth
        self.freeze_bn = bool(freeze_bn)
        e = Bottleneck.expansion
        self.feature_channels: Dict[str, int] = {"conv3": 64 * e, "conv4": 128 * e, "conv5": 256 * e,
                                                 "conv6": 512 * e}
        self.out_channels = self.feature_channels["conv6"]
        self.output_stride = 8
        self.set_frozen(frozen)

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        conv3 = self.layer1(x)
        conv4 = self.layer2(conv3)
        conv5 = self.layer3(conv4)
        conv6 = self.layer4(conv5)
        return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": conv6}

    forward_as_dict = forward_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["conv6"]


def resnet50(**kwargs) -> ResNetBackbone:
    return ResNetBackbone(depth=50, **kwargs)


def resnet101(**kwargs) -> ResNetBackbone:
    return ResNetBackbone(depth=101, **kwargs)


TINY = {"depth": "tiny", "layers": (1, 1, 1, 1), "width_per_group": 16}


def resnet_tiny(**kwargs) -> ResNetBackbone:
    """One Bottleneck per stage with 1/4 inner width (torchvision names; same feature channels) for CPU tests."""
    return ResNetBackbone(**{**TINY, **kwargs})
