"""CAM heads of SEAM / PPC / EPS: the classifier ``fc8`` whose 1x1 weights give the class activation maps, and
PPC's projection head ``fc_proj`` (the pixel embedding of the contrast)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CAMHead(nn.Module):
    """``fc8``: 1x1 convolution without bias to ``num_classes`` maps (xavier-uniform, as published)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc8 = nn.Conv2d(in_channels, num_classes, 1, bias=False)

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.fc8.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(x)


class ProjectionHead(nn.Module):
    """``fc_proj``: 1x1 convolution without bias to ``dim`` channels, ReLU'd (PPC's pixel embedding)."""

    def __init__(self, in_channels: int, dim: int = 128):
        super().__init__()
        self.fc_proj = nn.Conv2d(in_channels, dim, 1, bias=False)

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.fc_proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc_proj(x))
