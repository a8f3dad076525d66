"""Pretrain a backbone on the ImageNet stand-in corpus (:mod:`wseg.data.standin`): the role ImageNet pretraining plays
in every published WSSS recipe, for the reduced backbones of the demo and the tests (no ImageNet here).

The backbone plus global average pooling and a linear classifier ``fc`` learn the corpus' classes: a class is an
(outline, texture, hue) motif, and ``fc`` is factorised over the three (one softmax each, summed cross-entropies; the
class is the arg-max of each), which learns far faster than one softmax over every combination. Live BatchNorm,
poly AdamW (or SGD) with a linear warm-up, on the one engine (resumable, torchrun-aware). The
output ``--out`` is a plain state dict of the *backbone alone*, in the backbone's published key layout (what the
ImageNet files hold once their classifier is dropped), so it loads through the same ``--weights`` /
``backbone_weights`` path as ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params`` or ``resnet50-19c8e357.pth``; its metadata
records the held-out top-1 of the corpus and the run's settings.

    python scripts/pretrain_backbone.py --backbone resnet38_small --out weights/standin/resnet38_small.pth
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Dict, Sequence, Tuple

import torch
from torch import nn

from wseg.cli import add_bool_flag
from wseg.engine.optim import OPTIMIZERS
from wseg.errors import WsegError

FACTOR_NAMES = ("outline", "texture", "hue")
RESUME_KEYS = ("backbone", "image_size", "batch_size", "max_iters", "optimizer", "lr", "seed", "corpus_seed")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", required=True, help="registered backbone name, e.g. resnet38_small")
    p.add_argument("--out", required=True, help="backbone weights to write (.pth)")
    p.add_argument("--image_size", type=int, default=64, help="corpus image side in pixels")
    p.add_argument("--corpus_seed", type=int, default=0, help="seed of the class definitions and images")
    p.add_argument("--object_scale", type=float, nargs=2, default=[0.35, 0.75], metavar=("MIN", "MAX"),
                   help="side of the class's object relative to the image side")
    p.add_argument("--clutter_scale", type=float, nargs=2, default=[0.1, 0.3], metavar=("MIN", "MAX"),
                   help="side of each clutter motif relative to the image side")
    p.add_argument("--init", default=None,
                   help="start from these backbone weights (a stand-in file, e.g. to continue at another image "
                        "size); the classifier starts fresh")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--max_iters", type=int, default=3000)
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adamw", help="adamw, or sgd with momentum 0.9")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--wt_dec", type=float, default=1e-4)
    p.add_argument("--warmup_iters", type=int, default=200)
    p.add_argument("--eval_images", type=int, default=2000, help="held-out images for the top-1 (0: none)")
    p.add_argument("--num_workers", type=int, default=1)
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast + gradient scaling on GPU")
    p.add_argument("--seed", type=int, default=0, help="data order and initialisation")
    add_bool_flag(p, "--resume", "continue from <out>.last.pth when present (default on)", default=True)
    p.add_argument("--log_every", type=int, default=50)


class Classifier(nn.Module):
    """Backbone -> global average pooling of the last level -> ``fc``, whose outputs are split into one logit
    vector per class factor."""

    def __init__(self, backbone: nn.Module, factors: Sequence[int]):
        super().__init__()
        self.backbone, self.factors = backbone, tuple(int(f) for f in factors)
        self.fc = nn.Linear(backbone.out_channels, sum(self.factors))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.backbone(x)
        return torch.split(self.fc(feats[self.backbone.levels[-1]].mean((2, 3))), self.factors, 1)


@torch.no_grad()
def heldout_accuracy(model: nn.Module, corpus, device: torch.device, batch_size: int = 128) -> Dict[str, float]:
    """Held-out accuracies (percent): ``top1`` (every factor right: the class) and one per factor."""
    from torch.utils.data import DataLoader

    was = model.training
    model.eval()
    hits = torch.zeros(len(model.factors) + 1)
    total = 0
    for x, y in DataLoader(corpus, batch_size=batch_size, num_workers=0):
        pred = torch.stack([o.argmax(1).cpu() for o in model(x.to(device))], 1)
        ok = pred == y
        hits[:-1] += ok.sum(0)
        hits[-1] += ok.all(1).sum()
        total += len(y)
    model.train(was)
    acc = (100.0 * hits / max(1, total)).tolist()
    return {"top1": acc[-1], **{f"{name}_acc": a for name, a in zip(FACTOR_NAMES, acc[:-1])}}


def _check(args: argparse.Namespace) -> None:
    if args.image_size < 16 or args.batch_size < 1 or args.max_iters < 1:
        raise WsegError(f"--image_size {args.image_size} / --batch_size {args.batch_size} / --max_iters "
                        f"{args.max_iters}: need images of 16 px or more and positive batch and iteration counts")
    if not (0 < args.lr < 10 and 0 <= args.wt_dec < 1 and 0 <= args.warmup_iters < args.max_iters):
        raise WsegError(f"--lr {args.lr:g} / --wt_dec {args.wt_dec:g} / --warmup_iters {args.warmup_iters}: need "
                        "0 < lr < 10, 0 <= wt_dec < 1 and fewer warm-up iterations than --max_iters")
    for flag in ("object_scale", "clutter_scale"):
        lo, hi = getattr(args, flag)
        if not 0 < lo <= hi <= 1.5:
            raise WsegError(f"--{flag} {lo:g} {hi:g}: need 0 < MIN <= MAX <= 1.5 (relative to the image side)")
    if args.init and not os.path.isfile(args.init):
        raise WsegError(f"--init {args.init}: no such file; name a backbone weights file (.pth) written by "
                        "pretrain_backbone.py")
    if not args.out.endswith((".pth", ".pt")):
        raise WsegError(f"--out {args.out}: name a .pth file")


def run(args: argparse.Namespace) -> dict:
    from wseg.data.standin import StandInConfig, StandInCorpus
    from wseg.engine.optim import PolyLR, build_optimizer
    from wseg.engine.plans import StepPlan, seeded
    from wseg.engine.runtime import LOG, Dist, setup_logging
    from wseg.engine.trainer import Trainer
    from wseg.models.backbones import build_backbone
    from wseg.models.checkpoint import load_weights, save_state_dict

    _check(args)
    dist = Dist(args.device)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    stem = os.path.splitext(args.out)[0]
    setup_logging(stem + ".log", dist.is_main)
    LOG.info("pretrain_backbone %s", vars(args))
    cfg = StandInConfig(size=args.image_size, seed=args.corpus_seed, scale=tuple(args.object_scale),
                        clutter_scale=tuple(args.clutter_scale))
    train_set = StandInCorpus(cfg, "train", length=args.max_iters * args.batch_size)
    seeded(args.seed)
    backbone = build_backbone(args.backbone, frozen=(), freeze_bn=False)
    if args.init:
        load_weights(backbone, args.init)
    model = Classifier(backbone, cfg.factors).to(dist.device)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = build_optimizer(args.optimizer, [{"params": decay, "lr": args.lr, "weight_decay": args.wt_dec},
                                                 {"params": no_decay, "lr": args.lr, "weight_decay": 0.0}],
                                args.lr, args.wt_dec, momentum=0.9)
    # the corpus draws each image from its index: no augmentation to re-seed
    plan = StepPlan(train_set, None, args.batch_size, args.seed, args.num_workers, dist)

    def step(net, batch, ctx):
        x, y = batch
        with ctx.autocast():
            logits = net(x)
        parts = [nn.functional.cross_entropy(o.float(), y[:, k]) for k, o in enumerate(logits)]
        ok = torch.stack([o.argmax(1) == y[:, k] for k, o in enumerate(logits)], 1)
        return {"loss": sum(parts), **{f"loss_{n}": p.detach() for n, p in zip(FACTOR_NAMES, parts)},
                "top1": ok.all(1).float().mean().detach() * 100}

    meta = {"network": "standin_classifier", "backbone": args.backbone}
    trainer = Trainer(model=model, optimizer=optimizer,
                      schedule=PolyLR(args.max_iters, warmup_iters=args.warmup_iters, warmup_ratio=0.1),
                      plan=plan, step=step, dist=dist, max_iters=args.max_iters, checkpoint=stem + ".last.pth",
                      settings=vars(args), resume_keys=RESUME_KEYS, resume=args.resume, ckpt_every=500,
                      log_every=args.log_every, amp=args.amp, scalars=stem + "_scalars.jsonl", meta=meta,
                      images_per_step=args.batch_size * dist.world_size, desc="pretrain",
                      prior=("loss", sum(math.log(f) for f in cfg.factors)))
    result = trainer.run()
    acc: Dict[str, float] = {}
    if args.eval_images and dist.is_main:
        acc = heldout_accuracy(model, StandInCorpus(cfg, "heldout", length=args.eval_images), dist.device)
        LOG.info("held-out top-1 %.2f%% (%d images, %d classes, chance %.3f%%); per factor: %s", acc["top1"],
                 args.eval_images, cfg.num_classes, 100.0 / cfg.num_classes,
                 ", ".join(f"{n} {acc[n + '_acc']:.1f}%" for n in FACTOR_NAMES))
    if dist.is_main:
        save_state_dict(args.out, model.backbone, meta={
            "backbone": args.backbone, "standin": {**acc, "eval_images": args.eval_images,
                                                   "num_classes": cfg.num_classes, "image_size": args.image_size,
                                                   "iters": result["iters"], "batch_size": args.batch_size,
                                                   "corpus_seed": args.corpus_seed,
                                                   "object_scale": list(args.object_scale),
                                                   "init": os.path.basename(args.init) if args.init else None,
                                                   "seconds": result["seconds"]}})
        LOG.info("saved %s", args.out)
    dist.barrier()
    dist.close()
    return {"weights": args.out, "heldout": acc, "iters": result["iters"], "seconds": result["seconds"],
            "last_losses": result["last_losses"], "learned": result.get("learned")}
