"""Pixel-to-Prototype Contrast (PPC; Du et al., CVPR 2022; usr922/wseg ``contrast_train.py``), vectorised.

Per view ``v`` with pixel embeddings ``f_v`` (``fc_proj`` output, L2-normalised per pixel) and PCM-refined CAM
``cam_rv_down`` at feature resolution (view 1 resized to view 2's feature size):

- pseudo labels: the CAM is min-max normalised per map (``relu``; values within 1e-5 of the minimum zeroed;
  ``(x - min - 1e-5) / (max - min + 1e-5)``), the background channel set to ``bg_threshold`` (0.2), then
  ``argmax softmax(cam * label)``;
- prototype estimation: for every class, the ``h*w // 8`` pixels of the whole batch with the highest normalised
  CAM; prototype = CAM-weighted mean of their (detached) embeddings, L2-normalised;
- cross-view contrast, temperature 0.1: cross-prototype ``CE(f1 P2^T / T, y1) + CE(f2 P1^T / T, y2)`` and
  cross-pseudo-label ``CE(f1 P1^T / T, y2) + CE(f2 P2^T / T, y1)``;
- intra-view contrast ``CE(f_v P_v^T / T, y_v)`` with semi-hard prototype mining (negatives = the prototypes
  ranked 4th..13th by similarity, plus the positive in the denominator) and hard pixel sampling (per pseudo
  class with >= 2 pixels: ``L//2`` random pixels + the ``L//2`` pixels ranked ``floor(0.6 L) - L//2 ..
  floor(0.6 L) - 1`` by ascending similarity to their prototype), averaged per class then over the classes present;
- each of the three terms is ``0.1 * (view 1 + view 2) / 2``; ``loss_nce`` is their sum.

Randomness (the random half in hard pixel sampling) comes from one key per pixel (``torch.rand`` with a
``torch.Generator``, or passed in as ``random_keys``): within a class the ``L//2`` smallest keys are taken, which
is a uniform random subset as with the published ``random.sample``. The published per-pixel random negative
lists are computed but never used, so they are not reproduced.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from wseg.losses.seam import seam_losses, with_background

TEMPERATURE = 0.1
LOSS_WEIGHT = 0.1
BG_THRESHOLD = 0.2


def normalize_cam(cam_down: torch.Tensor, bg_threshold: float = BG_THRESHOLD, eps: float = 1e-5) -> torch.Tensor:
    """PPC's min-max CAM normalisation with the background channel replaced by ``bg_threshold`` (no gradient)."""
    cam = F.relu(cam_down.detach().float())
    mx = cam.flatten(2).amax(-1)[..., None, None]
    mn = cam.flatten(2).amin(-1)[..., None, None]
    cam = torch.where(cam < mn + eps, torch.zeros_like(cam), cam)
    norm = (cam - mn - eps) / (mx - mn + eps)
    return torch.cat([torch.full_like(norm[:, :1], bg_threshold), norm[:, 1:]], 1)


def pseudo_labels(norm_cam: torch.Tensor, label_bg: torch.Tensor) -> torch.Tensor:
    """``argmax softmax(norm_cam * label)`` flattened over (N, h, w): ``(N*h*w,)`` int64."""
    scores = F.softmax(norm_cam * label_bg, dim=1)
    return scores.argmax(1).reshape(-1)


def estimate_prototypes(feat: torch.Tensor, norm_cam: torch.Tensor, top_k: Optional[int] = None) -> torch.Tensor:
    """Class prototypes ``(C, D)``: CAM-weighted mean of the top-``k`` CAM pixels of the batch, L2-normalised.

    ``feat``: ``(N, D, h, w)`` embeddings (detached); ``norm_cam``: ``(N, C, h, w)`` from :func:`normalize_cam`;
    ``top_k`` defaults to the published ``h * w // 8``.
    """
    n, c, h, w = norm_cam.shape
    k = max(1, h * w // 8) if top_k is None else int(top_k)
    with torch.no_grad():
        vals, idx = torch.topk(norm_cam.transpose(0, 1).reshape(c, -1), k=k, dim=-1)
        fea = feat.detach().float().permute(0, 2, 3, 1).reshape(n * h * w, -1)
        proto = (vals.unsqueeze(-1) * fea[idx]).sum(1) / vals.sum(1, keepdim=True)
        return F.normalize(proto, dim=-1)


def flatten_pixels(f: torch.Tensor) -> torch.Tensor:
    """``(N, D, h, w)`` -> ``(N*h*w, D)`` L2-normalised pixel embeddings."""
    return F.normalize(f.float().permute(0, 2, 3, 1).reshape(-1, f.shape[1]), dim=-1)


def prototype_nce(f: torch.Tensor, prototypes: torch.Tensor, target: torch.Tensor,
                  temperature: float = TEMPERATURE) -> torch.Tensor:
    """Pixel-to-prototype InfoNCE over all prototypes: ``mean -log(exp(f.p_y/T) / sum_j exp(f.p_j/T))``."""
    return F.cross_entropy(f @ prototypes.t() / temperature, target)


def _class_ranks(y: torch.Tensor, score: torch.Tensor, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rank (0-based) of every pixel among the pixels of its class by ascending ``score``, and class counts."""
    order = torch.argsort(score, stable=True)
    order = order[torch.argsort(y[order], stable=True)]
    counts = torch.bincount(y, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(y)
    rank[order] = torch.arange(y.numel(), device=y.device) - starts[y[order]]
    return rank, counts


def intra_view_nce(f: torch.Tensor, prototypes: torch.Tensor, target: torch.Tensor, keys: torch.Tensor,
                   temperature: float = TEMPERATURE, neg_top: int = 13, neg_skip: int = 3,
                   hard_ratio: float = 0.6) -> torch.Tensor:
    """Intra-view contrast with semi-hard prototype mining and hard pixel sampling (see module docstring).

    ``f``: ``(M, D)`` normalised embeddings; ``prototypes``: ``(C, D)``; ``target``: ``(M,)`` pseudo labels;
    ``keys``: ``(M,)`` random keys choosing the random half per class.
    """
    num_classes = prototypes.shape[0]
    scores = f @ prototypes.t()                                    # (M, C)
    pos = scores.gather(1, target[:, None])                        # (M, 1)
    k_top = min(neg_top, num_classes)
    with torch.no_grad():
        semi_hard = torch.topk(scores, k=k_top, dim=-1)[1][:, min(neg_skip, k_top):]
    logits = torch.cat([pos, scores.gather(1, semi_hard)], 1) / temperature
    per_pixel = torch.logsumexp(logits, 1) - pos[:, 0] / temperature

    with torch.no_grad():
        similarity = (pos[:, 0] + 1) / 2
        rank_rand, counts = _class_ranks(target, keys, num_classes)
        rank_hard, _ = _class_ranks(target, similarity, num_classes)
        half = counts // 2
        k0 = torch.floor(counts.double() * hard_ratio).long()
        h_y, k0_y = half[target], k0[target]
        picks = (rank_rand < h_y).float() + ((rank_hard >= k0_y - h_y) & (rank_hard < k0_y)).float()
        weight = picks * (counts[target] >= 2).float() / (2 * h_y).clamp_min(1).float()
        num_present = (counts > 0).sum().clamp_min(1).float()
    return (weight * per_pixel).sum() / num_present


def ppc_losses(f_proj1: torch.Tensor, cam_rv1_down: torch.Tensor, f_proj2: torch.Tensor,
               cam_rv2_down: torch.Tensor, label: torch.Tensor, bg_threshold: float = BG_THRESHOLD,
               temperature: float = TEMPERATURE, loss_weight: float = LOSS_WEIGHT,
               generator: Optional[torch.Generator] = None,
               random_keys: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """PPC's contrast terms for the two views.

    ``f_proj1``/``cam_rv1_down``: ``(N, D, h1, w1)`` / ``(N, C, h1, w1)`` from view 1 (``ContrastNet`` outputs 3
    and 4); ``f_proj2``/``cam_rv2_down`` from view 2; ``label``: ``(N, C-1)`` foreground multi-hot. View 1 is
    resized (bilinear, align_corners) to view 2's feature size. ``random_keys``: two ``(N*h2*w2,)`` tensors for
    the hard pixel sampling of each view, else drawn from ``generator``.
    Returns ``loss_nce`` (sum of the three) and ``loss_cross_nce``, ``loss_cross_nce2``, ``loss_intra_nce``.
    """
    size = f_proj2.shape[-2:]
    f_proj1 = F.interpolate(f_proj1.float(), size=size, mode="bilinear", align_corners=True)
    cam_rv1_down = F.interpolate(cam_rv1_down.detach().float(), size=size, mode="bilinear", align_corners=True)
    lab = with_background(label).to(f_proj1.device)

    norm1 = normalize_cam(cam_rv1_down, bg_threshold)
    norm2 = normalize_cam(cam_rv2_down, bg_threshold)
    y1, y2 = pseudo_labels(norm1, lab), pseudo_labels(norm2, lab)
    p1, p2 = estimate_prototypes(f_proj1, norm1), estimate_prototypes(f_proj2, norm2)
    f1, f2 = flatten_pixels(f_proj1), flatten_pixels(f_proj2)

    if random_keys is None:
        device = generator.device if generator is not None else f1.device
        random_keys = [torch.rand(f.shape[0], generator=generator, device=device) for f in (f1, f2)]
    k1, k2 = (k.to(f1.device).reshape(-1) for k in random_keys)

    w = loss_weight / 2
    cross = w * (prototype_nce(f1, p2, y1, temperature) + prototype_nce(f2, p1, y2, temperature))
    cross2 = w * (prototype_nce(f1, p1, y2, temperature) + prototype_nce(f2, p2, y1, temperature))
    intra = w * (intra_view_nce(f1, p1, y1, k1, temperature) + intra_view_nce(f2, p2, y2, k2, temperature))
    return {"loss_nce": cross + cross2 + intra, "loss_cross_nce": cross, "loss_cross_nce2": cross2,
            "loss_intra_nce": intra}


def cam_losses(out1: Sequence[torch.Tensor], out2: Sequence[torch.Tensor], label: torch.Tensor,
               network: str = "contrast", bg_threshold: float = BG_THRESHOLD, view_size: Optional[int] = None,
               generator: Optional[torch.Generator] = None,
               random_keys: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """Every loss term the published training script optimises, from the two views' network outputs.

    ``out1``/``out2``: ``SEAMNet`` ``(cam, cam_rv)`` or ``ContrastNet`` ``(cam, cam_rv, f_proj, cam_rv_down)``
    outputs on view 1 and view 2 (view 2 = view 1 resized to ``view_size``; taken from ``out2`` when omitted).
    ``network='seam'``: ``loss = loss_cls + loss_er + loss_ecr`` (``train_SEAM.py``); ``'contrast'``: plus
    ``loss_nce`` (``contrast_train.py``). All values are scalar tensors; only ``loss`` carries the gradient
    (the parts are detached, for logging).
    """
    if view_size is not None and tuple(out2[0].shape[-2:]) != (view_size, view_size):
        raise ValueError(f"view 2 outputs are {tuple(out2[0].shape[-2:])}, expected {view_size}x{view_size}")
    out = seam_losses(out1[0], out1[1], out2[0], out2[1], label)
    if network == "contrast":
        if len(out1) < 4 or len(out2) < 4:
            raise ValueError("network='contrast' needs ContrastNet outputs (cam, cam_rv, f_proj, cam_rv_down)")
        nce = ppc_losses(out1[2], out1[3], out2[2], out2[3], label, bg_threshold=bg_threshold,
                         generator=generator, random_keys=random_keys)
        out.update(nce)
        out["loss"] = out["loss"] + nce["loss_nce"]
    elif network != "seam":
        raise ValueError(f"unknown network {network!r}; expected 'seam' or 'contrast'")
    return {k: v if k == "loss" else v.detach() for k, v in out.items()}
