"""Set-up shared by the training stages."""
from __future__ import annotations

import argparse
import os
from typing import List, Tuple

from wseg.data.transforms import seeded
from wseg.data.voc import VOCRoot
from wseg.engine import LOG, Dist, setup_logging


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
