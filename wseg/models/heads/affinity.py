"""AffinityNet's head (Ahn & Kwak, CVPR 2018; ``network/resnet38_aff.py``): the backbone's last three levels
projected by 1x1 convolutions without bias, ``f8_3`` (-> 64), ``f8_4`` (-> 128), ``f8_5`` (-> 256), each ELU'd,
concatenated and mixed by ``f9`` (448 -> 448, ELU) into the affinity feature. Kaiming-normal ``f8_*``,
xavier-uniform ``f9`` with gain 4, as published. Reduced backbones scale the widths (``conv4`` channels / 512)."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

#: Published head widths at full ResNet-38 width: (f8_3, f8_4, f8_5); f9 maps their sum (448) to itself.
HEAD_WIDTHS = (64, 128, 256)


def head_widths(first_level_channels: int) -> Tuple[int, int, int]:
    """``(f8_3, f8_4, f8_5)`` widths: published 64/128/256, scaled by ``channels / 512`` when smaller (multiples of
    4, at least 4)."""
    from wseg.models.backbones.resnet38 import scaled

    scale = min(1.0, first_level_channels / 512.0)
    return tuple(scaled(c, scale) for c in HEAD_WIDTHS)  # type: ignore[return-value]


class AffinityHead(nn.Module):
    """``forward([f3, f4, f5]) -> (B, D, h, w)`` affinity features from three same-stride levels."""

    def __init__(self, in_channels: Sequence[int]):
        super().__init__()
        d3, d4, d5 = head_widths(in_channels[0])
        self.f8_3 = nn.Conv2d(in_channels[0], d3, 1, bias=False)
        self.f8_4 = nn.Conv2d(in_channels[1], d4, 1, bias=False)
        self.f8_5 = nn.Conv2d(in_channels[2], d5, 1, bias=False)
        self.f9 = nn.Conv2d(d3 + d4 + d5, d3 + d4 + d5, 1, bias=False)
        self.out_channels = d3 + d4 + d5

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.kaiming_normal_(self.f8_5.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        f8_3 = F.elu(self.f8_3(feats[0]))
        f8_4 = F.elu(self.f8_4(feats[1]))
        f8_5 = F.elu(self.f8_5(feats[2]))
        return F.elu(self.f9(torch.cat([f8_3, f8_4, f8_5], dim=1)))
