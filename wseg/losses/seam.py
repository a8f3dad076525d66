"""SEAM's losses (Wang et al., CVPR 2020; ``train_SEAM.py``), also the first half of PPC's ``contrast_train.py``.

Two views: view 1 (the crop) and view 2 (view 1 rescaled; 128x128 in PPC, x0.3 in SEAM). With ``cam``/``cam_rv``
the network's CAM and PCM-refined CAM at input size and ``label`` the image-level label with background 1 prepended:

- classification: multilabel soft margin on the global-average-pooled foreground CAM, mean over both views, plus
  the adaptive min-pooling term on ``cam_rv`` (mean of the lowest 25% per-pixel max-class scores, ReLU'd);
  logged together as ``loss_cls`` as published;
- equivariant regularisation (ER): ``mean |A(cam1) - cam2|`` over foreground channels, both max-normalised and
  label-masked, ``A`` = the rescale to view 2;
- equivariant cross regularisation (ECR): ``|onehot(cam2) - cam_rv1|`` and ``|onehot(cam1) - cam_rv2|`` averaged
  over the top 20% entries per image (background channel of the CAMs replaced by ``1 - max fg``).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F


def with_background(label: torch.Tensor) -> torch.Tensor:
    """``(N, C_fg)`` image-level labels -> ``(N, C_fg + 1, 1, 1)`` with background (1) at channel 0."""
    label = label.float()
    return torch.cat([torch.ones_like(label[:, :1]), label], 1)[..., None, None]


def max_norm(p: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """SEAM's ``visualization.max_norm``: per map ``relu(relu(p) - min - eps) / (max - min + eps)``."""
    p = F.relu(p)
    mx = p.flatten(2).amax(-1)[..., None, None]
    mn = p.flatten(2).amin(-1)[..., None, None]
    return F.relu(p - mn - eps) / (mx - mn + eps)


def adaptive_min_pooling_loss(x: torch.Tensor) -> torch.Tensor:
    """Mean of the ReLU'd lowest ``h*w // 4`` per-pixel max-class scores (published; shifts the optimal
    background score, not the peak performance)."""
    n, _, h, w = x.shape
    k = h * w // 4
    y = torch.topk(x.amax(1).reshape(n, -1), k=k, dim=-1, largest=False)[0]
    return F.relu(y).sum() / (k * n)


def max_onehot(x: torch.Tensor) -> torch.Tensor:
    """Keep channel 0 and, among channels 1:, only the per-pixel maximum (others 0). Not in place."""
    fg = x[:, 1:]
    fg = torch.where(fg != fg.amax(1, keepdim=True), torch.zeros_like(fg), fg)
    return torch.cat([x[:, :1], fg], 1)


def image_logits(cam: torch.Tensor) -> torch.Tensor:
    """``(B, C_fg)`` image-level class logits: the average-pooled foreground CAM (background first)."""
    return F.adaptive_avg_pool2d(cam, (1, 1)).flatten(1)[:, 1:]


def classification_loss(cam: torch.Tensor, label_bg: torch.Tensor) -> torch.Tensor:
    """Multilabel soft margin on the average-pooled foreground CAM (``label_bg`` from :func:`with_background`)."""
    return F.multilabel_soft_margin_loss(image_logits(cam), label_bg.flatten(1)[:, 1:])


def _fill_background(cam: torch.Tensor) -> torch.Tensor:
    return torch.cat([1 - cam[:, 1:].amax(1, keepdim=True), cam[:, 1:]], 1)


def ecr_loss(target_cam: torch.Tensor, cam_rv: torch.Tensor, top_ratio: float = 0.2) -> torch.Tensor:
    """One ECR direction: mean of the top ``top_ratio`` of ``|max_onehot(target) - cam_rv|`` per image."""
    n, c, h, w = cam_rv.shape
    diff = (max_onehot(target_cam.detach()) - cam_rv).abs().reshape(n, -1)
    return torch.topk(diff, k=int(c * h * w * top_ratio), dim=-1)[0].mean()


def seam_losses(cam1: torch.Tensor, cam_rv1: torch.Tensor, cam2: torch.Tensor, cam_rv2: torch.Tensor,
                label: torch.Tensor, ecr_ratio: float = 0.2) -> Dict[str, torch.Tensor]:
    """SEAM loss terms for the two views.

    ``cam1``/``cam_rv1``: ``(N, C, H1, W1)`` network outputs on view 1; ``cam2``/``cam_rv2``: ``(N, C, H2, W2)`` on
    view 2 (view 1 rescaled to ``H2 x W2``); ``label``: ``(N, C-1)`` foreground multi-hot. Returns
    ``loss`` (= cls + er + ecr), ``loss_cls`` (classification + adaptive min-pooling, as published),
    ``loss_er``, ``loss_ecr`` and the parts ``loss_mlsm``, ``loss_rvmin``.
    """
    cam1, cam_rv1, cam2, cam_rv2 = (t.float() for t in (cam1, cam_rv1, cam2, cam_rv2))
    lab = with_background(label).to(cam1.device)
    size = cam2.shape[-2:]
    loss_cls1 = classification_loss(cam1, lab)
    loss_cls2 = classification_loss(cam2, lab)
    loss_rvmin1 = adaptive_min_pooling_loss((cam_rv1 * lab)[:, 1:])
    loss_rvmin2 = adaptive_min_pooling_loss((cam_rv2 * lab)[:, 1:])

    c1 = F.interpolate(max_norm(cam1), size=size, mode="bilinear", align_corners=True) * lab
    rv1 = F.interpolate(max_norm(cam_rv1), size=size, mode="bilinear", align_corners=True) * lab
    c2 = max_norm(cam2) * lab
    rv2 = max_norm(cam_rv2) * lab

    loss_er = (c1[:, 1:] - c2[:, 1:]).abs().mean()
    c1, c2 = _fill_background(c1), _fill_background(c2)
    loss_ecr = ecr_loss(c2, rv1, ecr_ratio) + ecr_loss(c1, rv2, ecr_ratio)

    loss_mlsm = (loss_cls1 + loss_cls2) / 2
    loss_rvmin = (loss_rvmin1 + loss_rvmin2) / 2
    loss_cls = loss_mlsm + loss_rvmin
    return {"loss": loss_cls + loss_er + loss_ecr, "loss_cls": loss_cls, "loss_er": loss_er, "loss_ecr": loss_ecr,
            "loss_mlsm": loss_mlsm, "loss_rvmin": loss_rvmin}
