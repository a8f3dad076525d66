"""Write synthetic saliency maps for EPS / EPS+PPC (``--saliency_root``) from a dataset root's ground-truth masks.

One 8-bit grayscale PNG per image id, ``<out>/<id>.png``, the size of the image's mask (= the image), as the EPS
(PFAN) maps are distributed; the generator is :func:`wseg.data.saliency.synthetic_saliency` (soft edges, a fraction
``--miss_rate`` of the labelled objects missed, background blobs in a fraction ``--blob_rate`` of the images).
Deterministic per ``--seed`` and image id; finished maps are skipped; the folder records its settings
(``.make_saliency.json``), and a re-run with other settings into the same folder is refused.

Example: python scripts/make_saliency.py --voc12_root data/toy_voc --out data/toy_voc/SALImages
"""
from __future__ import annotations

import argparse
import os

from wseg import io
from wseg.data.saliency import BLOB_RATE, DEFAULT_DIR, EDGE_SIGMA, MISS_RATE, fg_bg_iou, write_saliency
from wseg.data.voc import VOCRoot, folder_ids
from wseg.engine.per_image import Failures, add_on_error_flag
from wseg.engine.runtime import LOG
from wseg.errors import WsegError
from wseg.parallel import imap_pool

SETTINGS_FILE = ".make_saliency.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True,
                   help="dataset root with ground-truth masks (SegmentationClass/ or SegmentationClassAug/)")
    p.add_argument("--out", default=None, help=f"output folder (default: <root>/{DEFAULT_DIR}, the published name)")
    p.add_argument("--list", default=None,
                   help="split name or list file of the ids to make maps for (default: every ground-truth mask)")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: the root's)")
    p.add_argument("--seed", type=int, default=0, help="same seed -> identical maps")
    p.add_argument("--miss_rate", type=float, default=MISS_RATE,
                   help="probability that a labelled object is not salient (exercises EPS's tau)")
    p.add_argument("--blob_rate", type=float, default=BLOB_RATE,
                   help="probability that an image gets salient blobs on its background (false positives)")
    p.add_argument("--edge_sigma", type=float, default=EDGE_SIGMA,
                   help="Gaussian edge softness as a fraction of the image diagonal")
    p.add_argument("--num_workers", type=int, default=1, help="processes (the maps do not depend on it)")
    add_on_error_flag(p)


def _job(item):
    return write_saliency(*item)


def run(args: argparse.Namespace) -> dict:
    for name in ("miss_rate", "blob_rate"):
        value = getattr(args, name)
        if not 0 <= value <= 1:
            raise WsegError(f"--{name} {value:g}: must be a probability in [0, 1]")
    if not 0 <= args.edge_sigma <= 0.1 or args.num_workers < 0 or not 0 <= args.seed < 2 ** 32:
        raise WsegError(f"--edge_sigma {args.edge_sigma:g} / --num_workers {args.num_workers} / --seed {args.seed}: "
                        "need 0 <= edge_sigma <= 0.1, no negative worker count and 0 <= seed < 2**32")
    voc = VOCRoot(args.voc12_root, args.classes)
    out = args.out or os.path.join(args.voc12_root, DEFAULT_DIR)
    if args.list:
        ids = voc.ids(args.list)
    else:
        ids = sorted({i for d in voc.layout.mask_dirs if os.path.isdir(d) for i in folder_ids(d, (".png",))})
        if not ids:
            raise WsegError(f"{args.voc12_root}: no ground-truth masks to make saliency maps from; add "
                            "SegmentationClass/ (or pass --list with ids that have masks)")
    masks = {i: voc.mask_path(i) for i in ids}
    lacking = [i for i, m in masks.items() if m is None]
    if lacking:
        raise WsegError(f"{args.voc12_root}: {len(lacking)} of {len(ids)} images have no ground-truth mask (first: "
                        f"{lacking[0]}); synthetic saliency needs masks: pass a --list of images that have them")
    settings = {"generator": "wseg.data.saliency.synthetic_saliency", "seed": int(args.seed),
                "miss_rate": float(args.miss_rate), "blob_rate": float(args.blob_rate),
                "edge_sigma": float(args.edge_sigma)}
    io.record_folder_settings(out, settings, SETTINGS_FILE, "--out", suffixes=(".png",))
    todo = io.pending_ids(ids, [(out, ".png")])
    LOG.info("make_saliency: %d images, %d to do -> %s", len(ids), len(todo), out)
    failures = Failures("make_saliency", args.on_error)
    items = [(masks[i], os.path.join(out, i + ".png"), int(args.seed), i, float(args.miss_rate),
              float(args.blob_rate), float(args.edge_sigma)) for i in todo]
    for index, error in imap_pool(_job, items, num_workers=args.num_workers, desc="saliency", progress=False):
        if error is not None:
            failures.record(todo[index], error)
    failures.check(len(todo))
    done = {i: m for i, m in masks.items() if os.path.isfile(os.path.join(out, i + ".png"))}
    score = fg_bg_iou(out, done)
    LOG.info("make_saliency: the maps alone as a foreground/background mask (> 0.5): bg IoU %.1f, fg IoU %.1f, "
             "mIoU (2 classes) %.1f", score["bg_iou"], score["fg_iou"], score["miou"])
    return {"saliency_root": out, "done": len(ids), "written": len(todo), **score}
