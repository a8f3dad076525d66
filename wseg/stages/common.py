"""Set-up shared by the training stages: flags every trainer has, the run's log and seeds, the dataset root."""
from __future__ import annotations

import argparse
import os
from typing import List, Optional, Tuple

from wseg.cli import add_bool_flag
from wseg.data.voc import VOCRoot
from wseg.engine.plans import seeded
from wseg.engine.runtime import LOG, Dist, setup_logging
from wseg.errors import WsegError


def add_training_arguments(p: argparse.ArgumentParser, session_default: str, lr: float = 0.01,
                           epochs: int = 8) -> None:
    """The flags of the epoch-based published trainers (PSA / SEAM / PPC ``train_*.py``)."""
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True,
                   help="dataset root (VOC layout; --data_root is the same flag)")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt)")
    p.add_argument("--train_list", required=True)
    p.add_argument("--session_name", default=session_default,
                   help="output prefix (path allowed): <name>.pth, <name>.log, <name>_last.pth")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_epoches", type=int, default=epochs)
    p.add_argument("--max_iters", type=int, default=None,
                   help="train this many iterations instead of --max_epoches epochs (the poly schedule spans them; "
                        "EPS trains 20000); the last epoch may be partial")
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--wt_dec", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=None,
                   help="SGD momentum; default reproduces the published PolyOptimizer, which passes wt_dec into "
                        "SGD's momentum slot (momentum 5e-4, i.e. none)")
    p.add_argument("--head_lr_mult", type=float, default=10.0,
                   help="lr multiplier of the new heads' weights (their biases get twice it); published 10. A "
                        "reduced-width backbone feeds its head fewer, smaller features, so its head learns slower "
                        "at the same multiplier (see README, stand-in backbones)")
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast + gradient scaling on GPU")
    p.add_argument("--seed", type=int, default=0)
    add_bool_flag(p, "--resume", "continue from <session_name>_last.pth when present (default on)", default=True)
    p.add_argument("--log_every", type=int, default=10, help="steps between scalar-log lines")


def begin_training(args: argparse.Namespace, stage: str) -> Tuple[Dist, VOCRoot, List[str]]:
    """torchrun-aware process group, ``<session_name>.log`` (main process), the run's flags in the log, seeded
    RNGs (offset by rank), and the dataset root with the ``--train_list`` ids."""
    dist = Dist(args.device)
    os.makedirs(os.path.dirname(os.path.abspath(args.session_name)), exist_ok=True)
    setup_logging(args.session_name + ".log", dist.is_main)
    LOG.info("%s %s", stage, vars(args))
    seeded(args.seed + dist.rank)
    voc = VOCRoot(args.voc12_root, args.classes)
    return dist, voc, voc.ids(args.train_list)


def check_schedule_flags(args: argparse.Namespace) -> None:
    """One-line errors for the training flags every stage shares (before anything is written), instead of a
    traceback from the data loader, the optimiser or ``random.randint`` later."""
    if args.batch_size < 1 or args.max_epoches < 1:
        raise WsegError(f"--batch_size {args.batch_size} / --max_epoches {args.max_epoches}: both must be at least 1")
    if getattr(args, "max_iters", None) is not None and args.max_iters < 1:
        raise WsegError(f"--max_iters {args.max_iters}: must be at least 1 (or leave it out for --max_epoches)")
    if not (0 < args.lr < float("inf") and 0 <= args.wt_dec < 1):
        raise WsegError(f"--lr {args.lr:g} / --wt_dec {args.wt_dec:g}: need a finite lr > 0 and 0 <= wt_dec < 1 "
                        "(published 0.01 and 5e-4)")
    if getattr(args, "momentum", None) is not None and not 0 <= args.momentum < 1:
        raise WsegError(f"--momentum {args.momentum:g}: must lie in [0, 1) (default: the published quirk, 5e-4)")
    if not os.path.basename(args.session_name):
        raise WsegError(f"--session_name {args.session_name!r}: needs a file name prefix (e.g. runs/resnet38_contrast)")
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: must be >= 0 (0 = load in the main process)")
    if not 0 <= args.seed < 2 ** 32:
        raise WsegError(f"--seed {args.seed}: must lie in [0, 2**32)")
    resize = getattr(args, "resize_long", None)
    if resize and not 0 < resize[0] <= resize[1]:
        raise WsegError(f"--resize_long {resize[0]} {resize[1]}: need 0 < MIN <= MAX")


def train_session(args: argparse.Namespace, dist: Dist, model, optimizer, plan, step, meta: dict,
                  resume_keys, desc: str, final_meta: Optional[dict] = None, prior=None,
                  final_cls_loss=None) -> dict:
    """The epoch-based published trainers on the one engine: ``max_epoches`` epochs (or ``max_iters`` iterations)
    of ``plan`` with the poly
    schedule, ``<session_name>_last.pth`` (resume), ``_scalars.jsonl``, and the final plain state dict
    ``<session_name>.pth`` in the published layout (``meta`` + ``final_meta`` saved with it). ``prior``:
    ``(loss key, the label prior's loss)`` for the did-it-learn check of the trainer (``final_cls_loss(model)``: the
    loss it compares, default the training loss)."""
    from wseg.engine.optim import PolyLR
    from wseg.engine.trainer import Trainer
    from wseg.models.checkpoint import save_state_dict

    prefix = args.session_name
    max_iters = getattr(args, "max_iters", None) or plan.steps_per_epoch * args.max_epoches
    trainer = Trainer(model=model, optimizer=optimizer, schedule=PolyLR(max_iters), plan=plan, step=step, dist=dist,
                      max_iters=max_iters, checkpoint=prefix + "_last.pth", settings=vars(args),
                      resume_keys=resume_keys, resume=args.resume, log_every=args.log_every, amp=args.amp,
                      scalars=prefix + "_scalars.jsonl", meta=meta, images_per_step=args.batch_size * dist.world_size,
                      desc=desc, prior=prior, final_cls_loss=final_cls_loss)
    result = trainer.run()
    if dist.is_main:
        save_state_dict(prefix + ".pth", model, meta={**meta, **(final_meta or {})})
        LOG.info("saved %s.pth", prefix)
    dist.barrier()
    dist.close()
    return {"weights": prefix + ".pth", "steps": max_iters, **result}
