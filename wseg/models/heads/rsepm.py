"""The DeepLabV3+ segmentation head of RS+EPM's single-stage network, with the released parameter names.

Released code: OFRIN/RecurSeed_and_EdgePredictMix ``core/layers.py`` (HEAD df538e2): ``ConvBlock`` (``conv`` without
bias, ``bn``, ``relu``), ``ASPP_For_DeepLabv3`` and ``Decoder``, built by ``core/networks.py`` ``RSEPM`` as
``ASPP_For_DeepLabv3(2048, 256, output_stride)`` and ``Decoder(256, 256, num_classes + 1, 256)``: the fourth
argument is the low-level width, so the stride-4 feature is projected to **256** channels (not DeepLab's 48).

- :class:`RSEPMASPP` (``aspp.*``): ``aspp1`` 1x1 and ``aspp2..4`` 3x3 with dilations 6/12/18 (output stride 16) or
  12/24/36 (8), an image-pooling branch ``global_avg_pool`` (GAP, 1x1 ConvBlock, bilinear back to the map size),
  concatenation (5 x 256) and ``block`` = 1x1 ConvBlock + dropout 0.5.
- :class:`RSEPMDecoder` (``decoder.*``): ``low_block`` 1x1 ConvBlock on the stride-4 feature, the ASPP output
  bilinearly resized to it (``align_corners=False``), concatenation, then ``classifier`` = 3x3 ConvBlock, dropout
  0.5, 3x3 ConvBlock, dropout 0.1 and a 3x3 convolution to the classes **without bias**; logits at stride 4.

The released HEAD never initialises these layers itself (PyTorch defaults); the v1 code drop (4fbc05c,
``Modified_DeepLabv3_Plus(mode='xavier')``) used xavier-uniform convolutions and BN 1/0: ``reset_parameters("xavier")``.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError

#: ASPP dilations per output stride (``ASPP_For_DeepLabv3``): the 1x1 branch first, then the three 3x3 branches.
ASPP_DILATIONS: Dict[int, Tuple[int, int, int, int]] = {16: (1, 6, 12, 18), 8: (1, 12, 24, 36)}


def resize_as_released(x: torch.Tensor, size: Sequence[int], mode: str = "bilinear") -> torch.Tensor:
    """``tools/ai/torch_utils.resize``: ``F.interpolate`` only when the size differs; ``align_corners=False`` for
    bilinear, none for nearest (PyTorch's legacy ``nearest``: source index ``floor(dst * in / out)``)."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size, mode=mode, align_corners=None if mode == "nearest" else False)


class ConvBlock(nn.Module):
    """``conv`` (no bias) -> ``bn`` -> ``relu``: the released ``ConvBlock``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _init(modules, mode: str) -> None:
    if mode == "default":
        return
    if mode != "xavier":
        raise WsegError(f"head init {mode!r}: choose default (released HEAD) or xavier (v1)")
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class RSEPMASPP(nn.Module):
    """The released ``ASPP_For_DeepLabv3`` (see the module docstring); ``forward(C5) -> (N, out, h, w)``."""

    def __init__(self, in_channels: int, out_channels: int = 256, output_stride: int = 16,
                 dilations: Sequence[int] | None = None):
        super().__init__()
        if dilations is None:
            if output_stride not in ASPP_DILATIONS:
                raise WsegError(f"output_stride {output_stride}: the released ASPP knows 16 and 8")
            dilations = ASPP_DILATIONS[output_stride]
        d = [int(v) for v in dilations]
        if len(d) != 4:
            raise WsegError(f"ASPP dilations {d}: the released ASPP has one 1x1 and three 3x3 branches")
        self.dilations = tuple(d)
        self.aspp1 = ConvBlock(in_channels, out_channels, 1, padding=0, dilation=d[0])
        self.aspp2 = ConvBlock(in_channels, out_channels, 3, padding=d[1], dilation=d[1])
        self.aspp3 = ConvBlock(in_channels, out_channels, 3, padding=d[2], dilation=d[2])
        self.aspp4 = ConvBlock(in_channels, out_channels, 3, padding=d[3], dilation=d[3])
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), ConvBlock(in_channels, out_channels, 1))
        self.block = nn.Sequential(ConvBlock(out_channels * 5, out_channels, 1), nn.Dropout(0.5))

    def reset_parameters(self, mode: str = "default") -> None:
        _init(self.modules(), mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)]
        pooled = resize_as_released(self.global_avg_pool(x), branches[-1].shape[-2:])
        return self.block(torch.cat(branches + [pooled], dim=1))


class RSEPMDecoder(nn.Module):
    """The released ``Decoder`` (see the module docstring); ``forward(aspp_out, C2) -> logits`` at C2's size."""

    def __init__(self, low_in_channels: int, channels: int, num_classes: int, low_channels: int = 256):
        super().__init__()
        self.low_block = ConvBlock(low_in_channels, low_channels, 1)
        self.classifier = nn.Sequential(
            ConvBlock(channels + low_channels, channels, kernel_size=3, padding=1),
            nn.Dropout(0.5),
            ConvBlock(channels, channels, kernel_size=3, padding=1),
            nn.Dropout(0.1),
            nn.Conv2d(channels, num_classes, kernel_size=3, padding=1, bias=False),
        )

    def reset_parameters(self, mode: str = "default") -> None:
        _init(self.modules(), mode)

    def forward(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.low_block(low)
        x = resize_as_released(x, low.shape[-2:])
        return self.classifier(torch.cat((x, low), dim=1))


class RSEPMSegHead(nn.Module):
    """ASPP on the last level + decoder with the stride-4 level: ``forward(high, low) -> (N, C + 1, H/4, W/4)``."""

    def __init__(self, high_channels: int, low_in_channels: int, num_classes: int, feature_size: int = 256,
                 low_channels: int = 256, output_stride: int = 16):
        super().__init__()
        self.aspp = RSEPMASPP(high_channels, feature_size, output_stride)
        self.decoder = RSEPMDecoder(low_in_channels, feature_size, num_classes, low_channels)

    def reset_parameters(self, mode: str = "default") -> None:
        self.aspp.reset_parameters(mode)
        self.decoder.reset_parameters(mode)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.aspp(high), low)


__all__ = ["ASPP_DILATIONS", "ConvBlock", "RSEPMASPP", "RSEPMDecoder", "RSEPMSegHead", "resize_as_released"]
