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

Speed (the loss is ~100 small tensor ops, so op count and memory layout decide on a CPU): both views go through
one batched pass, with one ``(2, N, 2C, h*w)`` tensor holding every pixel-prototype similarity the three terms
need; the embeddings are never transposed to ``(N*h*w, D)`` (similarities are ``P x / |x|`` on their
``(N, D, h*w)`` layout, with the class dim not innermost so softmaxes over it vectorise over pixels); the
gradient is written out (:class:`_PPCTerms`); semi-hard mining ranks by rounds of ``amax`` over integer keys
instead of a per-pixel ``topk``; the class-wise rankings of hard pixel sampling are one sort of integer keys; and
no boolean ``masked_fill``/``where``/``argmax`` over a non-last dim (slow on CPU) is used.
Equivalence: the same values as the published code up to float rounding, and the same sampled pixels for the
same random keys. Semi-hard mining uses the ranked *values*; where scores of distinct prototypes tie exactly (e.g.
an all-zero embedding) the gradient may go to another of the tied prototypes than ``torch.topk``'s (unspecified)
choice.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from wseg.losses.seam import classification_loss, seam_losses, with_background

TEMPERATURE = 0.1
LOSS_WEIGHT = 0.1
BG_THRESHOLD = 0.2


def normalize_cam(cam_down: torch.Tensor, bg_threshold: float = BG_THRESHOLD, eps: float = 1e-5) -> torch.Tensor:
    """PPC's min-max CAM normalisation with the background channel replaced by ``bg_threshold`` (no gradient).

    ``cam_down``: ``(N, C, *spatial)``; min and max are taken per map. Values below ``min + eps`` are zeroed by
    multiplying with ``min(sign(cam - (min + eps)) + 1, 1)`` (``a - b < 0`` exactly when ``a < b``): the published
    ``cam[cam < min + eps] = 0``, without a boolean ``masked_fill``, which is slow on CPU.
    """
    cam = F.relu(cam_down.detach().float())
    flat = cam.flatten(2)
    shape = flat.shape[:2] + (1,) * (cam.dim() - 2)
    mx, mn = flat.amax(-1).view(shape), flat.amin(-1).view(shape)
    norm = torch.sub(cam, mn + eps).sign_().add_(1).clamp_max_(1).mul_(cam)      # cam with the low values zeroed
    norm = norm.sub_(mn).sub_(eps).div_(mx - mn + eps)
    norm[:, 0] = bg_threshold
    return norm


def first_argmax(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``x.argmax(dim)`` (the first maximum) with float ops only, several times faster on CPU for a non-last
    ``dim``: ``x - max`` is exactly 0 at the maxima, and the first of them has the largest ``C - j``."""
    c = x.shape[dim]
    shape = [1] * x.dim()
    shape[dim] = c
    rev = torch.arange(c, 0, -1, dtype=x.dtype, device=x.device).view(shape)
    first = torch.sub(x, x.amax(dim, keepdim=True)).sign_().add_(1).mul_(rev).amax(dim)
    return first.neg_().add_(c).long()


def pseudo_labels(norm_cam: torch.Tensor, label_bg: torch.Tensor) -> torch.Tensor:
    """``argmax softmax(norm_cam * label)`` over channels, flattened over (N, *spatial): ``(N*h*w,)`` int64."""
    return first_argmax(F.softmax(norm_cam * label_bg, dim=1), 1).reshape(-1)


def _prototypes(feats: Sequence[torch.Tensor], norm_cam: torch.Tensor, k: int) -> torch.Tensor:
    """Prototypes ``(V, C, D)`` of ``V`` views: ``feats`` ``V x (N, D, P)``, ``norm_cam`` ``(V, N, C, P)``.

    One top-k over the published per-view ``(C, N*P)`` rows (rows are independent, so ties resolve as published);
    the CAM-weighted sums are ``W x^T`` with ``W`` the scattered top-k values, a batched matmul on the
    ``(N, D, P)`` layout (gathering strided ``D``-vectors or transposing to ``(N*P, D)`` is slower on CPU).
    """
    v, n, c, p = norm_cam.shape
    rows = norm_cam.transpose(1, 2).reshape(v * c, n * p)
    vals, idx = torch.topk(rows, k=k, dim=-1)
    weights = torch.zeros_like(rows).scatter_(1, idx, vals).view(v, c, n, p).transpose(1, 2)   # (V, N, C, P)
    proto = torch.stack([torch.matmul(wv, x.detach().float().transpose(1, 2)).sum(0)
                         for wv, x in zip(weights, feats)])                         # (V, C, D)
    return F.normalize(proto / vals.view(v, c, k).sum(-1, keepdim=True), dim=-1)


def estimate_prototypes(feat: torch.Tensor, norm_cam: torch.Tensor, top_k: Optional[int] = None) -> torch.Tensor:
    """Class prototypes ``(C, D)``: CAM-weighted mean of the top-``k`` CAM pixels of the batch, L2-normalised.

    ``feat``: ``(N, D, h, w)`` embeddings (detached); ``norm_cam``: ``(N, C, h, w)`` from :func:`normalize_cam`;
    ``top_k`` defaults to the published ``h * w // 8``.
    """
    n, c = norm_cam.shape[:2]
    hw = norm_cam[0, 0].numel()
    k = max(1, hw // 8) if top_k is None else int(top_k)
    with torch.no_grad():
        return _prototypes([feat.reshape(n, feat.shape[1], hw)], norm_cam.reshape(1, n, c, hw), k)[0]


def flatten_pixels(f: torch.Tensor) -> torch.Tensor:
    """``(N, D, h, w)`` -> ``(N*h*w, D)`` L2-normalised pixel embeddings."""
    return F.normalize(f.float().permute(0, 2, 3, 1).reshape(-1, f.shape[1]), dim=-1)


def prototype_nce(f: torch.Tensor, prototypes: torch.Tensor, target: torch.Tensor,
                  temperature: float = TEMPERATURE) -> torch.Tensor:
    """Pixel-to-prototype InfoNCE over all prototypes: ``mean -log(exp(f.p_y/T) / sum_j exp(f.p_j/T))``."""
    return F.cross_entropy(f @ prototypes.t() / temperature, target)


def _order_keys(score: torch.Tensor) -> torch.Tensor:
    """Order-preserving int32 of float32 values (``-0.0`` counted as ``+0.0``), integer ops only."""
    bits = (score.float() + 0.0).view(torch.int32)
    return ((bits >> 31) & 0x7FFFFFFF).bitwise_xor_(bits)


def ranked_indices(x: torch.Tensor, k: int, dim: int = -1) -> torch.Tensor:
    """``torch.topk(x, k, dim).indices`` up to the order among exactly tied values (the ranked *values*, all that
    semi-hard mining uses, are the same), as ``k`` rounds of ``amax`` over unique ``(value, index)`` integer keys.
    On CPU this is about twice as fast as ``topk`` on many short rows (PPC: 4,096 rows of 21 classes), where
    topk's per-row overhead dominates."""
    c = x.shape[dim]
    bits = max(1, (c - 1).bit_length())
    shape = [1] * x.dim()
    shape[dim] = c
    keys = _order_keys(x.detach()).long().add_(2 ** 31).bitwise_left_shift_(bits).bitwise_or_(
        torch.arange(c, device=x.device).view(shape))                              # >= 0, unique along dim
    out = []
    for r in range(k):                                                             # k rounds (k <= 13), not pixels
        idx = keys.amax(dim, keepdim=True).bitwise_and_((1 << bits) - 1)
        out.append(idx)
        if r + 1 < k:
            keys.scatter_(dim, idx, -1)
    return torch.cat(out, dim)


def _semi_hard(own_logits: torch.Tensor, target: torch.Tensor, dim: int, neg_top: int = 13,
               neg_skip: int = 3) -> torch.Tensor:
    """Gather indices ``[y, negatives ranked neg_skip..neg_top-1]`` along ``dim`` (semi-hard prototype mining)."""
    k_top = min(neg_top, own_logits.shape[dim])
    skip = min(neg_skip, k_top)
    with torch.no_grad():
        ranked = ranked_indices(own_logits, k_top, dim).narrow(dim, skip, k_top - skip)
    return torch.cat([target.unsqueeze(dim), ranked], dim)


def hard_pixel_weights(target: torch.Tensor, similarity: torch.Tensor, keys: torch.Tensor, num_classes: int,
                       hard_ratio: float = 0.6) -> torch.Tensor:
    """Per-pixel weights ``(V, M)`` of hard pixel sampling for ``V`` views at once (no gradient).

    Per view and pseudo class with ``L >= 2`` pixels: the ``L//2`` pixels with the smallest ``keys`` plus those
    ranked ``floor(hard_ratio L) - L//2 .. floor(hard_ratio L) - 1`` by ascending ``similarity``, each weighted
    ``1 / (2 (L//2))`` (a pixel picked twice counts twice) and divided by the number of classes present in the
    view. Ranks within a class are positions in one sort of unique ``(class, value, pixel)`` integer keys (ties by
    pixel index, as a stable sort).
    """
    with torch.no_grad():
        v, m = target.shape
        dev = target.device
        pix_bits = max(1, (m - 1).bit_length())
        if max(1, (num_classes - 1).bit_length()) + 32 + pix_bits > 63:
            raise ValueError(f"{m} pixels x {num_classes} classes do not fit the int64 sort keys")
        counts = torch.bincount((target + torch.arange(v, device=dev).unsqueeze(1) * num_classes).view(-1),
                                minlength=v * num_classes).view(v, 1, num_classes)
        half = counts // 2
        k0 = torch.floor(counts.double() * hard_ratio).long()
        starts = torch.cumsum(counts, 2) - counts
        lo = starts + torch.cat([torch.zeros_like(half), k0 - half], 1)            # (V, 2, C): rows keys, similarity
        hi = starts + torch.cat([half, k0], 1)
        coef = (counts >= 2).float() / (2 * half).clamp_min(1).float()
        coef = coef / (counts > 0).sum(2, keepdim=True).clamp_min(1).float()

        score = _order_keys(torch.stack([keys, similarity], 1)).long().add_(2 ** 31)   # [0, 2**32)
        code = (target.unsqueeze(1) << (32 + pix_bits)) | (score << pix_bits) | torch.arange(m, device=dev)
        code = torch.sort(code, dim=-1).values                                     # unique: no stable sort needed
        order = code & ((1 << pix_bits) - 1)
        ys = code >> (32 + pix_bits)                                               # class at each sorted position
        pos = torch.arange(m, device=dev)
        sel = ((pos >= lo.gather(2, ys)) & (pos < hi.gather(2, ys))).float() * coef.expand(v, 2, -1).gather(2, ys)
        return torch.zeros(v, m, device=dev).scatter_add_(1, order.view(v, 2 * m), sel.view(v, 2 * m))


def intra_view_nce(f: torch.Tensor, prototypes: torch.Tensor, target: torch.Tensor, keys: torch.Tensor,
                   temperature: float = TEMPERATURE, neg_top: int = 13, neg_skip: int = 3,
                   hard_ratio: float = 0.6) -> torch.Tensor:
    """Intra-view contrast with semi-hard prototype mining and hard pixel sampling (see module docstring).

    ``f``: ``(M, D)`` normalised embeddings; ``prototypes``: ``(C, D)``; ``target``: ``(M,)`` pseudo labels;
    ``keys``: ``(M,)`` random keys choosing the random half per class.
    """
    scores = f @ prototypes.t()                                                    # (M, C)
    logits = scores / temperature
    per_pixel = -F.log_softmax(logits.gather(1, _semi_hard(logits, target, 1, neg_top, neg_skip)), 1)[:, 0]
    similarity = (scores.detach().gather(1, target[:, None])[:, 0] + 1) / 2
    weight = hard_pixel_weights(target[None], similarity[None], keys.reshape(1, -1), prototypes.shape[0],
                                hard_ratio)
    return (weight[0] * per_pixel).sum()


class _PPCTerms(torch.autograd.Function):
    """The three PPC terms of ``V`` views at one feature size, with the gradient written out.

    Inputs: ``prototypes`` ``(V, 2C, D)`` (view ``v``: ``[P_v; P_other]``, no gradient), pseudo labels ``y``
    ``(V, N, P)``, random ``keys`` ``(V, N*P)``, and the views' raw embeddings ``x_v`` ``(N, D, P)``.
    ``S[v] = P_v x_v / max(|x_v|, 1e-12)`` ``(V, N, 2C, P)`` holds every pixel-prototype cosine similarity the terms
    need (``F.normalize`` per pixel), in the ``(N, D, P)`` layout of the embeddings: no transposed copy, and the
    class dim is not innermost, so the softmaxes over it vectorise over pixels. The backward is
    ``dS = (softmax - onehot) / T`` per cross-entropy (the intra one scattered through its gather) and
    ``dx = P^T dS/n - x (sum_k dS_k S_k) / n^2``: the same gradient as autograd through the forward, in a few
    fused tensor ops instead of ~30 autograd nodes.
    """

    @staticmethod
    def forward(ctx, prototypes, y, keys, temperature, loss_weight, *xs):
        v, (n, _, p), c = len(xs), xs[0].shape, prototypes.shape[1] // 2
        m = n * p
        scores = xs[0].new_empty(v, n, 2 * c, p)
        for i, x in enumerate(xs):
            torch.bmm(prototypes[i].expand(n, -1, -1), x, out=scores[i])
        raw = torch.stack([(x * x).sum(1, keepdim=True) for x in xs]).sqrt_()      # (V, N, 1, P) pixel norms
        scores.div_(raw.clamp_min(1e-12))
        logits = scores / temperature
        log_prob = F.log_softmax(logits.view(v, n, 2, c, p), 3).view(v, n, 2 * c, p)
        ce_idx = torch.stack([y + c, y.flip(0)], 2)                                # cross, cross2 targets
        ce = log_prob.gather(2, ce_idx)
        w = loss_weight / 2
        cross = ce[:, :, 0].sum() * (-w / m)
        cross2 = ce[:, :, 1].sum() * (-w / m)

        similarity = (scores.gather(2, y.unsqueeze(2)) + 1) / 2
        weight = hard_pixel_weights(y.view(v, m), similarity.view(v, m), keys, c).view(v, n, 1, p)
        own = logits[:, :, :c]
        intra_idx = _semi_hard(own, y, 2)
        intra_log_prob = F.log_softmax(own.gather(2, intra_idx), 2)
        intra = (weight * intra_log_prob[:, :, :1]).sum() * -w

        ctx.temperature, ctx.w, ctx.m, ctx.c = temperature, w, m, c
        ctx.save_for_backward(prototypes, scores, log_prob, ce_idx, intra_log_prob, intra_idx, weight, raw, *xs)
        return cross, cross2, intra

    @staticmethod
    @once_differentiable
    def backward(ctx, g_cross, g_cross2, g_intra):
        prototypes, scores, log_prob, ce_idx, intra_log_prob, intra_idx, weight, raw = ctx.saved_tensors[:8]
        xs = ctx.saved_tensors[8:]
        v, n, _, p = scores.shape
        c, t = ctx.c, ctx.temperature
        # cross entropies: (softmax - onehot) * w / m / T; block 0 (own prototypes) is cross2, block 1 cross
        scale = torch.stack([g_cross2, g_cross]).to(scores.dtype) * (ctx.w / ctx.m / t)
        grad = log_prob.exp().view(v, n, 2, c, p).mul_(scale.view(1, 1, 2, 1, 1)).view(v, n, 2 * c, p)
        grad.scatter_add_(2, ce_idx, (-scale.flip(0)).view(1, 1, 2, 1).expand(v, n, 2, p))
        # intra: w * weight * (softmax - e_0) / T over the gathered [y, semi-hard] logits, scattered back
        a = weight * (g_intra.to(scores.dtype) * ctx.w / t)                         # (V, N, 1, P)
        q = intra_log_prob.exp().mul_(a)
        q[:, :, :1] -= a
        grad[:, :, :c].scatter_add_(2, intra_idx, q)
        # through S = P x / |x|: dx = P^T g - x (sum_k g_k S_k) / |x| with g = dS / |x|; the norm's own term is
        # dropped where F.normalize's clamp_min(1e-12) was active
        norm = raw.clamp_min(1e-12)
        grad.div_(norm)
        coef = (grad * scores).sum(2, keepdim=True).div_(norm).mul_(raw >= 1e-12)   # (V, N, 1, P)
        grads = [torch.bmm(prototypes[i].t().expand(n, -1, -1), grad[i]).addcmul_(xs[i], coef[i], value=-1)
                 for i in range(v)]
        return (None, None, None, None, None, *grads)


def ppc_contrast(f_proj1: torch.Tensor, cam_rv1_down: torch.Tensor, f_proj2: torch.Tensor,
                 cam_rv2_down: torch.Tensor, label: torch.Tensor, bg_threshold: float = BG_THRESHOLD,
                 temperature: float = TEMPERATURE, loss_weight: float = LOSS_WEIGHT,
                 generator: Optional[torch.Generator] = None,
                 random_keys: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
    """PPC's contrast terms from two views already at the same feature size (:func:`ppc_losses` without the resize):
    prototype estimation and the pixel-to-prototype contrast with its sampling and mining, both views batched.

    ``f_proj*``: ``(N, D, h, w)``; ``cam_rv*_down``: ``(N, C, h, w)``; ``label``: ``(N, C-1)``.
    """
    if f_proj1.shape != f_proj2.shape or cam_rv1_down.shape != cam_rv2_down.shape:
        raise ValueError(f"views differ in size: f_proj {tuple(f_proj1.shape)} vs {tuple(f_proj2.shape)}, "
                         f"cam {tuple(cam_rv1_down.shape)} vs {tuple(cam_rv2_down.shape)}; resize view 1 first")
    n, c = cam_rv2_down.shape[:2]
    d, hw = f_proj2.shape[1], f_proj2[0, 0].numel()
    m = n * hw
    dev = f_proj2.device
    lab = with_background(label).to(dev).view(n, c, 1)

    cams = torch.cat([cam_rv1_down.detach(), cam_rv2_down.detach()]).float().view(2 * n, c, hw)
    norm = normalize_cam(cams, bg_threshold)                                       # (2N, C, hw)
    y = pseudo_labels(norm, lab.repeat(2, 1, 1)).view(2, n, hw)                    # y[0] = y1, y[1] = y2
    feats = [f.float().reshape(n, d, hw) for f in (f_proj1, f_proj2)]
    with torch.no_grad():
        protos = _prototypes(feats, norm.view(2, n, c, hw), max(1, hw // 8))       # (2, C, D)
        both = torch.cat([protos, protos.flip(0)], 1)                              # view v: [P_v; P_other]
    if random_keys is None:
        gdev = generator.device if generator is not None else dev
        random_keys = [torch.rand(m, generator=generator, device=gdev) for _ in range(2)]
    keys = torch.stack([k.to(dev).reshape(-1) for k in random_keys])

    cross, cross2, intra = _PPCTerms.apply(both, y, keys, temperature, loss_weight, *feats)
    return {"loss_nce": cross + cross2 + intra, "loss_cross_nce": cross, "loss_cross_nce2": cross2,
            "loss_intra_nce": intra}


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
    return ppc_contrast(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, bg_threshold, temperature,
                        loss_weight, generator, random_keys)


def cam_losses(out1: Sequence[torch.Tensor], out2: Sequence[torch.Tensor], label: torch.Tensor,
               network: str = "contrast", bg_threshold: float = BG_THRESHOLD, view_size: Optional[int] = None,
               generator: Optional[torch.Generator] = None,
               random_keys: Optional[Sequence[torch.Tensor]] = None,
               cls_only: bool = False) -> Dict[str, torch.Tensor]:
    """Every loss term the published training script optimises, from the two views' network outputs.

    ``out1``/``out2``: ``SEAMNet`` ``(cam, cam_rv)`` or ``ContrastNet`` ``(cam, cam_rv, f_proj, cam_rv_down)``
    outputs on view 1 and view 2 (view 2 = view 1 resized to ``view_size``; taken from ``out2`` when omitted).
    ``network='seam'``: ``loss = loss_cls + loss_er + loss_ecr`` (``train_SEAM.py``); ``'contrast'``: plus
    ``loss_nce`` (``contrast_train.py``). All values are scalar tensors; only ``loss`` carries the gradient
    (the parts are detached, for logging). ``cls_only``: ``loss`` is the classification term alone (multilabel
    soft margin of both views, ``loss_mlsm``), for a classification warm-up when training from scratch; the other
    terms are not computed.
    """
    if cls_only:
        lab = with_background(label).to(out1[0].device)
        mlsm = (classification_loss(out1[0].float(), lab) + classification_loss(out2[0].float(), lab)) / 2
        return {"loss": mlsm, "loss_mlsm": mlsm.detach()}
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
