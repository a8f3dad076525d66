"""ToCo / LOC-BE on a ViT: the network and the per-iteration pieces (refs: T = rulixiang/ToCo, L = whn786/LOC-BE).

One training iteration of LOC-BE (L:scripts/dist_train_voc_seg_neg.py:282-336), built from this module:

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

from wseg.data.classes import IGNORE
from wseg.errors import WsegError
from wseg.losses.dense_energy import DenseEnergyLoss, box_mask, energy_loss
from wseg.losses.locbe import loc_loss
from wseg.losses.toco import (aff_mask_from_labels, classification_loss, ctc_loss, ema_update, ptc_loss,
                              seg_loss)
from wseg.models.heads.par import PAR
from wseg.models.heads.vit_heads import CTCHead, LargeFOVDecoder, gmp, hybrid_pool
from wseg.models.layout import use_layout

#: ImageNet normalisation of the published loaders (0-1 RGB)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAM_SCALES = (1.0, 0.5, 1.5)
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


# ------------------------------------------------------------------------------------------- CAMs and partitions

def toco_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-map ``(cam - min) / (max(cam - min) + eps)`` (the published ``multi_scale_cam2`` normalisation)."""
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + eps)


@torch.no_grad()
def multiscale_cams(net: nn.Module, x: torch.Tensor, scales: Sequence[float] = CAM_SCALES
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(cam, cam_aux)`` at the input size, in [0, 1] (``multi_scale_cam2``): scale 1 always, then every other
    scale (``int(s * size)``, bilinear); per scale the max of the image's and the un-flipped mirror's CAMs
    (bilinear to the input size), ReLU; summed over scales; :func:`toco_normalize`. Batched over images."""
    b, _, h, w = x.shape
    total = {"cam": 0.0, "cam_aux": 0.0}
    for s in [1.0] + [float(s) for s in scales if s != 1.0]:
        xs = x if s == 1.0 else F.interpolate(x, size=(int(s * h), int(s * w)), mode="bilinear",
                                              align_corners=False)
        out = net(torch.cat([xs, xs.flip(-1)]), cam_only=True)
        for key in total:
            c = F.interpolate(out[key].float(), size=(h, w), mode="bilinear", align_corners=False)
            total[key] = total[key] + F.relu(torch.max(c[:b], c[b:].flip(-1)))
    return toco_normalize(total["cam"]), toco_normalize(total["cam_aux"])


def roi_partition(cam: torch.Tensor, labels: torch.Tensor, low: float = 0.25, high: float = 0.7) -> torch.Tensor:
    """``cam_to_roi_mask2``: ``(N, H, W)`` int16, 0 where ``max_c y_c cam_c <= low``, 2 where ``>= high``, else 1."""
    v = (cam * labels.to(cam.dtype)[:, :, None, None]).amax(dim=1)
    roi = torch.ones_like(v, dtype=torch.int16)
    roi[v <= low] = 0
    roi[v >= high] = 2
    return roi


def be_input(x: torch.Tensor, roi: torch.Tensor, erase: Sequence[int] = (0, 2)) -> torch.Tensor:
    """The BE image: pixels whose ROI is in ``erase`` set to 0 on every channel (the ImageNet mean colour in the
    normalised input), keeping the uncertain band (``mask(inputs, roi, BQD=True)``)."""
    erase_t = torch.tensor(list(erase), device=roi.device, dtype=roi.dtype).view(-1, 1, 1, 1)
    keep = ~(roi.unsqueeze(0) == erase_t).any(dim=0)
    return x * keep.unsqueeze(1).to(x.dtype)


def loc_crops(x: torch.Tensor, roi: torch.Tensor, crop_size: int = 86, num_crops: int = 4,
              generator: Optional[torch.Generator] = None, min_size: int = 16) -> List[torch.Tensor]:
    """LOC crops (``random_crop``): ``num_crops`` centres drawn uniformly from the confident (roi 2) pixels of the
    *whole batch*; window ``[c - size//2, c - size//2 + size)`` clipped to the image (so 43-86 px); the same window
    cut from *every* image of the batch. Fixed: no confident pixel gives no crops (published: ValueError); a
    window under ``min_size`` (one ViT patch; only possible when ``crop_size < 2 * min_size``) is dropped."""
    h, w = x.shape[-2:]
    if crop_size > min(h, w):
        raise WsegError(f"LOC crop size {crop_size}: larger than the {h}x{w} input")
    pts = torch.nonzero(roi == 2)
    if pts.shape[0] == 0:
        return []
    gen_device = generator.device if generator is not None else torch.device("cpu")
    pick = torch.randint(0, pts.shape[0], (num_crops,), generator=generator, device=gen_device).to(pts.device)
    centres = pts[pick, 1:].tolist()
    crops = []
    for hc, wc in centres:        # a few crops of different sizes, each a forward of its own
        h0, w0 = max(hc - crop_size // 2, 0), max(wc - crop_size // 2, 0)
        h1, w1 = min(hc - crop_size // 2 + crop_size, h), min(wc - crop_size // 2 + crop_size, w)
        if min(h1 - h0, w1 - w0) >= min_size:
            crops.append(x[:, :, h0:h1, w0:w1])
    return crops


def toco_local_crops(images: torch.Tensor, roi: torch.Tensor, crop_num: int = 8, crop_size: int = 96,
                     generator: Optional[torch.Generator] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """ToCo's ``crop_from_roi_neg``, vectorised: per image ``crop_num`` distinct top-left corners drawn from the
    pixels with roi <= 1 inside the ``crop_size // 2`` margin (from all of them when fewer than ``crop_num``);
    ``flags (N, crop_num + 2)``: 1, except 0 for crops whose ``sum(roi) / crop_size^2 <= 0.2`` (negatives; the
    first two columns are the global views). Returns ``crop_num`` tensors ``(N, 3, crop_size, crop_size)``."""
    n, _, h, w = images.shape
    m = crop_size // 2
    inner = roi[:, m:h - m, m:w - m]
    hi, wi = inner.shape[-2:]
    if hi * wi < crop_num:
        raise WsegError(f"ToCo local crops: a {h}x{w} input leaves fewer than {crop_num} crop positions")
    cand = (inner <= 1).flatten(1)
    cand = torch.where(cand.sum(1, keepdim=True) < crop_num, torch.ones_like(cand), cand)
    idx = torch.multinomial(cand.float().cpu(), crop_num, replacement=False, generator=generator).to(roi.device)
    h0, w0 = idx // wi, idx % wi                                            # (N, crop_num)
    ar = torch.arange(crop_size, device=roi.device)
    rows = (h0[..., None] + ar)[..., :, None]                               # (N, n, S, 1)
    cols = (w0[..., None] + ar)[..., None, :]                               # (N, n, 1, S)
    bi = torch.arange(n, device=roi.device).view(n, 1, 1, 1)
    crops = images.permute(0, 2, 3, 1)[bi, rows, cols].permute(1, 0, 4, 2, 3)   # (n, N, 3, S, S)
    ratio = roi[bi, rows, cols].float().sum(dim=(-2, -1)) / crop_size ** 2      # (N, n)
    flags = torch.ones(n, crop_num + 2, device=roi.device)
    flags[:, 2:] = (ratio > 0.2).float()
    return list(crops.unbind(0)), flags


# ------------------------------------------------------------------------------------------------- pseudo labels

def denormalize_01(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                   ) -> torch.Tensor:
    """``denormalize_img2``: the normalised input back to 0-255, truncated to integers as the uint8 cast does, /255."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1) * 255
    return (x.float() * s + m).clamp(0, 255).floor() / 255.0


def cam_to_label(cam: torch.Tensor, labels: torch.Tensor, bkg_thre: float = 0.5, high: float = 0.7,
                 low: float = 0.25, ignore_mid: bool = False, img_box: Optional[torch.Tensor] = None,
                 box_stride: int = 1) -> torch.Tensor:
    """The published ``cam_to_label`` label map ``(N, H, W)``: argmax class + 1 of the label-masked CAM, 0 where
    its max <= ``bkg_thre``; with ``ignore_mid`` 255 where <= ``high`` and 0 where <= ``low``; 255 outside
    ``img_box`` (published, ``ignore_mid`` only acts together with a box; no call uses one without the other).
    ``box_stride``: the box's pixels per map cell. The published code applies pixel coordinates to any map
    (``box_stride=1``), which on the 28x28 token map of L_sc/PTC keeps the wrong cells (a box starting past row
    or column 28 ignores every token); ``box_stride=16`` maps the box to the token grid."""
    valid = cam * labels.to(cam.dtype)[:, :, None, None]
    v, idx = valid.max(dim=1)
    lab = idx + 1
    lab[v <= bkg_thre] = 0
    if ignore_mid:
        lab[v <= high] = IGNORE
        lab[v <= low] = 0
    if img_box is None:
        return lab
    box = torch.as_tensor(img_box, device=cam.device).long().reshape(-1, 4)
    if box_stride != 1:
        box = torch.stack([box[:, 0] // box_stride, -(-box[:, 1] // box_stride),
                           box[:, 2] // box_stride, -(-box[:, 3] // box_stride)], dim=1)
    inside = box_mask(box, lab.shape[-2], lab.shape[-1])
    return torch.where(inside, lab, torch.full_like(lab, IGNORE))


def seg_pseudo_labels(par: PAR, images01: torch.Tensor, cams: torch.Tensor, labels: torch.Tensor,
                      high: float = 0.7, low: float = 0.25, img_box: Optional[torch.Tensor] = None,
                      down_scale: int = 2) -> torch.Tensor:
    """``refine_cams_with_bkg_v2``: for each background level (``high``, ``low``) prepend a constant background
    plane to the label-masked CAMs, resize both (bilinear) to ``1/down_scale``, softmax over background + the
    image's classes, refine with PAR on the ``1/down_scale`` image, resize back, argmax -> class id. Then label =
    the high-background label; where it is background, 255, unless the low-background label is background too
    (0); 255 outside ``img_box``. Vectorised over images: the present classes of every image are packed into the
    first channels (absent slots have probability 0, which PAR keeps at 0), so the result equals the published
    per-image loop."""
    n, c, h, w = cams.shape
    hs, ws = h // down_scale, w // down_scale
    imgs = F.interpolate(images01.float(), size=(hs, ws), mode="bilinear", align_corners=False)
    present = torch.cat([torch.ones(n, 1, device=cams.device, dtype=torch.bool), labels.bool()], dim=1)
    keys = torch.where(present, torch.arange(c + 1, device=cams.device), c + 1 + torch.arange(c + 1,
                                                                                           device=cams.device))
    order = keys.argsort(dim=1)[:, :int(present.sum(1).max())]            # (N, S): present classes first
    slot_ok = torch.gather(present, 1, order)
    planes = []
    for bg in (high, low):
        full = torch.cat([torch.full((n, 1, h, w), bg, device=cams.device, dtype=torch.float32), cams.float()], 1)
        small = F.interpolate(full, size=(hs, ws), mode="bilinear", align_corners=False)
        small = torch.gather(small, 1, order[:, :, None, None].expand(-1, -1, hs, ws))
        small = small.masked_fill(~slot_ok[:, :, None, None], float("-inf"))
        planes.append(small.softmax(dim=1))
    refined = par(imgs.repeat(2, 1, 1, 1), torch.cat(planes))             # (2N, S, hs, ws)
    refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
    lab = torch.gather(order.repeat(2, 1), 1, refined.argmax(dim=1).flatten(1)).view(2 * n, h, w)
    lab_h, lab_l = lab[:n], lab[n:]
    if img_box is not None:
        inside = box_mask(torch.as_tensor(img_box, device=cams.device), h, w)
        lab_h = torch.where(inside, lab_h, torch.full_like(lab_h, IGNORE))
        lab_l = torch.where(inside, lab_l, torch.full_like(lab_l, IGNORE))
    out = torch.where(lab_h == 0, torch.full_like(lab_h, IGNORE), lab_h)
    return torch.where((lab_h + lab_l) == 0, torch.zeros_like(out), out)


def token_aff_mask(cam_aux: torch.Tensor, labels: torch.Tensor, size: Tuple[int, int], img_box=None,
                   bkg_thre: float = 0.5, high: float = 0.7, low: float = 0.25, box_stride: int = 1
                   ) -> torch.Tensor:
    """The PTC / L_sc targets: the aux CAM resized (bilinear) to the token grid, labelled with ``ignore_mid``
    (:func:`cam_to_label`, published ``box_stride=1``), then :func:`~wseg.losses.toco.aff_mask_from_labels`."""
    small = F.interpolate(cam_aux, size=tuple(size), mode="bilinear", align_corners=False)
    lab = cam_to_label(small, labels, bkg_thre, high, low, ignore_mid=True, img_box=img_box, box_stride=box_stride)
    return aff_mask_from_labels(lab)


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
