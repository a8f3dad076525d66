"""CAM network training (stage 1a): SEAM baseline or Pixel-to-Prototype Contrast (PPC) on top of it.

Two views per batch (the crop and a ``--view2_size`` square rescale of it, published 128); losses per
:func:`wseg.losses.cam_losses`: classification + SEAM's equivariant regularisation (ER) and equivariant cross
regularisation (ECR) + adaptive min-pooling, and with ``--network contrast`` PPC's cross-view and intra-view
pixel-to-prototype contrast. Poly LR over four parameter groups (x1/x2/x10/x20). A checkpoint is written
atomically after every epoch; ``--resume`` (default on) continues from it after a crash. Not published, for
training from scratch (the synthetic demo): ``--cls_warmup_epochs`` (classification alone first),
``--color_jitter``, ``--dropout False``, ``--optimizer adamw``. ``torchrun`` runs it
data-parallel (DDP; NCCL on GPU, gloo on CPU).

Outputs: ``<session_name>.pth`` (final weights, a plain state dict as the published script saves),
``<session_name>_last.pth`` (resume checkpoint), ``<session_name>.log`` and ``<session_name>_scalars.jsonl``.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from tqdm import tqdm

from wseg.cli import add_bool_flag
from wseg.data.datasets import ClsDataset
from wseg.data.transforms import PUBLISHED_JITTER, cam_train_transform
from wseg.engine import LOG, StepLogger, autocast, grad_scaler, optimizer_step, unwrap
from wseg.errors import WsegError
from wseg.stages.common import begin_epoch, begin_training, check_schedule_flags, epoch_loader


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="ImageNet backbone: MXNet .params (ResNet-38) or .pth; "
                                                   "omit to train from scratch (synthetic demo)")
    p.add_argument("--freeze", choices=["auto", "published", "none"], default="auto",
                   help="published: fixed conv1a/b2* and frozen BatchNorm as published (for ImageNet weights); "
                        "none: train everything (from scratch); auto: published iff --weights is given")
    p.add_argument("--network", choices=["seam", "contrast"], default="contrast",
                   help="seam = SEAM baseline, contrast = SEAM + PPC (default)")
    p.add_argument("--backbone", default="resnet38",
                   help="resnet38 | resnet38_small | resnet38_tiny | resnet50 | resnet101 | resnet_tiny")
    add_bool_flag(p, "--dropout", "the published Dropout2d layers (b6 0.3, b7 0.5, head 0.5); --dropout False for "
                                  "reduced backbones trained from scratch", default=True)
    p.add_argument("--voc12_root", required=True)
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt)")
    p.add_argument("--train_list", required=True)
    p.add_argument("--session_name", default="resnet38_contrast",
                   help="output prefix (path allowed): <name>.pth, <name>.log, <name>_last.pth")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_epoches", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--wt_dec", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=None,
                   help="SGD momentum; default reproduces the published PolyOptimizer, which passes wt_dec into "
                        "SGD's momentum slot (momentum 5e-4, i.e. none)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                   help="sgd: the published poly SGD (default); adamw: poly AdamW, for training from scratch "
                        "without ImageNet weights (the synthetic demo)")
    p.add_argument("--crop_size", type=int, default=448)
    p.add_argument("--resize_long", type=int, nargs=2, default=[448, 768], metavar=("MIN", "MAX"),
                   help="random long-side resize range before the crop (published 448 768)")
    p.add_argument("--color_jitter", type=float, nargs=4, default=list(PUBLISHED_JITTER),
                   metavar=("BRIGHTNESS", "CONTRAST", "SATURATION", "HUE"),
                   help="colour jitter (published 0.3 0.3 0.3 0.1; 0 0 0 0 turns it off: on the synthetic data, "
                        "where classes differ by head hue, a hue jitter of 0.1 blurs the class cue)")
    p.add_argument("--view2_size", type=int, default=128, help="side of the second (rescaled) view; published 128")
    p.add_argument("--cls_warmup_epochs", type=int, default=0,
                   help="first epochs with the classification loss alone, then SEAM (+PPC) terms join; 0 = "
                        "published. From scratch (no ImageNet weights) the equivariance and contrast terms, "
                        "computed on CAMs of a classifier that has not learned yet, slow its learning down")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--bg_threshold", type=float, default=0.20, help="PPC background score for pseudo labels")
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast + gradient scaling on GPU")
    p.add_argument("--seed", type=int, default=0)
    add_bool_flag(p, "--resume", "continue from <session_name>_last.pth when present (default on)", default=True)
    p.add_argument("--log_every", type=int, default=10, help="steps between scalar-log lines")


def _check_args(args: argparse.Namespace) -> None:
    check_schedule_flags(args)
    if args.crop_size < 8 or args.view2_size < 8:
        raise WsegError(f"--crop_size {args.crop_size} / --view2_size {args.view2_size}: both must be at least 8 "
                        "(one feature pixel at output stride 8; published 448 and 128)")
    if not 0 <= args.bg_threshold <= 1:
        raise WsegError(f"--bg_threshold {args.bg_threshold:g}: must lie in [0, 1], the range of the normalised CAMs "
                        "it competes with (published 0.2)")
    if args.cls_warmup_epochs < 0:
        raise WsegError(f"--cls_warmup_epochs {args.cls_warmup_epochs}: must be >= 0")
    brightness, contrast, saturation, hue = args.color_jitter
    if min(args.color_jitter) < 0 or hue > 0.5:
        raise WsegError(f"--color_jitter {brightness:g} {contrast:g} {saturation:g} {hue:g}: need values >= 0 and "
                        "hue <= 0.5 (published 0.3 0.3 0.3 0.1)")


def run(args: argparse.Namespace) -> dict:
    _check_args(args)
    from wseg.losses import cam_losses
    from wseg.models.build import build_cam_net_for_training
    from wseg.models.checkpoint import load_checkpoint, save_checkpoint
    from wseg.optim import build_optimizer

    dist, voc, ids = begin_training(args, "contrast_train")
    device = dist.device
    out_prefix = args.session_name
    dataset = ClsDataset(voc, ids, cam_train_transform(args.crop_size, tuple(args.resize_long),
                                                           jitter=args.color_jitter))
    loader, sampler, gen, steps_per_epoch = epoch_loader(dataset, args, dist)
    per_step = args.batch_size * dist.world_size
    max_step = steps_per_epoch * args.max_epoches

    model = build_cam_net_for_training(args.network, args.backbone, voc.spec.num_classes, args.weights,
                                       args.freeze, dropout=args.dropout)
    model.to(device)
    optimizer = build_optimizer(args.optimizer, unwrap(model).get_parameter_groups(), lr=args.lr,
                                weight_decay=args.wt_dec, max_step=max_step, momentum=args.momentum)
    scaler = grad_scaler(device, args.amp)
    start_epoch = 0
    last = out_prefix + "_last.pth"
    if args.resume and os.path.isfile(last):
        state = load_checkpoint(last, model, optimizer, scaler)
        start_epoch = int(state["epoch"]) + 1
        LOG.info("resumed from %s at epoch %d (step %d)", last, start_epoch, optimizer.global_step)
    net = dist.wrap(model)
    net.train()
    logger = StepLogger(out_prefix + "_scalars.jsonl" if dist.is_main else None, max_step, per_step,
                        args.log_every)
    gen_loss = torch.Generator(device=device)
    for epoch in range(start_epoch, args.max_epoches):
        gen_loss.manual_seed(begin_epoch(epoch, args, dist, sampler, gen))      # and PPC's pixel sampling
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.max_epoches}", disable=not dist.is_main,
                   dynamic_ncols=True, leave=False)
        for _, img1, label in bar:
            img1 = img1.to(device, non_blocking=True)
            label = label.to(device, non_blocking=True)
            img2 = F.interpolate(img1, size=(args.view2_size, args.view2_size), mode="bilinear",
                                 align_corners=True)
            with autocast(device, args.amp):
                out1 = net(img1)
                out2 = net(img2)
            out1, out2 = [o.float() for o in out1], [o.float() for o in out2]  # losses in fp32 under AMP
            losses = cam_losses(out1, out2, label, network=args.network, bg_threshold=args.bg_threshold,
                                view_size=args.view2_size, generator=gen_loss,
                                cls_only=epoch < args.cls_warmup_epochs)
            loss = losses["loss"]
            optimizer_step(loss, optimizer, scaler, f"step {optimizer.global_step}", losses)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            logger.step(optimizer.global_step, optimizer.param_groups[0]["lr"], losses)
        if dist.is_main:
            save_checkpoint(last, unwrap(model), optimizer, optimizer.global_step, vars(args), epoch=epoch,
                            scaler=scaler)
        dist.barrier()
    if dist.is_main:
        from wseg.models.checkpoint import save_state_dict

        save_state_dict(out_prefix + ".pth", unwrap(model), meta={"network": args.network,
                                                                 "backbone": args.backbone,
                                                                 "num_classes": voc.spec.num_classes})
        LOG.info("saved %s.pth", out_prefix)
    dist.barrier()
    dist.close()
    return {"weights": out_prefix + ".pth", "steps": max_step}
