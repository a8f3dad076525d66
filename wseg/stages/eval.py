"""Evaluate CAMs (``--type npy``) or label maps (``--type png``) against ground-truth masks: per-class IoU, mIoU,
precision, recall and the published FP/FN shares, with the numbers of SEAM's ``evaluation.py`` / PPC's ``eval.py``.

``--curve`` sweeps the background threshold (default 0.00..0.59 by 0.01, as published) in one pass over the
files, prints the best threshold, and writes the curve as CSV and PNG next to ``--predict_dir`` (or into
``--out_dir``). Results are appended to ``--logfile`` in the published format.

    python scripts/eval.py --list voc12/train.txt --predict_dir out_cam --gt_dir VOC2012/SegmentationClass \\
        --type npy --curve --comment "ppc train cams"

``--data_root ROOT`` (alias ``--voc12_root``) takes the ground truth, the classes and split names (``--list val``)
from a dataset root in any layout :class:`wseg.data.voc.VOCRoot` reads (VOC, COCO converted by
``coco14/make_coco_masks.py``, ToCo/EPS, PMM, RS+EPM). On COCO's class lists the means skip classes absent from the
ground truth, as the published COCO evaluations do (``--absent``; VOC keeps the published mean over all classes),
and the per-class table prints in columns (``--table``).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from wseg import metrics
from wseg.cli import add_bool_flag
from wseg.errors import WsegError
from wseg.evaluation import (ABSENT_HELP, append_log, format_table, loglist, output_paths, resolve_absent,
                             resolve_class_names, write_curve_csv, write_curve_png)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--list", default="./VOC2012/ImageSets/Segmentation/train.txt", type=str,
                   help="image list: one id per line, or published 'JPEGImages/id.jpg SegmentationClass/id.png' lines")
    p.add_argument("--predict_dir", default="./out_rw", type=str, help="folder of <id>.npy CAM dicts or <id>.png maps")
    p.add_argument("--gt_dir", default=None, type=str,
                   help="folder of <id>.png masks (default: the --data_root's masks, else ./VOC2012/SegmentationClass)")
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", default=None, type=str,
                   help="dataset root (any layout of docs/coco.md): ground truth, classes and split names for --list")
    p.add_argument("--logfile", default="./evallog.txt", type=str,
                   help="results are appended here as published ('' to skip)")
    p.add_argument("--comment", default="", type=str, help="line written with the results into --logfile")
    p.add_argument("--type", default="png", choices=["npy", "png"], type=str,
                   help="npy: CAM dicts {class index without bg: HxW}; png: palette label maps (255 = ignore)")
    p.add_argument("--t", default=None, type=float,
                   help="background threshold for --type npy (bg wins where every CAM is <= t); needed without "
                        "--curve")
    add_bool_flag(p, "--curve", "sweep the background threshold (--start..--end by --step) and report the best")
    p.add_argument("--start", default=0.0, type=float, help="first curve threshold (default 0.00)")
    p.add_argument("--end", default=0.59, type=float, help="last curve threshold (default 0.59)")
    p.add_argument("--step", default=0.01, type=float, help="curve step (default 0.01: 60 thresholds)")
    p.add_argument("--classes", default=None, type=str,
                   help="voc12, coco14, coco14_91, or a classes.txt path (one name per line, background first); "
                        "default: the --data_root's classes, else the classes.txt of --gt_dir's dataset root when "
                        "there is one, else voc12")
    p.add_argument("--absent", default="auto", choices=("auto",) + metrics.ABSENT_MODES,
                   help="classes absent from the ground truth: zero = " + ABSENT_HELP["zero"] + "; skip = "
                        + ABSENT_HELP["skip"] + "; nan = " + ABSENT_HELP["nan"] + "; auto (default) = skip for the "
                        "COCO class lists, zero otherwise")
    p.add_argument("--table", default="auto", choices=("auto", "long", "grid"),
                   help="per-class table: one class per line (long), two columns (grid), auto = grid above 30 "
                        "classes")
    p.add_argument("--num_classes", default=None, type=int,
                   help="number of classes incl. background (instead of --classes; names are generic)")
    p.add_argument("--num_workers", default=min(8, os.cpu_count() or 1), type=int,
                   help="processes reading files (default: CPU count, at most 8)")
    p.add_argument("--out_dir", default=None, type=str,
                   help="folder for the curve CSV/PNG (default: the folder holding --predict_dir)")
    p.add_argument("--curve_csv", default=None, type=str,
                   help="curve CSV path (default <out_dir>/<predict_dir name>_curve.csv)")
    p.add_argument("--curve_png", default=None, type=str,
                   help="curve plot path (default <out_dir>/<predict_dir name>_curve.png)")
    add_bool_flag(p, "--progress", "show a progress bar on stderr", default=True)


def check(args) -> None:
    """One-line errors for flag values before anything is read (the pipeline calls it before its first stage)."""
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: needs 0 (in-process) or more")
    if args.type == "png" and args.curve:
        raise WsegError("--curve sweeps the CAM background threshold; it needs --type npy")
    if args.type == "npy" and not args.curve and args.t is None:
        raise WsegError("--type npy needs a background threshold --t (or --curve to find the best one)")


def run(args) -> dict:
    """Evaluate; returns ``{"miou", "fp", "fn", "precision", "recall", "pixel_acc"}`` in percent (as printed and
    logged), ``"iou"`` ({class: percent}), ``"threshold"`` (the --t used or the best curve threshold, None for
    png), ``"best_threshold"``/``"curve"`` with --curve, ``"curve_csv"``/``"curve_png"`` paths, ``"num_images"``."""
    from wseg.data.voc import VOCRoot, read_list

    check(args)
    voc = VOCRoot(args.voc12_root, args.classes) if args.voc12_root else None
    if args.gt_dir is None and voc is None:
        args.gt_dir = "./VOC2012/SegmentationClass"              # the published default
    classes = args.classes
    if voc is not None and args.num_classes is None:
        names = list(voc.spec.class_names)
    else:
        root_classes = os.path.join(os.path.dirname(os.path.abspath(args.gt_dir or voc.root)), "classes.txt")
        if classes is None and args.num_classes is None and os.path.isfile(root_classes):
            classes = root_classes              # the dataset root's own classes (e.g. a synthetic or custom set)
        names = resolve_class_names(classes, args.num_classes)
    num_classes = len(names)
    absent = resolve_absent(args.absent, names)
    if args.curve:
        thresholds = metrics.curve_thresholds(args.start, args.end, args.step)
    elif args.type == "npy":
        thresholds = np.array([args.t], np.float64)
    else:
        thresholds = None
    ids = voc.ids(args.list) if voc is not None else read_list(args.list)
    if args.gt_dir is not None:
        gt, gt_dirs = args.gt_dir, [args.gt_dir]
    else:                                       # the root's masks, wherever its layout keeps them
        fallback = voc.layout.mask_dirs[0] if voc.layout.mask_dirs else os.path.join(voc.root, "SegmentationClass")
        gt = [voc.mask_path(i) or os.path.join(fallback, i + ".png") for i in ids]
        gt_dirs = sorted({os.path.dirname(p) for p in gt})
    paths = output_paths(args, gt_dirs)
    confs = metrics.evaluate_list(ids, args.predict_dir, gt, num_classes, args.type, thresholds,
                                  num_workers=args.num_workers, progress=args.progress)
    rows = [metrics.scores(c, absent=absent) for c in confs]

    result: dict = {"num_images": len(ids), "num_classes": num_classes, "threshold": None, "absent": absent}
    if args.curve:
        n = len(thresholds)
        for j, (t, r) in enumerate(zip(thresholds, rows)):
            print("%d/%d background score: %.3f\tmIoU: %.3f%%" % (j, n, t, r["miou"] * 100))
        best = int(np.argmax(np.nan_to_num([r["miou"] for r in rows], nan=-1.0)))
        s = rows[best]
        print(f"\nscores at the best threshold {thresholds[best]:.3f}:")
        print(format_table(names, s, args.table))
        print(f"best background threshold: {thresholds[best]:.3f}  mIoU: {s['miou'] * 100:.3f}%")
        write_curve_csv(paths["csv"], thresholds, rows)
        write_curve_png(paths["png"], thresholds, rows, best, title=args.comment)
        print(f"curve: {paths['csv']}, {paths['png']}")
        result.update(threshold=float(thresholds[best]), best_threshold=float(thresholds[best]),
                      curve=[{"t": float(t), "miou": r["miou"] * 100, "fp": r["fp"] * 100, "fn": r["fn"] * 100}
                             for t, r in zip(thresholds, rows)],
                      curve_csv=paths["csv"], curve_png=paths["png"])
        log = {"mIoU": [r["miou"] * 100 for r in rows], "best_t": float(thresholds[best]),
               "best_mIoU": s["miou"] * 100}
    else:
        s = rows[0]
        print(format_table(names, s, args.table))
        if args.type == "npy":
            result["threshold"] = float(args.t)
        log = loglist(names, s)
    result.update(miou=s["miou"] * 100, fp=s["fp"] * 100, fn=s["fn"] * 100,
                  precision=s["mean_precision"] * 100, recall=s["mean_recall"] * 100,
                  pixel_acc=s["pixel_acc"] * 100,
                  iou={n: float(s["iou"][i] * 100) for i, n in enumerate(names)},
                  num_present=s["num_present"], left_out=[n for i, n in enumerate(names) if not s["present"][i]])
    if paths["logfile"]:
        append_log(paths["logfile"], log, args.comment)
        result["logfile"] = paths["logfile"]
    return result
