"""SEAM's Pixel Correlation Module (PCM; Wang et al., CVPR 2020, ``network/resnet38_SEAM.py``).

``f8_3`` (1x1, mid-level feature -> 64) and ``f8_4`` (1x1, next level -> 128), kaiming-normal, on *detached*
backbone features, concatenated with the image resized to the CAM size, then ``f9`` (195 -> 192, xavier gain 4):
the embedding ``f``. The affinity ``relu(f^T f)`` of the L2-normalised embedding, normalised over its first index,
propagates the max-normalised one-hot CAM: ``cam_rv = cam @ aff``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def one_hot_cam(cam: torch.Tensor, background: str = "first") -> torch.Tensor:
    """PCM input: per-map max-normalised ReLU CAM, the background map ``1 - max_fg``, foreground kept only at the
    per-pixel arg-max class (no gradient, as published). ``background``: where the CAM keeps its background channel
    (``first``: SEAM/PPC; ``last``: EPS+PPC, whose ``fc8`` has the background last)."""
    with torch.no_grad():
        cam = F.relu(cam.detach())
        mx = cam.flatten(2).amax(-1)[..., None, None] + 1e-5
        norm = F.relu(cam - 1e-5) / mx
        fg = norm[:, 1:] if background == "first" else norm[:, :-1]
        fg_max = fg.amax(1, keepdim=True)
        fg = torch.where(fg < fg_max, torch.zeros_like(fg), fg)
        return torch.cat([1 - fg_max, fg], 1) if background == "first" else torch.cat([fg, 1 - fg_max], 1)


class PCM(nn.Module):
    """``forward(cam, mid, high, image) -> cam_rv`` at the feature size (see the module docstring)."""

    def __init__(self, mid_channels: int, high_channels: int):
        super().__init__()
        self.f8_3 = nn.Conv2d(mid_channels, 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(high_channels, 128, 1, bias=False)
        self.f9 = nn.Conv2d(192 + 3, 192, 1, bias=False)

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def embed(self, mid: torch.Tensor, high: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``[image resized to the feature size, relu(f8_3(mid)), relu(f8_4(high))]`` (features detached)."""
        f8_3 = F.relu(self.f8_3(mid.detach()))
        f8_4 = F.relu(self.f8_4(high.detach()))
        x_s = F.interpolate(image, f8_3.shape[-2:], mode="bilinear", align_corners=True)
        return torch.cat([x_s.to(f8_3.dtype), f8_3, f8_4], dim=1)

    def forward(self, cam: torch.Tensor, mid: torch.Tensor, high: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``cam``: the (one-hot, :func:`one_hot_cam`) CAM to propagate; returns ``cam @ aff`` at the feature
        size."""
        f = self.embed(mid, high, image)
        cam = cam.to(f.dtype)
        n, _, h, w = f.shape
        cam = F.interpolate(cam, (h, w), mode="bilinear", align_corners=True).reshape(n, -1, h * w)
        f = self.f9(f).reshape(n, -1, h * w)
        f = f / (torch.norm(f, dim=1, keepdim=True) + 1e-5)
        aff = F.relu(torch.matmul(f.transpose(1, 2), f))
        aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)
        return torch.matmul(cam, aff).reshape(n, -1, h, w)
