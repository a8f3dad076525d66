"""Benchmark scripts/eval.py: one single-threshold CAM evaluation vs the 60-threshold ``--curve``.

Generates ``--num_images`` synthetic 500x375 predictions (CAM ``.npy`` dicts with 1-3 classes, smooth maps) and
palette ground-truth PNGs with 255 borders, then times ``scripts/eval.py --type npy --t 0.26`` and
``--curve`` (0.00..0.59, 60 thresholds) on the same files with the same ``--workers``, after one untimed pass
that warms the page cache. The published script re-reads every file per threshold (a curve costs 60
evaluations); here the curve is one pass, so the target ratio curve/single is <= 3x.

    python benchmarks/bench_eval.py --num_images 1000 --workers 2 [--keep]

Without ``--keep`` the data goes into a temporary folder removed afterwards; with ``--keep`` it is cached in
``~/.cache/wseg/bench_eval/<n>_<h>x<w>`` (or ``--data_dir``) and reused by later runs.
"""
import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from wseg.data.classes import VOC12  # noqa: E402
from wseg.io import save_cam_dict, save_mask_png  # noqa: E402
from wseg.pipeline import load_script  # noqa: E402


def load_eval_script():
    return load_script("scripts/eval.py")


def _smooth(rng, shape, cells=(6, 8)):
    """A smooth random map in [0, 1] (bilinear upsampling of a coarse grid), like a normalised CAM."""
    import cv2

    coarse = rng.random(cells).astype(np.float32)
    m = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    m -= m.min()
    return m / (m.max() + 1e-5)


def generate(root: str, n: int, h: int = 375, w: int = 500, seed: int = 0) -> str:
    """Write ``n`` CAM dicts + gt masks + ``list.txt`` under ``root`` (skipped when ``root/DONE`` exists)."""
    import cv2

    done = os.path.join(root, "DONE")
    if os.path.isfile(done):
        return root
    rng = np.random.default_rng(seed)
    cam_dir, gt_dir = os.path.join(root, "cams"), os.path.join(root, "gt")
    os.makedirs(cam_dir, exist_ok=True)
    os.makedirs(gt_dir, exist_ok=True)
    ids = []
    num_fg = VOC12.num_fg
    t0 = time.time()
    for i in range(n):
        image_id = f"synth_{i:06d}"
        keys = rng.choice(num_fg, int(rng.integers(1, 4)), replace=False)
        cams = {int(k): _smooth(rng, (h, w)) for k in keys}
        # gt: the CAM argmax at a random threshold, with 255 on the class boundaries (as VOC has)
        stack = np.stack([cams[int(k)] for k in keys])
        gt = np.where(stack.max(0) > rng.uniform(0.2, 0.5), keys[stack.argmax(0)] + 1, 0).astype(np.uint8)
        edge = cv2.morphologyEx(gt, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
        gt[edge] = 255
        save_cam_dict(os.path.join(cam_dir, image_id + ".npy"), cams)
        save_mask_png(os.path.join(gt_dir, image_id + ".png"), gt)
        ids.append(image_id)
        if (i + 1) % 200 == 0:
            print(f"  generated {i + 1}/{n} ({time.time() - t0:.0f}s)", file=sys.stderr)
    with open(os.path.join(root, "list.txt"), "w") as f:
        f.write("".join(f"{i}\n" for i in ids))
    open(done, "w").close()
    return root


def time_eval(mod, argv):
    args = mod.build_parser().parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        res = mod.run(args)
        sec = time.perf_counter() - t0
    return sec, res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_images", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="cache the generated data and reuse it next time")
    p.add_argument("--data_dir", default=None, help="where to generate/cache the data (implies --keep)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs of each mode (the fastest is reported)")
    p.add_argument("--t", type=float, default=0.26, help="threshold of the single evaluation")
    args = p.parse_args(argv)

    keep = args.keep or args.data_dir is not None
    if keep:
        root = args.data_dir or os.path.join(os.path.expanduser("~"), ".cache", "wseg", "bench_eval",
                                             f"{args.num_images}_375x500")
    else:
        root = tempfile.mkdtemp(prefix="wseg_bench_eval_")
    try:
        t0 = time.time()
        generate(root, args.num_images)
        gen = time.time() - t0
        mod = load_eval_script()
        out = tempfile.mkdtemp(prefix="wseg_bench_eval_out_")
        base = ["--list", os.path.join(root, "list.txt"), "--predict_dir", os.path.join(root, "cams"),
                "--gt_dir", os.path.join(root, "gt"), "--type", "npy", "--num_workers", str(args.workers),
                "--logfile", os.path.join(out, "evallog.txt"), "--comment", "bench", "--progress", "False"]
        time_eval(mod, base + ["--t", str(args.t)])  # warm the page cache, untimed
        single = min(time_eval(mod, base + ["--t", str(args.t)])[0] for _ in range(args.repeat))
        curve_runs = [time_eval(mod, base + ["--curve", "--out_dir", out]) for _ in range(args.repeat)]
        curve = min(s for s, _ in curve_runs)
        res = curve_runs[0][1]
        shutil.rmtree(out, ignore_errors=True)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    n = args.num_images
    nthr = len(res["curve"])
    ratio = curve / single
    print(f"\n{n} images 500x375, CAM dicts with 1-3 classes, {args.workers} workers, {os.cpu_count()} CPUs "
          f"(data {'cached in ' + root if keep else 'generated'} in {gen:.0f}s)\n")
    print("| evaluation | thresholds | seconds | images/s |")
    print("|---|---:|---:|---:|")
    print(f"| single (`--type npy --t {args.t}`) | 1 | {single:.2f} | {n / single:.1f} |")
    print(f"| curve (`--curve`, one pass) | {nthr} | {curve:.2f} | {n / curve:.1f} |")
    print(f"| published curve ({nthr} full evaluations, estimated {nthr} x single) | {nthr} | "
          f"{nthr * single:.1f} | {n / (nthr * single):.2f} |")
    print(f"\ncurve / single = **{ratio:.2f}x** (target <= 3x); best t = {res['best_threshold']:.2f}, "
          f"mIoU = {res['miou']:.2f}%")
    return 0 if ratio <= 3 else 1


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
