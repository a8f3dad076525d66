"""Segmentation losses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wseg.data.classes import IGNORE


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over the labelled pixels, label 255 ignored (fp32). Equals the published
    ``CrossEntropyLoss(ignore_index=255)``, except that a batch without any labelled pixel gives 0, not NaN."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)
