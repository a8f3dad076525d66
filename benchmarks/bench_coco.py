"""Benchmark the COCO data side: json -> masks conversion (masks written per second) and evaluation over COCO's
81 classes vs VOC's 21 (time ratio).

1. Conversion: a COCO-like ``instances_val2014.json`` of ``--num_images`` 640x480 images with about 7 instances each
   (COCO 2014 averages 7.3), star-shaped polygons of 16-48 vertices, overlaps and ~2% crowd RLE annotations, is
   converted by ``coco14/make_coco_masks.py`` (``--images none``: masks, labels and lists only) with each of
   ``--workers`` (default 2), into a fresh folder each time.
2. Evaluation: ``--eval_images`` pairs of 500x375 ground truth / prediction PNGs and CAM dicts (1-3 classes) with
   labels drawn from 21 and from 81 classes; ``scripts/eval.py --type png`` and ``--type npy --curve`` (60 thresholds)
   are timed on each (one untimed warm-up pass per set), and the 81 / 21 time ratio printed.

    python benchmarks/bench_coco.py --num_images 200 --eval_images 200 --workers 2
"""
import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from wseg.data.classes import COCO14, COCO_CATEGORY_IDS  # noqa: E402
from wseg.data.synthetic_coco import coco_categories, rle_counts  # noqa: E402
from wseg.io import save_cam_dict, save_mask_png  # noqa: E402


def star_polygon(rng, h, w):
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = rng.uniform(15, 160)
    n = int(rng.integers(16, 49))
    th = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(0.5, 1.0, n)
    xs = np.clip(cx + rad * np.cos(th), 0, w - 1)
    ys = np.clip(cy + rad * np.sin(th), 0, h - 1)
    return np.round(np.stack([xs, ys], 1).ravel(), 2).tolist(), float(np.pi * r * r * 0.55)


def make_json(root, n, h=480, w=640, seed=0):
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(1, n + 1):
        images.append({"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "height": h, "width": w})
        for _ in range(int(rng.poisson(7.3)) + 1):
            cat = int(rng.choice(COCO_CATEGORY_IDS))
            if rng.random() < 0.02:
                m = np.zeros((h, w), bool)
                y0, x0 = int(rng.integers(0, h - 60)), int(rng.integers(0, w - 60))
                m[y0:y0 + int(rng.integers(20, 60)), x0:x0 + int(rng.integers(20, 60))] = True
                seg, area, crowd = {"counts": rle_counts(m), "size": [h, w]}, float(m.sum()), 1
            else:
                poly, area = star_polygon(rng, h, w)
                seg, crowd = [poly], 0
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": seg,
                         "area": area, "bbox": [0, 0, 1, 1], "iscrowd": crowd})
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", "instances_val2014.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": coco_categories()}, f)
    return len(anns)


def bench_masks(root, workers):
    from wseg.data.coco import convert_coco

    out = os.path.join(root, f"out_{workers}")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = convert_coco(root, out, splits=["val"], images="none", num_workers=workers, progress=False)
    total = time.perf_counter() - t0
    return res, total


def make_eval_set(root, n, num_classes, h=375, w=500, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    dirs = {k: os.path.join(root, k) for k in ("gt", "png", "npy")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    ids = []
    for i in range(n):
        iid = f"img_{i:05d}"
        coarse = rng.integers(0, num_classes, (6, 8)).astype(np.uint8)
        gt = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST)
        gt[rng.random((h, w)) < 0.02] = 255
        pred = cv2.resize(np.where(rng.random((6, 8)) < 0.7, coarse, rng.integers(0, num_classes, (6, 8))).astype(
            np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        keys = rng.choice(num_classes - 1, int(rng.integers(1, 4)), replace=False)
        cams = {int(k): cv2.resize(rng.random((6, 8)).astype(np.float32), (w, h)) for k in keys}
        save_mask_png(os.path.join(dirs["gt"], iid + ".png"), gt)
        save_mask_png(os.path.join(dirs["png"], iid + ".png"), pred)
        save_cam_dict(os.path.join(dirs["npy"], iid + ".npy"), cams)
        ids.append(iid)
    with open(os.path.join(root, "list.txt"), "w") as f:
        f.write("".join(i + "\n" for i in ids))
    return dirs


def run_eval(root, dirs, num_classes, typ, workers, curve):
    from wseg.cli import stage_parser
    from wseg.stages import eval as stage

    argv = ["--list", os.path.join(root, "list.txt"), "--predict_dir", dirs[typ], "--gt_dir", dirs["gt"],
            "--type", typ, "--num_classes", str(num_classes), "--logfile", "", "--progress", "False",
            "--num_workers", str(workers), "--absent", "zero", "--out_dir", os.path.join(root, "curve")]
    argv += ["--curve"] if curve else []
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        stage.run(stage_parser(stage)().parse_args(argv))
        return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_images", type=int, default=200, help="images in the COCO-like json")
    p.add_argument("--eval_images", type=int, default=200, help="image pairs per evaluation set")
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="process counts to time (default 2)")
    p.add_argument("--keep", default=None, help="folder to keep the data in (default: a temporary one)")
    args = p.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="wseg_bench_coco_")
    try:
        t0 = time.perf_counter()
        n_ann = make_json(root, args.num_images)
        print(f"COCO-like json: {args.num_images} images 640x480, {n_ann} annotations "
              f"({time.perf_counter() - t0:.1f} s to generate)")
        print("\n| workers | masks | seconds (conversion) | masks/s | seconds (incl. json load) |")
        print("|---:|---:|---:|---:|---:|")
        for wk in args.workers:
            res, total = bench_masks(root, wk)
            print(f"| {wk} | {res['written']} | {res['written'] / res['masks_per_s']:.2f} | **{res['masks_per_s']}** "
                  f"| {total:.2f} |")
        wk = max(args.workers)
        print(f"\nevaluation, {args.eval_images} images 500x375, {wk} workers (seconds, best of 2 after a warm-up)\n")
        print("| input | 21 classes | 81 classes | 81 / 21 |\n|---|---:|---:|---:|")
        sets = {}
        for c in (21, COCO14.num_classes):
            sets[c] = make_eval_set(os.path.join(root, f"eval{c}"), args.eval_images, c)
        for typ, curve, label in (("png", False, "label PNGs"), ("npy", True, "CAM dicts, --curve (60 t)")):
            times = {}
            for c in (21, COCO14.num_classes):
                r = os.path.join(root, f"eval{c}")
                run_eval(r, sets[c], c, typ, wk, curve)
                times[c] = min(run_eval(r, sets[c], c, typ, wk, curve) for _ in range(2))
            print(f"| {label} | {times[21]:.2f} | {times[81]:.2f} | **{times[81] / times[21]:.2f}x** |")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
