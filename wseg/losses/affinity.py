"""The published AffinityNet loss (PSA ``train_aff.py``)."""
from __future__ import annotations

from typing import Dict

import torch


def affinity_loss(aff: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor, neg: torch.Tensor) -> Dict[str, torch.Tensor]:
    """``bg/4 + fg/4 + neg/2`` with ``bg = -sum(bg_label * log(a + 1e-5)) / (#bg + 1e-5)``, ``fg`` likewise and
    ``neg = -sum(neg_label * log(1 + 1e-5 - a)) / (#neg + 1e-5)``.

    ``aff`` are the predicted affinities ``(B, K, M)``; ``bg``/``fg``/``neg`` the 0/1 pair labels of the same shape.
    Returns ``loss``, the three parts and the pair counts.
    """
    bg_count = bg.sum() + 1e-5
    fg_count = fg.sum() + 1e-5
    neg_count = neg.sum() + 1e-5
    bg_loss = torch.sum(-bg * torch.log(aff + 1e-5)) / bg_count
    fg_loss = torch.sum(-fg * torch.log(aff + 1e-5)) / fg_count
    neg_loss = torch.sum(-neg * torch.log(1.0 + 1e-5 - aff)) / neg_count
    loss = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return {"loss": loss, "bg_loss": bg_loss, "fg_loss": fg_loss, "neg_loss": neg_loss,
            "bg_cnt": bg_count.detach(), "fg_cnt": fg_count.detach(), "neg_cnt": neg_count.detach()}
