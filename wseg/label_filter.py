"""Image-label classifier for the segmentation test's class filter (a wseg addition to the multi-stage recipe).

Why: the pseudo masks never have to recognise which classes an image holds (they are made and scored, as
published, with each image's true labels); the segmentation network does. Where classes share a body and differ
in a small part, the demo's reduced DeepLab finds the objects but names them wrong (README: "the classes, not the
pixels"). RS+EPM's released inference restricts its segmentation to the classes its classifier predicts
(``pred_class >= conf_th``); this module gives any segmentation network such a classifier, trained on the image-level
labels alone (the weak labels; nothing else):

- a frozen backbone (ImageNet or stand-in weights, the same ``--weights`` files as the CAM stage), its feature
  maps of ``levels`` (default: the last) stacked on the last one's grid (a hypercolumn, Hariharan et al., CVPR 2015),
  at each of ``scales`` (image sizes relative to the image), standardised per channel with the training images'
  statistics; with ``context`` k, each position also gets every channel's maximum over the k x k cells around it
  (a wseg addition: a linear layer cannot ask for "a body AND a head beside it" from one cell's features; it can
  from the cell's own and its neighbourhood's);
- a 1x1 class layer at every position, pooled by log-sum-exp (LSE, Pinheiro & Collobert, CVPR 2015: average
  pooling as ``r -> 0``, max pooling as ``r -> inf``), so a class whose cue is a small part is not averaged away
  as under global average pooling; the maximum over the scales;
- the multi-label soft-margin loss, AdamW with the poly schedule, on the one training loop (resumable, the
  label-prior check of every trainer); with k cross-validation folds, k more class layers train beside it in the
  same pass, each without its fold (held-out scores of the training images);
- per image: the classes scoring at least ``threshold`` (:func:`decide`); an image with none keeps its best class
  (every image of these datasets holds an object).

``scripts/label_train.py`` writes them in the ``cls_labels.npy`` format (``{id: multi-hot over the foreground
classes}``), which ``segmentation/test.py --set label_filter=<file>`` reads: :func:`restrict_to_classes` zeroes the
probabilities of the other classes before the arg-max and the CRF (:class:`ClassGate`; with
``label_filter_powers``, the soft filter instead weighs every class by the classifier's score to a power). Its check
(``label_filter_check``, :mod:`wseg.segmentation.calibration`) takes the filter, hard or soft, only where the test
filtered by the classifier's held-out labels or scores of the training images scores better on them than the
unfiltered one.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError

#: the sigmoid scores are written beside the predicted labels ``<stem>.npy``, as ``<stem>_scores.npy``
SCORES_SUFFIX = "_scores.npy"


def check_context(context: int) -> int:
    """``context``, the window of :class:`LabelClassifier`'s neighbourhood maximum, if it is one (odd, or 0: none)."""
    if context < 0 or (context and context % 2 == 0):
        raise WsegError(f"--context {context}: an odd window size (e.g. 5: the 5x5 cells around each position), or "
                        "0 for none")
    return int(context)


class LabelClassifier(nn.Module):
    """Frozen ``backbone`` -> its ``levels`` (default: the last) stacked (with their maximum over a ``context`` x
    ``context`` window, when given) and standardised, at ``scales`` -> 1x1 ``classifier`` -> LSE pooling
    (``lse_r``) -> the maximum over scales: ``forward(features) -> (N, heads, K)`` logits (module docstring).

    ``folds`` k > 0: k-fold cross-validation in one training pass. The class layer holds ``k + 1`` heads over the
    same features: head ``j < k`` learns from the images outside fold ``j`` and scores fold ``j`` (held-out
    scores); the last head learns from every image. All heads read each feature map in one matrix product, so the
    folds cost little more than one classifier (:meth:`loss` masks each image out of its own fold's head). New
    images are scored by the last head, a single classifier like the held-out ones the test's choice reads (the
    committee of all heads, tried, scored val lower on ``many_classes``: its averaged scores are milder than the
    single heads' that the power was chosen on)."""

    def __init__(self, backbone: nn.Module, num_classes: int, scales: Sequence[float] = (2.0,), lse_r: float = 4.0,
                 levels: Optional[Sequence[str]] = None, folds: int = 0, context: int = 0):
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.levels = tuple(levels) if levels else (backbone.levels[-1],)
        unknown = [lv for lv in self.levels if lv not in backbone.levels]
        if unknown:
            raise WsegError(f"--levels {' '.join(self.levels)}: {type(backbone).__name__} has no level "
                            f"{unknown[0]}; choose from {' '.join(backbone.levels)}")
        channels = sum(int(backbone.feature_channels[lv]) for lv in self.levels)
        self.scales, self.lse_r, self.num_classes = tuple(float(s) for s in scales), float(lse_r), int(num_classes)
        self.folds, self.context = int(folds), check_context(context)
        channels *= 2 if self.context else 1
        self.register_buffer("feat_mean", torch.zeros(channels))
        self.register_buffer("feat_std", torch.ones(channels))
        self.classifier = nn.Conv2d(channels, (self.folds + 1) * self.num_classes, 1)

    def train(self, mode: bool = True) -> "LabelClassifier":
        super().train(mode)
        self.backbone.eval()              # frozen: BatchNorm statistics and dropout of the backbone stay fixed
        return self

    @torch.no_grad()
    def features(self, image: torch.Tensor) -> List[torch.Tensor]:
        """The ``(C, h, w)`` features of a normalised ``(3, H, W)`` image at each scale: the backbone's ``levels``
        stacked along the channels, each resized to the last one's grid (a hypercolumn: the earlier levels keep
        colour and texture that the last one has abstracted away); with ``context``, followed by their maximum over
        the window around each cell (computed once here, so the cached maps hold it)."""
        out = []
        for s in self.scales:
            x = image[None]
            if s != 1:
                size = (max(1, round(image.shape[1] * s)), max(1, round(image.shape[2] * s)))
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            feats = self.backbone(x)
            grid = feats[self.levels[-1]].shape[-2:]
            maps = [f if f.shape[-2:] == grid else F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
                    for f in (feats[lv] for lv in self.levels)]
            f = torch.cat(maps, 1)
            if self.context:
                f = torch.cat([f, F.max_pool2d(f, self.context, 1, self.context // 2)], 1)
            out.append(f[0])
        return out

    def set_statistics(self, feats: Sequence[Sequence[torch.Tensor]]) -> None:
        """Per-channel mean and std over every position of every training feature map (Welford-free: two sums)."""
        total = torch.zeros_like(self.feat_mean, dtype=torch.float64)
        sq = torch.zeros_like(total)
        n = 0
        for per_scale in feats:
            for f in per_scale:
                f = f.double().flatten(1)
                total += f.sum(1).to(total.device)
                sq += (f * f).sum(1).to(total.device)
                n += f.shape[1]
        mean = total / max(n, 1)
        self.feat_mean.copy_(mean.float())
        self.feat_std.copy_((sq / max(n, 1) - mean * mean).clamp(min=0).sqrt().float() + 1e-6)

    def forward(self, feats: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        """``(N, heads, K)`` logits of ``N`` images, each a per-scale list of ``(C, h, w)`` maps (sizes differ
        between images): per image and scale one matrix product of every head's rows, LSE pooling over the
        positions, the maximum over the scales. The standardisation is folded into the rows (``W / std``,
        ``b - W mean / std``), so each cached map is read once in the forward and once in the backward pass,
        whatever the number of heads."""
        w = self.classifier.weight.flatten(1) / self.feat_std
        b = (self.classifier.bias - w @ self.feat_mean)[:, None]
        out = []
        for per_scale in feats:
            pooled = []
            for f in per_scale:
                z = torch.addmm(b, w, f.flatten(1).float())                                # (rows, positions)
                pooled.append((torch.logsumexp(self.lse_r * z, 1) - math.log(z.shape[1])) / self.lse_r)
            out.append(torch.stack(pooled).amax(0))
        return torch.stack(out).view(len(feats), self.folds + 1, self.num_classes)

    def scores(self, feats: Sequence[Sequence[torch.Tensor]], head: int = -1) -> torch.Tensor:
        """``(N, K)`` sigmoid scores of one ``head`` (default: the last, the classifier of every image)."""
        return torch.sigmoid(self(feats)[:, head].float())

    def loss(self, logits: torch.Tensor, target: torch.Tensor, fold: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Multi-label soft-margin loss of each head over the batch images it learns from (``fold``: each image's
        fold, -1 for none), averaged over the heads (``loss``); ``loss_full``: the last head's (every image)."""
        per = F.binary_cross_entropy_with_logits(logits.float(), target[:, None].expand_as(logits),
                                                 reduction="none").mean(2)                      # (B, heads)
        heads = torch.arange(self.folds + 1, device=logits.device)
        learns = (fold[:, None] != heads[None]).float()
        per_head = (per * learns).sum(0) / learns.sum(0).clamp_min(1)
        return {"loss": per_head.mean(), "loss_full": per_head[-1]}


class FeatureBank:
    """The frozen backbone's features of a list of images, computed once and kept on the CPU when they fit in
    ``cache_gb`` (fp32, or fp16 when only that fits: each step then converts what it reads), else recomputed each
    time an image is drawn (large datasets on a GPU)."""

    def __init__(self, model: LabelClassifier, voc, ids: Sequence[str], mean, std, device: torch.device,
                 cache_gb: float = 4.0):
        self.model, self.voc, self.ids, self.mean, self.std, self.device = model, voc, list(ids), mean, std, device
        self.cache_gb = float(cache_gb)
        self.cache: Dict[int, List[torch.Tensor]] = {}
        self.caching = self.cache_gb > 0
        self.dtype: Optional[torch.dtype] = None

    def image(self, i: int) -> torch.Tensor:
        from wseg.data.transforms import hwc_to_chw, normalize
        from wseg.io import load_image

        img = load_image(self.voc.image_path(self.ids[i]))
        return torch.from_numpy(hwc_to_chw(normalize(img, self.mean, self.std))).to(self.device)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> List[torch.Tensor]:
        if i in self.cache:
            return [f.to(self.device) for f in self.cache[i]]
        feats = self.model.features(self.image(i))
        if self.caching:
            if len(self.cache) == 0:      # the first image says whether the whole list fits, and in which type
                numbers = sum(f.numel() for f in feats) * len(self.ids)
                self.dtype = next((t for t, size in ((torch.float32, 4), (torch.float16, 2))
                                   if numbers * size <= self.cache_gb * 2 ** 30), None)
                self.caching = self.dtype is not None
            if self.caching:
                self.cache[i] = [f.to("cpu", self.dtype) for f in feats]
                return self[i]
        return feats


def label_arrays(labels: Mapping[str, np.ndarray], ids: Sequence[str], num_classes: int, path: str) -> np.ndarray:
    """``(N, K)`` float32 multi-hot rows of ``ids`` from a ``cls_labels.npy`` dict; one-line errors naming ``path``."""
    missing = [i for i in ids if i not in labels]
    if missing:
        raise WsegError(f"{path}: no image-level labels for {len(missing)} of {len(ids)} images (e.g. {missing[0]}); "
                        "write them for this list with scripts/label_train.py (predicted labels) or "
                        "voc12/make_cls_labels.py (the dataset's own), or pass the list the file was written for")
    rows = np.stack([np.asarray(labels[i], np.float32).reshape(-1) for i in ids])
    if rows.shape[1] != num_classes:
        raise WsegError(f"{path}: {rows.shape[1]} classes per image, the dataset has {num_classes} foreground "
                        "classes; pass the labels of this dataset")
    return rows


def read_label_file(path: str) -> Dict[str, np.ndarray]:
    """A ``cls_labels.npy``-format dict, with one-line errors for a missing or foreign file."""
    if not os.path.isfile(path):
        raise WsegError(f"{path}: no such label file; write it with scripts/label_train.py --out_labels {path} "
                        "(or pass a cls_labels.npy-format file)")
    from wseg.io import load_dict

    return load_dict(path, "a cls_labels.npy-format dict {image id: multi-hot labels}",
                     "write it with scripts/label_train.py")


@torch.no_grad()
def predict_labels(model: LabelClassifier, bank, progress: bool = True, head: int = -1) -> Dict[str, np.ndarray]:
    """``{id: sigmoid scores}`` of every image of ``bank`` (a :class:`FeatureBank`, or anything with ``ids``,
    ``len`` and items) by one ``head`` (default: the classifier of every image; eval mode)."""
    from tqdm import tqdm

    model.eval()
    scores = {}
    for i in tqdm(range(len(bank)), desc="labels", dynamic_ncols=True, leave=False, disable=not progress):
        scores[bank.ids[i]] = model.scores([bank[i]], head)[0].cpu().numpy().astype(np.float32)
    return scores


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Multi-hot float32 labels: the classes scoring at least ``threshold``, or the best one when none does."""
    labels = (scores >= threshold).astype(np.float32)
    if not labels.any():
        labels[int(np.argmax(scores))] = 1.0
    return labels


def label_scores(pred: np.ndarray, true: np.ndarray, train_prior: np.ndarray) -> Dict[str, float]:
    """Per-label accuracy, images with every label right, and the accuracy of always answering each class's majority
    value of the training list (the prior), in percent."""
    prior = (train_prior >= 0.5).astype(np.float32)
    return {"label_acc": float((pred == true).mean()) * 100, "images_all_right": float((pred == true).all(1).mean())
            * 100, "prior_acc": float((prior[None] == true).mean()) * 100}


def implied_labels(pred: np.ndarray, num_classes: int, min_share: float = 0.01) -> np.ndarray:
    """Multi-hot float32 labels over the ``num_classes`` foreground classes that a label map implies: each class
    covering at least ``min_share`` of its labelled pixels (255 ignored)."""
    pred = np.asarray(pred)
    valid = pred[pred != 255].astype(np.int64)
    share = np.bincount(valid, minlength=num_classes + 1)[1:num_classes + 1] / max(1, valid.size)
    return (share >= min_share).astype(np.float32)


@dataclass(frozen=True)
class ClassGate:
    """Per-image weights of the foreground classes, applied to the test's probabilities before the arg-max and the
    CRF. Hard (``soft=False``, the weights multi-hot labels): the other classes are zeroed
    (:func:`restrict_to_classes`). Soft: each foreground probability times its weight, the classifier's score to
    a power (:func:`soft_weights`), renormalised; a power of 0 is the unfiltered test and a large one tends to the
    hard filter, so the network's own evidence and the classifier's are weighed against each other."""

    weights: Mapping[str, np.ndarray]
    soft: bool = False

    def __call__(self, image_id: str, probs: torch.Tensor) -> torch.Tensor:
        if not self.soft:
            return restrict_to_classes(probs, self.weights[image_id])
        w = torch.ones(probs.shape[0], device=probs.device, dtype=probs.dtype)
        w[1:] = torch.as_tensor(np.asarray(self.weights[image_id], np.float32).reshape(-1)[:probs.shape[0] - 1])
        return reweight_classes(probs, w)


def reweight_classes(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``probs (C, H, W)`` times the per-class ``weights (C,)``, renormalised (the CRF reads a distribution): the
    arg-max equals that of the logits plus ``log(weights)``, post-hoc logit adjustment (Menon et al., ICLR 2021). The
    test's background scale and its soft class filter are both this."""
    out = probs * weights[:, None, None]
    return out / out.sum(0, keepdim=True).clamp_min(1e-12)


def soft_weights(scores: Mapping[str, np.ndarray], power: float, floor: float = 1e-6) -> Dict[str, np.ndarray]:
    """``{id: score ** power}`` of a ``{id: sigmoid scores}`` dict (scores floored at ``floor``)."""
    return {i: np.power(np.maximum(np.asarray(s, np.float64), floor), float(power)).astype(np.float32)
            for i, s in scores.items()}


def scores_path(labels_path: str) -> str:
    """Where ``scripts/label_train.py`` writes the sigmoid scores beside a label file ``<stem>.npy``."""
    return labels_path[:-4] + SCORES_SUFFIX if labels_path.endswith(".npy") else labels_path + SCORES_SUFFIX


def read_scores(labels_path: str, ids: Sequence[str], num_classes: int, key: str) -> Dict[str, np.ndarray]:
    """``{id: sigmoid scores}`` of ``ids`` from the file ``scripts/label_train.py`` writes beside the label file
    ``labels_path`` (passed as ``key``); one-line errors naming the file."""
    path = scores_path(labels_path)
    if not os.path.isfile(path):
        raise WsegError(f"{path}: no classifier scores beside {key} {labels_path}; label_filter_powers weighs the "
                        "classes by them: re-run scripts/label_train.py (it writes <stem>_scores.npy beside each "
                        "label file) or set label_filter_powers=[]")
    return dict(zip(ids, label_arrays(read_label_file(path), ids, num_classes, path)))


def restrict_to_classes(scores: torch.Tensor, present: np.ndarray, fill: float = 0.0) -> torch.Tensor:
    """``scores (C, H, W)`` with the foreground classes absent from ``present`` (multi-hot over the ``C - 1``
    foreground classes) set to ``fill`` (0 for probabilities, ``-inf`` for logits); background always stays. The
    arg-max then picks among the listed classes (the pseudo masks' and RS+EPM's rule); the CRF's unary ``-log``
    clips the zeros, so they do not come back."""
    keep = torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)
    keep[1:] = torch.as_tensor(np.asarray(present).reshape(-1)[:scores.shape[0] - 1] > 0, device=scores.device)
    return scores.masked_fill(~keep[:, None, None], fill)


__all__ = ["ClassGate", "FeatureBank", "LabelClassifier", "SCORES_SUFFIX", "check_context", "decide",
           "implied_labels", "label_arrays", "label_scores", "predict_labels", "read_label_file", "read_scores",
           "restrict_to_classes", "reweight_classes", "scores_path", "soft_weights"]
