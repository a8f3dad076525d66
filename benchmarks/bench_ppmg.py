"""PPMG throughput: images/s of ``wseg.stages.ppmg.run`` (CVS + per-class CRFs with kernels built once per image,
palette PNGs) against the published Eli-YiLi/PMM ``refine_cam.py`` loop ported here (``get_CoV`` dict loop, a fresh
dense CRF per class, ``cv2.imread``/``cv2.imwrite``, ``multiprocessing.Pool`` with ``idx % ps`` partitions).

Synthetic VOC-size data: random images with coloured blobs and 3 present classes per image (Gaussian-blob CAMs in
[0, 1]). Every case writes to a fresh folder and times the whole run (pool start-up included); the two are run
alternately ``--repeat`` times and the best of each is kept (the CPUs may be shared); their outputs are checked to be
identical. Prints a Markdown table.

    python benchmarks/bench_ppmg.py [--num_images 6] [--size 500x375] [--workers 1 2] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from multiprocessing import Pool

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def make_data(root: str, n: int, w: int, h: int, n_cls: int = 3) -> list:
    from wseg import io
    from wseg.data.classes import get_spec

    num_fg = get_spec("voc12").num_classes - 1       # the root has no classes.txt: VOC classes
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    ids = [f"bench_{i:04d}" for i in range(n)]
    for i in ids:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cams = {}
        for k in rng.choice(num_fg, n_cls, replace=False):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(30, h / 3)
            c = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) + 0.1 * rng.random((h, w))
            blob = c > 0.5
            img[blob] = (img[blob] // 4 + rng.integers(0, 190, 3)).astype(np.uint8)
            cams[int(k)] = (c / c.max()).astype(np.float32)
        io.save_image(os.path.join(root, "JPEGImages", i + ".jpg"), img)
        io.save_cam_dict(os.path.join(root, "cams", i + ".npy"), cams)
    os.makedirs(os.path.join(root, "ImageSets", "Segmentation"), exist_ok=True)
    with open(os.path.join(root, "ImageSets", "Segmentation", "train.txt"), "w") as f:
        f.write("".join(i + "\n" for i in ids))
    return ids


# ------------------------------------------------------------------ the published refine_cam.py loop, ported

def _pub_crf(img, probs, t=10):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    n, (h, w) = probs.shape[0], img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(3, compat=10)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.copy(img), compat=10)
    return np.array(d.inference(t)).reshape((n, h, w))


def _pub_cov(heat, scale, t):
    out = {}
    for k, v in heat.items():
        sel = v[v > t]
        out[k] = 0 if sel.size == 0 else sel.std() / (sel + 1e-8).mean() * scale
    return out


def _pub_ppmg(img, cams, alpha, thresh, cov):
    fgs, keys = [np.ones(img.shape[:2]).astype(np.uint8)], [0]
    imps = [fgs[0]]
    for k, v in cams.items():
        v = np.array([v])
        s = np.copy(v)
        s[s < thresh] = 0
        s = s ** (1 - cov[k])
        bg = np.power(1 - np.max(s, axis=0, keepdims=True), alpha)
        q = _pub_crf(img, np.concatenate((bg, s), 0))[1]
        fg = np.zeros_like(q)
        fg[q > 0.5] = 1
        fgs.append(fg)
        imps.append(v[0] / (1 + (v[0] * fg).sum()))
        keys.append(k + 1)
        fgs[0] = fgs[0] * (fg == 0)
        imps[0] = fgs[0]
    index = np.argmax(np.stack(fgs, 0) * np.stack(imps, 0), 0)
    return {k: index == i for i, k in enumerate(keys)}


def _pub_work(pid, ps, ids, root, out, alpha=11, thresh=0.05, scale=0.3):
    import cv2

    for idx, i in enumerate(ids):
        if idx % ps != pid:
            continue
        img = cv2.imread(os.path.join(root, "JPEGImages", i + ".jpg"))
        cams = np.load(os.path.join(root, "cams", i + ".npy"), allow_pickle=True).item()
        masks = _pub_ppmg(img, cams, alpha, thresh, _pub_cov(cams, scale, thresh))
        lab = np.zeros(img.shape[:2], np.uint8)
        for k, m in masks.items():
            lab[m] = k
        cv2.imwrite(os.path.join(out, i + ".png"), lab)


def run_published(root: str, ids: list, out: str, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    t0 = time.perf_counter()
    with Pool(workers) as pool:
        jobs = [pool.apply_async(_pub_work, (p, workers, ids, root, out)) for p in range(workers)]
        for j in jobs:
            j.get()
    return len(ids) / (time.perf_counter() - t0)


def run_wseg(root: str, ids: list, out: str, workers: int) -> float:
    from wseg.cli import stage_parser
    from wseg.stages import ppmg

    shutil.rmtree(out, ignore_errors=True)
    args = stage_parser(ppmg)().parse_args([
        "--voc12_root", root, "--infer_list", os.path.join(root, "ImageSets", "Segmentation", "train.txt"),
        "--cam_dir", os.path.join(root, "cams"), "--out_dir", out, "--num_workers", str(workers),
        "--log", os.path.join(out + "_logs", "log.txt")])
    t0 = time.perf_counter()
    res = ppmg.run(args)
    seconds = time.perf_counter() - t0
    assert res["processed"] == len(ids)
    return len(ids) / seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_images", type=int, default=6)
    p.add_argument("--size", default="500x375", help="WxH")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=2, help="alternate runs per case; the best is reported")
    args = p.parse_args()
    import logging

    from wseg import io

    w, h = (int(x) for x in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ppmg_") as tmp:
        ids = make_data(tmp, args.num_images, w, h)
        for n in args.workers:
            pub_out, our_out = os.path.join(tmp, f"pub_{n}"), os.path.join(tmp, f"wseg_{n}")
            pub = ours = 0.0
            for _ in range(max(1, args.repeat)):
                pub = max(pub, run_published(tmp, ids, pub_out, n))
                ours = max(ours, run_wseg(tmp, ids, our_out, n))
                logging.getLogger("wseg").handlers.clear()
            same = all(np.array_equal(io.load_mask_png(os.path.join(pub_out, i + ".png")),
                                      io.load_mask_png(os.path.join(our_out, i + ".png"))) for i in ids)
            rows.append((n, pub, ours, same))
            print(f"workers={n}: published {pub:.2f} img/s, wseg {ours:.2f} img/s, identical={same}",
                  file=sys.stderr, flush=True)
    print(f"\nPPMG, {args.num_images} synthetic {w}x{h} images, 3 classes each (3 binary CRFs, 10 iterations), "
          f"{os.cpu_count()} CPU cores, best of {max(1, args.repeat)}\n")
    print("| workers | published loop img/s | wseg img/s | ratio | identical masks |")
    print("|---:|---:|---:|---:|---|")
    for n, pub, ours, same in rows:
        print(f"| {n} | {pub:.2f} | {ours:.2f} | {ours / pub:.2f}x | {'yes' if same else 'NO'} |")
    return 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
