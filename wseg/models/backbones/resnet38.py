"""The wide ResNet-38 ("model A1" of Wu et al.) used as CAM backbone by PSA, SEAM and PPC.

Layer and parameter names, shapes, dilations, dropout and the frozen parts are those of the published
``network/resnet38d.py`` (jiwoon-ahn/psa, YudeWang/SEAM, usr922/wseg), so published ``.pth`` files and the
converted ImageNet MXNet checkpoint (:mod:`wseg.models.mxnet_params`) load key for key.

Topology (output stride 8): ``conv1a`` (3x3, 64) -> ``b2``..``b2_2`` (stride 2, 128) -> ``b3``..``b3_2``
(stride 2, 256) -> ``b4``..``b4_5`` (stride 2, 512) -> ``b5``..``b5_2`` (dilation 2, 1024) -> ``b6``
(bottleneck, dilation 4, dropout 0.3, 2048) -> ``b7`` (bottleneck, dilation 4, dropout 0.5, 4096) -> ``bn7``.

``width`` scales every channel count (``resnet38_small`` = 1/8, ``resnet38_tiny`` = 1/16) with the same module names,
for CPU runs and tests.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wseg.models.backbones.base import Backbone

#: Published stages: (name, in, mid, out, stride, first_dilation, dilation) for the plain residual blocks.
_BLOCKS: Tuple[Tuple[str, int, int, int, int, int, int], ...] = (
    ("b2", 64, 128, 128, 2, 1, 1), ("b2_1", 128, 128, 128, 1, 1, 1), ("b2_2", 128, 128, 128, 1, 1, 1),
    ("b3", 128, 256, 256, 2, 1, 1), ("b3_1", 256, 256, 256, 1, 1, 1), ("b3_2", 256, 256, 256, 1, 1, 1),
    ("b4", 256, 512, 512, 2, 1, 1), ("b4_1", 512, 512, 512, 1, 1, 1), ("b4_2", 512, 512, 512, 1, 1, 1),
    ("b4_3", 512, 512, 512, 1, 1, 1), ("b4_4", 512, 512, 512, 1, 1, 1), ("b4_5", 512, 512, 512, 1, 1, 1),
    ("b5", 512, 512, 1024, 1, 1, 2), ("b5_1", 1024, 512, 1024, 1, 2, 2), ("b5_2", 1024, 512, 1024, 1, 2, 2),
)
#: Published bottleneck stages: (name, in, out, dilation, dropout).
_BOTTLENECKS = (("b6", 1024, 2048, 4, 0.3), ("b7", 2048, 4096, 4, 0.5))

#: The layers SEAM / PPC / AffinityNet keep fixed (``not_training`` in their ``Net``); PSA's base net fixes conv1a only.
CAM_FROZEN = ("conv1a", "b2", "b2_1", "b2_2")


class ResBlock(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv3x3-BN-ReLU-conv3x3), ``ResBlock`` of ``resnet38d.py``.

    The shortcut ``conv_branch1`` (1x1) exists only when the shape changes; it reads the block's BN-ReLU'd input.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1,
                 first_dilation: int | None = None, dilation: int = 1):
        super().__init__()
        self.same_shape = in_channels == out_channels and stride == 1
        first_dilation = dilation if first_dilation is None else first_dilation
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, mid_channels, 3, stride, padding=first_dilation,
                                       dilation=first_dilation, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_channels)
        self.conv_branch2b1 = nn.Conv2d(mid_channels, out_channels, 3, padding=dilation, dilation=dilation,
                                        bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor, get_x_bn_relu: bool = False):
        pre = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(pre)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(pre))))
        out = shortcut + y
        return (out, pre) if get_x_bn_relu else out


class ResBlockBottleneck(nn.Module):
    """Bottleneck block with spatial dropout (``ResBlock_bot`` of ``resnet38d.py``): 1x1 (out/4) -> 3x3 (out/2)
    -> 1x1 (out), ``Dropout2d`` before the last two convolutions."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.same_shape = in_channels == out_channels and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, out_channels // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_channels // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_channels // 4, out_channels // 2, 3, padding=dilation,
                                        dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_channels // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_channels // 2, out_channels, 1, bias=False)
        # The published block always projects the shortcut (both uses change the width).
        self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor, get_x_bn_relu: bool = False):
        pre = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(pre)
        y = self.conv_branch2a(pre)
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        out = shortcut + y
        return (out, pre) if get_x_bn_relu else out


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by ``width``, kept a multiple of 4 (the bottlenecks divide by 4); exact at width 1."""
    return max(4, 4 * int(round(channels * width / 4)))


class ResNet38(Backbone):
    """Wide ResNet-38 backbone (PSA's ``resnet38d.Net``), output stride 8.

    ``forward(x)`` returns the published ``forward_as_dict`` features (the :mod:`~wseg.models.backbones.base`
    contract, levels in this order):
    ``conv3`` (BN-ReLU input of ``b4``, 256 ch, stride 4), ``conv4`` (input of ``b5``, 512 ch, stride 8),
    ``conv5`` (input of ``b6``, 1024 ch), ``conv6`` (``relu(bn7(b7))``, 4096 ch). PCM uses conv4/conv5;
    AffinityNet uses conv4/conv5/conv6. Channel counts are in ``feature_channels``.
    """

    levels = ("conv3", "conv4", "conv5", "conv6")
    cam_frozen = CAM_FROZEN

    def __init__(self, width: float = 1.0, frozen: Sequence[str] = ("conv1a",), freeze_bn: bool = True):
        super().__init__()
        self.width = float(width)
        self.freeze_bn = bool(freeze_bn)
        c = lambda n: scaled(n, self.width)  # noqa: E731
        self.conv1a = nn.Conv2d(3, c(64), 3, padding=1, bias=False)
        for name, cin, mid, cout, stride, first_dil, dil in _BLOCKS:
            self.add_module(name, ResBlock(c(cin), c(mid), c(cout), stride=stride, first_dilation=first_dil,
                                           dilation=dil))
        for name, cin, cout, dil, drop in _BOTTLENECKS:
            self.add_module(name, ResBlockBottleneck(c(cin), c(cout), stride=1, dilation=dil, dropout=drop))
        self.bn7 = nn.BatchNorm2d(c(4096))
        self.feature_channels = {"conv3": c(256), "conv4": c(512), "conv5": c(1024), "conv6": c(4096)}
        self.feature_strides = {"conv3": 4, "conv4": 8, "conv5": 8, "conv6": 8}
        self.set_frozen(frozen)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.conv1a(x)
        x = self.b2_2(self.b2_1(self.b2(x)))
        x = self.b3_2(self.b3_1(self.b3(x)))
        x, conv3 = self.b4(x, get_x_bn_relu=True)
        x = self.b4_5(self.b4_4(self.b4_3(self.b4_2(self.b4_1(x)))))
        x, conv4 = self.b5(x, get_x_bn_relu=True)
        x = self.b5_2(self.b5_1(x))
        x, conv5 = self.b6(x, get_x_bn_relu=True)
        conv6 = F.relu(self.bn7(self.b7(x)))
        return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "conv6": conv6}

    forward_as_dict = forward  # published name


def resnet38(width: float = 1.0, **kwargs) -> ResNet38:
    """Full-width (``width=1``) or channel-scaled ResNet-38."""
    return ResNet38(width=width, **kwargs)


TINY_WIDTH = 1.0 / 16
#: ``resnet38_small``: 1/8 width (conv6 has 512 channels), the demo's CAM backbone trained from scratch on CPU.
SMALL_WIDTH = 1.0 / 8


def resnet38_tiny(**kwargs) -> ResNet38:
    """ResNet-38 at 1/16 width (same names and depth; conv6 has 256 channels) for CPU runs and tests."""
    return ResNet38(width=TINY_WIDTH, **kwargs)
