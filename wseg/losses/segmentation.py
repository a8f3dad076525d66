"""Segmentation losses: the published DeepLab cross-entropy (:func:`seg_loss`) and mmsegmentation's, with PMM's
pretended under-fitting strategy (:func:`mmseg_cross_entropy`, :func:`pretended_underfitting`).

mmseg's ``CrossEntropyLoss`` (1.2.2 ``mmseg/models/losses/cross_entropy_loss.py`` ``cross_entropy`` + ``utils.py``
``weight_reduce_loss``; the same in 0.x): per-pixel ``F.cross_entropy(reduction='none', ignore_index=255)`` (ignored
pixels give 0), then the mean over **all** pixels, ignored and padded ones included (``avg_non_ignore=False``, the
default of every config here); ``avg_non_ignore=True`` divides the sum by the labelled pixels (+ float32 eps). Logits
are resized to the label size first (the segmentor's ``forward`` does it), and the loss is scaled by the head's
``loss_weight`` (auxiliary FCN head: 0.4).

PUS (Eli-YiLi/WSSS_MMSeg ``mmseg/models/losses/cross_entropy_loss.py`` lines 29-38, PMM's "pretended under-fitting
strategy"): when the mean of the per-pixel loss map (ignored pixels as zeros) is below ``beta``, the map becomes
``clamp``: ``min(L, k)`` (pixels above ``k`` stop giving gradient), ``pow``: ``(L + 1e-9) ** k`` (ignored pixels
then add ``1e-9 ** k``, as published) or ``ignore``: ``L * 1[L <= k]``; then the usual reduction. The test is made
per loss call, i.e. per head and per process batch (PMM: 2 images per GPU); ``group=g`` makes it per ``g`` images
of a larger batch (PMM's 8 x 2 on fewer GPUs). PMM: ``beta = k = 0.5`` on VOC, 0.8 on COCO, on the decode and the
auxiliary head (``configs/pspnet_wsss/*_pus.py``, ``*_coco.py``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from wseg.data.classes import IGNORE
from wseg.errors import WsegError

PUS_TYPES = ("", "clamp", "pow", "ignore")


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over the labelled pixels, label 255 ignored (fp32). Equals the published
    ``CrossEntropyLoss(ignore_index=255)``, except that a batch without any labelled pixel gives 0, not NaN."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)


def pretended_underfitting(loss: torch.Tensor, pus_type: str, beta: float = 0.5, k: float = 0.5,
                           group: Optional[int] = None) -> torch.Tensor:
    """PMM's PUS on a per-pixel loss map ``(N, H, W)`` (module docstring); no host synchronisation (the test is a
    tensor). ``group``: images per test (``None``: the whole batch)."""
    if not pus_type:
        return loss
    if pus_type not in PUS_TYPES:
        raise WsegError(f"pus_type {pus_type!r}: choose clamp, pow, ignore or '' (off)")
    if group is not None and int(group) > 0 and loss.shape[0] > int(group):
        g = int(group)
        if loss.shape[0] % g:
            raise WsegError(f"pus_group {g}: the per-process batch of {loss.shape[0]} is not a multiple of it")
        means = loss.reshape(loss.shape[0] // g, -1).mean(1)
        trigger = (means < beta).repeat_interleave(g).view(-1, *([1] * (loss.dim() - 1)))
    else:
        trigger = loss.mean() < beta
    if pus_type == "pow":
        changed = torch.pow(loss + 1e-9, k)
    elif pus_type == "clamp":
        changed = torch.clamp(loss, 0, k)
    else:
        changed = loss * (loss <= k).float()
    return torch.where(trigger, changed, loss)


def mmseg_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE,
                        avg_non_ignore: bool = False, loss_weight: float = 1.0, pus_type: str = "",
                        pus_beta: float = 0.5, pus_k: float = 0.5, pus_group: Optional[int] = None) -> torch.Tensor:
    """mmseg's ``CrossEntropyLoss`` (+ PUS) of ``(N, C, H, W)`` logits at the label size against ``(N, H, W)``
    labels, in fp32 (module docstring)."""
    loss = F.cross_entropy(logits.float(), labels.long(), reduction="none", ignore_index=ignore_index)
    loss = pretended_underfitting(loss, pus_type, pus_beta, pus_k, pus_group)
    if avg_non_ignore:
        reduced = loss.sum() / ((labels != ignore_index).sum() + torch.finfo(torch.float32).eps)
    else:
        reduced = loss.mean()
    return loss_weight * reduced


__all__ = ["PUS_TYPES", "mmseg_cross_entropy", "pretended_underfitting", "seg_loss"]
