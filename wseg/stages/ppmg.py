"""PMM pseudo masks (Pseudo-mask Matters, ICCV 2021): coefficient-of-variation smoothing (CVS) of the CAMs, then
proportional pseudo-mask generation (PPMG): one binary dense CRF per class, foreground ``Q_k > 0.5``, each pixel
labelled with the foreground class of the largest proportion ``v_k / (1 + sum(v_k * fg_k))`` (see wseg/pmm.py).

Published ``pipeline/refine_cam.py`` (Eli-YiLi/PMM) flags: ``--out_cam`` (here also ``--cam_dir``), ``--out_crf``
(``--out_dir``), ``--crf_threshs`` (``--alpha``), ``--cam_thresh``, ``--cv_scale``, ``--num_workers``.
``--alpha`` defaults to 11, the value ``run.py`` uses for the final masks; 24 is only the published argparse
default. The published CRF sees the image in BGR order (``cv2.imread``); that is kept unless ``--rgb``.

Input: CAM dicts ``<id>.npy`` = ``{class index without background: HxW float32 in [0, 1]}`` as written by
``scripts/contrast_infer.py --out_cam``. Output: one uint8 palette PNG per image in dataset class indices
(0 = background, k = class k; no 255). The folder records its settings in ``.ppmg.json``; a re-run with other
settings into the same folder is refused. Finished images are skipped (resume); under ``torchrun`` each rank takes
every world-size-th pending image.
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Optional, Tuple

from wseg import io
from wseg.cli import add_bool_flag
from wseg.crf import CRF_ITERS, MAX_CRF_ITERS
from wseg.data.voc import VOCRoot
from wseg.engine.per_image import Failures, add_on_error_flag, pending_shard, rank_world
from wseg.engine.runtime import LOG, setup_logging
from wseg.errors import WsegError
from wseg.io import CAM_STAGE, require_cams
from wseg.parallel import imap_pool
from wseg.pmm import CAM_THRESH, CV_SCALE, PPMG_ALPHA, PUBLISHED_CLI_ALPHA, ppmg

SETTINGS_FILE = ".ppmg.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True,
                   help="dataset root (VOC layout: JPEGImages/)")
    p.add_argument("--infer_list", required=True, help="split list (ids, or published 'JPEGImages/x.jpg ...' lines)")
    p.add_argument("--cam_dir", "--out_cam", dest="cam_dir", required=True,
                   help="CAM .npy dicts written by " + CAM_STAGE + " (published name --out_cam)")
    p.add_argument("--out_dir", "--out_crf", dest="out_dir", required=True,
                   help="folder of the PPMG pseudo-mask PNGs (published name --out_crf)")
    p.add_argument("--alpha", "--crf_threshs", dest="alpha", type=float, default=PPMG_ALPHA,
                   help=f"background power of each class CRF (default {PPMG_ALPHA}: the paper's final masks, run.py; "
                        f"{PUBLISHED_CLI_ALPHA} is the published argparse default; published name --crf_threshs)")
    p.add_argument("--cam_thresh", type=float, default=CAM_THRESH,
                   help=f"CVS: CAM values below this are 0 and excluded from the statistics (default {CAM_THRESH})")
    p.add_argument("--cv_scale", type=float, default=CV_SCALE,
                   help=f"CVS: coefficient of variation scale, exponent 1 - cv * scale (default {CV_SCALE})")
    p.add_argument("--crf_iters", type=int, default=CRF_ITERS, help="mean-field iterations (published 10)")
    add_bool_flag(p, "--rgb", "give the CRF the image in RGB order (default: BGR, as the published cv2.imread)")
    p.add_argument("--num_workers", type=int, default=2, help="CRF worker processes (0 = in this process)")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt)")
    p.add_argument("--log", default=None, help="log file (default: <out_dir>/ppmg.log)")
    add_on_error_flag(p)


def check(args: argparse.Namespace) -> None:
    """One-line errors for bad flags, before anything is read or written (the pipeline calls it before its first
    stage)."""
    def finite(x: float) -> bool:
        return math.isfinite(float(x))

    if not (finite(args.alpha) and 0 < args.alpha <= 1000):
        raise WsegError(f"--alpha {args.alpha:g}: need 0 < alpha <= 1000 (paper 11, published CLI default 24)")
    if not (finite(args.cam_thresh) and 0 <= args.cam_thresh < 1):
        raise WsegError(f"--cam_thresh {args.cam_thresh:g}: need 0 <= t < 1 for CAMs in [0, 1] (published 0.05)")
    if not (finite(args.cv_scale) and args.cv_scale >= 0):
        raise WsegError(f"--cv_scale {args.cv_scale:g}: need a finite value >= 0 (published 0.3; 0 = no smoothing)")
    if not 1 <= args.crf_iters <= MAX_CRF_ITERS:
        raise WsegError(f"--crf_iters {args.crf_iters}: need 1 to {MAX_CRF_ITERS} mean-field iterations (published 10)")
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: must be >= 0 (0 = CRFs in this process)")
    if os.path.abspath(args.out_dir) == os.path.abspath(args.cam_dir):
        raise WsegError(f"--out_dir {args.out_dir}: is the CAM folder (--cam_dir); write the pseudo masks to "
                        "another folder")


def _job(item: Tuple) -> Optional[str]:
    """One image: load image and CAMs, CVS + PPMG, write the PNG. Module level, so process pools can pickle it.
    Returns None, or the image's one-line error (the stage's skip list)."""
    image_path, cam_path, out_path, num_fg, alpha, cam_thresh, cv_scale, iters, rgb = item
    try:
        img = io.load_image(image_path)
        cams = io.load_cam_dict(cam_path, num_fg, img.shape[:2])
        io.save_mask_png(out_path, ppmg(img, cams, alpha, cam_thresh, cv_scale, iters, rgb))
    except WsegError as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> dict:
    check(args)
    voc = VOCRoot(args.voc12_root, args.classes)
    ids = voc.ids(args.infer_list)
    settings = {"alpha": float(args.alpha), "cam_thresh": float(args.cam_thresh), "cv_scale": float(args.cv_scale),
                "crf_iters": int(args.crf_iters), "rgb": bool(args.rgb), "classes": list(voc.spec.class_names),
                "cam_dir": os.path.abspath(args.cam_dir)}
    todo = pending_shard(ids, [(args.out_dir, ".png")])
    if todo:
        require_cams(args.cam_dir, todo, "ppmg")
    io.record_folder_settings(args.out_dir, settings, SETTINGS_FILE, "--out_dir", suffixes=(".png",))
    setup_logging(args.log or os.path.join(args.out_dir, "ppmg.log"), main_process=rank_world()[0] == 0)
    LOG.info("ppmg: %d images, %d to do in this process; alpha %g, cam_thresh %g, cv_scale %g, %s -> %s", len(ids),
             len(todo), args.alpha, args.cam_thresh, args.cv_scale, "RGB" if args.rgb else "BGR (published)",
             args.out_dir)
    failures = Failures("ppmg", args.on_error)
    if todo:
        items = [(voc.image_path(i), os.path.join(args.cam_dir, i + ".npy"), os.path.join(args.out_dir, i + ".png"),
                  voc.spec.num_classes - 1, float(args.alpha), float(args.cam_thresh), float(args.cv_scale),
                  int(args.crf_iters), bool(args.rgb)) for i in todo]
        for index, error in imap_pool(_job, items, num_workers=args.num_workers, desc="ppmg"):
            if error is not None:
                failures.record(todo[index], error)
    failures.check(len(todo))
    return {"out_dir": args.out_dir, "done": len(ids), "processed": len(todo), "skipped": len(failures.items)}
