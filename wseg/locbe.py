"""ToCo / LOC-BE on a ViT: the network and the per-iteration pieces (refs: T = rulixiang/ToCo, L = whn786/LOC-BE).

One training iteration of LOC-BE (L:scripts/dist_train_voc_seg_neg.py:282-336), built from this module and :mod:`wseg.locbe_pieces` (re-exported here):

1. :func:`multiscale_cams`: no-grad CAMs and aux CAMs at scales (1, 0.5, 1.5), max over each flip pair, ReLU,
   summed over scales, min-max normalised per map (``multi_scale_cam2``, L:utils/camutils.py:87-127);
2. :func:`roi_partition`: the CAM region partition of the *aux* CAM, 0 (max_c y_c cam_c <= 0.25), 2 (>= 0.7), else
   1 (``cam_to_roi_mask2``, camutils.py:27-38);
3. :func:`loc_crops`: LOC crops, windows of up to 86 px around confident (roi 2) pixels (``random_crop``,
   camutils.py:311-351); :func:`be_input`: the BE image, roi 0 and 2 erased to 0 (``mask(..., BQD=True)``,
   camutils.py:273-283);
4. forwards: the image (GMP), the BE image (hybrid pooling, ``hp=True``), each crop (its CLS token);
5. :func:`seg_pseudo_labels`: PAR-refined pseudo labels from the main CAM with background planes 0.7 / 0.25
   (``refine_cams_with_bkg_v2``, camutils.py:181-230); :func:`token_aff_mask`: the L_sc / PTC targets from the aux
   CAM at token resolution (``cam_to_label(ignore_mid=True)`` + ``label_to_aff_mask``).

:func:`locbe_losses` / :func:`toco_losses` compose the published totals, with the published schedule.
ToCo (T:scripts/dist_train_voc_seg_neg.py:261-300) shares 1, 2 and 5 and adds the class-token contrast
(:func:`toco_local_crops`, :meth:`ViTSegNet.project`). Fixes of published crashes, each noted where it is made:
no confident pixel (no LOC crop, L_LOC = 0), one image per GPU (L_LOC), no labelled background/foreground pixel
(L_seg = 0 for that half), hybrid pooling on fewer than 8 tokens.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wseg.locbe_pieces import (CAM_SCALES, IMAGENET_MEAN, IMAGENET_STD, be_input, cam_to_label,  # noqa: F401
                               denormalize_01, loc_crops, multiscale_cams, roi_partition, seg_pseudo_labels,
                               toco_local_crops, toco_normalize, token_aff_mask)
from wseg.losses.dense_energy import DenseEnergyLoss, energy_loss
from wseg.losses.locbe import loc_loss
from wseg.losses.toco import classification_loss, ctc_loss, ema_update, ptc_loss, seg_loss
from wseg.models.heads.par import PAR
from wseg.models.heads.vit_heads import CTCHead, LargeFOVDecoder, gmp, hybrid_pool
from wseg.models.layout import use_layout

SEG_SCALES = (1.0, 1.5, 1.25)      # published inference (L:tools/infer_seg_voc.py:33)


# ----------------------------------------------------------------------------------------------------- the network

class ViTSegNet(nn.Module):
    """ToCo's / LOC-BE's ``network`` (T:model/model_seg_neg.py, L:model/model_seg_neg.py) on :class:`ViT`.

    Layers (published keys): ``encoder.*`` (the ViT, timm names), ``classifier`` and ``aux_classifier`` (1x1, no
    bias, ``num_classes - 1`` outputs), ``decoder.conv6/7/8`` (LargeFOV), with ``ctc=True`` ToCo's ``proj_head`` and
    its EMA teacher ``proj_head_t``, with ``attn_proj=True`` LOC-BE's unused ``attn_proj`` (kept only so the
    published LOC-BE checkpoints load strictly; frozen, in no parameter group).
    ``forward(x, hp=False, cam_only=False, tokens_only=False, crops=None)`` returns a dict:
    ``cam``/``cam_aux`` (raw, detached) when ``cam_only``; ``cls_token`` alone when ``tokens_only``; else ``cls``
    (GMP, or hybrid pooling when ``hp``), ``cls_aux`` (GMP of the aux tokens), ``seg`` (stride 16), ``fmap``,
    ``cls_token``, and with ``crops=(global_views, local_views)`` ToCo's ``ctc_t`` / ``ctc_s`` projections."""

    def __init__(self, backbone: str = "vit_base_patch16_224", num_classes: int = 21, aux_layer: int = -3,
                 ctc: bool = False, ctc_dim: int = 1024, momentum: float = 0.9, attn_proj: bool = False,
                 **backbone_kw):
        super().__init__()
        from wseg.models.backbones.vit import VIT_BACKBONES, ViT

        if backbone in VIT_BACKBONES:
            self.backbone = ViT(**{**VIT_BACKBONES[backbone], "aux_layer": aux_layer, **backbone_kw})
        else:
            from wseg.models.backbones import build_backbone

            self.backbone = build_backbone(backbone, aux_layer=aux_layer, **backbone_kw)
        dim = self.backbone.embed_dim
        self.num_classes, self.momentum = int(num_classes), float(momentum)
        if ctc:
            self.proj_head = CTCHead(dim, out_dim=ctc_dim)
            self.proj_head_t = CTCHead(dim, out_dim=ctc_dim)
            self.proj_head_t.load_state_dict(self.proj_head.state_dict())
            self.proj_head_t.requires_grad_(False)
        if attn_proj:
            self.attn_proj = nn.Conv2d(24, 1, 1, bias=True)
            self.attn_proj.requires_grad_(False)
        self.decoder = LargeFOVDecoder(dim, self.num_classes)
        self.classifier = nn.Conv2d(dim, self.num_classes - 1, 1, bias=False)
        self.aux_classifier = nn.Conv2d(dim, self.num_classes - 1, 1, bias=False)
        use_layout(self, [("backbone.", "encoder.")])

    @property
    def has_ctc(self) -> bool:
        return hasattr(self, "proj_head")

    def new_layer_prefixes(self) -> Tuple[str, ...]:
        """The layers outside the encoder (they start fresh on ImageNet weights)."""
        return ("classifier.", "aux_classifier.", "decoder.", "proj_head.", "proj_head_t.", "attn_proj.")

    def load_imagenet(self, path: str) -> None:
        """The ImageNet ViT file (timm key names, e.g. ``vit_base_patch16_224.orig_in21k_ft_in1k``) into the encoder,
        strictly (:func:`wseg.models.backbones.vit.load_vit_weights`)."""
        from wseg.models.backbones.vit import load_vit_weights

        load_vit_weights(self.backbone, path)

    def param_groups(self) -> List[List[nn.Parameter]]:
        """The published four groups (``get_param_groups``): encoder without "norm" in the name, encoder norms,
        classifiers (+ ToCo's ``proj_head``), decoder; parameters that never train are left out."""
        groups: List[List[nn.Parameter]] = [[], [], [], []]
        for name, p in self.backbone.named_parameters():
            groups[1 if "norm" in name else 0].append(p)
        groups[2] += [self.classifier.weight, self.aux_classifier.weight]
        if self.has_ctc:
            groups[2] += list(self.proj_head.parameters())
        groups[3] += list(self.decoder.parameters())
        return [[p for p in g if p.requires_grad] for g in groups]

    def optimizer_groups(self, lr: float = 6e-5, weight_decay: float = 0.01, head_mult: float = 10.0) -> List[dict]:
        """Group dicts for :func:`wseg.engine.optim.build_optimizer` (``adamw``): lr x1, x1, x10, x10, the same
        weight decay on every group (norms and biases included), as published."""
        mults = (1.0, 1.0, head_mult, head_mult)
        return [{"params": g, "lr": lr * m, "weight_decay": weight_decay}
                for g, m in zip(self.param_groups(), mults) if g]

    def project(self, global_views: torch.Tensor, local_views: torch.Tensor, ema: bool = True
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """ToCo's ``forward_proj``: EMA-update the teacher head, then ``(teacher(G), student([G; L]))`` on the CLS
        tokens of the global views G (the two views stacked) and the local views L. The teacher reads the detached
        student CLS tokens: the published code runs the same encoder on the same views a second time for it."""
        if ema:
            ema_update(self.proj_head, self.proj_head_t, self.momentum)
        g = self.backbone(global_views)["cls"]
        l_tok = self.backbone(local_views)["cls"]
        return self.proj_head_t(g.detach()), self.proj_head(torch.cat([g, l_tok]))

    def forward(self, x: torch.Tensor, hp: bool = False, cam_only: bool = False, tokens_only: bool = False,
                crops: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        feats = self.backbone(x)
        if tokens_only:
            return {"cls_token": feats["cls"]}
        fmap, fmap_aux = feats["out"], feats["aux"]
        if cam_only:
            return {"cam": F.conv2d(fmap, self.classifier.weight).detach(),
                    "cam_aux": F.conv2d(fmap_aux, self.aux_classifier.weight).detach()}
        pooled = hybrid_pool(fmap) if hp else gmp(fmap)
        out = {"cls": self.classifier(pooled).flatten(1), "cls_aux": self.aux_classifier(gmp(fmap_aux)).flatten(1),
               "seg": self.decoder(fmap), "fmap": fmap, "cls_token": feats["cls"]}
        if crops is not None:
            out["ctc_t"], out["ctc_s"] = self.project(*crops)
        return out


# -------------------------------------------------------------------------------------------------- the losses

@dataclass
class LocBeConfig:
    """The published LOC-BE VOC values (L:scripts/dist_train_voc_seg_neg.py:36-80); COCO: high 0.65, low 0.25,
    bkg 0.45 (L:scripts/dist_train_coco_seg_neg.py:67-69)."""

    cam_scales: Tuple[float, ...] = CAM_SCALES
    high: float = 0.7
    low: float = 0.25
    bkg: float = 0.5
    local_crop_size: int = 86
    num_crops: int = 4
    w_sc: float = 0.3
    w_seg: float = 0.1
    w_reg: float = 0.05
    w_loc: float = 1.0
    w_be: float = 1.0
    seg_start: int = 2000          # seg/reg/LOC join after iteration 2000 (``n_iter <= 2000``: warm phase)
    loc_stop_grad: bool = False    # True: the paper figure's stop-gradient on G
    box_stride: int = 1            # 1: the published pixel box on the token map; 16: on the token grid


@dataclass
class ToCoConfig:
    """The published ToCo VOC values (T:scripts/dist_train_voc_seg_neg.py:35-70)."""

    cam_scales: Tuple[float, ...] = CAM_SCALES
    high: float = 0.7
    low: float = 0.25
    bkg: float = 0.5
    local_crop_size: int = 96
    ncrops: int = 10
    w_ptc: float = 0.2
    w_ctc: float = 0.5
    w_seg: float = 0.1
    w_reg: float = 0.05
    temp: float = 0.5
    seg_start: int = 2000
    box_stride: int = 1


def _seg_terms(out, inputs, cams, labels, img_box, cfg, par, energy, with_reg: bool):
    """L_seg and L_reg on the PAR-refined pseudo labels of the main CAM (shared by ToCo and LOC-BE). L_reg is
    skipped (0) while its weight is 0: published, it is computed and multiplied by 0.0."""
    valid = cams * labels.to(cams.dtype)[:, :, None, None]
    pseudo = seg_pseudo_labels(par, denormalize_01(inputs), valid, labels, cfg.high, cfg.low, img_box)
    segs = F.interpolate(out["seg"].float(), size=pseudo.shape[-2:], mode="bilinear", align_corners=False)
    reg = energy_loss(inputs, segs, pseudo, img_box, energy) if with_reg else segs.new_zeros(())
    return seg_loss(segs, pseudo), reg, pseudo


def _locbe_terms(net, inputs, labels, img_box, cfg, par, energy, generator, autocast, with_reg: bool,
                 seg_from_aux: bool = False) -> Dict[str, torch.Tensor]:
    """The LOC-BE terms of one batch, with their graphs: cls, aux, BE, LOC, seg (pseudo labels from the main CAM,
    or from the aux CAM with ``seg_from_aux``: the COCO script's first 12 000 iterations), reg, sc."""
    with autocast():
        cams, cams_aux = multiscale_cams(net, inputs, cfg.cam_scales)
    roi = roi_partition(cams_aux, labels, cfg.low, cfg.high)
    crops = loc_crops(inputs, roi, cfg.local_crop_size, cfg.num_crops, generator)
    with autocast():
        out = net(inputs, hp=False)
        out_be = net(be_input(inputs, roi), hp=True)
        crop_toks = [net(c, tokens_only=True)["cls_token"] for c in crops]
    terms = {"cls": classification_loss(out["cls"], labels), "aux": classification_loss(out["cls_aux"], labels),
             "be": classification_loss(out_be["cls"], labels),
             "loc": loc_loss(out["cls_token"], crop_toks, labels, cfg.num_crops, stop_grad_global=cfg.loc_stop_grad)}
    terms["seg"], terms["reg"], _ = _seg_terms(out, inputs, cams_aux if seg_from_aux else cams, labels, img_box,
                                               cfg, par, energy, with_reg)
    aff = token_aff_mask(cams_aux, labels, out["fmap"].shape[-2:], img_box, cfg.bkg, cfg.high, cfg.low,
                         cfg.box_stride)
    terms["sc"] = ptc_loss(out["fmap"], aff)
    return terms


def _named(loss: torch.Tensor, terms: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}


def locbe_losses(net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, img_box: Optional[torch.Tensor],
                 iteration: int, cfg: LocBeConfig = LocBeConfig(), par: Optional[PAR] = None,
                 energy: Optional[DenseEnergyLoss] = None, generator: Optional[torch.Generator] = None,
                 autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> Dict[str, torch.Tensor]:
    """One LOC-BE VOC iteration (see the module docstring): named terms, ``loss`` the published total
    ``cls + aux + w_be BE + w_sc sc + 0.0 seg`` up to ``seg_start``, then ``+ w_seg seg + w_reg reg + w_loc LOC``
    (the published line reads the undefined ``args.seg`` there; ``w_seg`` = its ``--w_seg`` 0.1). The published
    ``0.0 * seg_loss`` of the warm phase is kept: the decoder gets zero gradients, so AdamW decays it and counts
    its steps from iteration 0, and data-parallel training sees every parameter used. ``autocast``: the
    mixed-precision context of the forwards (:class:`~wseg.engine.trainer.StepContext`); losses run in fp32.
    ``generator``: a CPU generator for the crop draws."""
    par = par or PAR()
    energy = energy or DenseEnergyLoss()
    late = iteration > cfg.seg_start
    terms = _locbe_terms(net, inputs, labels, img_box, cfg, par, energy, generator, autocast, late)
    loss = terms["cls"] + terms["aux"] + cfg.w_be * terms["be"] + cfg.w_sc * terms["sc"]
    if late:
        loss = loss + cfg.w_seg * terms["seg"] + cfg.w_reg * terms["reg"] + cfg.w_loc * terms["loc"]
    else:
        loss = loss + 0.0 * terms["seg"]
    return _named(loss, terms)


#: LOC-BE's COCO values (L:scripts/dist_train_coco_seg_neg.py:67-69 and :352: ``0.2 * seg_loss`` in phase 3).
COCO_LOCBE = dict(high=0.65, low=0.25, bkg=0.45, w_seg=0.2)
#: The COCO script's phase ends (``n_iter <= 8000``, ``n_iter <= 12000``, :325, :347-352).
COCO_PHASES = (8000, 12000)


def locbe_coco_losses(net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, img_box: Optional[torch.Tensor],
                      iteration: int, cfg: LocBeConfig = LocBeConfig(**COCO_LOCBE),
                      phases: Tuple[int, int] = COCO_PHASES, w_seg_mid: float = 0.1, par: Optional[PAR] = None,
                      energy: Optional[DenseEnergyLoss] = None, generator: Optional[torch.Generator] = None,
                      autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> Dict[str, torch.Tensor]:
    """One LOC-BE COCO iteration (L:scripts/dist_train_coco_seg_neg.py:274-352): up to ``phases[0]``
    ``cls + aux + 0.0 seg``; up to ``phases[1]`` ``cls + aux + w_seg_mid seg + w_reg reg`` with the pseudo labels
    refined from the *aux* CAM; then ``cls + aux + w_seg seg + w_reg reg + w_be BE + w_loc LOC + w_sc sc`` with
    the main CAM's. The published script cannot run (``cachu`` and ``attn_mask`` are undefined, :277, :337; its
    ``get_aux_loss`` term is in no total and is left out); ``cachu`` is taken to be VOC's ``mask(..., BQD=True)``
    (:func:`be_input`), the only BE input of the code drop."""
    par = par or PAR()
    energy = energy or DenseEnergyLoss()
    first, second = int(phases[0]), int(phases[1])
    terms = _locbe_terms(net, inputs, labels, img_box, cfg, par, energy, generator, autocast, iteration > first,
                         seg_from_aux=iteration <= second)
    loss = terms["cls"] + terms["aux"]
    if iteration <= first:
        loss = loss + 0.0 * terms["seg"]
    elif iteration <= second:
        loss = loss + w_seg_mid * terms["seg"] + cfg.w_reg * terms["reg"]
    else:
        loss = (loss + cfg.w_seg * terms["seg"] + cfg.w_reg * terms["reg"] + cfg.w_be * terms["be"]
                + cfg.w_loc * terms["loc"] + cfg.w_sc * terms["sc"])
    return _named(loss, terms)


def toco_losses(net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, img_box: Optional[torch.Tensor],
                views: Sequence[torch.Tensor], iteration: int, cfg: ToCoConfig = ToCoConfig(),
                par: Optional[PAR] = None, energy: Optional[DenseEnergyLoss] = None,
                generator: Optional[torch.Generator] = None,
                autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> Dict[str, torch.Tensor]:
    """One ToCo VOC iteration: ``views`` = the loader's ``crops`` (global view 1 = ``inputs``, global view 2, the
    local view); ``loss = cls + aux + w_ptc PTC + w_ctc CTC`` (+ the published ``0.0 * seg_loss``, see
    :func:`locbe_losses`) and ``+ w_seg seg + w_reg reg`` after ``seg_start`` (``autocast``, ``generator``: as
    :func:`locbe_losses`)."""
    par = par or PAR()
    energy = energy or DenseEnergyLoss()
    with autocast():
        cams, cams_aux = multiscale_cams(net, inputs, cfg.cam_scales)
    roi = roi_partition(cams_aux, labels, cfg.low, cfg.high)
    local, flags = toco_local_crops(views[2], roi, cfg.ncrops - 2, cfg.local_crop_size, generator)
    with autocast():
        out = net(inputs, crops=(torch.cat(list(views[:2])), torch.cat(local)))
    terms = {"cls": classification_loss(out["cls"], labels), "aux": classification_loss(out["cls_aux"], labels),
             "ctc": ctc_loss(out["ctc_s"], out["ctc_t"], flags, cfg.temp)}
    terms["seg"], terms["reg"], _ = _seg_terms(out, inputs, cams, labels, img_box, cfg, par, energy,
                                               iteration > cfg.seg_start)
    aff = token_aff_mask(cams_aux, labels, out["fmap"].shape[-2:], img_box, cfg.bkg, cfg.high, cfg.low,
                         cfg.box_stride)
    terms["ptc"] = ptc_loss(out["fmap"], aff)
    loss = terms["cls"] + terms["aux"] + cfg.w_ptc * terms["ptc"] + cfg.w_ctc * terms["ctc"]
    if iteration > cfg.seg_start:
        loss = loss + cfg.w_seg * terms["seg"] + cfg.w_reg * terms["reg"]
    else:
        loss = loss + 0.0 * terms["seg"]
    return _named(loss, terms)


# ------------------------------------------------------------------------------------------------------ inference

@torch.no_grad()
def multiscale_seg_logits(net: nn.Module, x: torch.Tensor, out_size: Tuple[int, int],
                          scales: Sequence[float] = SEG_SCALES) -> torch.Tensor:
    """Published inference (L:tools/infer_seg_voc.py:53-68): per scale ``int(s * size)`` (bilinear), the
    segmentation logits of the image plus those of its un-flipped mirror, bilinear to ``out_size``; the
    element-wise max over scales. ``(N, C, H, W)``."""
    b, _, h, w = x.shape
    best = None
    for s in scales:
        xs = F.interpolate(x, size=(int(h * s), int(w * s)), mode="bilinear", align_corners=False)
        seg = F.interpolate(net(torch.cat([xs, xs.flip(-1)]))["seg"].float(), size=out_size, mode="bilinear",
                            align_corners=False)
        seg = seg[:b] + seg[b:].flip(-1)
        best = seg if best is None else torch.max(best, seg)
    return best


COCO_SEG_SCALES = (1.0, 1.25, 1.5)   # published COCO inference (L:tools/infer_seg_coco_ddp.py:37)


@torch.no_grad()
def multiscale_seg_logits_coco(net: nn.Module, x: torch.Tensor, out_size: Tuple[int, int],
                               scales: Sequence[float] = COCO_SEG_SCALES, size: int = 448) -> torch.Tensor:
    """Published COCO inference (L:tools/infer_seg_coco_ddp.py:57-73 = T's): the image resized (bilinear) to
    ``size x size`` first; per scale ``int(size * s)``, the element-wise max of the image's and the un-flipped
    mirror's logits, bilinear to ``out_size``; the *sum* over scales. ``(N, C, H, W)``."""
    b = x.shape[0]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    total = None
    for s in scales:
        xs = F.interpolate(x, size=(int(size * s), int(size * s)), mode="bilinear", align_corners=False)
        seg = F.interpolate(net(torch.cat([xs, xs.flip(-1)]))["seg"].float(), size=out_size, mode="bilinear",
                            align_corners=False)
        seg = torch.max(seg[:b], seg[b:].flip(-1))
        total = seg if total is None else total + seg
    return total
