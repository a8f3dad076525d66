"""CAM inference (stage 1b): multi-scale + flip CAMs from the PCM output of a SEAM/PPC network.

Writes per image: ``--out_cam/<id>.npy`` (CAM dict), ``--out_cam_pred/<id>.png`` (argmax with a constant background
score ``--out_cam_pred_alpha``) and ``--out_crf/<id>.png`` (dense-CRF labels, computed in a process pool while the
network runs). Finished images are skipped, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Optional

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from wseg import io
from wseg.cam import cam_dict_from_maps, cam_to_label, multiscale_cam
from wseg.cli import add_bool_flag
from wseg.crf import MAX_CRF_ITERS
from wseg.data.datasets import MultiScaleDataset, unbatch_one
from wseg.data.voc import VOCRoot
from wseg.engine import resolve_device, setup_logging, LOG
from wseg.errors import WsegError
from wseg.models.build import build_cam_model_from_weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="CAM network checkpoint (wseg or published .pth)")
    p.add_argument("--network", default=None, help="seam | contrast (default: from the checkpoint, else contrast)")
    p.add_argument("--backbone", default=None, help="resnet38 | resnet38_tiny | ... (default: from the checkpoint)")
    p.add_argument("--infer_list", required=True, help="split list of images to infer")
    p.add_argument("--voc12_root", required=True, help="VOC-format dataset root")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt or voc12)")
    p.add_argument("--num_workers", type=int, default=2, help="data-loading and CRF worker processes")
    p.add_argument("--out_cam", default=None, help="folder for CAM .npy dicts")
    p.add_argument("--out_cam_pred", default=None, help="folder for CAM argmax label PNGs")
    p.add_argument("--out_cam_pred_alpha", type=float, default=0.26, help="background score of --out_cam_pred")
    p.add_argument("--out_crf", default=None, help="folder for dense-CRF label PNGs")
    p.add_argument("--crf_alpha", type=float, default=0.26, help="background score before the CRF (published 0.26)")
    p.add_argument("--crf_iters", type=int, default=10)
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    add_bool_flag(p, "--no_flip", "do not add horizontally flipped inputs")
    p.add_argument("--norm", choices=["minmax", "max"], default="minmax",
                   help="CAM normalisation: min-max (default; PPC contrast_infer.py and SEAM infer_SEAM.py) or "
                        "divide-by-max (PSA infer_cls.py)")
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast on GPU")
    p.add_argument("--vis_dir", default=None, help="write CAM overlay pictures of the first --vis_num images here")
    p.add_argument("--vis_num", type=int, default=8)
    p.add_argument("--log", default=None, help="log file (default: next to --out_cam)")


def _crf_job(image_path: str, cams, out_path: str, bg: float, iters: int, num_classes: int) -> None:
    from wseg.crf import PPC_INFER_KERNELS, crf_label_refine

    img = io.load_image(image_path)
    labels = cam_to_label(cams, bg, img.shape[:2])
    io.save_mask_png(out_path, crf_label_refine(img, labels, num_classes, iters=iters, **PPC_INFER_KERNELS))


def _check_args(args: argparse.Namespace) -> None:
    if not all(0 < s <= 4 for s in args.scales):
        raise WsegError(f"--scales {' '.join(f'{s:g}' for s in args.scales)}: each must lie in (0, 4] "
                        "(published 0.5 1.0 1.5 2.0)")
    if not (0 <= args.crf_alpha <= 1 and 0 <= args.out_cam_pred_alpha <= 1):
        raise WsegError(f"--crf_alpha {args.crf_alpha:g} / --out_cam_pred_alpha {args.out_cam_pred_alpha:g}: "
                        "background scores must lie in [0, 1], the range of the normalised CAMs (published 0.26)")
    if not 1 <= args.crf_iters <= MAX_CRF_ITERS or args.num_workers < 0 or args.vis_num < 0:
        raise WsegError(f"--crf_iters {args.crf_iters} / --num_workers {args.num_workers} / --vis_num {args.vis_num}: "
                        f"need 1 to {MAX_CRF_ITERS} mean-field iterations (published 10) and no negative counts")


def run(args: argparse.Namespace) -> dict:
    _check_args(args)
    voc = VOCRoot(args.voc12_root, args.classes)
    ids = voc.ids(args.infer_list)
    outs = [(args.out_cam, ".npy"), (args.out_cam_pred, ".png"), (args.out_crf, ".png")]
    if not any(d for d, _ in outs):
        raise WsegError("nothing to write: pass at least one of --out_cam, --out_cam_pred, --out_crf")
    log_dir = next(d for d, _ in outs if d)
    setup_logging(args.log or os.path.join(os.path.dirname(os.path.abspath(log_dir)), "contrast_infer.log"))
    todo = io.pending_ids(ids, outs)
    LOG.info("CAM inference: %d images, %d already done", len(ids), len(ids) - len(todo))
    if not todo:
        return {"done": len(ids), "inferred": 0}
    device = resolve_device(args.device)
    model, meta = build_cam_model_from_weights(args.weights, args.network, args.backbone, voc.spec.num_classes)
    model.to(device).eval()
    cam_fn = lambda x: model(x)[1]  # noqa: E731  (PCM-refined CAM, as published)
    data = MultiScaleDataset(voc, todo, args.scales, flip=not args.no_flip)
    loader = DataLoader(data, batch_size=1, shuffle=False, num_workers=args.num_workers, collate_fn=unbatch_one)
    pool: Optional[ProcessPoolExecutor] = None
    jobs = []
    if args.out_crf:
        pool = ProcessPoolExecutor(max_workers=max(1, args.num_workers))
    vis_left = args.vis_num if args.vis_dir else 0
    try:
        for image_id, batches, label, size in tqdm(loader, desc="cam", dynamic_ncols=True):
            norm = multiscale_cam(cam_fn, batches, label, size, device, amp=args.amp, norm=args.norm)
            cams = cam_dict_from_maps(norm.cpu().numpy(), label.numpy())
            if args.out_cam:
                io.save_cam_dict(os.path.join(args.out_cam, image_id + ".npy"), cams)
            if args.out_cam_pred:
                io.save_mask_png(os.path.join(args.out_cam_pred, image_id + ".png"),
                                 cam_to_label(cams, args.out_cam_pred_alpha, size))
            if pool is not None:
                jobs.append(pool.submit(_crf_job, voc.image_path(image_id), cams,
                                        os.path.join(args.out_crf, image_id + ".png"), args.crf_alpha,
                                        args.crf_iters, voc.spec.num_classes))
            if vis_left > 0:
                vis_left -= 1
                _save_overlay(args.vis_dir, voc, image_id, cams)
        for job in tqdm(jobs, desc="crf", dynamic_ncols=True, disable=not jobs):
            job.result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return {"done": len(ids), "inferred": len(todo)}


def _save_overlay(folder: str, voc: VOCRoot, image_id: str, cams) -> None:
    img = io.load_image(voc.image_path(image_id))
    panels = [img] + [io.overlay_cam(img, np.clip(c, 0, 1)) for _, c in sorted(cams.items())]
    io.save_image(os.path.join(folder, image_id + "_cam.png"), io.side_by_side(panels))
