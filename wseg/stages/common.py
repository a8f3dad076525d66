"""Set-up shared by the training stages."""
from __future__ import annotations

import argparse
import os
from typing import List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from wseg.data.transforms import seeded
from wseg.data.voc import VOCRoot
from wseg.engine import LOG, Dist, setup_logging
from wseg.errors import WsegError


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


def epoch_loader(dataset: Dataset, args: argparse.Namespace, dist: Dist
                 ) -> Tuple[DataLoader, Optional[DistributedSampler], torch.Generator, int]:
    """The training loader of the epoch-based stages: ``--batch_size`` images per process, whole batches only,
    shuffled by a generator seeded with ``--seed`` (one process) or by a seeded :class:`DistributedSampler`
    (torchrun). A ``--train_list`` shorter than one batch over all processes is a one-line error. Returns the
    loader, the sampler (``None`` without DDP; call its ``set_epoch``), the generator (re-seed it per epoch) and
    the optimiser steps per epoch."""
    per_step = args.batch_size * dist.world_size
    if len(dataset) < per_step:
        raise WsegError(f"{args.train_list}: {len(dataset)} images, fewer than one batch of {per_step}; "
                        "lower --batch_size or use a longer list")
    sampler = DistributedSampler(dataset, shuffle=True, seed=args.seed, drop_last=True) if dist.enabled else None
    gen = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=args.num_workers, drop_last=True, generator=gen,
                        pin_memory=dist.device.type == "cuda")
    return loader, sampler, gen, len(dataset) // per_step


def begin_epoch(epoch: int, args: argparse.Namespace, dist: Dist, sampler: Optional[DistributedSampler],
                gen: torch.Generator) -> int:
    """Re-seed every random source for ``epoch`` (data order, augmentation, dropout), so that a run resumed at an
    epoch boundary equals an uninterrupted one. Returns the epoch's seed, for a stage's own generators."""
    if sampler is not None:
        sampler.set_epoch(epoch)
    epoch_seed = args.seed * 7919 + epoch * 104729 + dist.rank
    seeded(epoch_seed)
    gen.manual_seed(args.seed + epoch)
    return epoch_seed


def check_schedule_flags(args: argparse.Namespace) -> None:
    """One-line errors for the training flags every stage shares (before anything is written), instead of a
    traceback from the data loader, the optimiser or ``random.randint`` later."""
    if args.batch_size < 1 or args.max_epoches < 1:
        raise WsegError(f"--batch_size {args.batch_size} / --max_epoches {args.max_epoches}: both must be at least 1")
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
