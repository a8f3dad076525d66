"""Write the synthetic VOC-format dataset (toy VOC) used by the demo and the tests (the generator is wseg/data/synthetic.py).

Example: python scripts/make_toy_voc.py --out data/toy_voc --num_train 240 --num_val 60 --size 128x96
Re-running with the same settings skips finished images; the output is byte-identical for a seed.
"""
from __future__ import annotations

import argparse

from wseg.data import synthetic
from wseg.errors import WsegError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="dataset root to write (JPEGImages/, Annotations/, ...)")
    p.add_argument("--num_train", type=int, default=240, help="images in ImageSets/Segmentation/train.txt")
    p.add_argument("--num_val", type=int, default=60, help="images in ImageSets/Segmentation/val.txt")
    p.add_argument("--num_classes", type=int, default=6, help="number of foreground (object) classes")
    p.add_argument("--size", default="%dx%d" % synthetic.DEFAULT_SIZE, help="image size W or WxH in pixels")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (same seed -> identical files)")
    p.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    p.add_argument("--difficulty", default="normal", choices=sorted(synthetic.DIFFICULTY),
                   help="clutter preset: easy (little clutter, big heads: very short CPU trainings), normal, hard")
    p.add_argument("--max_objects", type=int, default=4, help="at most this many objects per image")
    p.add_argument("--ignore_width", type=int, default=2, help="width in pixels of the 255 band on object borders")
    p.add_argument("--preview", default=None, help="also write a PNG grid image | mask | overlay here")
    p.add_argument("--preview_n", type=int, default=8, help="images in the preview grid")


def run(args: argparse.Namespace) -> dict:
    if args.preview and not args.preview.lower().endswith((".png", ".jpg", ".jpeg")):
        raise WsegError(f"--preview {args.preview}: name a .png or .jpg picture file")
    if args.preview_n < 1 or args.workers < 0:
        raise WsegError(f"--preview_n {args.preview_n} / --workers {args.workers}: need at least 1 preview image and "
                        "no negative worker count")
    summary = synthetic.make_toy_voc(args.out, num_train=args.num_train, num_val=args.num_val,
                                     num_classes=args.num_classes, image_size=args.size, seed=args.seed,
                                     workers=args.workers, difficulty=args.difficulty, max_objects=args.max_objects,
                                     ignore_width=args.ignore_width, log=print)
    rate = summary["images_per_s"]
    print(f"toy VOC at {summary['root']}: {summary['num_train']} train + {summary['num_val']} val images, "
          f"{summary['num_classes']} classes, {summary['size'][0]}x{summary['size'][1]}; "
          f"generated {summary['generated']}, skipped {summary['skipped']} (finished before)"
          + (f", {rate} images/s" if rate else ""))
    if args.preview:
        synthetic.save_preview(args.out, args.preview, n=args.preview_n)
        print(f"preview: {args.preview}")
    return summary
