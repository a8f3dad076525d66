"""MS COCO 2014 -> semantic segmentation ground truth in a layout every wseg stage reads (see docs/coco.md).

From the official download (``<coco_root>/annotations/instances_{train,val}2014.json`` and the images in
``<coco_root>/{train,val}2014``):

    python coco14/make_coco_masks.py --coco_root data/coco --out data/coco/voc81

writes palette PNG masks (overlapping instances resolved by area as coco2voc does: the smaller on top; crowd regions
255 unless ``--crowd class``), ``cls_labels.npy``, ``classes.txt`` and the split lists, with the images linked in:
``<out>/{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}`` (``--out_layout voc``) or RS+EPM's
``<out>/{train,validation}/{image,mask,xml}`` (``--out_layout rsepm``). ``--classes coco14`` gives contiguous labels
0..80 (ToCo, EPS, RS+EPM), ``coco14_91`` the raw category ids 0..90 (coco2voc, PMM / WSSS_MMSeg).

``--src_root ROOT`` converts an existing root of any layout instead (81 <-> 91 ids, to / from RS+EPM's layout):

    python coco14/make_coco_masks.py --src_root data/coco/voc81 --classes coco14_91 --out data/coco/voc91

Re-running skips finished images; a bad file or flag ends in one ``error:`` line.
"""
from __future__ import annotations

import argparse
import os

from wseg.cli import add_bool_flag
from wseg.data import coco
from wseg.errors import WsegError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coco_root", default=None,
                   help="COCO download: annotations/instances_{train,val}2014.json and {train,val}2014/ images")
    p.add_argument("--ann_dir", default=None, help="folder of the instances_*.json (default <coco_root>/annotations)")
    p.add_argument("--src_root", default=None,
                   help="instead of --coco_root: an existing dataset root (any layout of docs/coco.md) to convert")
    p.add_argument("--src_classes", default=None, help="classes of --src_root (default: its classes.txt / layout)")
    p.add_argument("--out", required=True, help="root to write")
    p.add_argument("--classes", default=None, choices=("coco14", "coco14_91"),
                   help="labels: coco14 = contiguous 0..80 (default from json), coco14_91 = raw category ids 0..90 "
                        "(default with --src_root: the source's classes)")
    p.add_argument("--out_layout", default="voc", choices=coco.OUT_LAYOUTS,
                   help="voc: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/; rsepm: {train,validation}/"
                        "{image,mask,xml}")
    p.add_argument("--splits", nargs="+", default=list(coco.SPLITS), help="splits to convert (default train val)")
    p.add_argument("--crowd", default="ignore", choices=coco.CROWD_MODES,
                   help="crowd annotations: ignore = 255 (default), class = their class (coco2voc)")
    p.add_argument("--images", default="symlink", choices=coco.IMAGE_MODES,
                   help="how images enter --out: relative symlinks (default), copies, or none (masks only)")
    add_bool_flag(p, "--keep_empty", "also list images without annotations (all-background masks); coco2voc and "
                                     "the published lists leave them out")
    p.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1), help="processes writing masks")
    add_bool_flag(p, "--progress", "show a progress bar on stderr", default=True)


def run(args: argparse.Namespace) -> dict:
    if (args.coco_root is None) == (args.src_root is None):
        raise WsegError("pass exactly one of --coco_root (convert the COCO json) and --src_root (convert a root)")
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: needs 0 (in-process) or more")
    if args.coco_root is not None:
        if not os.path.isdir(args.coco_root):
            raise WsegError(f"{args.coco_root}: COCO root folder not found; pass the folder holding annotations/")
        res = coco.convert_coco(args.coco_root, args.out, args.splits, args.classes or "coco14", args.crowd,
                                args.images, args.out_layout, args.keep_empty, args.ann_dir, args.num_workers,
                                args.progress)
        extra = (f"; {res['crowd_annotations']} crowd annotations ({args.crowd}), {res['empty_images_left_out']} "
                 "images without annotations left out")
    else:
        res = coco.convert_root(args.src_root, args.out, args.classes, args.out_layout, args.splits, args.images,
                                args.src_classes, args.num_workers, args.progress)
        extra = f" (from the {res['from_layout']} layout)"
    rate = f", {res['masks_per_s']} masks/s" if res["masks_per_s"] else ""
    print(f"{res['layout']} root at {res['out']}: {res['classes']} classes, "
          + ", ".join(f"{k} {v}" for k, v in res["splits"].items())
          + f" images; wrote {res['written']}, skipped {res['skipped']} (finished before){rate}{extra}")
    return res
