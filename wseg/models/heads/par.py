"""PAR, the pixel-adaptive refinement of AFA (A:wetr/PAR.py), used unchanged by ToCo and LOC-BE (T:model/PAR.py,
L:model/PAR.py; the three files are identical).

Each pixel looks at 8 neighbours (the 3x3 ring without the centre) at each dilation of ``dilations``
(1, 2, 4, 8, 12, 24: 48 neighbours), replicate-padded at the border. The pixel-adaptive affinity to neighbour n is

    kappa_n   = -mean_RGB( |I_n - I| / (std_n(I_n) + 1e-8) / w1 )^2          (std unbiased, over the 48 neighbours)
    kappa_pos = -( d_n / (std_n(d) + 1e-8) / w1 )^2     d_n = dilation, x sqrt(2) for diagonal neighbours
    aff_n     = softmax_n(kappa) + w2 * softmax_n(kappa_pos)                  w1 = 0.3, w2 = 0.01

The masks are resized to the image (bilinear, ``align_corners=True``) and refined ``num_iter`` times (10 in ToCo /
LOC-BE training, A:PAR.py:87-89) by ``m <- sum_n aff_n * m_n``. No parameters: the module is a pure function of
(image, masks); it computes the same as the published one without stacking 48 copies of the masks.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

PAR_DILATIONS = (1, 2, 4, 8, 12, 24)
PAR_ITERS = 10
PAR_W1 = 0.3
PAR_W2 = 0.01
#: the published kernel order of the 8 neighbours (row, col offsets of the 3x3 ring, centre excluded)
RING = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def neighbour_offsets(dilations: Sequence[int]) -> List[Tuple[int, int]]:
    """The ``8 * len(dilations)`` neighbour offsets, dilation-major, in the published order."""
    return [(dy * d, dx * d) for d in dilations for dy, dx in RING]


def neighbour_distances(dilations: Sequence[int]) -> torch.Tensor:
    """``(8 * len(dilations),)`` the published position term: the dilation, times sqrt(2) on the diagonals."""
    return torch.tensor([d * (math.sqrt(2) if dy and dx else 1.0) for d in dilations for dy, dx in RING])


class PAR(nn.Module):
    """``forward(images (N, 3, H, W), masks (N, C, h, w)) -> refined masks (N, C, H, W)``."""

    def __init__(self, dilations: Sequence[int] = PAR_DILATIONS, num_iter: int = PAR_ITERS, w1: float = PAR_W1,
                 w2: float = PAR_W2):
        super().__init__()
        self.dilations, self.num_iter, self.w1, self.w2 = tuple(int(d) for d in dilations), int(num_iter), w1, w2
        self.offsets = neighbour_offsets(self.dilations)
        self.pad = max(self.dilations)

    def _shifted(self, x: torch.Tensor):
        """Yield ``x`` shifted to each neighbour (replicate padding), in the published order."""
        h, w = x.shape[-2:]
        r = self.pad
        xp = F.pad(x, [r, r, r, r], mode="replicate")
        for dy, dx in self.offsets:
            yield xp[..., r + dy:r + dy + h, r + dx:r + dx + w]

    def affinity(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, K, H, W)`` the pixel-adaptive affinity to the K neighbours (each pixel's weights sum to 1 + w2)."""
        neigh = torch.stack(list(self._shifted(images)), dim=2)            # (N, 3, K, H, W)
        std = neigh.std(dim=2, keepdim=True)
        kappa = -((neigh - images.unsqueeze(2)).abs() / (std + 1e-8) / self.w1) ** 2
        kappa = kappa.mean(dim=1)                                           # (N, K, H, W)
        dist = neighbour_distances(self.dilations).to(images)
        kappa_pos = -(dist / (dist.std() + 1e-8) / self.w1) ** 2
        return kappa.softmax(dim=1) + self.w2 * kappa_pos.softmax(dim=0).view(1, -1, 1, 1)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=True)
        aff = self.affinity(images).unsqueeze(1)                            # (N, 1, K, H, W)
        for _ in range(self.num_iter):
            out = torch.zeros_like(masks)
            for k, shifted in enumerate(self._shifted(masks)):
                out = out + aff[:, :, k] * shifted
            masks = out
        return masks

    def extra_repr(self) -> str:
        return f"dilations={self.dilations}, num_iter={self.num_iter}, w1={self.w1}, w2={self.w2}"
