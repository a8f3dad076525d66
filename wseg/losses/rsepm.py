"""RecurSeed and EdgePredictMix training (Jo, Yu & Kim, arXiv 2204.06754): the pieces of one step.

The authors released inference only; everything here is the reconstruction of docs/rsepm.md ("Training"), each
choice a field of :class:`RSEPMConfig` (a flag of ``--network rsepm``). Pieces, each a pure function:

- :func:`crop_pool` / :func:`cls_loss`: MultiLabelSoftMargin on the CAM averaged inside the crop box;
- :func:`norm_cam`: ``relu(cams) / (max + 1e-5)`` per channel, times the image labels;
- :func:`scg`: the self-correlation (SCG) expansion of a CAM by backbone features (non-detection);
- :func:`pamr`: pixel-adaptive mask refinement of the segmentation probabilities on the image (false detection);
- :func:`seed_label`: CF(c, u), the three-way seed label (class / background / 255 uncertain);
- :func:`cam_loss`: per-pixel BCE of ``sigmoid(cams)`` against the seed label (the CAM learns from the seeds);
- :func:`edge_map` / :func:`epm_mix`: EdgePredictMix (and the v1 CertainMix): paste a partner's confident
  foreground, attenuated on its predicted edges, with the matching mixed target;
- :func:`rsepm_losses`: one training step's named terms.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import contextlib

import torch
import torch.nn.functional as F

IGNORE = 255
CAM_EPS = 1e-5


@dataclass
class RSEPMConfig:
    rs: bool = True                       # RecurSeed: the segmentation prediction joins the seed, the CAM learns it
    mix: str = "epm"                      # epm | certainmix | none
    rs_start: int = 3310                  # seg (+ cam) losses from this iteration (tag RS(ep=5))
    recur_start: int = 3310               # the segmentation branch joins the seed from this iteration
    mix_start: int = 9930                 # mixing from this iteration (tag CM(ep=15))
    w_cls: float = 1.0
    w_cam: float = 1.0
    w_seg: float = 1.0
    mix_w_cls: float = 1.0
    mix_w_cam: float = 1.0
    mix_w_seg: float = 1.0
    cf_conf: float = 0.55
    cf_uncertain: float = 0.10
    epm_edge: float = 0.5
    scg: bool = True
    scg_levels: Tuple[str, ...] = ("layer3", "layer4")
    scg_th: Tuple[float, float, float, float] = (0.5, 0.1, 0.3, 0.05)   # first order, second order, fg, bg
    pamr_iter: int = 10
    pamr_dilations: Tuple[int, ...] = (1, 2, 4, 8, 12, 24)
    pamr_sigma: float = 0.1
    seg_seed_norm: str = "none"           # none | max
    cls_on_crop: bool = True


# ------------------------------------------------------------------------------------------ classification

def crop_pool(cams: torch.Tensor, box: Optional[torch.Tensor], image_size: Sequence[int]) -> torch.Tensor:
    """``(N, C)`` mean of ``cams`` over each image's valid box ``[h0, h1, w0, w1]`` (pixels of the crop, mapped
    to the map as ``floor(h0 * h / H)`` .. ``ceil(h1 * h / H)``); ``box=None``: the whole map (plain GAP)."""
    if box is None:
        return cams.mean(dim=(2, 3))
    n, _, h, w = cams.shape
    big_h, big_w = int(image_size[0]), int(image_size[1])
    mask = torch.zeros(n, 1, h, w, dtype=cams.dtype, device=cams.device)
    for i in range(n):
        h0, h1, w0, w1 = (int(v) for v in box[i].tolist())
        r0, r1 = (h0 * h) // big_h, -((-h1 * h) // big_h)
        c0, c1 = (w0 * w) // big_w, -((-w1 * w) // big_w)
        mask[i, :, r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)] = 1
    return (cams * mask).sum(dim=(2, 3)) / mask.sum(dim=(2, 3))


def cls_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MultiLabelSoftMargin (the mean over classes of the sigmoid BCE)."""
    return F.multilabel_soft_margin_loss(logits.float(), labels.float())


# ------------------------------------------------------------------------------------------------ seeds

def norm_cam(cams: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``relu(cams) / (max + 1e-5)`` per image and class, zero for classes the image does not have."""
    cam = F.relu(cams.float())
    peak = cam.flatten(2).max(dim=2)[0][..., None, None]
    return cam / (peak + CAM_EPS) * labels.float()[..., None, None]


def _minmax(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(2)
    lo, hi = flat.min(dim=2)[0][..., None, None], flat.max(dim=2)[0][..., None, None]
    return (x - lo) / (hi - lo + CAM_EPS)


def scg(cam: torch.Tensor, feats: Sequence[torch.Tensor], first_th: float = 0.5, second_th: float = 0.1,
        fg_th: float = 0.3, bg_th: float = 0.05) -> torch.Tensor:
    """Self-correlation expansion of a normalised CAM ``(N, C, h, w)`` (SCG, the released code's unused module).

    Per feature map (bilinearly resized to ``h x w``): cosine self-correlation ``S = relu(cos)`` kept where
    ``>= first_th`` (first order ``S1``); second order ``S2 = S1 @ S1``; both column-normalised (each pixel's
    column sums to 1) and ``S2`` kept where ``>= second_th / hw``; ``HSC = max(S1, S2)`` column-normalised,
    summed over the maps. Then per class: ``SCM = minmax(relu(HSC^T fg - HSC^T bg))`` with ``fg = cam >= fg_th``,
    ``bg = cam <= bg_th`` (absent classes stay zero). Returns ``SCM`` ``(N, C, h, w)``."""
    n, c, h, w = cam.shape
    p = h * w
    hsc = cam.new_zeros(n, p, p)
    for f in feats:
        f = F.interpolate(f.float(), size=(h, w), mode="bilinear", align_corners=False) if f.shape[-2:] != (h, w) \
            else f.float()
        f = F.normalize(f.flatten(2), dim=1)                             # (N, D, P)
        s1 = F.relu(torch.bmm(f.transpose(1, 2), f))
        s1 = s1 * (s1 >= first_th)
        s2 = torch.bmm(s1, s1)
        s1 = s1 / (s1.sum(dim=1, keepdim=True) + CAM_EPS)
        s2 = s2 / (s2.sum(dim=1, keepdim=True) + CAM_EPS)
        s2 = s2 * (s2 >= second_th / p)
        m = torch.maximum(s1, s2)
        hsc = hsc + m / (m.sum(dim=1, keepdim=True) + CAM_EPS)
    flat = cam.flatten(2)                                               # (N, C, P)
    fg, bg = (flat >= fg_th).float(), (flat <= bg_th).float()
    scm = F.relu(torch.bmm(fg, hsc) - torch.bmm(bg, hsc)).view(n, c, h, w)
    present = (flat.max(dim=2)[0] > 0).float()[..., None, None]
    return _minmax(scm) * present


def _neighbours(x: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """``(N, C, 8 * len(dilations), H, W)``: ``x`` at the 8 ring neighbours per dilation, replicate-padded."""
    h, w = x.shape[-2:]
    r = max(dilations)
    xp = F.pad(x, [r, r, r, r], mode="replicate")
    out = [xp[..., r + dy * d:r + dy * d + h, r + dx * d:r + dx * d + w]
           for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    return torch.stack(out, dim=2)


def pamr(image: torch.Tensor, mask: torch.Tensor, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
         iters: int = 10, sigma: float = 0.1) -> torch.Tensor:
    """PAMR (Araslanov & Roth): ``mask`` ``(N, C, h, w)`` bilinearly resized (``align_corners=True``) to
    ``image`` ``(N, 3, H, W)``, then ``iters`` times ``m <- sum_k a_k m_k`` over the 8 ring neighbours per
    dilation, ``a = softmax_k(-mean_RGB |I_k - I| / (sigma * std_3x3(I) + 1e-8))`` (``std_3x3``: the unbiased
    standard deviation of the 3x3 window, centre included, per channel)."""
    image = image.float()
    mask = F.interpolate(mask.float(), size=image.shape[-2:], mode="bilinear", align_corners=True)
    window = torch.cat([image.unsqueeze(2), _neighbours(image, (1,))], dim=2)
    std = window.std(dim=2, keepdim=True)
    kappa = -((_neighbours(image, dilations) - image.unsqueeze(2)).abs() / (sigma * std + 1e-8)).mean(1, keepdim=True)
    aff = torch.softmax(kappa, dim=2)                                  # (N, 1, K, H, W)
    for _ in range(int(iters)):
        mask = (_neighbours(mask, dilations) * aff).sum(dim=2)
    return mask


def seed_label(seed: torch.Tensor, conf: float = 0.55, uncertain: float = 0.10) -> torch.Tensor:
    """CF(c, u): ``(N, C, h, w)`` foreground seed scores -> ``(N, h, w)`` int64: ``argmax + 1`` where the max is
    ``>= conf``, 0 (background) where it is ``<= uncertain``, 255 in between."""
    peak, idx = seed.max(dim=1)
    label = torch.full_like(idx, IGNORE)
    label[peak <= uncertain] = 0
    label[peak >= conf] = idx[peak >= conf] + 1
    return label


# ------------------------------------------------------------------------------------------------ losses

def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the non-255 pixels of ``target`` (``logits`` at the target's size); 0 with none."""
    if not bool((target != IGNORE).any()):
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=IGNORE)


def cam_loss(cams: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE of ``sigmoid(cams)`` ``(N, C, h, w)`` against the one-hot foreground of ``target``
    (nearest-resized to ``h x w``; a background pixel's targets are all 0), averaged over the non-255 pixels and
    the classes; 0 with none."""
    t = F.interpolate(target[:, None].float(), size=cams.shape[-2:], mode="nearest")[:, 0].long()
    valid = t != IGNORE
    if not bool(valid.any()):
        return cams.float().sum() * 0.0
    c = cams.shape[1]
    onehot = F.one_hot(torch.where(valid, t, 0), c + 1)[..., 1:].permute(0, 3, 1, 2).float()
    bce = F.binary_cross_entropy_with_logits(cams.float(), onehot, reduction="none")
    return (bce * valid[:, None]).sum() / (valid.sum() * c)


# ------------------------------------------------------------------------------------------ EdgePredictMix

def edge_map(prob: torch.Tensor) -> torch.Tensor:
    """``(N, K, h, w)`` probabilities -> ``(N, h, w)``: the largest class-wise probability difference to the 4
    neighbours (``max_j max_k |P_k(i) - P_k(j)|``; a missing neighbour at the border counts as equal)."""
    p = F.pad(prob.float(), [1, 1, 1, 1], mode="replicate")
    h, w = prob.shape[-2:]
    centre = p[..., 1:1 + h, 1:1 + w]
    diffs = [(p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] - centre).abs().amax(dim=1)
             for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    return torch.stack(diffs).amax(dim=0)


def epm_mix(images: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, prob: torch.Tensor,
            mode: str = "epm", edge_th: float = 0.5, shift: int = 1
            ) -> Dict[str, torch.Tensor]:
    """EdgePredictMix of a batch with its roll by ``shift`` (image i gets image ``i - shift``'s paste).

    ``target`` ``(N, h, w)`` seed labels and ``prob`` ``(N, C + 1, h, w)`` segmentation probabilities at the label
    size. With B the partner: ``M_B`` = B's confident foreground (label in 1..C); ``alpha = M_B (1 - edge(P_B))``
    (``certainmix``: ``alpha = M_B``); image ``A (1 - alpha) + B alpha`` with ``alpha`` bilinearly resized to the
    image; target = B's where ``alpha > 0.5`` else A's, 255 where ``0 < alpha < 1`` and ``edge > edge_th``; class
    labels = A's plus the classes of B's pasted target. Returns ``image``, ``target``, ``labels``, ``alpha``."""
    if mode not in ("epm", "certainmix"):
        raise ValueError(f"mix mode {mode!r}: epm or certainmix")
    t_b, p_b, img_b = (torch.roll(v, shifts=shift, dims=0) for v in (target, prob, images))
    m_b = ((t_b >= 1) & (t_b != IGNORE)).float()
    edge = edge_map(p_b) if mode == "epm" else torch.zeros_like(m_b)
    alpha = m_b * (1 - edge)
    a_img = F.interpolate(alpha[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
    mixed = images * (1 - a_img) + img_b * a_img
    out_t = torch.where(alpha > 0.5, t_b, target)
    out_t = torch.where((alpha > 0) & (alpha < 1) & (edge > edge_th), torch.full_like(out_t, IGNORE), out_t)
    c = labels.shape[1]
    pasted = torch.where(alpha > 0.5, t_b, torch.zeros_like(t_b))
    present = F.one_hot(pasted.clamp(max=c).flatten(1), c + 1).amax(dim=1)[:, 1:].to(labels.dtype)
    return {"image": mixed, "target": out_t, "labels": torch.maximum(labels, present), "alpha": alpha}


# ---------------------------------------------------------------------------------------------- one step

def make_seed(out: Dict[str, torch.Tensor], image: torch.Tensor, labels: torch.Tensor, cfg: RSEPMConfig,
              recursive: bool) -> torch.Tensor:
    """The seed scores ``(N, C, h4, w4)`` at the segmentation logits' size, without gradient: ``E`` = the
    normalised CAM (expanded by :func:`scg` on ``cfg.scg_levels`` when ``cfg.scg``: ``max(CAM, SCM)``) bilinearly
    upsampled; with ``recursive`` also ``S`` = the segmentation softmax's foreground (``seg_seed_norm max``: each
    channel / its max) times the labels, refined by :func:`pamr` on the image (``pamr_iter > 0``); seed =
    ``max(E, S)``."""
    with torch.no_grad():
        seg = out["seg_logits"].detach().float()
        size = seg.shape[-2:]
        cam = norm_cam(out["cams"].detach(), labels)
        if cfg.scg:
            feats = [out["features"][k].detach() for k in cfg.scg_levels]
            first, second, fg, bg = cfg.scg_th
            cam = torch.maximum(cam, scg(cam, feats, first, second, fg, bg))
        seed = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
        if recursive:
            s = torch.softmax(seg, dim=1)[:, 1:]
            if cfg.seg_seed_norm == "max":
                s = s / (s.flatten(2).max(dim=2)[0][..., None, None] + CAM_EPS)
            s = s * labels.float()[..., None, None]
            if cfg.pamr_iter > 0:
                small = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False)
                s = pamr(small, s, cfg.pamr_dilations, cfg.pamr_iter, cfg.pamr_sigma)
            seed = torch.maximum(seed, s)
        return seed


def _forward(net, x: torch.Tensor, cfg: RSEPMConfig, autocast: Callable):
    with autocast():
        return net(x, with_decoder=True, with_features=cfg.scg)


def rsepm_losses(net, image: torch.Tensor, labels: torch.Tensor, box: Optional[torch.Tensor], iteration: int,
                 cfg: RSEPMConfig, autocast: Callable = contextlib.nullcontext) -> Dict[str, torch.Tensor]:
    """One step: ``cls`` always; from ``rs_start`` ``seg`` (CE on the seed label) and with ``rs`` ``cam`` (the
    CAM learns the seed label); from ``mix_start`` with ``mix != none`` the mixed batch's ``mix_cls``,
    ``mix_cam`` (with ``rs``) and ``mix_seg``. ``loss`` is the weighted sum; every term is reported (0 when off)."""
    labels = labels.float()
    out = _forward(net, image, cfg, autocast)
    zero = image.new_zeros(())
    terms = {k: zero for k in ("cls", "cam", "seg", "mix_cls", "mix_cam", "mix_seg")}
    terms["cls"] = cls_loss(crop_pool(out["cams"].float(), box if cfg.cls_on_crop else None, image.shape[-2:]),
                            labels)
    loss = cfg.w_cls * terms["cls"]
    if iteration >= cfg.rs_start:
        seed = make_seed(out, image, labels, cfg, recursive=cfg.rs and iteration >= cfg.recur_start)
        target = seed_label(seed, cfg.cf_conf, cfg.cf_uncertain)
        terms["seg"] = seg_loss(out["seg_logits"], target)
        loss = loss + cfg.w_seg * terms["seg"]
        if cfg.rs:
            terms["cam"] = cam_loss(out["cams"], target)
            loss = loss + cfg.w_cam * terms["cam"]
        if cfg.mix != "none" and iteration >= cfg.mix_start and image.shape[0] > 1:
            prob = torch.softmax(out["seg_logits"].detach().float(), dim=1)
            mixed = epm_mix(image, labels, target, prob, cfg.mix, cfg.epm_edge)
            mbox = None
            if box is not None and cfg.cls_on_crop:
                other = torch.roll(box, 1, dims=0)
                mbox = torch.stack([torch.minimum(box[:, 0], other[:, 0]), torch.maximum(box[:, 1], other[:, 1]),
                                    torch.minimum(box[:, 2], other[:, 2]), torch.maximum(box[:, 3], other[:, 3])], 1)
            mout = _forward(net, mixed["image"], cfg, autocast)
            terms["mix_cls"] = cls_loss(crop_pool(mout["cams"].float(), mbox, image.shape[-2:]), mixed["labels"])
            terms["mix_seg"] = seg_loss(mout["seg_logits"], mixed["target"])
            loss = loss + cfg.mix_w_cls * terms["mix_cls"] + cfg.mix_w_seg * terms["mix_seg"]
            if cfg.rs:
                terms["mix_cam"] = cam_loss(mout["cams"], mixed["target"])
                loss = loss + cfg.mix_w_cam * terms["mix_cam"]
    return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
