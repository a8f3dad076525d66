"""AffinityNet training (stage 2b), after PSA ``train_aff.py`` / PPC ``aff_train.py``; the network, data and loss are
:mod:`wseg.methods.affinitynet`, :mod:`wseg.data.affinity_dataset` and :mod:`wseg.losses.affinity`.

Labels: the low/high-alpha dCRF label PNGs of ``scripts/aff_prepare.py``. Augmentation as published: colour jitter
(0.3/0.3/0.3/0.1), a random ``--crop_size`` window (zero padding where the image is smaller; the labels are cut with
the same window and padding is "no score"), random horizontal flip; optionally (``--resize_long MIN MAX``, not in
the published recipe) a random long-side rescale first, for small images. The la/ha maps of the crop are reduced
to feature resolution as published (8x8 average pooling of their one-hot scores, then argmax each), combined into
confident labels (:func:`wseg.affinity.confident_labels`) and turned into pair labels within ``--radius``
(published ``ExtractAffinityLabelInRadius``: background-positive, foreground-positive, negative).

Loss (published): ``bg/4 + fg/4 + neg/2`` with ``bg = -sum(bg_label * log(a + 1e-5)) / (#bg + 1e-5)``, ``fg``
likewise and ``neg = -sum(neg_label * log(1 + 1e-5 - a)) / (#neg + 1e-5)``. Poly LR over the four published
parameter groups (x1/x2/x10/x20) with the published ``PolyOptimizer``. Starts from the ImageNet backbone weights.

On the one engine (:mod:`wseg.engine.trainer`): a checkpoint at every epoch end; ``--resume`` (default on) continues
from it, and every random source is re-seeded per epoch, so a resumed run equals an uninterrupted one. ``torchrun`` runs it data-parallel
(DDP; NCCL on GPU, gloo on CPU).

Outputs: ``<session_name>.pth`` (final weights, a plain state dict as published), ``<session_name>_last.pth``
(resume checkpoint), ``<session_name>.log`` and ``<session_name>_scalars.jsonl``.
"""
from __future__ import annotations

import argparse
import math

from wseg.affinity import DEFAULT_RADIUS
from wseg.cli import add_bool_flag
from wseg.data.affinity_dataset import STRIDE
from wseg.errors import WsegError
from wseg.stages.common import add_training_arguments, check_schedule_flags

#: Settings a resume checkpoint must share with the current run (they fix the schedule and the network).
RESUME_KEYS = ("backbone", "batch_size", "max_epoches", "max_iters", "lr", "wt_dec", "crop_size", "radius",
               "train_list")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="ImageNet backbone: MXNet .params (ResNet-38) or .pth; omit to "
                                                   "train from scratch (synthetic demo). Not the CAM network.")
    p.add_argument("--backbone", default="resnet38", help="resnet38 | resnet38_tiny | resnet50 | resnet101 | ...")
    p.add_argument("--la_crf_dir", required=True, help="low-alpha label PNGs (aff_prepare <out_crf>/crf_la)")
    p.add_argument("--ha_crf_dir", required=True, help="high-alpha label PNGs (aff_prepare <out_crf>/crf_ha)")
    add_training_arguments(p, "resnet38_aff")
    p.add_argument("--crop_size", type=int, default=448, help="square training crop (multiple of 8; published 448)")
    p.add_argument("--resize_long", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="random long-side rescale before the crop (off by default as published; e.g. for small "
                        "images)")
    p.add_argument("--resize_scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="instead of --resize_long: a random factor of the image's own long side")
    p.add_argument("--radius", type=int, default=DEFAULT_RADIUS, help="pair radius at 1/8 resolution (published 5)")
    add_bool_flag(p, "--jitter", "colour jitter (published)", default=True)


def check(args: argparse.Namespace) -> None:
    """One-line errors for flag values before anything is read or written (the pipeline calls it before its first
    stage)."""
    if args.radius < 2:
        raise WsegError(f"--radius {args.radius}: must be at least 2 (published 5)")
    min_crop = STRIDE * (2 * args.radius - 1)   # the pair layout needs 2r - 1 feature columns
    if args.crop_size < min_crop or args.crop_size % STRIDE:
        raise WsegError(f"--crop_size {args.crop_size}: must be a multiple of {STRIDE} and at least {min_crop} "
                        f"for --radius {args.radius} (published 448)")
    check_schedule_flags(args)
    if args.resize_scale and not 0 < args.resize_scale[0] <= args.resize_scale[1] <= 8:
        raise WsegError(f"--resize_scale {args.resize_scale[0]:g} {args.resize_scale[1]:g}: need 0 < MIN <= MAX <= 8")


def run(args: argparse.Namespace) -> dict:
    from wseg.data.affinity_dataset import AffinityTrainDataset
    from wseg.engine.optim import build_optimizer, head_lr_mults, published_groups
    from wseg.engine.plans import EpochPlan
    from wseg.losses.affinity import affinity_loss
    from wseg.methods.affinitynet import NETWORK_NAME, build_affinity_net_for_training
    from wseg.stages.common import begin_training, train_session

    check(args)
    dist, voc, ids = begin_training(args, "aff_train")
    dataset = AffinityTrainDataset(voc, ids, args.la_crf_dir, args.ha_crf_dir, args.crop_size, args.radius,
                                   args.resize_long, args.jitter, args.resize_scale)
    plan = EpochPlan(dataset, args.batch_size, args.seed, args.num_workers, dist, args.train_list)
    model = build_affinity_net_for_training(args.backbone, args.weights, radius=args.radius).to(dist.device)
    optimizer = build_optimizer("sgd", published_groups(model.get_parameter_groups(), args.lr, args.wt_dec,
                                                         head_lr_mults(args.head_lr_mult)),
                                args.lr, args.wt_dec, args.momentum)
    meta = {"network": NETWORK_NAME, "backbone": args.backbone}

    def step(net, batch, ctx):
        img, bg, fg, neg = batch
        with ctx.autocast():
            aff = net(img)
        aff = aff.float()
        if aff.shape[1:] != bg.shape[1:]:
            raise WsegError(f"AffinityNet gives {tuple(aff.shape[1:])} pair affinities for a {args.crop_size} crop "
                            f"but the labels have {tuple(bg.shape[1:])}; the backbone's output stride must be 8 "
                            "(check --backbone)")
        return affinity_loss(aff, bg, fg, neg)

    # the label prior of the published loss: a constant affinity 0.5 gives ln 2 whatever the pair counts
    result = train_session(args, dist, model, optimizer, plan, step, meta, RESUME_KEYS, "aff train",
                           final_meta={"radius": args.radius, "num_classes": voc.spec.num_classes},
                           prior=("loss", math.log(2)))
    return {"weights": result["weights"], "steps": result["steps"], "first_loss": (result["first_losses"] or {}).get(
        "loss"), "last_loss": result["last_losses"].get("loss"), "learned": result.get("learned"),
        "cls_loss": result.get("cls_loss"), "prior_loss": result.get("prior_loss")}
