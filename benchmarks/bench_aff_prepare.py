"""aff_prepare throughput: images/s of the low+high-alpha dense CRF (two CRFs and two PNGs per image).

Synthetic VOC-format data (``wseg.data.synthetic.make_toy_voc``) with CAMs made by blurring the ground truth
(present classes only, as CAM inference writes them). Each (size, CRF mode, workers) case runs
``wseg.stages.aff_prepare.run`` on a fresh output folder and times the whole stage (pool start-up included).
Prints a Markdown table.

    python benchmarks/bench_aff_prepare.py [--num_images 48] [--sizes 128x96 320x240] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_data(root: str, n: int, size: str, num_classes: int = 6) -> None:
    import cv2
    import numpy as np

    from wseg import io
    from wseg.data.synthetic import make_toy_voc
    from wseg.data.voc import VOCRoot

    make_toy_voc(root, num_train=n, num_val=0, num_classes=num_classes, image_size=size, seed=0, workers=2)
    voc = VOCRoot(root)
    for i in voc.ids("train"):
        gt = io.load_mask_png(voc.mask_path(i))
        cams = {}
        for c in np.unique(gt):
            if c in (0, 255):
                continue
            cam = cv2.GaussianBlur((gt == c).astype(np.float32), (0, 0), 0.04 * max(gt.shape))
            cams[int(c) - 1] = cam / cam.max()
        io.save_cam_dict(os.path.join(root, "cams", i + ".npy"), cams)


def run_case(root: str, out: str, workers: int, mode: str) -> float:
    from wseg.cli import stage_parser
    from wseg.stages import aff_prepare

    shutil.rmtree(out, ignore_errors=True)
    args = stage_parser(aff_prepare)().parse_args([
        "--voc12_root", root, "--infer_list", os.path.join(root, "ImageSets", "Segmentation", "train.txt"),
        "--cam_dir", os.path.join(root, "cams"), "--out_crf", out, "--num_workers", str(workers),
        "--crf_mode", mode, "--log", os.path.join(out + "_logs", "log.txt")])
    t0 = time.perf_counter()
    res = aff_prepare.run(args)
    seconds = time.perf_counter() - t0
    assert res["processed"] == res["done"]
    return res["done"] / seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_images", type=int, default=48)
    p.add_argument("--sizes", nargs="+", default=["128x96", "320x240"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--modes", nargs="+", default=["scores", "labels"], choices=["scores", "labels"])
    args = p.parse_args()
    import logging

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_aff_prepare_") as tmp:
        for size in args.sizes:
            root = os.path.join(tmp, size)
            make_data(root, args.num_images, size)
            for mode in args.modes:
                for w in args.workers:
                    ips = run_case(root, os.path.join(tmp, f"out_{size}_{mode}_{w}"), w, mode)
                    logging.getLogger("wseg").handlers.clear()
                    rows.append((size, mode, w, ips))
                    print(f"{size} {mode} workers={w}: {ips:.1f} img/s", file=sys.stderr, flush=True)
    print(f"\naff_prepare, {args.num_images} synthetic images, 6 classes, 2 CRFs (alpha 4 and 24, 10 iterations) "
          f"+ 2 PNGs per image, {os.cpu_count()} CPU cores\n")
    print("| image size | CRF mode | workers | images/s | speed-up |")
    print("|---|---|---:|---:|---:|")
    base = {}
    for size, mode, w, ips in rows:
        base.setdefault((size, mode), ips)
        print(f"| {size} | {mode} | {w} | {ips:.1f} | {ips / base[(size, mode)]:.2f}x |")
    return 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
