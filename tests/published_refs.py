"""The published loss computations, ported step by step: independent references for wseg's own implementations.

The tests check wseg's losses against these functions and the benchmarks time wseg against them
(``from tests.published_refs import ...``); the library never imports this module. Each function keeps the
published statements, Python loops over classes, boolean-mask assignments and per-pixel ``random.sample`` lists
included, so it stays readable next to its source and slow where the source is slow.

Where each function comes from (usr922/wseg: its main branch = PPC, branch ``esp``@c62f0d2 = EPS+PPC;
halbielee/EPS@0c2cdd0 = EPS):

- :func:`max_norm`: PPC ``tool/visualization.py`` ``max_norm`` (torch, 4-d) = esp ``module/train.py`` ``max_norm``.
- :func:`max_onehot`, :func:`adaptive_min_pooling_loss`: PPC ``contrast_train.py`` = esp ``module/train.py``.
- :func:`get_eps_loss`: EPS / esp ``eps.py`` ``get_eps_loss(..., intermediate=True)``.
- :func:`get_er_loss`: esp ``module/train.py`` ``get_er_loss``.
- :func:`ppc_contrast` (:func:`ppc_contrast_resized`: after its resize): PPC ``contrast_train.py``, the
  "Contrastive Learning" block of the training loop.
- :func:`get_contrast_loss`: esp ``module/train.py`` ``get_contrast_loss``.
- :func:`train_contrast`: esp ``module/train.py`` ``train_contrast``, the loss (lines 403-428).
- :func:`view_prototypes`, :func:`nce`, :func:`cross_view_nce`, :func:`intra_view_nce`, :func:`contrast_views`: the
  parts the two contrast blocks above share, written once (published: written out for each view).

Changes to the published statements, and only these: ``.cuda()`` replaced by the inputs' device; the hard-coded
20/21 classes taken from the inputs; and, where a caller passes them (the tests, to compare exactly):
``random.sample`` replaced by "the ``k`` smallest of given random keys" (``keys``, the rule wseg's vectorised loss
applies to the same keys), and the tie order of the published CUDA ``torch.topk`` (first index) made explicit with
a stable sort (``stable_topk``). The two contrast blocks differ in the background channel (PPC first, esp last),
the prototypes' share of pixels (``h*w//8``, ``h*w//16``), ``gamma`` and the threshold: parameters of
:func:`contrast_views`.
"""
import random

import numpy as np
import torch
import torch.nn.functional as F


def max_norm(p, e=1e-5):
    """``max_norm`` of an (N, C, H, W) map: each channel shifted to its minimum and scaled to its maximum."""
    n, c, h, w = p.size()
    p = F.relu(p)
    max_v = torch.max(p.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
    min_v = torch.min(p.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
    return F.relu(p - min_v - e) / (max_v - min_v + e)


def max_onehot(x):
    """``max_onehot`` (SEAM's: channel 0 kept, channels 1.. one-hot on their maximum), in place; esp reuses it
    unchanged although its background is the last channel."""
    x_max = torch.max(x[:, 1:, :, :], dim=1, keepdim=True)[0]
    x[:, 1:, :, :][x[:, 1:, :, :] != x_max] = 0
    return x


def adaptive_min_pooling_loss(x):
    """``adaptive_min_pooling_loss``: mean of the positive part of the lowest quarter of the per-pixel maxima."""
    n, c, h, w = x.size()
    k = h * w // 4
    x = torch.max(x, dim=1)[0]
    y = torch.topk(x.view(n, -1), k=k, dim=-1, largest=False)[0]
    return torch.sum(F.relu(y)) / (k * n)


def get_eps_loss(cam, saliency, label, tau, lam):
    """``get_eps_loss(..., intermediate=True)`` (background last); returns ``(loss, fg_map, bg_map, sal_pred,
    iou_saliency)``: the published four and the per-class overlaps that pick the foreground set."""
    b, c, h, w = cam.size()
    num_classes = c - 1
    saliency = F.interpolate(saliency, size=(h, w))
    label_map = label.view(b, num_classes, 1, 1).expand(size=(b, num_classes, h, w)).bool()
    label_map_fg = torch.zeros(size=(b, num_classes + 1, h, w), device=cam.device).bool()
    label_map_bg = torch.zeros(size=(b, num_classes + 1, h, w), device=cam.device).bool()
    label_map_bg[:, num_classes] = True
    label_map_fg[:, :-1] = label_map.clone()
    sal_pred = F.softmax(cam, dim=1)
    iou_saliency = (torch.round(sal_pred[:, :-1].detach()) * torch.round(saliency)).view(b, num_classes, -1).sum(-1) / \
        (torch.round(sal_pred[:, :-1].detach()) + 1e-04).view(b, num_classes, -1).sum(-1)
    valid_channel = (iou_saliency > tau).view(b, num_classes, 1, 1).expand(size=(b, num_classes, h, w))
    label_fg_valid = label_map & valid_channel
    label_map_fg[:, :-1] = label_fg_valid
    label_map_bg[:, :-1] = label_map & (~valid_channel)
    fg_map = torch.zeros_like(sal_pred)
    bg_map = torch.zeros_like(sal_pred)
    fg_map[label_map_fg] = sal_pred[label_map_fg]
    bg_map[label_map_bg] = sal_pred[label_map_bg]
    fg_map = torch.sum(fg_map, dim=1, keepdim=True)
    bg_map = torch.sum(bg_map, dim=1, keepdim=True)
    bg_map = torch.sub(1, bg_map)
    sal_pred = fg_map * lam + bg_map * (1 - lam)
    loss = F.mse_loss(sal_pred, saliency)
    return loss, fg_map, bg_map, sal_pred, iou_saliency


def get_er_loss(cam1, cam2, cam_rv1, cam_rv2, label, onehot=max_onehot):
    """esp ``get_er_loss`` (background last): ``(loss_er, loss_ecr)``. ``onehot``: the one-hot of the other view
    (published :func:`max_onehot`; the tests pass the background-last variant that wseg's fix means)."""
    ns, cs, hs, ws = cam2.size()
    cam1 = F.interpolate(max_norm(cam1), size=(hs, ws), mode="bilinear", align_corners=True) * label
    cam2 = max_norm(cam2) * label
    loss_er = torch.mean(torch.abs(cam1[:, :-1, :, :] - cam2[:, :-1, :, :]))
    cam1[:, -1, :, :] = 1 - torch.max(cam1[:, :-1, :, :], dim=1)[0]
    cam2[:, -1, :, :] = 1 - torch.max(cam2[:, :-1, :, :], dim=1)[0]
    cam_rv1 = F.interpolate(max_norm(cam_rv1), size=(hs, ws), mode="bilinear", align_corners=True) * label
    cam_rv2 = max_norm(cam_rv2) * label
    tensor_ecr1 = torch.abs(onehot(cam2.detach()) - cam_rv1)
    tensor_ecr2 = torch.abs(onehot(cam1.detach()) - cam_rv2)
    loss_ecr1 = torch.mean(torch.topk(tensor_ecr1.view(ns, -1), k=int(cs * hs * ws * 0.2), dim=-1)[0])
    loss_ecr2 = torch.mean(torch.topk(tensor_ecr2.view(ns, -1), k=int(cs * hs * ws * 0.2), dim=-1)[0])
    return loss_er, loss_ecr1 + loss_ecr2


# ----------------------------------------------------------------------------------- pixel-to-prototype contrast


def view_prototypes(cam, fea, label, bg_thres, bg_channel, top_div, stable_topk=False):
    """One view of the contrast blocks' ``no_grad`` part: the CAM min-max normalised with the background channel
    (``bg_channel``: PPC 0, esp -1) set to ``bg_thres``, pseudo labels (argmax of the label-masked softmax, flat) and
    the L2-normalised prototypes: per class, the CAM-weighted mean feature of its ``h*w // top_div`` highest pixels
    over the batch (PPC 8, esp 16). ``stable_topk``: take tied values in index order, as CUDA's ``topk`` does."""
    with torch.no_grad():
        fea = fea.detach()
        c_fea = fea.shape[1]
        cam = F.relu(cam.detach())
        n, c, h, w = cam.shape
        mx = torch.max(cam.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
        mn = torch.min(cam.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
        cam[cam < mn + 1e-5] = 0.
        cam = (cam - mn - 1e-5) / (mx - mn + 1e-5)
        cam[:, bg_channel, :, :] = bg_thres
        scores = F.softmax(cam * label, dim=1)
        pseudo = scores.argmax(dim=1, keepdim=True)
        scores = scores.transpose(0, 1)  # noqa: F841  (published, unused)
        fea = fea.permute(0, 2, 3, 1).reshape(-1, c_fea)
        rows = cam.transpose(0, 1).reshape(c, -1)
        if stable_topk:
            top_indices = torch.sort(rows, dim=-1, descending=True, stable=True).indices[:, :h * w // top_div]
            top_values = rows.gather(1, top_indices)
        else:
            top_values, top_indices = torch.topk(rows, k=h * w // top_div, dim=-1)
        protos = torch.zeros(c, c_fea, device=fea.device)
        for i in range(c):
            protos[i] = torch.sum(top_values[i].unsqueeze(-1) * fea[top_indices[i]], dim=0) / torch.sum(top_values[i])
        return F.normalize(protos, dim=-1), pseudo.reshape(-1)


def nce(f, pos, neg):
    """InfoNCE of the pixel embeddings ``f`` with their positive prototypes against all prototypes ``neg``
    (temperature 0.1)."""
    a1 = torch.exp(torch.sum(f * pos, dim=-1) / 0.1)
    a2 = torch.sum(torch.exp(torch.matmul(f, neg.transpose(0, 1)) / 0.1), dim=-1)
    return torch.mean(-1 * torch.log(a1 / a2))


def cross_view_nce(f1, f2, p1, p2, y1, y2, gamma):
    """The cross-prototype and cross-pseudo-label terms ``(loss_cross_nce, loss_cross_nce2)``; the positives are
    indexed once and used by both, as published."""
    positives1, positives2 = p2[y1], p1[y2]
    cross = gamma * (nce(f1, positives1, p2) + nce(f2, positives2, p1)) / 2
    cross2 = gamma * (nce(f1, positives2, p1) + nce(f2, positives1, p2)) / 2
    return cross, cross2


def intra_view_nce(f, protos, pseudo, keys=None):
    """One view's intra-view term: semi-hard prototype mining (ranks 3..12 of the 13 most similar prototypes; with
    fewer than 13 classes, all but the 3 closest, where the published ``topk`` would fail) and hard pixel sampling
    per class (a random half and the ``len // 2`` least similar of the lowest 60 %), averaged over the classes
    present. ``keys=None``: ``random.sample`` as published (with the per-pixel random negatives it builds, gathers
    and never uses); else one random key per pixel and the random half = the class's pixels of smallest keys."""
    m, c = f.shape[0], protos.shape[0]
    pos = protos[pseudo]
    similarity = (torch.sum(f * pos, dim=-1) + 1) / 2.
    a1 = torch.exp(torch.sum(f * pos, dim=-1) / 0.1)
    neg_scores = torch.matmul(f, protos.transpose(0, 1))
    top = min(13, c)
    with torch.no_grad():
        if keys is None:
            random_indices = torch.tensor([random.sample(range(c), 10) for _ in range(m)]).long()
        lower = torch.topk(neg_scores, k=top, largest=True, dim=-1)[1][:, min(3, top):]
    negs = protos.unsqueeze(0).repeat(m, 1, 1)
    if keys is None:
        random_negs = negs[torch.arange(m).unsqueeze(1), random_indices]  # noqa: F841  (published, unused)
    lower_negs = negs[torch.arange(m).unsqueeze(1), lower]
    negs = torch.cat([pos.unsqueeze(1), lower_negs], dim=1)
    a2 = torch.sum(torch.exp(torch.matmul(f.unsqueeze(1), negs.transpose(1, 2)).squeeze(1) / 0.1), dim=-1)
    loss, count = torch.zeros(1, device=f.device), 0
    exists = np.unique(pseudo.cpu().numpy()).tolist()
    for i in range(c):  # hard pixel sampling, for each class
        if i not in exists:
            continue
        count += 1
        a1c, a2c, simc = a1[pseudo == i], a2[pseudo == i], similarity[pseudo == i]
        length = a1c.shape[0]
        if length < 2:
            continue
        with torch.no_grad():
            if keys is None:
                rand = torch.tensor(random.sample(range(length), length // 2)).long()
            else:
                rand = torch.argsort(keys[pseudo == i])[:length // 2]
            low = torch.topk(simc, k=int(length * 0.6), largest=False)[1][int(length * 0.6) - length // 2:]
        a1s = torch.cat([a1c[rand], a1c[low]], dim=0)
        a2s = torch.cat([a2c[rand], a2c[low]], dim=0)
        loss += torch.mean(-1 * torch.log(a1s / a2s))
    return loss / count


def contrast_views(cam1, cam2, f_proj1, f_proj2, label, bg_channel, top_div, gamma, bg_thres, keys=(None, None),
                   stable_topk=False):
    """Both contrast blocks after view 1's resize: the label gets a background column (first with
    ``bg_channel=0``, else last), then prototypes and pseudo labels of each view, the cross-view and intra-view
    terms. Returns ``({loss_nce, loss_cross_nce, loss_cross_nce2, loss_intra_nce}, (pseudo1, pseudo2))``."""
    ones = torch.ones((label.shape[0], 1), device=label.device)
    label = torch.cat((ones, label) if bg_channel == 0 else (label, ones), dim=1).unsqueeze(2).unsqueeze(3)
    p1, y1 = view_prototypes(cam1, f_proj1, label, bg_thres, bg_channel, top_div, stable_topk)
    p2, y2 = view_prototypes(cam2, f_proj2, label, bg_thres, bg_channel, top_div, stable_topk)
    f1 = F.normalize(f_proj1.permute(0, 2, 3, 1).reshape(-1, f_proj1.shape[1]), dim=-1)
    f2 = F.normalize(f_proj2.permute(0, 2, 3, 1).reshape(-1, f_proj2.shape[1]), dim=-1)
    cross, cross2 = cross_view_nce(f1, f2, p1, p2, y1, y2, gamma)
    intra = gamma * (intra_view_nce(f1, p1, y1, keys[0]) + intra_view_nce(f2, p2, y2, keys[1])) / 2
    return {"loss_nce": cross + cross2 + intra, "loss_cross_nce": cross, "loss_cross_nce2": cross2,
            "loss_intra_nce": intra}, (y1, y2)


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def ppc_contrast(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, bg_threshold=0.2, keys=(None, None),
                 stable_topk=False):
    """PPC ``contrast_train.py``'s contrast block: view 1 resized to view 2's feature size (published ``128 // 8``),
    then :func:`contrast_views` with the background first, prototypes of ``h*w // 8`` pixels and weight 0.1."""
    size = f_proj2.shape[-2:]
    f_proj1, cam_rv1_down = _resize(f_proj1, size), _resize(cam_rv1_down, size)
    return ppc_contrast_resized(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, bg_threshold, keys, stable_topk)


def ppc_contrast_resized(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, bg_threshold=0.2, keys=(None, None),
                         stable_topk=False):
    """:func:`ppc_contrast` after the resize (view 1 already at view 2's feature size)."""
    return contrast_views(cam_rv1_down, cam_rv2_down, f_proj1, f_proj2, label, 0, 8, 0.1, bg_threshold, keys,
                          stable_topk)


def get_contrast_loss(cam1, cam2, f_proj1, f_proj2, label, gamma=0.10, bg_thres=0.10, size=(128 // 8, 128 // 8),
                      keys=(None, None), stable_topk=False):
    """esp ``get_contrast_loss`` with the arguments ``train_contrast`` passes (gamma and threshold 0.10): view 1
    resized to ``size`` (published ``128 // 8``, view 2's features at the published view size; the benchmark passes
    view 2's), then :func:`contrast_views` with the background last and prototypes of ``h*w // 16`` pixels."""
    f_proj1, cam1 = _resize(f_proj1, size), _resize(cam1, size)
    return contrast_views(cam1, cam2, f_proj1, f_proj2, label, -1, 16, gamma, bg_thres, keys, stable_topk)


def train_contrast(out1, out2, sal1, sal2, label, tau=0.4, alpha=0.5, keys=(None, None), stable_topk=False,
                   onehot=max_onehot, size=(128 // 8, 128 // 8), pool_pred=False):
    """esp ``train_contrast``'s loss from the two views' outputs (dicts with ``cam``, ``cam_rv``, ``f_proj`` and,
    unless ``pool_pred``, the network's ``pred``; ``pool_pred``: ``pred`` average-pooled from ``cam`` here, as the
    published network computes it). ``keys``/``stable_topk``/``size``: :func:`get_contrast_loss`'s, ``onehot``:
    :func:`get_er_loss`'s. Returns ``({loss, loss_cls, loss_sal, loss_nce, loss_er, loss_ecr}, (pseudo1,
    pseudo2))``."""
    cam1, cam_rv1, feat1 = out1["cam"], out1["cam_rv"], out1["f_proj"]
    cam2, cam_rv2, feat2 = out2["cam"], out2["cam_rv"], out2["f_proj"]
    if pool_pred:
        pred1 = F.avg_pool2d(cam1, kernel_size=cam1.shape[-2:]).flatten(1)
        pred2 = F.avg_pool2d(cam2, kernel_size=cam2.shape[-2:]).flatten(1)
    else:
        pred1, pred2 = out1["pred"], out2["pred"]
    loss_cls = F.multilabel_soft_margin_loss(pred1[:, :-1], label)
    loss_sal = get_eps_loss(cam1, sal1, label, tau, alpha)[0]
    loss_sal_rv = get_eps_loss(cam_rv1, sal1, label, tau, alpha)[0]
    loss_cls2 = F.multilabel_soft_margin_loss(pred2[:, :-1], label)
    loss_sal2 = get_eps_loss(cam2, sal2, label, tau, alpha)[0]
    loss_sal_rv2 = get_eps_loss(cam_rv2, sal2, label, tau, alpha)[0]
    bg_score = torch.ones((label.shape[0], 1), device=label.device)
    label_append_bg = torch.cat((label, bg_score), dim=1).unsqueeze(2).unsqueeze(3)
    loss_cls_rv1 = adaptive_min_pooling_loss((cam_rv1 * label_append_bg)[:, :-1, :, :])
    loss_cls_rv2 = adaptive_min_pooling_loss((cam_rv2 * label_append_bg)[:, :-1, :, :])
    loss_er, loss_ecr = get_er_loss(cam1, cam2, cam_rv1, cam_rv2, label_append_bg, onehot)
    nce_parts, pseudo = get_contrast_loss(cam_rv1, cam_rv2, feat1, feat2, label, gamma=0.10, bg_thres=0.10, size=size,
                                          keys=keys, stable_topk=stable_topk)
    loss_nce = nce_parts["loss_nce"]
    loss_cls = (loss_cls + loss_cls2) / 2. + (loss_cls_rv1 + loss_cls_rv2) / 2.
    loss_sal = (loss_sal + loss_sal2) / 2. + (loss_sal_rv + loss_sal_rv2) / 2.
    loss = loss_cls + loss_sal + loss_nce + loss_er + loss_ecr
    return {"loss": loss, "loss_cls": loss_cls, "loss_sal": loss_sal, "loss_nce": loss_nce, "loss_er": loss_er,
            "loss_ecr": loss_ecr}, pseudo
