"""Losses of ToCo (Ru et al., CVPR 2023, T:model/losses.py), shared by LOC-BE (L:model/losses.py).

- :func:`classification_loss`: multi-label soft margin on the pooled class scores (L_cls, L_cls^aux, LOC-BE's
  L_cls^HP); a batch without any image label gives plain finite values (the loss of "every class absent").
- :func:`seg_loss`: the segmentation loss on the PAR-refined pseudo labels, ``0.5 * (CE over background pixels
  + CE over foreground pixels)`` with 255 ignored (``get_seg_loss``, T:losses.py:30-39). Published, a batch
  without a labelled background (or foreground) pixel makes that half NaN (ToCo issues #3, #6, #8); here an empty
  half is 0.
- :func:`aff_mask_from_labels` + :func:`ptc_loss`: the patch token contrast (PTC; LOC-BE's L_sc,
  ``label_to_aff_mask`` T:utils/camutils.py + ``get_masked_ptc_loss`` T:losses.py:13-28): token pairs with equal
  (aux-CAM) labels pull their |cosine| to 1, pairs with different labels push it to 0, ignored tokens and the
  diagonal take no part.
- :func:`ctc_loss` + :func:`ema_update`: the class token contrast (CTC, ``CTCLoss_neg`` T:losses.py:57-100) between
  the EMA-teacher projections of the two global views and the student projections of all views, negatives being
  the local crops flagged as background/uncertain-poor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wseg.data.classes import IGNORE


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``F.multilabel_soft_margin_loss`` in fp32 (mean over images and classes)."""
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


def _ce_mean(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ToCo's balanced segmentation loss (see the module docstring); ``logits`` (N, C, H, W) at the label size."""
    logits, labels = logits.float(), labels.long()
    bg = torch.where(labels == 0, labels, torch.full_like(labels, IGNORE))
    fg = torch.where((labels != 0) & (labels != IGNORE), labels, torch.full_like(labels, IGNORE))
    return 0.5 * (_ce_mean(logits, bg) + _ce_mean(logits, fg))


def aff_mask_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """``(N, P, P)`` token-pair targets from token labels ``(N, h, w)``: 1 same label, 0 different, 255 where either
    token is ignored (255) and on the diagonal (``label_to_aff_mask``)."""
    lab = labels.reshape(labels.shape[0], -1)
    aff = (lab[:, :, None] == lab[:, None, :]).long()
    ign = (lab == IGNORE)
    aff[ign[:, :, None] | ign[:, None, :]] = IGNORE
    aff.diagonal(dim1=1, dim2=2).fill_(IGNORE)
    return aff


def ptc_loss(tokens: torch.Tensor, aff_mask: torch.Tensor) -> torch.Tensor:
    """ToCo's PTC / LOC-BE's L_sc on the token map ``(N, D, h, w)``:
    ``0.5 * (1 - sum_pos |cos| / (n_pos + 1)) + 0.5 * sum_neg |cos| / (n_neg + 1)`` over the whole batch."""
    x = F.normalize(tokens.float().flatten(2), p=2, dim=1, eps=1e-8)
    with torch.autocast(x.device.type, enabled=False):
        cos = torch.matmul(x.transpose(1, 2), x).abs()
    pos, neg = (aff_mask == 1), (aff_mask == 0)
    return (0.5 * (1 - (cos * pos).sum() / (pos.sum() + 1))
            + 0.5 * (cos * neg).sum() / (neg.sum() + 1))


def ctc_loss(student: torch.Tensor, teacher: torch.Tensor, flags: torch.Tensor, temp: float = 0.5) -> torch.Tensor:
    """ToCo's CTC (``CTCLoss_neg``), vectorised and computed in log space.

    ``student``: ``(ncrops * N, K)`` projections of all views, view-major (the 2 global views first);
    ``teacher``: ``(2 * N, K)`` EMA-teacher projections of the 2 global views; ``flags``: ``(N, ncrops)``, 1 =
    positive view, 0 = negative local crop. Per image and teacher view t, with ``e_j = exp(t . s_j / temp)`` and
    ``E = sum over negatives of e_j``, the published loss is
    ``[sum_{j positive} -log(e_j / (e_j + E + 1e-4)) - log(1 / (1 + E + 1e-4))] / 2 / (n_pos + 1e-4)``
    summed over t, then averaged over images (the second term comes from the published ``for ... else``, which
    always runs)."""
    n, ncrops = flags.shape
    s = student.float().reshape(ncrops, n, -1).transpose(0, 1)            # (N, ncrops, K)
    t = teacher.float().reshape(2, n, -1).transpose(0, 1)                 # (N, 2, K)
    with torch.autocast(s.device.type, enabled=False):
        logits = torch.matmul(t, s.transpose(1, 2)) / temp                # (N, 2, ncrops)
    pos = (flags != 0).unsqueeze(1)
    neg_inf = torch.finfo(logits.dtype).min
    log_neg = torch.logsumexp(torch.where(pos, torch.full_like(logits, neg_inf), logits), dim=2, keepdim=True)
    log_neg = torch.where(pos.all(dim=2, keepdim=True), torch.full_like(log_neg, float("-inf")), log_neg)
    log_eps = torch.full_like(logits, 1e-4).log()
    log_den = torch.logsumexp(torch.stack([logits, log_neg.expand_as(logits), log_eps]), dim=0)
    pos_term = ((log_den - logits) * pos).sum(dim=2)                      # (N, 2)
    else_term = torch.logsumexp(torch.cat([torch.zeros_like(log_neg), log_neg, log_eps[..., :1]], dim=2), dim=2)
    per_image = (pos_term + else_term).sum(dim=1) / 2 / (pos.squeeze(1).sum(dim=1) + 1e-4)
    return per_image.mean()


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, momentum: float = 0.9) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student``, parameter by parameter (ToCo's
    ``_EMA_update_encoder_teacher``, run at every forward with crops, before the teacher's forward)."""
    for p, pt in zip(student.parameters(), teacher.parameters()):
        pt.mul_(momentum).add_(p.detach(), alpha=1.0 - momentum)
