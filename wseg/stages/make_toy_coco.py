"""Write the synthetic MS COCO-format dataset (toy COCO: the official download's layout, images from the toy VOC
generator) and convert it with coco14/make_coco_masks.py into a root every stage reads (see docs/coco.md).

Example: python scripts/make_toy_coco.py --out data/toy_coco --num_train 40 --num_val 10
writes data/toy_coco/{annotations/instances_{train,val}2014.json, train2014/, val2014/} and data/toy_coco/voc81
(``--classes coco14_91``: voc91). Re-running with the same settings skips finished work.
"""
from __future__ import annotations

import argparse
import os

from wseg.cli import add_bool_flag
from wseg.data import coco, synthetic, synthetic_coco
from wseg.errors import WsegError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="toy COCO root to write (annotations/, train2014/, val2014/)")
    p.add_argument("--num_train", type=int, default=40, help="images in train2014")
    p.add_argument("--num_val", type=int, default=10, help="images in val2014")
    p.add_argument("--num_classes", type=int, default=6, help="toy classes, mapped onto COCO categories (1..80)")
    p.add_argument("--size", default="%dx%d" % synthetic.DEFAULT_SIZE, help="image size W or WxH in pixels")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (same seed -> identical files)")
    p.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    p.add_argument("--difficulty", default="normal", choices=sorted(synthetic.DIFFICULTY), help="clutter preset")
    p.add_argument("--crowd_prob", type=float, default=0.15, help="share of objects annotated as crowds (RLE)")
    add_bool_flag(p, "--convert", "also convert into a VOC-style root with coco14/make_coco_masks.py", default=True)
    p.add_argument("--classes", default="coco14", choices=("coco14", "coco14_91"),
                   help="labels of the converted root: contiguous 0..80 or raw category ids 0..90")
    p.add_argument("--voc_out", default=None, help="converted root (default <out>/voc81 or <out>/voc91)")
    p.add_argument("--crowd", default="ignore", choices=coco.CROWD_MODES, help="crowd regions: 255 or their class")
    add_bool_flag(p, "--progress", "show progress bars on stderr", default=False)


def run(args: argparse.Namespace) -> dict:
    if args.workers < 0:
        raise WsegError(f"--workers {args.workers}: needs 0 or more")
    summary = synthetic_coco.make_toy_coco(args.out, args.num_train, args.num_val, args.num_classes, args.size,
                                           args.seed, args.workers, args.crowd_prob, args.difficulty, args.progress)
    print(f"toy COCO at {args.out}: {args.num_train} train2014 + {args.num_val} val2014 images, "
          f"{args.num_classes} classes as COCO category ids {summary['category_ids']}; "
          + (f"generated {summary['generated']} ({summary['annotations']} annotations, {summary['crowd']} crowd)"
             if summary["generated"] else "complete before, nothing generated"))
    if args.convert:
        out = args.voc_out or synthetic_coco.default_voc_out(args.out, args.classes)
        res = coco.convert_coco(args.out, out, classes=args.classes, crowd=args.crowd,
                                num_workers=max(1, args.workers), progress=args.progress)
        print(f"converted: {out} ({res['classes']} classes; "
              + ", ".join(f"{k} {v}" for k, v in res["splits"].items())
              + f" images; wrote {res['written']} masks, skipped {res['skipped']})")
        summary["voc_root"] = os.path.abspath(out)
        summary["convert"] = res
    return summary
