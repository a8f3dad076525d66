"""Image-label classifier for the segmentation test's class filter (:mod:`wseg.label_filter`; a wseg addition, in
the spirit of RS+EPM's ``pred_class >= conf_th``): train a 1x1 LSE-pooled class layer on a frozen backbone's
features from the training list's image-level labels, then write the predicted labels of ``--infer_list`` (e.g.
val, or test without ground truth) in the ``cls_labels.npy`` format for ``segmentation/test.py --set
label_filter=<file>``.

    python scripts/label_train.py --voc12_root VOC2012 --train_list train_aug --infer_list val \\
        --weights ilsvrc-cls_rna-a1_cls1000_ep-0001.params --session_name runs/labels \\
        --out_labels runs/labels/val.npy --out_cv runs/labels/train_cv.npy

Outputs: ``<session_name>.pth`` (backbone + class layers, with the scales and the LSE sharpness), ``_last.pth``
(resume), ``.log``, ``_scalars.jsonl``; ``--out_labels`` (multi-hot per image) and ``<out_labels>_scores.npy``
(the sigmoid scores). With ``--out_cv``, the class layer trains ``--cv_folds`` more heads beside the full one in
the same pass, each without its fold (:class:`~wseg.label_filter.LabelClassifier`): they write held-out labels of
every training image to ``--out_cv`` and their scores to ``<out_cv>_scores.npy``, which ``segmentation/test.py``'s
``label_filter_check`` filters the training images by (the labels, or the scores to each power of
``label_filter_powers``) to decide whether and how filtering pays (scored against the pseudo masks); the
``--infer_list`` images are scored by the head that learned from every training image. Label files are written
atomically. Where the infer list has labels in ``cls_labels.npy`` the log and the result give the
per-label accuracy, the share of images with every label right and the label prior's.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict

import numpy as np
import torch

from wseg.cli import add_bool_flag
from wseg.errors import WsegError

RESUME_KEYS = ("backbone", "weights", "scales", "levels", "lse_r", "batch_size", "max_iters", "lr", "wt_dec",
               "train_list", "folds", "seed", "context")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True, help="dataset root")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt)")
    p.add_argument("--train_list", required=True, help="images whose image-level labels train the class layer")
    p.add_argument("--infer_list", nargs="+", default=["val"], help="lists whose labels to predict")
    p.add_argument("--weights", required=True,
                   help="backbone weights (ImageNet .params / .pth, or the stand-in file); the backbone stays frozen")
    p.add_argument("--backbone", default="resnet38", help="resnet38 | resnet38_small | resnet101 | ...")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0],
                   help="image sizes relative to the image; the class score is the maximum over them (the demo: 2, "
                        "so that its small parts span a few feature cells)")
    p.add_argument("--levels", nargs="+", default=None,
                   help="backbone levels whose features the class layer reads, stacked on the last one's grid "
                        "(default: the last level; the demo: conv4 conv5 conv6 of ResNet-38, whose earlier levels "
                        "keep the colour and texture its last level abstracts away)")
    p.add_argument("--lse_r", type=float, default=4.0, help="log-sum-exp pooling sharpness r (0 < r; large: max)")
    p.add_argument("--threshold", type=float, default=0.5, help="a class is predicted at sigmoid score >= this")
    p.add_argument("--session_name", default="labels", help="output prefix: <name>.pth, <name>.log, <name>_last.pth")
    p.add_argument("--out_labels", required=True,
                   help="predicted labels (.npy, cls_labels format); with several --infer_list, <stem>_<list>.npy")
    p.add_argument("--out_cv", default=None,
                   help="also write held-out labels of the training images here (.npy; their scores beside it, "
                        "<stem>_scores.npy): --cv_folds classifiers, each trained without its fold; "
                        "segmentation/test.py's label_filter_check filters the training images by them to decide "
                        "whether and how filtering pays")
    p.add_argument("--cv_folds", type=int, default=2,
                   help="folds for --out_cv (their class layers train beside the full one, at little extra cost; "
                        "more folds: held-out classifiers closer to the full one, e.g. the demo's 8)")
    p.add_argument("--context", type=int, default=0,
                   help="also give each position the maximum of the features over a context x context window around "
                        "it (odd; 0: off), so the class layer can ask for a part AND its neighbour (a body with a "
                        "head; the demo: 5)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_iters", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-2, help="AdamW lr of the class layer (poly schedule)")
    p.add_argument("--wt_dec", type=float, default=1e-3)
    p.add_argument("--cache_gb", type=float, default=4.0,
                   help="keep the frozen features in memory (fp16) when they fit in this many GiB, else recompute "
                        "them for every batch")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    add_bool_flag(p, "--resume", "continue from <session_name>_last.pth when present (default on)", default=True)
    add_bool_flag(p, "--progress", "progress bars", default=True)
    p.add_argument("--log_every", type=int, default=50)


def check(args: argparse.Namespace) -> None:
    """One-line errors for flag values (the pipeline calls it before its first stage)."""
    from wseg.label_filter import check_context

    if not args.scales or min(args.scales) <= 0 or max(args.scales) > 8:
        raise WsegError(f"--scales {args.scales}: need factors in (0, 8], e.g. 1 (VOC) or 2 (the demo)")
    if not 0 < args.lse_r < 1e3:
        raise WsegError(f"--lse_r {args.lse_r:g}: need 0 < r < 1000 (4: between average and max pooling)")
    if not 0 < args.threshold < 1:
        raise WsegError(f"--threshold {args.threshold:g}: a sigmoid score threshold in (0, 1), e.g. 0.5")
    if args.batch_size < 1 or args.max_iters < 1:
        raise WsegError(f"--batch_size {args.batch_size} / --max_iters {args.max_iters}: both must be at least 1")
    if not (0 < args.lr < 1 and 0 <= args.wt_dec < 1):
        raise WsegError(f"--lr {args.lr:g} / --wt_dec {args.wt_dec:g}: need 0 < lr < 1 and 0 <= wt_dec < 1")
    if args.out_cv is not None and (not args.out_cv.endswith(".npy") or args.cv_folds < 2):
        raise WsegError(f"--out_cv {args.out_cv} / --cv_folds {args.cv_folds}: name a .npy file and at least 2 folds")
    check_context(args.context)
    if not args.out_labels.endswith(".npy"):
        raise WsegError(f"--out_labels {args.out_labels}: name a .npy file (the cls_labels.npy format)")
    if not os.path.basename(args.session_name):
        raise WsegError(f"--session_name {args.session_name!r}: needs a file name prefix (e.g. runs/labels)")


def out_path(args: argparse.Namespace, name: str) -> str:
    """Where the labels of ``--infer_list`` entry ``name`` go."""
    if len(args.infer_list) == 1:
        return args.out_labels
    stem = args.out_labels[:-4]
    return f"{stem}_{os.path.splitext(os.path.basename(name))[0]}.npy"


def _known_labels(voc, ids, num_classes: int):
    """``(N, K)`` true labels of ``ids`` where the root has them (val), else None (test)."""
    from wseg.label_filter import label_arrays

    try:
        return label_arrays(voc.cls_labels(ids), ids, num_classes, voc.cls_labels_path())
    except WsegError:
        return None


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """The cross-validation fold of each of ``n`` training images (a seeded permutation cut into ``folds`` near-equal
    parts); with no folds every image is in "fold" -1, which no head holds out."""
    fold_of = np.full(n, -1, np.int64)
    if folds:
        for k, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), folds)):
            fold_of[part] = k
    return fold_of


def _fit(model, bank, y: np.ndarray, fold_of: np.ndarray, args: argparse.Namespace, dist) -> dict:
    """Train ``model``'s heads (the full classifier and its cross-validation folds, ``fold_of``) in one pass on the
    one training loop (resumable from ``<session_name>_last.pth``; the label-prior check reads the full head's
    loss); saves ``<session_name>.pth``."""
    from wseg.engine.optim import PolyLR, build_optimizer
    from wseg.engine.plans import StepPlan
    from wseg.engine.runtime import LOG
    from wseg.engine.trainer import Trainer, multilabel_prior_loss
    from wseg.models.checkpoint import save_state_dict

    # the plan draws batches of positions into the feature bank (a list is a map-style dataset)
    plan = StepPlan(list(range(len(y))), None, min(args.batch_size, len(y)), args.seed, 0, dist,
                    collate_fn=lambda batch: batch)
    target, folds = torch.from_numpy(y).to(dist.device), torch.from_numpy(fold_of).to(dist.device)

    def step(net, batch, ctx):
        index = torch.as_tensor(batch, device=dist.device)
        return net.loss(net([bank[i] for i in batch]), target[index], folds[index])

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer("adamw", [{"params": params, "lr": args.lr, "weight_decay": args.wt_dec}],
                                args.lr, args.wt_dec)
    meta = {"network": "label_classifier", "backbone": args.backbone, "scales": list(args.scales),
            "levels": list(model.levels), "lse_r": args.lse_r, "num_classes": model.num_classes,
            "folds": model.folds, "context": model.context, "threshold": args.threshold}
    prefix = args.session_name
    trainer = Trainer(model=model, optimizer=optimizer, schedule=PolyLR(args.max_iters), plan=plan, step=step,
                      dist=dist, max_iters=args.max_iters, checkpoint=prefix + "_last.pth",
                      settings=dict(vars(args), folds=model.folds), resume_keys=RESUME_KEYS, resume=args.resume,
                      ckpt_every=args.max_iters, log_every=args.log_every, scalars=prefix + "_scalars.jsonl",
                      meta=meta, images_per_step=args.batch_size, desc="label train", progress=args.progress,
                      prior=("loss_full", multilabel_prior_loss(y)))
    result = trainer.run()
    save_state_dict(prefix + ".pth", model, meta=meta)
    LOG.info("saved %s.pth", prefix)
    return result


def _held_out_scores(model, bank, fold_of: np.ndarray) -> Dict[str, np.ndarray]:
    """Held-out sigmoid scores of every training image, each from the head that did not learn from it: what
    ``segmentation/test.py``'s ``label_filter_check`` filters the training images by (their labels, or the scores
    to a power) to decide whether filtering pays."""
    from wseg.label_filter import predict_labels

    out: Dict[str, np.ndarray] = {}
    for k in range(model.folds):
        out.update(predict_labels(model, _Subset(bank, np.flatnonzero(fold_of == k)), progress=False, head=k))
    return {i: out[i] for i in bank.ids}


class _Subset:
    """Images ``index`` of a feature bank, as a bank (``ids``, ``len``, items)."""

    def __init__(self, bank, index):
        self.bank, self.index = bank, list(index)
        self.ids = [bank.ids[i] for i in self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int):
        return self.bank[self.index[j]]


def run(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from wseg.engine.runtime import LOG
    from wseg.io import atomic_save_dict
    from wseg.label_filter import (FeatureBank, LabelClassifier, decide, label_arrays, label_scores, predict_labels,
                                   scores_path)
    from wseg.models.backbones import build_backbone
    from wseg.segmentation.models import load_backbone_weights
    from wseg.stages.common import begin_training

    check(args)
    if not os.path.isfile(args.weights):
        raise WsegError(f"--weights {args.weights}: no such file; pass the backbone's ImageNet (or stand-in) weights")
    dist, voc, ids = begin_training(args, "label_train")
    if dist.enabled:
        raise WsegError("label_train runs in one process (its features are cached per process); run it without "
                        "torchrun")
    num_classes = voc.spec.num_classes - 1
    labels_path = voc.cls_labels_path()
    y = label_arrays(voc.cls_labels(ids), ids, num_classes, labels_path)
    folds = args.cv_folds if args.out_cv else 0
    model = LabelClassifier(build_backbone(args.backbone), num_classes, args.scales, args.lse_r, args.levels, folds,
                            args.context)
    load_backbone_weights(model, args.weights)
    model.to(dist.device)
    bank = FeatureBank(model, voc, ids, IMAGENET_MEAN, IMAGENET_STD, dist.device, args.cache_gb)
    bank[0]                           # decides whether the features are kept
    LOG.info("features of %d training images at scales %s (%s)", len(ids), args.scales,
             "kept in memory" if bank.caching else "recomputed per batch")
    sample = range(len(bank)) if bank.caching else range(min(64, len(bank)))  # the feature statistics
    model.set_statistics([bank[i] for i in tqdm(sample, desc="features", dynamic_ncols=True, leave=False,
                                                disable=not args.progress)])
    fold_of = fold_assignment(len(ids), folds, args.seed)
    result = _fit(model, bank, y, fold_of, args, dist)

    out: dict = {"weights": args.session_name + ".pth", "learned": result.get("learned"),
                 "cls_loss": result.get("cls_loss"), "prior_loss": result.get("prior_loss"),
                 "seconds": result["seconds"], "labels": {}}
    for name in args.infer_list:
        infer_ids = voc.ids(name)
        scores = predict_labels(model, FeatureBank(model, voc, infer_ids, IMAGENET_MEAN, IMAGENET_STD, dist.device,
                                                   0), args.progress)
        pred = {i: decide(s, args.threshold) for i, s in scores.items()}
        path = out_path(args, name)
        atomic_save_dict(scores_path(path), scores)
        atomic_save_dict(path, pred)
        entry = {"path": path, "images": len(infer_ids)}
        true = _known_labels(voc, infer_ids, num_classes)
        if true is not None:
            entry.update(label_scores(np.stack([pred[i] for i in infer_ids]), true, y.mean(0)))
            LOG.info("%s: per-label accuracy %.1f%% (the training list's prior %.1f%%), every label right in %.1f%% "
                     "of the images", os.path.basename(name), entry["label_acc"], entry["prior_acc"],
                     entry["images_all_right"])
        LOG.info("wrote %s (%d images)", path, len(infer_ids))
        out["labels"][name] = entry
    if args.out_cv:
        cv_scores = _held_out_scores(model, bank, fold_of)
        cv = {i: decide(s, args.threshold) for i, s in cv_scores.items()}
        atomic_save_dict(scores_path(args.out_cv), cv_scores)
        atomic_save_dict(args.out_cv, cv)
        out["cv"] = {"path": args.out_cv, **label_scores(np.stack([cv[i] for i in ids]), y, y.mean(0))}
        LOG.info("%d-fold held-out labels of the training images: per-label accuracy %.1f%% (prior %.1f%%); wrote %s",
                 args.cv_folds, out["cv"]["label_acc"], out["cv"]["prior_acc"], args.out_cv)
    dist.close()
    return out
