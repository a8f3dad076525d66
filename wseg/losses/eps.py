"""EPS's saliency loss (Lee et al., CVPR 2021, "Railroad is not a Train"; halbielee/EPS ``eps.py``) and the losses of
EPS+PPC (usr922/wseg branch ``esp``, ``module/train.py`` ``train_contrast``).

The CAM head has ``C + 1`` maps with the **background last**. The saliency loss (explicit pseudo-pixel supervision):

- ``p = softmax(cam)`` over the ``C + 1`` maps, at the CAM's size; the saliency map (soft, in ``[0, 1]``) is resized
  to that size with nearest-neighbour sampling (``F.interpolate``'s default);
- per foreground class, the overlap ratio of its rounded map with the rounded saliency,
  ``sum(round(p_c) round(s)) / sum(round(p_c) + 1e-4)`` (no gradient); a labelled class whose overlap exceeds
  ``tau`` is a *foreground* class, a labelled class at or below ``tau`` joins the *background* (a labelled object
  the saliency model missed); unlabelled classes are in neither set;
- ``M_fg = sum_{c in fg} p_c``, ``M_bg = p_bg + sum_{c in bg} p_c``, the estimated saliency
  ``lam M_fg + (1 - lam) (1 - M_bg)``, and the loss its mean squared error to the soft saliency.

EPS+PPC (:func:`eps_ppc_losses`) puts this loss on the CAM and on the PCM-refined CAM of both views and adds SEAM's
classification / adaptive min-pooling / ER / ECR terms and PPC's contrast, all on feature-size maps with the
background last (see the function).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from wseg.losses.ppc import (LOSS_WEIGHT, TEMPERATURE, _PPCTerms, _prototypes, normalize_cam, pseudo_labels)
from wseg.losses.seam import adaptive_min_pooling_loss, ecr_loss, max_norm

#: EPS's VOC values (script/voc12_eps.sh:26, main.py:47); COCO uses lam 0.9 (script/coco_eps.sh:27-28).
TAU = 0.4
LAM = 0.5
#: EPS+PPC (esp module/train.py:382, :421): contrast weight and background score of the pseudo labels.
ESP_BG_THRESHOLD = 0.10
#: esp ``get_contrast_loss``: each prototype averages the top ``h*w // 16`` pixels of the batch (PPC master: ``// 8``).
ESP_PROTO_DIV = 16


def background_last(label: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` image-level labels -> ``(N, C + 1, 1, 1)`` with the background (1) appended last, as EPS+PPC's
    ``label_append_bg``."""
    label = label.float()
    return torch.cat([label, torch.ones_like(label[:, :1])], 1)[..., None, None]


def saliency_selection(cam: torch.Tensor, saliency: torch.Tensor, label: torch.Tensor, tau: float = TAU):
    """The pieces of the saliency loss before the blend: ``(p, s, fg_mask, bg_mask)``.

    ``p``: ``softmax(cam)`` ``(N, C+1, h, w)``; ``s``: the saliency at the CAM's size (nearest); ``fg_mask`` /
    ``bg_mask``: ``(N, C+1, 1, 1)`` 0/1 selections of the maps summed into ``M_fg`` / ``M_bg`` (the background map is
    always in ``bg_mask``)."""
    n, c1, h, w = cam.shape
    s = F.interpolate(saliency.float(), size=(h, w))                  # nearest, as published
    p = F.softmax(cam.float(), dim=1)
    with torch.no_grad():
        fg_round = torch.round(p[:, :-1])
        hit = (fg_round * torch.round(s)).flatten(2).sum(-1)
        area = (fg_round + 1e-4).flatten(2).sum(-1)                     # the 1e-4 added per pixel, as published
        confident = hit / area > tau
        labelled = label.to(p.device) > 0
        ones = torch.ones_like(labelled[:, :1])
        fg_mask = torch.cat([labelled & confident, torch.zeros_like(ones)], 1)
        bg_mask = torch.cat([labelled & ~confident, ones], 1)
    return p, s, fg_mask[..., None, None].to(p.dtype), bg_mask[..., None, None].to(p.dtype)


def saliency_maps(cam: torch.Tensor, saliency: torch.Tensor, label: torch.Tensor, tau: float = TAU,
                  lam: float = LAM) -> Dict[str, torch.Tensor]:
    """EPS's ``get_eps_loss(..., intermediate=True)``: ``loss`` and the maps ``fg_map`` (``M_fg``), ``bg_map``
    (``1 - M_bg``) and ``sal_pred`` (the estimated saliency), each ``(N, 1, h, w)``.

    ``cam``: ``(N, C+1, h, w)`` logits, background last; ``saliency``: ``(N, 1, H, W)`` in ``[0, 1]``; ``label``:
    ``(N, C)`` image-level labels."""
    p, s, fg_mask, bg_mask = saliency_selection(cam, saliency, label, tau)
    fg_map = (p * fg_mask).sum(1, keepdim=True)
    bg_map = 1 - (p * bg_mask).sum(1, keepdim=True)
    sal_pred = fg_map * lam + bg_map * (1 - lam)
    return {"loss": F.mse_loss(sal_pred, s), "fg_map": fg_map, "bg_map": bg_map, "sal_pred": sal_pred}


def saliency_loss(cam: torch.Tensor, saliency: torch.Tensor, label: torch.Tensor, tau: float = TAU,
                  lam: float = LAM) -> torch.Tensor:
    """EPS's saliency loss (see the module docstring and :func:`saliency_maps`)."""
    return saliency_maps(cam, saliency, label, tau, lam)["loss"]


def image_logits(cam: torch.Tensor) -> torch.Tensor:
    """``(B, C_fg)`` image-level class logits: the global-average-pooled foreground logits (background last)."""
    return cam.float().mean((2, 3))[:, :-1]


def cls_loss(cam: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Multilabel soft margin on the global-average-pooled foreground logits (``pred[:, :-1]``: background last)."""
    pred = image_logits(cam)
    return F.multilabel_soft_margin_loss(pred, label.float().to(pred.device))


def background_first(x: torch.Tensor) -> torch.Tensor:
    """Move the last (background) channel to the front: the layout of SEAM/PPC's code."""
    return torch.cat([x[:, -1:], x[:, :-1]], 1)


def _fill_background_last(cam: torch.Tensor) -> torch.Tensor:
    return torch.cat([cam[:, :-1], 1 - cam[:, :-1].amax(1, keepdim=True)], 1)


def er_ecr_losses(cam1: torch.Tensor, cam2: torch.Tensor, cam_rv1: torch.Tensor, cam_rv2: torch.Tensor,
                  label: torch.Tensor, fix_max_onehot: bool = False, ecr_ratio: float = 0.2):
    """EPS+PPC's ``get_er_loss`` on feature-size maps, background last: ``(loss_er, loss_ecr)``.

    View 1's max-normalised maps are resized (bilinear, ``align_corners``) to view 2's size and label-masked; ER is
    ``mean |cam1 - cam2|`` over the foreground maps; the background maps become ``1 - max fg``; ECR is the mean of
    the top ``ecr_ratio`` of ``|max_onehot(camX) - cam_rvY|`` per image, both directions summed.

    Published quirk (esp module/train.py:284-288): ``max_onehot`` was kept from SEAM, whose background is channel 0,
    so here it keeps the *first foreground* channel unchanged and one-hots the other foreground channels *together
    with the background*. ``fix_max_onehot``: keep the background and one-hot the foreground instead (SEAM's intent).
    """
    lab = background_last(label).to(cam1.device)
    size = cam2.shape[-2:]
    c1 = F.interpolate(max_norm(cam1.float()), size=size, mode="bilinear", align_corners=True) * lab
    c2 = max_norm(cam2.float()) * lab
    loss_er = (c1[:, :-1] - c2[:, :-1]).abs().mean()
    c1, c2 = _fill_background_last(c1), _fill_background_last(c2)
    rv1 = F.interpolate(max_norm(cam_rv1.float()), size=size, mode="bilinear", align_corners=True) * lab
    rv2 = max_norm(cam_rv2.float()) * lab
    if fix_max_onehot:
        c1, c2, rv1, rv2 = (background_first(t) for t in (c1, c2, rv1, rv2))
    # ``ecr_loss`` one-hots channels 1: and keeps channel 0 (SEAM's max_onehot): background-last maps give the quirk
    loss_ecr = ecr_loss(c2, rv1, ecr_ratio) + ecr_loss(c1, rv2, ecr_ratio)
    return loss_er, loss_ecr


def eps_ppc_contrast(f_proj1: torch.Tensor, cam_rv1: torch.Tensor, f_proj2: torch.Tensor, cam_rv2: torch.Tensor,
                     label: torch.Tensor, bg_threshold: float = ESP_BG_THRESHOLD, proto_div: int = ESP_PROTO_DIV,
                     temperature: float = TEMPERATURE, loss_weight: float = LOSS_WEIGHT,
                     generator: Optional[torch.Generator] = None,
                     random_keys: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """EPS+PPC's ``get_contrast_loss``: PPC's contrast (:mod:`wseg.losses.ppc`, the same vectorised pieces) with the
    background channel last and each prototype from the top ``h*w // proto_div`` pixels of the batch (esp: 16;
    :func:`wseg.losses.ppc.ppc_contrast` fixes PPC master's 8). View 1 is resized (bilinear, ``align_corners``) to
    view 2's feature size. Pseudo labels, prototypes and logits keep the published channel order, so ties break as
    published (first index)."""
    size = f_proj2.shape[-2:]
    f_proj1 = F.interpolate(f_proj1.float(), size=size, mode="bilinear", align_corners=True)
    cam_rv1 = F.interpolate(cam_rv1.detach().float(), size=size, mode="bilinear", align_corners=True)
    n, c = cam_rv2.shape[:2]
    d, hw = f_proj2.shape[1], size[0] * size[1]
    dev = f_proj2.device
    lab = background_last(label).to(dev).view(n, c).t().reshape(1, c, n, 1)
    cams = torch.stack([t.detach().float().reshape(n, c, hw).transpose(0, 1) for t in (cam_rv1, cam_rv2)])
    # normalize_cam writes the background score into channel 0: give it the background there, then restore the order
    norm = normalize_cam(background_first(cams), bg_threshold, map_dims=3)
    norm = torch.cat([norm[:, 1:], norm[:, :1]], 1)
    y = pseudo_labels(norm, lab).view(2, n, hw)
    feats = [f.float().reshape(n, d, hw) for f in (f_proj1, f_proj2)]
    with torch.no_grad():
        protos = _prototypes(feats, norm, max(1, hw // int(proto_div)))
        both = torch.cat([protos, protos.flip(0)], 1)
    if random_keys is None:
        gdev = generator.device if generator is not None else dev
        keys = torch.rand(2, n * hw, generator=generator, device=gdev).to(dev)
    else:
        keys = torch.stack([k.to(dev).reshape(-1) for k in random_keys])
    cross, cross2, intra = _PPCTerms.apply(both, y, keys, temperature, loss_weight, *feats)
    return {"loss_nce": cross + cross2 + intra, "loss_cross_nce": cross, "loss_cross_nce2": cross2,
            "loss_intra_nce": intra}


def eps_ppc_losses(out1: Dict[str, torch.Tensor], out2: Dict[str, torch.Tensor], saliency1: torch.Tensor,
                   saliency2: torch.Tensor, label: torch.Tensor, tau: float = TAU, lam: float = LAM,
                   bg_threshold: float = ESP_BG_THRESHOLD, proto_div: int = ESP_PROTO_DIV,
                   fix_max_onehot: bool = False, generator: Optional[torch.Generator] = None,
                   random_keys: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """The loss of EPS+PPC's ``train_contrast`` (esp module/train.py:396-428) for two views.

    ``out1``/``out2``: network outputs ``cam``, ``cam_rv`` ``(N, C+1, h, w)`` and ``f_proj`` ``(N, D, h, w)`` at
    feature size for view 1 (the crop) and view 2 (the crop rescaled); ``saliency1``/``saliency2``: the two views'
    saliency maps ``(N, 1, H, W)``; ``label``: ``(N, C)``. Returns ``loss = loss_cls + loss_sal + loss_nce + loss_er +
    loss_ecr`` and the terms, with

    - ``loss_cls`` = mean over views of the multilabel soft margin (``loss_mlsm``) + mean over views of the adaptive
      min-pooling of the label-masked PCM CAM (``loss_rvmin``);
    - ``loss_sal`` = mean over views of the saliency loss on ``cam`` + the same on ``cam_rv``;
    - ``loss_er``, ``loss_ecr``: :func:`er_ecr_losses`; ``loss_nce``: :func:`eps_ppc_contrast`.
    """
    cam1, rv1 = out1["cam"].float(), out1["cam_rv"].float()
    cam2, rv2 = out2["cam"].float(), out2["cam_rv"].float()
    lab = background_last(label).to(cam1.device)
    loss_mlsm = (cls_loss(cam1, label) + cls_loss(cam2, label)) / 2
    loss_rvmin = (adaptive_min_pooling_loss((rv1 * lab)[:, :-1]) + adaptive_min_pooling_loss((rv2 * lab)[:, :-1])) / 2
    loss_cls = loss_mlsm + loss_rvmin
    sal_cam = (saliency_loss(cam1, saliency1, label, tau, lam) + saliency_loss(cam2, saliency2, label, tau, lam)) / 2
    sal_rv = (saliency_loss(rv1, saliency1, label, tau, lam) + saliency_loss(rv2, saliency2, label, tau, lam)) / 2
    loss_sal = sal_cam + sal_rv
    loss_er, loss_ecr = er_ecr_losses(cam1, cam2, rv1, rv2, label, fix_max_onehot)
    nce = eps_ppc_contrast(out1["f_proj"], rv1, out2["f_proj"], rv2, label, bg_threshold, proto_div,
                           generator=generator, random_keys=random_keys)
    loss = loss_cls + loss_sal + nce["loss_nce"] + loss_er + loss_ecr
    return {"loss": loss, "loss_cls": loss_cls, "loss_sal": loss_sal, "loss_er": loss_er, "loss_ecr": loss_ecr,
            "loss_mlsm": loss_mlsm, "loss_rvmin": loss_rvmin, "loss_sal_cam": sal_cam, "loss_sal_rv": sal_rv, **nce}
