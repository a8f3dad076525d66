"""mmsegmentation's decode heads with its module structure and parameter names, built on plain PyTorch (no mmcv).

Read from mmseg 1.2.2 (``mmseg/models/decode_heads/{decode_head,aspp_head,sep_aspp_head,psp_head,fcn_head}.py``) and
mmcv 2.1.0 (``mmcv/cnn/bricks/{conv_module,depthwise_separable_conv_module}.py``); the module names are the same in
mmseg 0.x (Eli-YiLi/WSSS_MMSeg), so the checkpoints of both load key for key:

- :class:`ConvModule`: ``conv`` (no bias when a norm follows, mmcv's ``bias='auto'``) -> ``bn`` -> ReLU;
- :class:`DepthwiseSeparableConvModule`: ``depthwise_conv`` (a ConvModule with ``groups = in_channels``) then
  ``pointwise_conv`` (1x1 ConvModule), each with its own BN + ReLU;
- :class:`BaseDecodeHead`: ``conv_seg`` (1x1 with bias, to the classes) after ``Dropout2d`` (``dropout_ratio``
  0.1); ``in_index`` picks the level from the backbone's list, ``align_corners`` False;
- :class:`ASPPHead` (DeepLabV3) and :class:`DepthwiseSeparableASPPHead` (DeepLabV3+): ``image_pool`` (global
  average pool + 1x1 ConvModule, upsampled), ``aspp_modules`` (1x1 for dilation 1; dilated 3x3, depthwise separable
  for V3+), concat -> ``bottleneck`` (plain 3x3 ConvModule); V3+ adds ``c1_bottleneck`` (1x1 to 48 channels on
  level 0, the stride-4 features, whatever ``in_index`` is), upsamples the ASPP output to it, concatenates and
  runs ``sep_bottleneck`` (two separable 3x3) -> ``cls_seg``: logits at stride 4;
- :class:`PSPHead`: ``psp_modules`` (adaptive average pools 1/2/3/6 + 1x1 ConvModule, upsampled), concat with the
  input -> ``bottleneck`` (3x3) -> ``cls_seg``: logits at the input stride (8 on a D8 ResNet);
- :class:`FCNHead` (the auxiliary head): ``convs`` (``num_convs`` 3x3 ConvModules), optional ``conv_cat``.

Modules are registered in mmseg's order (``conv_seg`` and ``dropout`` first, as ``BaseDecodeHead.__init__`` runs
before the subclass's), so state dicts list the keys as mmseg's do. Initialisation as mmseg's: ConvModule
convolutions ``kaiming_normal_(fan_out, relu)`` with zero bias, BN weight 1 / bias 0, ``conv_seg`` normal(0, 0.01)
with zero bias. Heads take the backbone's levels as a list or dict (ordered low to high) like mmseg's tuple.
"""
from __future__ import annotations

from typing import List, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

Features = Union[Sequence[torch.Tensor], Mapping[str, torch.Tensor]]


def _levels(inputs: Features) -> List[torch.Tensor]:
    return list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` with a BN norm and ReLU (the only configuration these heads use): ``conv`` -> ``bn`` ->
    ReLU. ``norm=False`` gives a plain convolution with bias (mmcv's ``bias='auto'``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=not norm)
        if norm:
            self.bn = nn.BatchNorm2d(out_channels)
        self.act = bool(act)

    def reset_parameters(self) -> None:
        """mmcv ``ConvModule.init_weights``: kaiming normal (fan_out, relu), zero bias; norm 1 / 0."""
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if hasattr(self, "bn"):
            nn.init.ones_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.act else x


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv's ``DepthwiseSeparableConvModule``: ``depthwise_conv`` (k x k, ``groups = in_channels``, BN, ReLU) then
    ``pointwise_conv`` (1x1, BN, ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.depthwise_conv = ConvModule(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation,
                                         groups=in_channels)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class BaseDecodeHead(nn.Module):
    """mmseg's ``BaseDecodeHead`` without losses (:mod:`wseg.losses.segmentation` has them): ``conv_seg`` after
    ``Dropout2d(dropout_ratio)``, the input level ``in_index`` and ``align_corners`` of its resizes."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, in_index: int = -1,
                 dropout_ratio: float = 0.1, align_corners: bool = False):
        super().__init__()
        self.in_channels, self.channels, self.num_classes = int(in_channels), int(channels), int(num_classes)
        self.in_index, self.align_corners, self.dropout_ratio = int(in_index), bool(align_corners), dropout_ratio
        self.conv_seg = nn.Conv2d(self.channels, self.num_classes, 1)
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else None

    def reset_parameters(self) -> None:
        """mmseg's init: ConvModules as mmcv initialises them, ``conv_seg`` normal(0, 0.01) with zero bias."""
        for m in self.modules():
            if isinstance(m, ConvModule):
                m.reset_parameters()
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def _input(self, inputs: Features) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            return inputs
        return _levels(inputs)[self.in_index]

    def resize(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=self.align_corners)

    def cls_seg(self, feat: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            feat = self.dropout(feat)
        return self.conv_seg(feat)


class ASPPHead(BaseDecodeHead):
    """DeepLabV3's ASPP head (mmseg ``ASPPHead``): ``image_pool``, ``aspp_modules``, ``bottleneck``, ``cls_seg``."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dilations: Sequence[int] = (1, 6, 12, 18),
                 **kwargs):
        super().__init__(in_channels, channels, num_classes, **kwargs)
        self.dilations = tuple(int(d) for d in dilations)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(self.in_channels, self.channels, 1))
        self.aspp_modules = self._aspp_modules()
        self.bottleneck = ConvModule((len(self.dilations) + 1) * self.channels, self.channels, 3, padding=1)

    def _aspp_modules(self) -> nn.ModuleList:
        return nn.ModuleList(ConvModule(self.in_channels, self.channels, 1) if d == 1 else
                             ConvModule(self.in_channels, self.channels, 3, padding=d, dilation=d)
                             for d in self.dilations)

    def _aspp(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.resize(self.image_pool(x), x.shape[2:])] + [m(x) for m in self.aspp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, inputs: Features) -> torch.Tensor:
        return self.cls_seg(self._aspp(self._input(inputs)))


class DepthwiseSeparableASPPHead(ASPPHead):
    """DeepLabV3+ (mmseg ``DepthwiseSeparableASPPHead``): the ASPP head with depthwise-separable dilated branches,
    ``c1_bottleneck`` on level 0 (stride 4) and ``sep_bottleneck``; logits at stride 4. ``c1_in_channels=0``
    drops the decoder (mmseg's ``c1_bottleneck = None``)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, c1_in_channels: int = 256,
                 c1_channels: int = 48, dilations: Sequence[int] = (1, 12, 24, 36), **kwargs):
        super().__init__(in_channels, channels, num_classes, dilations=dilations, **kwargs)
        self.c1_bottleneck = ConvModule(c1_in_channels, c1_channels, 1) if c1_in_channels > 0 else None
        c1 = c1_channels if c1_in_channels > 0 else 0
        self.sep_bottleneck = nn.Sequential(
            DepthwiseSeparableConvModule(self.channels + c1, self.channels, 3, padding=1),
            DepthwiseSeparableConvModule(self.channels, self.channels, 3, padding=1))

    def _aspp_modules(self) -> nn.ModuleList:
        return nn.ModuleList(ConvModule(self.in_channels, self.channels, 1) if d == 1 else
                             DepthwiseSeparableConvModule(self.in_channels, self.channels, 3, padding=d, dilation=d)
                             for d in self.dilations)

    def forward(self, inputs: Features) -> torch.Tensor:
        out = self._aspp(self._input(inputs))
        if self.c1_bottleneck is not None:
            c1 = self.c1_bottleneck(_levels(inputs)[0])
            out = torch.cat([self.resize(out, c1.shape[2:]), c1], dim=1)
        return self.cls_seg(self.sep_bottleneck(out))


class PSPHead(BaseDecodeHead):
    """PSPNet (mmseg ``PSPHead``): the pyramid pooling module ``psp_modules`` and ``bottleneck``."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, pool_scales: Sequence[int] = (1, 2, 3, 6),
                 **kwargs):
        super().__init__(in_channels, channels, num_classes, **kwargs)
        self.pool_scales = tuple(int(s) for s in pool_scales)
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(self.in_channels, self.channels, 1))
            for s in self.pool_scales)
        self.bottleneck = ConvModule(self.in_channels + len(self.pool_scales) * self.channels, self.channels, 3,
                                     padding=1)

    def forward(self, inputs: Features) -> torch.Tensor:
        x = self._input(inputs)
        outs = [x] + [self.resize(m(x), x.shape[2:]) for m in self.psp_modules]
        return self.cls_seg(self.bottleneck(torch.cat(outs, dim=1)))


class FCNHead(BaseDecodeHead):
    """mmseg ``FCNHead`` (the auxiliary head of both networks: one 3x3 ConvModule, no ``conv_cat``)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, num_convs: int = 2, kernel_size: int = 3,
                 concat_input: bool = True, dilation: int = 1, **kwargs):
        super().__init__(in_channels, channels, num_classes, **kwargs)
        pad = (kernel_size // 2) * dilation
        if num_convs == 0:
            self.convs: nn.Module = nn.Identity()
        else:
            self.convs = nn.Sequential(*[ConvModule(self.in_channels if i == 0 else self.channels, self.channels,
                                                    kernel_size, padding=pad, dilation=dilation)
                                         for i in range(num_convs)])
        self.concat_input = bool(concat_input)
        if self.concat_input:
            self.conv_cat = ConvModule(self.in_channels + self.channels, self.channels, kernel_size,
                                       padding=kernel_size // 2)

    def forward(self, inputs: Features) -> torch.Tensor:
        x = self._input(inputs)
        feats = self.convs(x)
        if self.concat_input:
            feats = self.conv_cat(torch.cat([x, feats], dim=1))
        return self.cls_seg(feats)


__all__ = ["ASPPHead", "BaseDecodeHead", "ConvModule", "DepthwiseSeparableASPPHead", "DepthwiseSeparableConvModule",
           "FCNHead", "PSPHead"]
