"""Decode heads of the published DeepLab stage (usr922/wseg ``segmentation/lib/net``), names as published.

- :class:`LargeFOVHead` (DeepLab v1 "LargeFOV"): ``conv_fov`` (3x3, dilation ``fov_dilation`` = 12, no bias) ->
  ``bn_fov`` -> ReLU -> ``conv_fov2`` (1x1, no bias) -> ``bn_fov2`` -> ReLU -> ``dropout1`` (0.5) -> ``cls_conv`` (1x1,
  bias);
- :class:`ASPPHead` (the published "deeplabv2"): :class:`ASPP` with rates 6/12/18/24 (``aspp.branch1..4``: 3x3
  dilated conv + BN + ReLU), an image-pooling branch (``aspp.branch5_conv/bn``), ``aspp.conv_cat`` (1x1 + BN + ReLU
  + dropout 0.5), then ``dropout1`` and ``cls_conv``.

New layers start with ``kaiming_normal_(fan_out, relu)`` convolutions and BN weight 1 / bias 0 (published
``__initial__``); head BatchNorm momentum is the published ``TRAIN_BN_MOM`` 3e-4.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError

BN_MOMENTUM = 0.0003
ASPP_RATES = (6, 12, 18, 24)
FOV_DILATION = 12


def init_new_layers(modules) -> None:
    """Published ``__initial__`` of the layers outside the backbone."""
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def check_fov_dilation(fov_dilation: int) -> int:
    """The LargeFOV dilation as an int; a one-line error below 1."""
    if int(fov_dilation) < 1:
        raise WsegError(f"model.fov_dilation {fov_dilation}: the LargeFOV dilation must be at least 1 (published 12)")
    return int(fov_dilation)


class LargeFOVHead(nn.Module):
    """DeepLab v1 LargeFOV: ``forward(feature) -> logits`` at the feature resolution."""

    def __init__(self, in_channels: int, num_classes: int, head_dim: int = 512, bn_momentum: float = BN_MOMENTUM,
                 fov_dilation: int = FOV_DILATION):
        super().__init__()
        self.fov_dilation = check_fov_dilation(fov_dilation)
        self.conv_fov = nn.Conv2d(in_channels, head_dim, 3, padding=self.fov_dilation, dilation=self.fov_dilation,
                                  bias=False)
        self.bn_fov = nn.BatchNorm2d(head_dim, momentum=bn_momentum)
        self.conv_fov2 = nn.Conv2d(head_dim, head_dim, 1, bias=False)
        self.bn_fov2 = nn.BatchNorm2d(head_dim, momentum=bn_momentum)
        self.dropout1 = nn.Dropout(0.5)
        self.cls_conv = nn.Conv2d(head_dim, num_classes, 1)

    def scratch_convs(self) -> List[nn.Module]:
        return [self.conv_fov, self.conv_fov2, self.cls_conv]

    def reset_parameters(self) -> None:
        init_new_layers([self.conv_fov, self.bn_fov, self.conv_fov2, self.bn_fov2, self.cls_conv])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_fov(self.conv_fov(x)), inplace=True)
        x = F.relu(self.bn_fov2(self.conv_fov2(x)), inplace=True)
        return self.cls_conv(self.dropout1(x))


class ASPP(nn.Module):
    """The published ASPP (``lib/net/operators/ASPP.py``): four 3x3 atrous branches (conv + BN + ReLU), an
    optional image-pooling branch, concatenation, ``conv_cat`` (1x1 + BN + ReLU + dropout 0.5)."""

    def __init__(self, dim_in: int, dim_out: int, rates: Sequence[int] = ASPP_RATES, bn_momentum: float = 0.1,
                 has_global: bool = True):
        super().__init__()
        if len(rates) != 4:
            raise WsegError(f"aspp_rates {list(rates)}: the published ASPP has exactly four branches")
        self.has_global = bool(has_global)

        def branch(rate: int) -> nn.Sequential:
            conv = (nn.Conv2d(dim_in, dim_out, 1, bias=False) if rate == 0 else
                    nn.Conv2d(dim_in, dim_out, 3, padding=rate, dilation=rate, bias=False))
            return nn.Sequential(conv, nn.BatchNorm2d(dim_out, momentum=bn_momentum), nn.ReLU(inplace=True))

        self.branch1, self.branch2, self.branch3, self.branch4 = (branch(int(r)) for r in rates)
        if self.has_global:
            self.branch5_conv = nn.Conv2d(dim_in, dim_out, 1, bias=False)
            self.branch5_bn = nn.BatchNorm2d(dim_out, momentum=bn_momentum)
            self.branch5_relu = nn.ReLU(inplace=True)
        n = 5 if self.has_global else 4
        # The published no-global variant's conv_cat has a bias; the default (global) one has none.
        self.conv_cat = nn.Sequential(nn.Conv2d(dim_out * n, dim_out, 1, bias=not self.has_global),
                                      nn.BatchNorm2d(dim_out, momentum=bn_momentum), nn.ReLU(inplace=True),
                                      nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        if self.has_global:
            g = self.branch5_relu(self.branch5_bn(self.branch5_conv(F.adaptive_avg_pool2d(x, 1))))
            feats.append(F.interpolate(g, x.shape[-2:], mode="bilinear", align_corners=True))
        return self.conv_cat(torch.cat(feats, dim=1))


class ASPPHead(nn.Module):
    """The published DeepLab v2 head: ``cls_conv(dropout1(aspp(feature)))``."""

    def __init__(self, in_channels: int, num_classes: int, head_dim: int = 256, aspp_rates: Sequence[int] = ASPP_RATES,
                 aspp_global: bool = True, bn_momentum: float = BN_MOMENTUM):
        super().__init__()
        self.aspp = ASPP(in_channels, head_dim, aspp_rates, bn_momentum, aspp_global)
        self.dropout1 = nn.Dropout(0.5)
        self.cls_conv = nn.Conv2d(head_dim, num_classes, 1)

    def scratch_convs(self) -> List[nn.Module]:
        return [self.cls_conv] + [m for m in self.aspp.modules() if isinstance(m, nn.Conv2d)]

    def reset_parameters(self) -> None:
        init_new_layers(list(self.aspp.modules()) + [self.cls_conv])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_conv(self.dropout1(self.aspp(x)))
