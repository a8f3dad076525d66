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
    p.add_argument("--preset", choices=sorted(synthetic.PRESETS), default=None,
                   help="a dataset that differs from the demo's in a way that matters (where the class cue sits, "
                        "image sizes, class count, clutter): " + "; ".join(
                            f"{k}: {v}" for k, v in sorted(synthetic.PRESETS.items())) + ". Explicit flags override it")
    p.add_argument("--num_classes", type=int, default=None, help="number of foreground (object) classes (default 6)")
    p.add_argument("--size", default=None, help="image size W or WxH in pixels (default %dx%d)" % synthetic.DEFAULT_SIZE)
    p.add_argument("--long_side", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="instead of --size: each image's long side drawn from MIN..MAX pixels")
    p.add_argument("--aspect", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="with --long_side: short/long side ratio range (portrait in 30%% of the images)")
    p.add_argument("--cue", choices=["part", "whole"], default=None,
                   help="part (default): classes share bodies and differ by a small head; whole: each class has its "
                        "own body and all share one head")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (same seed -> identical files)")
    p.add_argument("--workers", type=int, default=1, help="processes (output does not depend on it)")
    p.add_argument("--difficulty", default=None, choices=sorted(synthetic.DIFFICULTY),
                   help="clutter preset: easy (little clutter, big heads: very short CPU trainings), normal, hard")
    p.add_argument("--max_objects", type=int, default=4, help="at most this many objects per image")
    p.add_argument("--ignore_width", type=int, default=2, help="width in pixels of the 255 band on object borders")
    p.add_argument("--preview", default=None, help="also write a PNG grid image | mask | overlay here")
    p.add_argument("--preview_n", type=int, default=8, help="images in the preview grid")


def _same(value):
    """A preset value and a flag value in one form (tuples from the preset, lists from the flags)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def run(args: argparse.Namespace) -> dict:
    if args.preview and not args.preview.lower().endswith((".png", ".jpg", ".jpeg")):
        raise WsegError(f"--preview {args.preview}: name a .png or .jpg picture file")
    if args.preview_n < 1 or args.workers < 0:
        raise WsegError(f"--preview_n {args.preview_n} / --workers {args.workers}: need at least 1 preview image and "
                        "no negative worker count")
    opts = dict(synthetic.PRESETS[args.preset]) if args.preset else {}
    for key, flag in (("num_classes", "num_classes"), ("image_size", "size"), ("difficulty", "difficulty"),
                      ("long_side", "long_side"), ("aspect", "aspect"), ("cue", "cue")):
        value = getattr(args, flag)
        if value is None:
            continue
        if key in opts and _same(opts[key]) != _same(value):  # say so: a silent override changes the dataset
            print(f"make_toy_voc: --{flag} {value} overrides preset {args.preset}'s {key} {opts[key]}")
        opts[key] = value
    opts.setdefault("num_classes", 6)
    opts.setdefault("difficulty", "normal")
    summary = synthetic.make_toy_voc(args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
                                     workers=args.workers, max_objects=args.max_objects,
                                     ignore_width=args.ignore_width, log=print, **opts)
    rate = summary["images_per_s"]
    size = "various sizes" if opts.get("long_side") else f"{summary['size'][0]}x{summary['size'][1]}"
    print(f"toy VOC at {summary['root']}: {summary['num_train']} train + {summary['num_val']} val images, "
          f"{summary['num_classes']} classes, {size}; "
          f"generated {summary['generated']}, skipped {summary['skipped']} (finished before)"
          + (f", {rate} images/s" if rate else ""))
    if args.preview:
        synthetic.save_preview(args.out, args.preview, n=args.preview_n)
        print(f"preview: {args.preview}")
    return summary
