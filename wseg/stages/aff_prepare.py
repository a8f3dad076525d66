"""AffinityNet label preparation (stage 2a): low- and high-alpha dense-CRF label maps of the CAMs.

For each image, the background score ``(1 - max_k cam_k)^alpha`` is stacked before the CAMs of the present classes
and refined by the dense CRF with the published parameters (PSA ``tool/imutils.crf_inference``: Gaussian
``sxy 3, compat 3``, bilateral ``sxy 80, srgb 13, compat 10``, 10 iterations), once with a low alpha (background
over-estimated, so its foreground is confident) and once with a high alpha (background under-estimated, so its
background is confident). ``--crf_mode scores`` (default) is the PSA/SEAM "CRF with alpha" on the scores;
``--crf_mode labels`` is PPC's ``aff_prepare.py`` (CRF on the argmax label map with ``gt_prob`` 0.7).

Artifacts (instead of the published 21xHxW float ``.npy`` stacks, ~15 MB per VOC image): one uint8 palette PNG per
image and alpha, holding the CRF argmax in dataset class indices (0 = background, k = class k; no 255, every pixel
is labelled). ``scripts/aff_train.py`` combines the two (:func:`wseg.affinity.confident_labels`): confident
foreground where ``la`` says foreground, confident background where ``ha`` says background, the rest ignored (255).

Folders: ``--out_crf ROOT`` writes ``ROOT/crf_la`` and ``ROOT/crf_ha``; or name them with ``--la_crf_dir`` /
``--ha_crf_dir``. Each folder records its settings in ``.aff_prepare.json``; re-running with other settings into
the same folder is refused (stale labels would mix). Finished images are skipped, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, Optional, Tuple

import numpy as np

from wseg import io
from wseg.cam import background_power, cam_to_label
from wseg.crf import (CRF_ITERS, LABEL_GT_PROB, LOW_ALPHA, MAX_CRF_ITERS, SEAM_HIGH_ALPHA, crf_label_refine,
                      crf_with_alpha)
from wseg.data.affinity_dataset import PREPARE_SETTINGS as SETTINGS_FILE
from wseg.data.voc import VOCRoot
from wseg.engine.per_image import Failures, add_on_error_flag, pending_shard
from wseg.engine.runtime import LOG, setup_logging
from wseg.errors import WsegError
from wseg.io import CAM_STAGE, require_cams
from wseg.parallel import imap_pool

LA_SUBDIR, HA_SUBDIR = "crf_la", "crf_ha"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True,
                   help="dataset root (VOC layout: JPEGImages/)")
    p.add_argument("--infer_list", required=True, help="split list (ids, or published 'JPEGImages/x.jpg ...' lines)")
    p.add_argument("--cam_dir", required=True, help="CAM .npy dicts written by " + CAM_STAGE)
    p.add_argument("--out_crf", default=None, help="output root: writes <out_crf>/crf_la and <out_crf>/crf_ha")
    p.add_argument("--la_crf_dir", default=None, help="low-alpha label folder (instead of --out_crf)")
    p.add_argument("--ha_crf_dir", default=None, help="high-alpha label folder (instead of --out_crf)")
    p.add_argument("--alphas", type=float, nargs="+", default=[LOW_ALPHA, SEAM_HIGH_ALPHA], metavar="ALPHA",
                   help=f"LOW HIGH background powers (default {LOW_ALPHA:g} {SEAM_HIGH_ALPHA}: SEAM/PPC; PSA uses 4 "
                        "32); one value writes only the --la_crf_dir folder: CRF pseudo masks with one alpha "
                        "(EPS+PPC's pseudo_label_gen: 8 with --crf_iters 5)")
    p.add_argument("--crf_mode", choices=["scores", "labels"], default="scores",
                   help="scores: PSA/SEAM CRF with alpha on the scores (default); labels: PPC's CRF on the argmax")
    p.add_argument("--crf_iters", type=int, default=CRF_ITERS, help="mean-field iterations (published 10)")
    p.add_argument("--gt_prob", type=float, default=LABEL_GT_PROB, help="--crf_mode labels: unary confidence (0.7)")
    p.add_argument("--num_workers", type=int, default=2, help="CRF worker processes")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt)")
    p.add_argument("--log", default=None, help="log file (default: <out root>/aff_prepare.log)")
    add_on_error_flag(p)


def resolve_dirs(args: argparse.Namespace) -> Tuple[str, Optional[str]]:
    """``(la_dir, ha_dir)`` from ``--out_crf`` or ``--la_crf_dir``/``--ha_crf_dir``; ``ha_dir`` is None with one
    alpha."""
    if len(args.alphas) == 1:
        if args.ha_crf_dir:
            raise WsegError("--ha_crf_dir: one --alphas value writes only --la_crf_dir (or <out_crf>/crf_la)")
        if args.la_crf_dir:
            return args.la_crf_dir, None
        if not args.out_crf:
            raise WsegError("nothing to write: pass --la_crf_dir DIR (or --out_crf ROOT) with one --alphas value")
        return os.path.join(args.out_crf, LA_SUBDIR), None
    if args.la_crf_dir or args.ha_crf_dir:
        if not (args.la_crf_dir and args.ha_crf_dir):
            raise WsegError("--la_crf_dir/--ha_crf_dir: pass both folders (or only --out_crf ROOT)")
        if os.path.abspath(args.la_crf_dir) == os.path.abspath(args.ha_crf_dir):
            raise WsegError(f"--la_crf_dir and --ha_crf_dir are the same folder ({args.la_crf_dir}); "
                            "the low- and high-alpha labels need separate folders")
        return args.la_crf_dir, args.ha_crf_dir
    if not args.out_crf:
        raise WsegError("nothing to write: pass --out_crf ROOT (writes ROOT/crf_la and ROOT/crf_ha) or "
                        "--la_crf_dir and --ha_crf_dir")
    return os.path.join(args.out_crf, LA_SUBDIR), os.path.join(args.out_crf, HA_SUBDIR)


def crf_labels(img: np.ndarray, cams: Dict[int, np.ndarray], alpha: float, mode: str, num_classes: int,
               iters: int = CRF_ITERS, gt_prob: float = LABEL_GT_PROB) -> np.ndarray:
    """The uint8 ``(H, W)`` dCRF label map of one image for background power ``alpha`` (dataset class indices)."""
    if mode == "scores":
        return crf_with_alpha(img, cams, alpha, t=iters)
    labels = cam_to_label(cams, background_power(cams, alpha, img.shape[:2]), img.shape[:2])
    if not cams:
        return labels
    return crf_label_refine(img, labels, num_classes, iters=iters, gt_prob=gt_prob, yx_features=True)  # as PPC's


def _job(item: Tuple) -> Optional[str]:
    """One image: both label maps (skipping one already written). Module level, so process pools can pickle it.
    Returns None, or the image's one-line error (the stage's skip list)."""
    image_id, image_path, cam_path, outs, mode, iters, gt_prob, num_classes = item
    try:
        img = io.load_image(image_path)
        cams = io.load_cam_dict(cam_path, num_classes - 1, img.shape[:2])
        for alpha, out_path in outs:
            if not io.is_done(out_path):
                io.save_mask_png(out_path, crf_labels(img, cams, alpha, mode, num_classes, iters, gt_prob))
    except WsegError as exc:
        return str(exc)
    return None


def check(args: argparse.Namespace) -> None:
    """One-line errors for flag values before anything is read or written (the pipeline calls it before its first
    stage)."""
    if len(args.alphas) not in (1, 2):
        raise WsegError(f"--alphas {' '.join(f'{a:g}' for a in args.alphas)}: pass LOW HIGH (published 4 24/32) or "
                        "one alpha for CRF pseudo masks")
    la_dir, ha_dir = resolve_dirs(args)
    low, high = float(args.alphas[0]), float(args.alphas[-1])
    if not (0 < low < high < 1000 or (ha_dir is None and 0 < low < 1000)):
        raise WsegError(f"--alphas {low:g} {high:g}: need 0 < LOW < HIGH < 1000 (published 4 and 24/32)")
    if not 1 <= args.crf_iters <= MAX_CRF_ITERS:
        raise WsegError(f"--crf_iters {args.crf_iters}: need 1 to {MAX_CRF_ITERS} mean-field iterations (published 10)")
    if args.crf_mode == "labels" and not 0 < args.gt_prob < 1:
        raise WsegError(f"--gt_prob {args.gt_prob:g}: must lie in (0, 1) (published 0.7)")
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: must be >= 0 (0 = CRFs in this process)")


def run(args: argparse.Namespace) -> dict:
    check(args)
    la_dir, ha_dir = resolve_dirs(args)
    low, high = float(args.alphas[0]), float(args.alphas[-1])
    voc = VOCRoot(args.voc12_root, args.classes)
    ids = voc.ids(args.infer_list)
    root = args.out_crf or os.path.dirname(os.path.abspath(la_dir))
    setup_logging(args.log or os.path.join(root, "aff_prepare.log"))
    common = {"crf_mode": args.crf_mode, "crf_iters": int(args.crf_iters), "classes": list(voc.spec.class_names),
              "cam_dir": os.path.abspath(args.cam_dir)}
    if args.crf_mode == "labels":
        common["gt_prob"] = float(args.gt_prob)
    io.record_folder_settings(la_dir, {**common, "alpha": low}, SETTINGS_FILE, "--out_crf")
    outs = [(low, la_dir)]
    if ha_dir is not None:
        io.record_folder_settings(ha_dir, {**common, "alpha": high}, SETTINGS_FILE, "--out_crf")
        outs.append((high, ha_dir))
    todo = pending_shard(ids, [(d, ".png") for _, d in outs])
    LOG.info("aff_prepare: %d images, %d to do in this process; alphas %s, crf %s -> %s", len(ids), len(todo),
             "/".join(f"{a:g}" for a, _ in outs), args.crf_mode, ", ".join(d for _, d in outs))
    failures = Failures("aff_prepare", args.on_error)
    if todo:
        require_cams(args.cam_dir, todo, "aff_prepare")
        items = [(i, voc.image_path(i), os.path.join(args.cam_dir, i + ".npy"),
                  tuple((a, os.path.join(d, i + ".png")) for a, d in outs),
                  args.crf_mode, int(args.crf_iters), float(args.gt_prob), voc.spec.num_classes) for i in todo]
        for index, error in imap_pool(_job, items, num_workers=args.num_workers, desc="aff_prepare"):
            if error is not None:
                failures.record(todo[index], error)
    failures.check(len(todo))
    return {"la_crf_dir": la_dir, "ha_crf_dir": ha_dir, "done": len(ids), "processed": len(todo)}
