"""Pixel-to-Prototype Contrast (PPC; Du et al., CVPR 2022; usr922/wseg ``contrast_train.py``), vectorised.

Per view ``v`` with pixel embeddings ``f_v`` (``fc_proj`` output, L2-normalised per pixel) and PCM-refined CAM
``cam_rv_down`` at feature resolution (view 1 resized to view 2's feature size):

- pseudo labels: the CAM is min-max normalised per map (``relu``; values within 1e-5 of the minimum zeroed;
  ``(x - min - 1e-5) / (max - min + 1e-5)``), the background channel set to ``bg_threshold`` (0.2), then
  ``argmax softmax(cam * label)``;
- prototype estimation: for every class, the ``h*w // 8`` pixels of the whole batch with the highest normalised
  CAM (ties to the lower pixel index, as ``torch.topk`` on CUDA, the published device, takes them: this decides
  the background prototype, whose CAM is the constant ``bg_threshold``); prototype = CAM-weighted mean of their
  (detached) embeddings, L2-normalised;
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

Speed (forward and backward are ~250 small tensor ops, so op count, passes over memory and layout decide on a CPU):
both views go through one batched pass, with one ``(2, N, 2C, h*w)`` tensor holding every pixel-prototype logit the
three terms need; the embeddings are never transposed to ``(N*h*w, D)`` (logits are ``P x / (|x| T)`` on their
``(N, D, h*w)`` layout, with the class dim not innermost so softmaxes over it vectorise over pixels); the gradient is
written out (:class:`_PPCTerms`); semi-hard mining is a mask from rounds of ``amax``/``amin`` over values tagged with
their index (:func:`semi_hard_mask`) instead of a per-pixel ``topk``; the class-wise rankings of hard pixel sampling are
one sort of integer keys; the prototypes' top-k is a NumPy introselect on CPU (:func:`top_k_rows`); the pseudo
labels skip the softmax (monotone) before their argmax; and no ``argmax`` over a non-last dim or data-dependent
``where``/``masked_fill`` (slow on CPU) is used.
Equivalence: the same values as the published code up to float rounding, and the same sampled pixels for the
same random keys. Semi-hard mining uses the ranked *values*; where scores of distinct prototypes tie exactly (e.g.
an all-zero embedding) the gradient may go to another of the tied prototypes than ``torch.topk``'s (unspecified)
choice; and a near-tie (within float rounding) at a rank boundary may rank differently from the published code,
as between any two float orders of evaluation.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from wseg.losses.seam import with_background

TEMPERATURE = 0.1
LOSS_WEIGHT = 0.1
BG_THRESHOLD = 0.2


def compare_mask(compare, a: torch.Tensor, b, dtype: torch.dtype) -> torch.Tensor:
    """``compare(a, b)`` (e.g. ``torch.ge``; ``b`` broadcasts to ``a``'s shape) as a 0/1 tensor of ``dtype``. On CPU
    the comparison writes straight into the ``dtype`` output: one pass, no bool tensor and no bool-to-float
    promotion in a later product (together about 3x slower on CPU); elsewhere a bool comparison, then cast."""
    if a.device.type == "cpu":
        return compare(a, b, out=torch.empty(a.shape, dtype=dtype))
    return compare(a, b).to(dtype)


def normalize_cam(cam_down: torch.Tensor, bg_threshold: float = BG_THRESHOLD, eps: float = 1e-5,
                  map_dims: int = 2) -> torch.Tensor:
    """PPC's min-max CAM normalisation with the background channel replaced by ``bg_threshold`` (no gradient).

    ``cam_down``: ``(N, C, *spatial)``, or any layout whose first ``map_dims`` dims index the maps, with the class
    at dim 1 (e.g. class-major ``(V, C, N, h*w)`` with ``map_dims=3``); min and max are taken per map. Values below
    ``min + eps`` are zeroed by multiplying with the 0/1 mask ``cam >= min + eps`` (:func:`compare_mask`): the
    published ``cam[cam < min + eps] = 0``, without a boolean ``masked_fill``, which is slow on CPU.
    """
    cam = F.relu(cam_down.detach().float())
    flat = cam.flatten(map_dims)
    shape = flat.shape[:map_dims] + (1,) * (cam.dim() - map_dims)
    mx, mn = flat.amax(-1).view(shape), flat.amin(-1).view(shape)
    norm = compare_mask(torch.ge, cam, mn + eps, cam.dtype).mul_(cam)               # cam with the low values zeroed
    norm = norm.sub_(mn).sub_(eps).div_(mx - mn + eps)
    norm[:, 0] = bg_threshold
    return norm


def _tagged(x: torch.Tensor, dim: int, tags: torch.Tensor) -> torch.Tensor:
    """``x`` (float32 or lower) as float64 with ``tags`` (int64 below ``2**bits`` for the size of ``dim``,
    broadcast along it) in the low mantissa bits, which a float32 cast leaves zero: distinct values keep their
    order, so one ``amax`` gives the largest value and, in its low bits, its tag (on CPU an ``argmax`` or
    ``max(dim)`` over a non-last dim is several times slower than ``amax``)."""
    if (x.shape[dim] - 1).bit_length() > 29:
        raise ValueError(f"{x.shape[dim]} entries along dim {dim} do not fit the float64 low bits")
    return x.double().view(torch.int64).bitwise_or_(tags).view(torch.float64)


def _tag_mask(n: int) -> int:
    """All-ones low bits wide enough for the tags ``0 .. n - 1`` (:func:`_tagged`)."""
    return (1 << max(1, (n - 1).bit_length())) - 1


def _reversed_tag(tagged: torch.Tensor, low: int) -> torch.Tensor:
    """The index ``j`` stored as the tag ``low - j`` in the low bits of float64 ``tagged`` values."""
    return tagged.view(torch.int64).bitwise_and(low).neg_().add_(low)


def _dim_arange(x: torch.Tensor, dim: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    return torch.arange(x.shape[dim], device=x.device).view(shape)


def first_argmax(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """``x.argmax(dim)`` (the first maximum) where the maxima are ``>= +0.0`` (e.g. a softmax): tagged with
    ``low - j``, the first of equal maxima carries the largest tag."""
    low = _tag_mask(x.shape[dim])
    return _reversed_tag(_tagged(x, dim, low - _dim_arange(x, dim)).amax(dim), low)


def pseudo_labels(norm_cam: torch.Tensor, label_bg: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The published ``argmax softmax(norm_cam * label)`` over the channel dim ``dim``, flattened over the others
    (e.g. ``(N*h*w,)`` for ``(N, C, h, w)``), int64; ``label_bg`` broadcasts (``(N, C, 1, 1)``), its background
    entry 1. The softmax is strictly increasing, so this is the first argmax of ``norm_cam * label`` itself (the
    background's ``bg_threshold >= 0`` keeps the maximum ``>= +0.0``, as :func:`first_argmax` needs), without the
    exponentials; only inputs within float rounding of each other, which the softmax may round to one value, can
    rank differently."""
    return first_argmax(norm_cam * label_bg, dim).reshape(-1)


def top_k_rows(x: torch.Tensor, k: int):
    """The ``k`` largest entries of each row of a 2-D float tensor, ties to the lower index (the first ``k`` of a
    stable descending sort): ``(values, indices)``, ``(R, k)``, in no particular order, no gradient. This is the
    set ``torch.topk`` picks on CUDA (its kernel fills ties at the k-th value in index order), e.g. for PPC's
    constant background row; on CPU ``torch.topk`` picks other tied entries.

    On CPU: NumPy's introselect (``np.partition``, about 3x faster than ``torch.topk`` on PPC's prototype rows)
    over the values as float64 tagged with ``M - 1 - index`` in the low mantissa bits (:func:`_tagged`): distinct,
    and ties ranked by index where the values are >= 0. It partitions their bits as int64, which order as the
    values do where these are >= 0 (and 30% faster than float64 compares); rows whose k-th value is negative
    (negative values order the other way as int64, and so would ties) are redone by the sort. Elsewhere: the stable
    sort.
    """
    m = x.shape[-1]
    x = x.detach()
    if (x.device.type != "cpu" or x.dtype not in (torch.float16, torch.bfloat16, torch.float32)
            or not 0 < k < m or m > 1 << 28):                  # the tags must stay below half a float32 ulp
        idx = torch.sort(x, dim=-1, descending=True, stable=True).indices[:, :k]
        return x.gather(1, idx), idx
    low = _tag_mask(m)
    key = _tagged(x, 1, low - torch.arange(m))
    bits = key.view(torch.int64).numpy()
    bits.partition(m - k, axis=-1)                                             # in place: ``key`` is ours
    top = bits[:, m - k:]                                                      # column 0: the k-th largest
    top = torch.from_numpy(top).view(key.dtype)
    idx = _reversed_tag(top, low)
    vals = top.to(x.dtype)                                                     # the tag is below half an ulp
    redo = np.flatnonzero(top[:, 0].view(torch.int64).numpy() < 0)             # k-th value < 0 (or -0.0)
    if redo.size:
        redo = torch.from_numpy(redo)
        idx[redo] = torch.sort(x[redo], dim=-1, descending=True, stable=True).indices[:, :k]
        vals[redo] = x[redo].gather(1, idx[redo])
    return vals, idx


def _prototypes(feats: Sequence[torch.Tensor], norm_cam: torch.Tensor, k: int) -> torch.Tensor:
    """Prototypes ``(V, C, D)`` of ``V`` views: ``feats`` ``V x (N, D, P)``, ``norm_cam`` ``(V, C, N, P)``.

    One top-k over the published per-view ``(C, N*P)`` rows (:func:`top_k_rows`: ties to the lower index);
    the CAM-weighted sums are ``x W`` with ``W`` ``(N, P, C)`` the scattered top-k values, a batched matmul on the
    ``(N, D, P)`` layout (gathering strided ``D``-vectors or transposing to ``(N*P, D)`` is slower on CPU).
    """
    v, c, n, p = norm_cam.shape
    rows = norm_cam.reshape(v * c, n * p)
    vals, idx = top_k_rows(rows, k)
    vals, idx = vals.view(v, c, k), idx.view(v, c, k)
    weights = rows.new_zeros(v, n * p, c).scatter_(1, idx.transpose(1, 2), vals.transpose(1, 2)).view(v, n, p, c)
    proto = torch.stack([torch.matmul(x.detach().float(), wv).sum(0) for wv, x in zip(weights, feats)])  # (V, D, C)
    return F.normalize(proto.transpose(1, 2) / vals.sum(-1, keepdim=True), dim=-1)


def _order_keys(score: torch.Tensor) -> torch.Tensor:
    """Order-preserving int32 of float32 values (``-0.0`` counted as ``+0.0``), integer ops only."""
    bits = (score.float() + 0.0).view(torch.int32)
    return ((bits >> 31) & 0x7FFFFFFF).bitwise_xor_(bits)


def semi_hard_mask(logits: torch.Tensor, dim: int, neg_top: int = 13, neg_skip: int = 3,
                   dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Semi-hard prototype mining as a mask along ``dim`` (bool, or 0/1 of ``dtype``): true for the entries ranked
    ``neg_skip`` .. ``neg_top - 1`` by value (published: ``topk(scores, 13)[:, 3:]``). ``logits``: float32 (or
    lower), finite.

    Only the *set* of negatives matters (the loss is a log-softmax over them), so instead of ranking 13 entries it
    removes the ``neg_skip`` largest and the ``C - neg_top`` smallest, by rounds of ``amax`` then ``amin`` (11 for
    21 classes, each a fast reduction over a non-last dim; a ``topk`` over 4,096 rows of 21 is slower on CPU), on
    the values tagged with their index (:func:`_tagged`): one reduction gives the extreme entry and its index.
    Exactly tied values are ranked by index, so a tie straddling a boundary may pick another of the tied entries
    than ``torch.topk``'s (unspecified) choice: the same values.
    """
    with torch.no_grad():
        c = logits.shape[dim]
        top = min(neg_top, c)
        skip = min(neg_skip, top)
        low = _tag_mask(c)
        vals = _tagged(logits, dim, _dim_arange(logits, dim))
        # source tensors: a scatter from one is faster than a scalar scatter
        lowest, highest = (vals.new_full((1,), bound).expand(vals.shape) for bound in (-torch.inf, torch.inf))
        removed = []
        for _ in range(skip):                                                      # rounds, not pixels
            removed.append(vals.amax(dim, keepdim=True).view(torch.int64).bitwise_and_(low))
            vals.scatter_(dim, removed[-1], lowest)
        if removed:                                                     # +inf: out of the smallest's way as well
            vals.scatter_(dim, torch.cat(removed, dim), highest)
        for _ in range(c - top):
            vals.scatter_(dim, vals.amin(dim, keepdim=True).view(torch.int64).bitwise_and_(low), highest)
        return compare_mask(torch.lt, vals.float(), torch.inf, dtype)      # float32: a faster comparison


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """``torch.sort(x, dim=-1).values``; on CPU by NumPy's SIMD sort (x86-simd-sort in NumPy >= 2: about 8x
    faster than ``torch.sort`` on rows of 2,048 int64, which also computes the indices). Identical values."""
    if x.device.type != "cpu" or x.requires_grad or x.dtype not in (torch.int32, torch.int64, torch.float32,
                                                                   torch.float64):
        return torch.sort(x, dim=-1).values
    return torch.from_numpy(np.sort(x.contiguous().numpy(), axis=-1))


def hard_pixel_weights(target: torch.Tensor, similarity: torch.Tensor, keys: torch.Tensor, num_classes: int,
                       hard_ratio: float = 0.6) -> torch.Tensor:
    """Per-pixel weights ``(V, M)`` of hard pixel sampling for ``V`` views at once (no gradient).

    Per view and pseudo class with ``L >= 2`` pixels: the ``L//2`` pixels with the smallest ``keys`` plus those
    ranked ``floor(hard_ratio L) - L//2 .. floor(hard_ratio L) - 1`` by ascending ``similarity``, each weighted
    ``1 / (2 (L//2))`` (a pixel picked twice counts twice) and divided by the number of classes present in the
    view. Ranks within a class are positions in one sort of unique ``(class, value, pixel)`` integer keys (ties by
    pixel index, as a stable sort); the weight at each sorted position is a running sum of ``+coef`` where a class's
    window opens and ``-coef`` where it closes. Windows of different classes never share an edge unless one is
    empty (weight 0), so a sequential sum (CPU) gives each weight exactly; a parallel scan (GPU) may round one by
    an ulp.
    """
    with torch.no_grad():
        v, m = target.shape
        dev = target.device
        pix_bits = max(1, (m - 1).bit_length())
        if max(1, (num_classes - 1).bit_length()) + 32 + pix_bits > 63:
            raise ValueError(f"{m} pixels x {num_classes} classes do not fit the int64 sort keys")
        # per view and class: L, the window [lo, lo + L//2) of sorted positions each ranking takes, the weight
        counts = torch.zeros(v, 1, num_classes, dtype=torch.long, device=dev).scatter_add_(
            2, target.unsqueeze(1), torch.ones_like(target).unsqueeze(1))           # (V, 1, C)
        half = counts // 2
        starts = counts.cumsum(2).sub_(counts)
        k0 = counts.double().mul_(hard_ratio).long()                               # int(L * 0.6), as published
        lo = torch.cat([starts, starts + k0 - half], 1)                            # (V, 2, C): keys, similarity rows
        coef = (half > 0) / (2 * half).clamp_min(1) / (counts > 0).sum(2, keepdim=True).clamp_min(1)
        steps = torch.zeros(v, 2, m + 1, device=dev).scatter_add_(
            2, torch.cat([lo, lo + half], 2), torch.cat([coef, -coef], 2).expand(v, 2, -1))
        weight = steps.cumsum_(2)[..., :m]                                         # (V, 2, M) by sorted position

        score = _order_keys(torch.stack([keys, similarity], 1)).long().add_(2 ** 31)   # [0, 2**32)
        code = (target.unsqueeze(1) << (32 + pix_bits)) | (score << pix_bits) | torch.arange(m, device=dev)
        code = sorted_rows(code)                                                   # unique: no stable sort needed
        pixel = code.bitwise_and_((1 << pix_bits) - 1)
        return torch.zeros(v, 2, m, device=dev).scatter_add_(2, pixel, weight).sum(1)


def intra_view_nce(f: torch.Tensor, prototypes: torch.Tensor, target: torch.Tensor, keys: torch.Tensor,
                   temperature: float = TEMPERATURE, neg_top: int = 13, neg_skip: int = 3,
                   hard_ratio: float = 0.6) -> torch.Tensor:
    """Intra-view contrast with semi-hard prototype mining and hard pixel sampling (see module docstring), for one
    view with autograd (the training path computes the same in :class:`_PPCTerms`).

    ``f``: ``(M, D)`` normalised embeddings; ``prototypes``: ``(C, D)``; ``target``: ``(M,)`` pseudo labels;
    ``keys``: ``(M,)`` random keys choosing the random half per class.
    """
    scores = f @ prototypes.t()                                                    # (M, C)
    logits = scores / temperature
    log_prob = F.log_softmax(logits, 1)
    prob = log_prob.exp()
    negatives = prob * semi_hard_mask(logits, 1, neg_top, neg_skip)
    denom = prob.gather(1, target[:, None]) + negatives.sum(1, True)
    per_pixel = denom.log()[:, 0] - log_prob.gather(1, target[:, None])[:, 0]     # -log(e_y / (e_y + sum_neg e))
    similarity = (scores.detach().gather(1, target[:, None])[:, 0] + 1) / 2
    weight = hard_pixel_weights(target[None], similarity[None], keys.reshape(1, -1), prototypes.shape[0],
                                hard_ratio)
    return (weight[0] * per_pixel).sum()


class _PPCTerms(torch.autograd.Function):
    """The three PPC terms of ``V`` views at one feature size, with the gradient written out.

    Inputs: ``prototypes`` ``(V, 2C, D)`` (view ``v``: ``[P_v; P_other]``, no gradient), pseudo labels ``y``
    ``(V, N, P)``, random ``keys`` ``(V, N*P)``, and the views' raw embeddings ``x_v`` ``(N, D, P)``.
    ``L[v] = P_v x_v / (max(|x_v|, 1e-12) T)`` ``(V, N, 2C, P)`` holds every pixel-prototype logit the terms need
    (cosine similarity over the temperature, ``F.normalize`` per pixel), in the ``(N, D, P)`` layout of the
    embeddings: no transposed copy, and the class dim is not innermost, so the softmaxes over it vectorise over
    pixels. The intra term is ``-log(e_y / (e_y + sum_k mask_k e_k))`` with ``e = softmax`` over the view's own
    prototypes and ``mask`` from :func:`semi_hard_mask` (the published ``[positive, negatives]`` log-softmax).
    The backward is ``dL = (softmax - onehot) / T`` per cross-entropy, ``(onehot_y e_y + mask e) / denom -
    onehot_y`` for the intra one, and ``dx = P^T dS/n - x (sum_k dS_k S_k) / n^2`` (``n = |x|``): the same
    gradient as autograd through the forward, in a few fused tensor ops instead of ~30 autograd nodes.
    """

    @staticmethod
    def forward(ctx, prototypes, y, keys, temperature, loss_weight, *xs):
        v, (n, _, p), c = len(xs), xs[0].shape, prototypes.shape[1] // 2
        m = n * p
        logits, raw = xs[0].new_empty(v, n, 2 * c, p), xs[0].new_empty(v, n, 1, p)
        for i, x in enumerate(xs):                # one view at a time: x (1 MB at the published size) stays cached
            torch.bmm(prototypes[i].expand(n, -1, -1), x, out=logits[i])
            torch.linalg.vecdot(x, x, dim=1, out=raw[i, :, 0])                     # squared pixel norms, one pass
        raw.sqrt_()
        logits.div_(raw.clamp_min(1e-12).mul_(temperature))
        log_prob = F.log_softmax(logits.view(v, n, 2, c, p), 3).view(v, n, 2 * c, p)
        ce_idx = torch.stack([y + c, y.flip(0)], 2)                                # cross, cross2 targets
        ce = log_prob.gather(2, ce_idx)
        w = loss_weight / 2
        cross = ce[:, :, 0].sum() * (-w / m)
        cross2 = ce[:, :, 1].sum() * (-w / m)
        y_idx = y.unsqueeze(2)
        log_prob_y = log_prob.gather(2, y_idx)
        prob = log_prob.exp_()                                                     # softmax, in place

        similarity = logits.gather(2, y_idx).mul_(temperature).add_(1).div_(2)     # (cos(f, p_y) + 1) / 2
        weight = hard_pixel_weights(y.view(v, m), similarity.view(v, m), keys, c).view(v, n, 1, p)
        masked = semi_hard_mask(logits[:, :, :c], 2, dtype=prob.dtype).mul_(prob[:, :, :c])   # e_k of negatives
        prob_y = prob.gather(2, y_idx)
        denom = masked.sum(2, keepdim=True).add_(prob_y)
        intra = (weight * (log_prob_y - denom.log())).sum() * -w

        ctx.temperature, ctx.w, ctx.m, ctx.c = temperature, w, m, c
        ctx.save_for_backward(prototypes, logits, prob, ce_idx, y_idx, masked, prob_y, denom, weight, raw, *xs)
        return cross, cross2, intra

    @staticmethod
    @once_differentiable
    def backward(ctx, g_cross, g_cross2, g_intra):
        prototypes, logits, prob, ce_idx, y_idx, masked, prob_y, denom, weight, raw = ctx.saved_tensors[:10]
        xs = ctx.saved_tensors[10:]
        v, n, _, p = logits.shape
        c, t = ctx.c, ctx.temperature
        # g = dL/dS / |x| for S = T * logits (the |x| of dx below folded in). Cross entropies: (softmax - onehot) *
        # w / m / T; block 0 (own prototypes) is cross2, block 1 cross
        norm = raw.clamp_min(1e-12)                                                 # (V, N, 1, P)
        scale = (torch.stack([g_cross2, g_cross]).to(logits.dtype) * (ctx.w / ctx.m / t)).view(1, 1, 2, 1)
        grad = (prob.view(v, n, 2, c, p) * (scale / norm).unsqueeze(3)).view(v, n, 2 * c, p)
        grad.scatter_add_(2, ce_idx, -scale.flip(2) / norm)
        # intra: a * ((onehot_y e_y + mask e) / denom - onehot_y), a = w * weight / T
        a = weight * (g_intra.to(logits.dtype) * ctx.w / t) / norm
        a_denom = a / denom
        grad[:, :, :c].addcmul_(masked, a_denom)
        grad.scatter_add_(2, y_idx, a_denom.mul_(prob_y).sub_(a))
        # through S = P x / |x|: dx = P^T g - x (sum_k g_k S_k) / |x|; the norm's own term is dropped where
        # F.normalize's clamp_min(1e-12) was active
        coef = (grad * logits).sum(2, keepdim=True).mul_((raw >= 1e-12) * t).div_(norm)   # (V, N, 1, P)
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
    lab = with_background(label).to(dev).view(n, c).t().reshape(1, c, n, 1)

    # class-major (V, C, N, hw): the prototypes' per-class rows are views, the pseudo-label argmax runs over dim 1
    cams = torch.stack([cam.detach().reshape(n, c, hw).transpose(0, 1) for cam in (cam_rv1_down, cam_rv2_down)])
    norm = normalize_cam(cams.float(), bg_threshold, map_dims=3)
    y = pseudo_labels(norm, lab).view(2, n, hw)                                    # y[0] = y1, y[1] = y2
    feats = [f.float().reshape(n, d, hw) for f in (f_proj1, f_proj2)]
    with torch.no_grad():
        protos = _prototypes(feats, norm, max(1, hw // 8))                         # (2, C, D)
        both = torch.cat([protos, protos.flip(0)], 1)                              # view v: [P_v; P_other]
    if random_keys is None:
        gdev = generator.device if generator is not None else dev
        keys = torch.rand(2, m, generator=generator, device=gdev).to(dev)     # (on CPU: = two draws of m)
    else:
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
