"""Heads of the ToCo / LOC-BE ViT networks, with the published layer names (T:model/model_seg_neg.py,
T:model/decoder/conv_head.py, L:model/model_seg_neg.py).

- :func:`gmp`: global max pooling of the patch-token map (the published ``self.pooling``, ``--pooling gmp``);
- :func:`hybrid_pool`: LOC-BE's ``spatial_pyramid_hybrid_pool`` (the "HP" of the boundary-enhancement branch,
  L:model_seg_neg.py:74-81): ``[gamma * GMP(x) + sum_i GAP(avg_pool(x, (h//i, w//i)))] / (gamma + len(levels))``
  with levels (1, 2, 8) and gamma 2;
- :class:`LargeFOVDecoder`: the segmentation decoder ``conv6`` (3x3, dilation 5) - ReLU - ``conv7`` (3x3,
  dilation 5) - ReLU - ``conv8`` (1x1), no biases, PyTorch's default init (the published ``_init_weights`` is never
  called); it keeps the stride of the tokens (16);
- :class:`CTCHead`: ToCo's projection head for the class-token contrast (DINO's head): MLP 768-2048-2048-256 with
  GELU, L2 normalisation, then a weight-normalised linear layer 256-1024 without bias whose gain ``weight_g`` is
  fixed at 1 (:class:`WeightNormLinear`, the ``weight_g`` / ``weight_v`` keys of ``nn.utils.weight_norm``).

The classifiers themselves are plain ``nn.Conv2d(D, C, 1, bias=False)`` layers of the network (``classifier``,
``aux_classifier``); their weights also give the CAMs (``F.conv2d(tokens, classifier.weight)``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

HP_LEVELS = (1, 2, 8)
HP_GAMMA = 2.0
DECODER_DILATION = 5
DECODER_DIM = 512


def gmp(x: torch.Tensor) -> torch.Tensor:
    """``(N, D, 1, 1)`` global max pooling (GMP)."""
    return F.adaptive_max_pool2d(x, (1, 1))


def hybrid_pool(x: torch.Tensor, levels: Sequence[int] = HP_LEVELS, gamma: float = HP_GAMMA,
                published: bool = False) -> torch.Tensor:
    """``(N, D, 1, 1)`` LOC-BE's spatial-pyramid hybrid pooling (see the module docstring).

    Level ``i`` average-pools windows of ``(h // i, w // i)`` tokens with stride = window (the remainder rows and
    columns are dropped, as published) and averages the windows. The published code crashes when a side has fewer
    tokens than a level (window 0); here the window is at least 1 token, unless ``published=True``."""
    h, w = x.shape[-2:]
    out = gamma * F.adaptive_max_pool2d(x, (1, 1))
    for i in levels:
        kh, kw = h // i, w // i
        if not published:
            kh, kw = max(kh, 1), max(kw, 1)
        out = out + F.adaptive_avg_pool2d(F.avg_pool2d(x, kernel_size=(kh, kw)), (1, 1))
    return out / (gamma + len(levels))


class LargeFOVDecoder(nn.Module):
    """The published ``LargeFOV`` decoder of ToCo/LOC-BE (``conv6``, ``conv7``, ``conv8``; see the module docstring)."""

    def __init__(self, in_channels: int, num_classes: int, dim: int = DECODER_DIM, dilation: int = DECODER_DILATION):
        super().__init__()
        self.conv6 = nn.Conv2d(in_channels, dim, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv7 = nn.Conv2d(dim, dim, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv8 = nn.Conv2d(dim, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv6(x), inplace=True)
        x = F.relu(self.conv7(x), inplace=True)
        return self.conv8(x)


class WeightNormLinear(nn.Module):
    """``y = x W^T`` with ``W = weight_g * weight_v / ||weight_v||`` (row norms): ``nn.utils.weight_norm(Linear)``
    with the same parameter names, without the deprecated hook."""

    def __init__(self, in_features: int, out_features: int, fixed_gain: bool = True):
        super().__init__()
        v = nn.Linear(in_features, out_features, bias=False).weight.detach()
        self.weight_g = nn.Parameter(torch.ones(out_features, 1), requires_grad=not fixed_gain)
        self.weight_v = nn.Parameter(v.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True)
        return F.linear(x, w)


class CTCHead(nn.Module):
    """ToCo's ``CTCHead`` (``mlp.0``, ``mlp.2``, ``mlp.4``, ``last_layer``): see the module docstring."""

    def __init__(self, in_dim: int, out_dim: int = 1024, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (max(nlayers, 1) - 1) + [bottleneck_dim]
        layers = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))
