"""Single-stage WSSS training: one network from image-level labels to segmentation, for any single-stage method of
:mod:`wseg.methods.single_stage` (``--network NAME``; ``--network NAME --help`` lists that method's own flags).

The method gives the network, the published augmentation, one training step (its named losses), the optimiser
groups and the schedule; the defaults of ``--backbone``, ``--max_iters``, ``--batch_size`` (images per step over
all processes), ``--crop_size``, ``--lr``, ``--wt_decay``, ``--warmup_iters``, ``--warmup_lr`` and ``--power`` are the
method's published values. Iteration-based on the one engine (:mod:`wseg.engine.trainer`) with per-sample
augmentation seeds (:class:`~wseg.engine.plans.StepPlan`): a resume checkpoint every ``--ckpt_every`` iterations,
``--resume`` (default on) continues after a crash exactly as the uninterrupted run, ``torchrun`` runs it
data-parallel. At the end the classification loss is compared with the label prior's (did the network learn?).

Outputs: ``<session_name>.pth`` (final weights, or their moving average with ``--ema_decay``: a plain state dict in
the method's published layout, with the method, backbone, classes and method flags as metadata for
``scripts/wsss_infer.py``), ``<session_name>_last.pth``
(resume checkpoint), ``<session_name>.log`` and ``<session_name>_scalars.jsonl``.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

from wseg.cli import add_bool_flag
from wseg.errors import WsegError
from wseg.methods.single_stage import get_single_stage

#: Generic settings a resume checkpoint must share with the current run (plus every flag of the method).
RESUME_KEYS = ("network", "backbone", "weights", "batch_size", "max_iters", "crop_size", "lr", "wt_decay",
               "warmup_iters", "warmup_lr", "power", "train_list", "seed", "ema_decay")
#: Generic flags whose defaults come from the method (``SingleStageMethod.defaults``).
METHOD_DEFAULTS = ("backbone", "max_iters", "batch_size", "crop_size", "lr", "wt_decay", "warmup_iters", "warmup_lr",
                   "power")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", required=True,
                   help="single-stage method (a module of wseg/methods registered with register_single_stage)")
    p.add_argument("--backbone", default=None, help="backbone name (default: the method's published one)")
    p.add_argument("--weights", default=None, help="ImageNet weights of the backbone (the method says which file); "
                                                   "omit to train from scratch")
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True,
                   help="dataset root (any layout wseg reads; --data_root is the same flag)")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt)")
    p.add_argument("--train_list", required=True, help="split list (or split name) of the training images")
    p.add_argument("--session_name", default="runs/wsss",
                   help="output prefix (path allowed): <name>.pth, <name>_last.pth, <name>.log, <name>_scalars.jsonl")
    p.add_argument("--max_iters", type=int, default=None, help="training iterations")
    p.add_argument("--batch_size", type=int, default=None, help="images per iteration over all processes")
    p.add_argument("--crop_size", type=int, default=None, help="training crop")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (the method's groups scale it)")
    p.add_argument("--wt_decay", type=float, default=None, help="weight decay")
    p.add_argument("--warmup_iters", type=int, default=None, help="linear learning-rate warm-up iterations")
    p.add_argument("--warmup_lr", type=float, default=None, help="warm-up start as a fraction of the learning rate")
    p.add_argument("--power", type=float, default=None, help="poly power")
    p.add_argument("--ema_decay", type=float, default=None,
                   help="keep an exponential moving average of the weights (decay d * (1 - exp(-updates / 2000)), "
                        "as the RS+EPM trainer) and save it as the result; 0 = off (default: the method's, RS+EPM "
                        "0.9999, others off)")
    p.add_argument("--num_workers", type=int, default=2, help="data-loading worker processes")
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast + gradient scaling on GPU")
    p.add_argument("--seed", type=int, default=0)
    add_bool_flag(p, "--resume", "continue from <session_name>_last.pth when present (default on)", default=True)
    p.add_argument("--ckpt_every", type=int, default=1000, help="iterations between resume checkpoints")
    p.add_argument("--stop_iter", type=int, default=None,
                   help="stop after this iteration (checkpoint written, no final weights); re-run to continue")
    p.add_argument("--log_every", type=int, default=20, help="iterations between scalar-log lines")


def extend_arguments(p: argparse.ArgumentParser, lookup: Callable) -> None:
    """The chosen method's own flags and its published values of the generic ones."""
    name = lookup("network", None)
    if not name:
        return
    method = get_single_stage(str(name))
    method.add_arguments(p.add_argument_group(f"{method.name} ({method.summary})"))
    p.set_defaults(**{k: v for k, v in method.defaults.items() if k in METHOD_DEFAULTS})


def check(args: argparse.Namespace) -> None:
    """The flag checks that need no file (run by the pipeline before any stage); the method's own ``check_args``
    follows in :func:`run`."""
    get_single_stage(args.network)
    missing = [k for k in METHOD_DEFAULTS if getattr(args, k) is None]
    if missing:
        raise WsegError(f"--{missing[0]}: no value and the method gives no default; pass it")
    if args.batch_size < 1 or args.max_iters < 1 or args.crop_size < 16:
        raise WsegError(f"--batch_size {args.batch_size} / --max_iters {args.max_iters} / --crop_size "
                        f"{args.crop_size}: need at least 1 image, 1 iteration and a 16-pixel crop")
    if not (0 < args.lr < float("inf") and 0 <= args.wt_decay < 1 and 0 < args.warmup_lr <= 1
            and args.warmup_iters >= 0 and args.power > 0):
        raise WsegError(f"--lr {args.lr:g} / --wt_decay {args.wt_decay:g} / --warmup_lr {args.warmup_lr:g} / "
                        f"--warmup_iters {args.warmup_iters} / --power {args.power:g}: need a finite lr > 0, "
                        "0 <= wt_decay < 1, 0 < warmup_lr <= 1, warmup_iters >= 0 and power > 0")
    if not os.path.basename(args.session_name):
        raise WsegError(f"--session_name {args.session_name!r}: needs a file name prefix (e.g. runs/wsss)")
    if args.num_workers < 0 or args.ckpt_every < 1 or args.log_every < 1:
        raise WsegError(f"--num_workers {args.num_workers} / --ckpt_every {args.ckpt_every} / --log_every "
                        f"{args.log_every}: need >= 0 workers and >= 1 iteration between checkpoints and logs")
    if args.stop_iter is not None and not 1 <= args.stop_iter <= args.max_iters:
        raise WsegError(f"--stop_iter {args.stop_iter}: must lie in 1..--max_iters {args.max_iters}")
    if args.ema_decay is not None and not 0 <= args.ema_decay < 1:
        raise WsegError(f"--ema_decay {args.ema_decay:g}: must lie in [0, 1) (0 = no moving average)")
    if not 0 <= args.seed < 2 ** 32:
        raise WsegError(f"--seed {args.seed}: must lie in [0, 2**32)")


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from wseg.data.datasets import ClsDataset
    from wseg.engine.ema import ModelEMA
    from wseg.engine.plans import StepPlan
    from wseg.engine.runtime import LOG
    from wseg.engine.trainer import Trainer, multilabel_prior_loss
    from wseg.methods.base import eval_cls_loss
    from wseg.models.checkpoint import save_state_dict
    from wseg.stages.common import begin_training

    method = get_single_stage(args.network)(args)
    check(args)
    method.check_args(args)
    dist, voc, ids = begin_training(args, "wsss_train")
    try:
        transform = method.train_transform(args.crop_size)
        dataset = ClsDataset(voc, ids, transform)
        plan = StepPlan(dataset, transform, args.batch_size, args.seed, args.num_workers, dist)
        torch.manual_seed(args.seed)                      # the new layers' initialisation
        model = method.build_network(args.backbone, voc.spec.num_classes)
        if args.weights:
            method.load_pretrained(model, args.weights)
        model = model.to(dist.device)
        optimizer = method.build_optimizer(model, args)
        ema_decay = method.defaults.get("ema_decay", 0.0) if args.ema_decay is None else args.ema_decay
        ema = ModelEMA(model, ema_decay) if ema_decay else None
        meta = {**method.meta(), "backbone": args.backbone, "num_classes": voc.spec.num_classes,
                "classes": voc.classes_arg()}
        prior = (method.cls_loss_key, multilabel_prior_loss(np.stack([dataset.labels[i] for i in dataset.ids])))
        prefix = args.session_name
        trainer = Trainer(model=model, optimizer=optimizer, schedule=method.schedule(args), plan=plan,
                          step=method.training_step, dist=dist, max_iters=args.max_iters,
                          checkpoint=prefix + "_last.pth", settings=vars(args),
                          resume_keys=RESUME_KEYS + tuple(method.flag_names()), resume=args.resume,
                          ckpt_every=args.ckpt_every, log_every=args.log_every, amp=args.amp,
                          scalars=prefix + "_scalars.jsonl", stop_iter=args.stop_iter, meta=meta,
                          images_per_step=args.batch_size, desc=f"{method.name} train", prior=prior, ema=ema,
                          final_cls_loss=None if not method.eval_cls_check else (
                              lambda net: eval_cls_loss(method, net if ema is None else ema.module, voc, dataset.ids,
                                                        dataset.labels, dist.device)))
        result = trainer.run()
        weights = None
        if result["finished"]:
            weights = prefix + ".pth"
            if dist.is_main:
                ema_meta = {} if ema is None else {"ema": {"decay": ema.decay, "tau": ema.tau, "updates": ema.updates}}
                save_state_dict(weights, model if ema is None else ema.module,
                                meta={**meta, "iters": result["iters"], **ema_meta})
                LOG.info("saved %s", weights)
        dist.barrier()
    finally:
        dist.close()
    keys = ("iters", "trained_iters", "seconds", "iters_per_s", "finished", "first_losses", "last_losses", "learned",
            "cls_loss", "prior_loss", "train_cls_loss")
    return {"weights": weights, "network": method.name, **{k: result.get(k) for k in keys}}
