"""CAM network training (stage 1a) for any CAM method of :mod:`wseg.methods` (``--network``: ``seam``, ``contrast``
= PPC, ...; ``--network NAME --help`` lists that method's own flags).

The published recipe of PSA / SEAM / PPC ``train_*.py``: batch 8, 8 epochs, poly SGD (lr 0.01) over the four
parameter groups (x1/x2/x10/x20), random long-side resize 448-768, flip, colour jitter, crop 448, and from the
ImageNet weights the published fixed layers and frozen BatchNorm (``--freeze auto``). The method's training step
gives the losses (SEAM: classification + ER + ECR; PPC: + pixel-to-prototype contrast). Iteration-based on the one
engine (:mod:`wseg.engine.trainer`): a checkpoint at every epoch end, ``--resume`` (default on) continues after a
crash, ``torchrun`` runs it data-parallel (DDP). Not published, for training from scratch:
``--cls_warmup_epochs`` (classification alone first), ``--color_jitter``, ``--dropout False``,
``--optimizer adamw``.

Outputs: ``<session_name>.pth`` (final weights, a plain state dict in the published layout, as the published script
saves), ``<session_name>_last.pth`` (resume checkpoint), ``<session_name>.log`` and ``<session_name>_scalars.jsonl``.
"""
from __future__ import annotations

import argparse
from typing import Callable

import numpy as np

from wseg.cli import add_bool_flag
from wseg.data.transforms import PUBLISHED_JITTER
from wseg.engine.optim import OPTIMIZERS
from wseg.errors import WsegError
from wseg.methods import METHODS, get_method
from wseg.stages.common import add_training_arguments, check_schedule_flags

#: Settings a resume checkpoint must share with the current run (they fix the schedule and the network).
RESUME_KEYS = ("network", "backbone", "batch_size", "max_epoches", "max_iters", "lr", "wt_dec", "optimizer",
               "crop_size", "train_list", "seed", "cls_warmup_epochs")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", choices=list(METHODS), default="contrast",
                   help="CAM method: " + "; ".join(f"{n} = {m.summary}" for n, m in METHODS.items()))
    p.add_argument("--weights", default=None, help="ImageNet backbone: MXNet .params (ResNet-38) or .pth; "
                                                   "omit to train from scratch")
    p.add_argument("--freeze", choices=["auto", "published", "none"], default="auto",
                   help="published: the published fixed layers and frozen BatchNorm (for ImageNet weights); "
                        "none: train everything (from scratch); auto: published iff --weights is given")
    p.add_argument("--backbone", default="resnet38",
                   help="resnet38 | resnet38_small | resnet38_tiny | resnet50 | resnet101 | resnet_tiny")
    add_bool_flag(p, "--dropout", "the published Dropout2d layers (b6 0.3, b7 0.5, head 0.5); --dropout False for "
                                  "reduced backbones trained from scratch", default=True)
    add_training_arguments(p, "resnet38_contrast")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default="sgd",
                   help="sgd: the published poly SGD (default); adamw: poly AdamW, for training from scratch")
    p.add_argument("--crop_size", type=int, default=448)
    p.add_argument("--resize_long", type=int, nargs=2, default=[448, 768], metavar=("MIN", "MAX"),
                   help="random long-side resize range in pixels before the crop (published 448 768)")
    p.add_argument("--resize_scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="instead of --resize_long: resize the long side to a random factor of its own length, for "
                        "datasets whose images are not VOC-sized (the published 448-768 on ~500 px is 0.9-1.5)")
    p.add_argument("--color_jitter", type=float, nargs=4, default=list(PUBLISHED_JITTER),
                   metavar=("BRIGHTNESS", "CONTRAST", "SATURATION", "HUE"),
                   help="colour jitter (published 0.3 0.3 0.3 0.1; 0 0 0 0 turns it off)")
    p.add_argument("--cls_warmup_epochs", type=int, default=0,
                   help="first epochs with the classification loss alone, then the method's other terms join; 0 = "
                        "published")


def extend_arguments(p: argparse.ArgumentParser, lookup: Callable) -> None:
    """The chosen method's own flags (``--network`` from the command line, ``--set`` or the config file)."""
    method = get_method(str(lookup("network", "contrast")))
    method.add_arguments(p.add_argument_group(f"{method.name} ({method.summary})"))


def check(args: argparse.Namespace) -> None:
    """One-line errors for the flags, before anything is read (the pipeline calls it before its first stage). The
    method's ``check_args`` may look for its inputs (EPS's saliency maps) and runs in :func:`run`."""
    get_method(args.network)
    check_schedule_flags(args)
    if args.crop_size < 8:
        raise WsegError(f"--crop_size {args.crop_size}: must be at least 8 (one feature pixel at output stride 8; "
                        "published 448)")
    if args.resize_scale and not 0 < args.resize_scale[0] <= args.resize_scale[1] <= 8:
        raise WsegError(f"--resize_scale {args.resize_scale[0]:g} {args.resize_scale[1]:g}: need 0 < MIN <= MAX <= 8")
    if args.cls_warmup_epochs < 0:
        raise WsegError(f"--cls_warmup_epochs {args.cls_warmup_epochs}: must be >= 0")
    brightness, contrast, saturation, hue = args.color_jitter
    if min(args.color_jitter) < 0 or hue > 0.5:
        raise WsegError(f"--color_jitter {brightness:g} {contrast:g} {saturation:g} {hue:g}: need values >= 0 and "
                        "hue <= 0.5 (published 0.3 0.3 0.3 0.1)")


def run(args: argparse.Namespace) -> dict:
    from wseg.data.datasets import ClsDataset
    from wseg.data.transforms import CamTrainTransform
    from wseg.engine.optim import adamw_groups, build_optimizer, head_lr_mults, published_groups
    from wseg.engine.plans import EpochPlan
    from wseg.engine.trainer import multilabel_prior_loss
    from wseg.methods.base import build_for_training, eval_cls_loss
    from wseg.stages.common import begin_training, train_session

    method = get_method(args.network)(args)
    check(args)
    method.check_args(args)
    dist, voc, ids = begin_training(args, "contrast_train")
    transform = CamTrainTransform(args.crop_size, tuple(args.resize_long), jitter=args.color_jitter,
                                  resize_scale=args.resize_scale)
    dataset = ClsDataset(voc, ids, transform, maps=method.data_maps(voc, args))
    plan = EpochPlan(dataset, args.batch_size, args.seed, args.num_workers, dist, args.train_list)
    warmup_iters = plan.steps_per_epoch * args.cls_warmup_epochs

    model = build_for_training(method, args.backbone, voc.spec.num_classes, args.weights, args.freeze,
                               dropout=args.dropout).to(dist.device)
    groups = model.get_parameter_groups()
    groups = (published_groups(groups, args.lr, args.wt_dec, head_lr_mults(args.head_lr_mult))
              if args.optimizer == "sgd" else adamw_groups(groups, args.wt_dec))
    optimizer = build_optimizer(args.optimizer, groups, args.lr, args.wt_dec, args.momentum)
    meta = {**method.meta(), "backbone": args.backbone, "num_classes": voc.spec.num_classes}

    def step(net, batch, ctx):
        ctx.cls_only = ctx.iteration < warmup_iters
        return method.training_step(net, batch, ctx)

    prior = (method.cls_loss_key, multilabel_prior_loss(np.stack([dataset.labels[i] for i in dataset.ids])))
    result = train_session(args, dist, model, optimizer, plan, step, meta, RESUME_KEYS, "cam train", prior=prior,
                           final_cls_loss=lambda net: eval_cls_loss(method, net, voc, dataset.ids, dataset.labels,
                                                                    dist.device))
    return {k: result.get(k) for k in ("weights", "steps", "first_losses", "last_losses", "learned", "cls_loss",
                                       "prior_loss", "train_cls_loss")}
