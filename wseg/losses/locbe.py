"""LOC-BE's own loss: L_LOC, the local-optimisation-cropping contrast between the global CLS token G and the CLS
tokens of the local crops (``ContrastiveLoss(margin=1)``, L:model/losses.py:168-181, used at
L:scripts/dist_train_voc_seg_neg.py:307-313). The BE branch's L_cls^HP is a classification loss
(:func:`wseg.losses.toco.classification_loss` on hybrid-pooled scores).

The published formula, as coded (checked step by step against the broadcasting of the published lines):
``F.pairwise_distance(g.unsqueeze(-1), l.unsqueeze(-1).transpose(0, 2))`` is a *per-channel* distance over the
crop-batch index j, ``d[b, c] = sqrt(sum_j (g[b, c] - l[j, c] + 1e-6)^2)`` (not a distance between token vectors),
and the label tensor broadcasts so that the loss factorises into

    L_k = mean(y) * mean(d^2) + (1 - mean(y)) * mean(relu(margin - d)^2),     L_LOC = (1 / n_crops) sum_k L_k

with ``mean(y)`` over all images and classes. Fixed here: the published broadcasting crashes with one image per
GPU (``.squeeze()`` drops the batch axis; ToCo's author trains at one image per GPU) and hard-codes 768
channels; no crop (the published ``random_crop`` raises when no pixel is confident) gives a zero loss.
``stop_grad_global=True`` detaches G, as the paper's figure (L:docs/LOC_BE.png) draws it; the code does not.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

LOC_MARGIN = 1.0
LOC_EPS = 1e-6   # F.pairwise_distance's default eps, added to the difference as published


def loc_distance(global_tok: torch.Tensor, crop_tok: torch.Tensor, eps: float = LOC_EPS) -> torch.Tensor:
    """``(B, D)``: ``d[b, c] = sqrt(sum_j (g[b, c] - l[j, c] + eps)^2)`` over the crop batch ``j``."""
    diff = global_tok.float().unsqueeze(1) - crop_tok.float().unsqueeze(0) + eps      # (B, B', D)
    return diff.pow(2).sum(dim=1).sqrt()


def loc_contrast(global_tok: torch.Tensor, crop_tok: torch.Tensor, labels: torch.Tensor,
                 margin: float = LOC_MARGIN) -> torch.Tensor:
    """One crop's term L_k (see the module docstring); any batch size."""
    d = loc_distance(global_tok, crop_tok)
    y = labels.float().mean()
    return y * d.pow(2).mean() + (1 - y) * F.relu(margin - d).pow(2).mean()


def loc_loss(global_tok: torch.Tensor, crop_toks: Sequence[torch.Tensor], labels: torch.Tensor,
             num_crops: int = 4, margin: float = LOC_MARGIN, stop_grad_global: bool = False) -> torch.Tensor:
    """L_LOC: the crop terms summed and divided by ``num_crops`` (the published ``sum(...) / 4``); 0 (still
    attached to the graph) without crops."""
    g = global_tok.detach() if stop_grad_global else global_tok
    if not crop_toks:
        return global_tok.float().sum() * 0.0
    return sum(loc_contrast(g, c, labels, margin) for c in crop_toks) / num_crops
