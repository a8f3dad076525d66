"""CAM inference (stage 1b) for any CAM method: multi-scale + flip CAMs (the method's ``cams``: for SEAM/PPC the
PCM-refined CAM without its background channel), label-masked and normalised.

Writes per image: ``--out_cam/<id>.npy`` (CAM dict), ``--out_cam_pred/<id>.png`` (argmax with a constant background
score ``--out_cam_pred_alpha``) and ``--out_crf/<id>.png`` (dense-CRF labels, computed in a process pool while the
network runs). Finished images are skipped, so an interrupted run resumes; under ``torchrun`` every process takes
its share of the images; an unreadable image is skipped and listed at the end (``--on_error``).

``--crop_mode grid`` replaces the whole rescaled images by a grid of ``--crop_size`` crops every ``--crop_stride``
pixels per scale, averaged where they overlap (the multi-crop CAM of the published ``infer_multi_crop.py``; see
wseg/cam_crops.py); its defaults are that computation's published ones (scales 0.75 to 3, crop 448, stride 300,
normalisation ``minmax_noclip``).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from wseg import io
from wseg.cam import NORMALIZERS, cam_dict_from_maps, cam_to_label, multiscale_cam
from wseg.cam_crops import CROP_BATCH, GRID_CROP, GRID_SCALES, GRID_STRIDE, MultiCropDataset, multicrop_cam
from wseg.cli import add_bool_flag
from wseg.crf import MAX_CRF_ITERS
from wseg.engine.per_image import Failures, add_on_error_flag, pending_shard, run_images
from wseg.engine.runtime import LOG, resolve_device, setup_logging
from wseg.errors import WsegError
from wseg.methods import METHODS


WHOLE_SCALES = (0.5, 1.0, 1.5, 2.0)
CROP_MODES = ("whole", "grid")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="CAM network checkpoint (wseg or published .pth)")
    p.add_argument("--network", default=None, choices=list(METHODS),
                   help="CAM method (default: from the checkpoint, else contrast)")
    p.add_argument("--backbone", default=None, help="resnet38 | resnet38_tiny | ... (default: from the checkpoint)")
    p.add_argument("--infer_list", required=True, help="split list of images to infer")
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True, help="dataset root (VOC layout)")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt or voc12)")
    p.add_argument("--num_workers", type=int, default=2, help="data-loading and CRF worker processes")
    p.add_argument("--out_cam", default=None, help="folder for CAM .npy dicts")
    p.add_argument("--out_cam_pred", default=None, help="folder for CAM argmax label PNGs")
    p.add_argument("--out_cam_pred_alpha", type=float, default=0.26, help="background score of --out_cam_pred")
    p.add_argument("--out_crf", default=None, help="folder for dense-CRF label PNGs")
    p.add_argument("--crf_alpha", type=float, default=0.26, help="background score before the CRF (published 0.26)")
    p.add_argument("--crf_iters", type=int, default=10)
    p.add_argument("--scales", type=float, nargs="+", default=None,
                   help=f"scales (default {' '.join(f'{s:g}' for s in WHOLE_SCALES)}; with --crop_mode grid "
                        f"{' '.join(f'{s:g}' for s in GRID_SCALES)})")
    add_bool_flag(p, "--no_flip", "do not add horizontally flipped inputs")
    p.add_argument("--crop_mode", choices=CROP_MODES, default="whole",
                   help="whole: each scale is the whole rescaled image (default); grid: a grid of --crop_size "
                        "crops per scale, averaged where they overlap (multi-crop CAM, wseg/cam_crops.py)")
    p.add_argument("--crop_size", type=int, default=GRID_CROP, help=f"grid crop side (published {GRID_CROP})")
    p.add_argument("--crop_stride", type=int, default=GRID_STRIDE,
                   help=f"grid window step in scaled pixels (published {GRID_STRIDE})")
    p.add_argument("--crop_batch", type=int, default=CROP_BATCH,
                   help=f"grid crops per network call (default {CROP_BATCH}; speed only, lower it if memory runs out)")
    p.add_argument("--norm", choices=list(NORMALIZERS), default=None,
                   help="CAM normalisation: min-max (PPC contrast_infer.py and SEAM infer_SEAM.py), divide-by-max "
                        "(PSA infer_cls.py) or min-max without clipping (minmax_noclip: infer_multi_crop.py); "
                        "default: the method's published one, with --crop_mode grid minmax_noclip")
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast on GPU")
    p.add_argument("--vis_dir", default=None, help="write CAM overlay pictures of the first --vis_num images here")
    p.add_argument("--vis_num", type=int, default=8)
    p.add_argument("--log", default=None, help="log file (default: next to --out_cam)")
    add_on_error_flag(p)


def resolve_views(args: argparse.Namespace) -> None:
    """Fill the crop mode's defaults in ``args`` (``scales``)."""
    if args.scales is None:
        args.scales = list(GRID_SCALES if args.crop_mode == "grid" else WHOLE_SCALES)


def _crf_job(image_path: str, cams, out_path: str, bg: float, iters: int, num_classes: int) -> None:
    from wseg.crf import PPC_INFER_KERNELS, crf_label_refine

    img = io.load_image(image_path)
    labels = cam_to_label(cams, bg, img.shape[:2])
    io.save_mask_png(out_path, crf_label_refine(img, labels, num_classes, iters=iters, **PPC_INFER_KERNELS))


def check(args: argparse.Namespace) -> None:
    """One-line errors for flag values before anything is read or written (the pipeline calls it before its first
    stage)."""
    resolve_views(args)
    if args.crop_mode == "grid" and not (args.crop_size >= 1 and args.crop_stride >= 1 and args.crop_batch >= 1):
        raise WsegError(f"--crop_size {args.crop_size} / --crop_stride {args.crop_stride} / --crop_batch "
                        f"{args.crop_batch}: need positive sizes (published {GRID_CROP} / {GRID_STRIDE})")
    if not all(0 < s <= 4 for s in args.scales):
        raise WsegError(f"--scales {' '.join(f'{s:g}' for s in args.scales)}: each must lie in (0, 4] "
                        "(published 0.5 1.0 1.5 2.0; with --crop_mode grid 0.75 to 3)")
    if not (0 <= args.crf_alpha <= 1 and 0 <= args.out_cam_pred_alpha <= 1):
        raise WsegError(f"--crf_alpha {args.crf_alpha:g} / --out_cam_pred_alpha {args.out_cam_pred_alpha:g}: "
                        "background scores must lie in [0, 1], the range of the normalised CAMs (published 0.26)")
    if not 1 <= args.crf_iters <= MAX_CRF_ITERS or args.num_workers < 0 or args.vis_num < 0:
        raise WsegError(f"--crf_iters {args.crf_iters} / --num_workers {args.num_workers} / --vis_num {args.vis_num}: "
                        f"need 1 to {MAX_CRF_ITERS} mean-field iterations (published 10) and no negative counts")


def run(args: argparse.Namespace) -> dict:
    from wseg.data.datasets import MultiScaleDataset
    from wseg.data.voc import VOCRoot
    from wseg.methods.base import build_from_weights
    from wseg.parallel import WorkerPool

    check(args)
    voc = VOCRoot(args.voc12_root, args.classes)
    ids = voc.ids(args.infer_list)
    outs = [(args.out_cam, ".npy"), (args.out_cam_pred, ".png"), (args.out_crf, ".png")]
    if not any(d for d, _ in outs):
        raise WsegError("nothing to write: pass at least one of --out_cam, --out_cam_pred, --out_crf")
    log_dir = next(d for d, _ in outs if d)
    setup_logging(args.log or os.path.join(os.path.dirname(os.path.abspath(log_dir)), "contrast_infer.log"))
    todo = pending_shard(ids, outs)
    LOG.info("CAM inference: %d images, %d to do in this process", len(ids), len(todo))
    if not todo:
        return {"done": len(ids), "inferred": 0}
    device = resolve_device(args.device)
    method, model, meta = build_from_weights(args.weights, args.network, args.backbone, voc.spec.num_classes)
    model.to(device).eval()
    norm = args.norm or ("minmax_noclip" if args.crop_mode == "grid" else method.default_norm)
    flip = not args.no_flip
    failures = Failures("contrast_infer", args.on_error)
    vis_left = [args.vis_num if args.vis_dir else 0]
    with WorkerPool(max(1, args.num_workers) if args.out_crf else 0, failures) as pool:

        def process(image_id: str, sample) -> None:
            _, views, label, size = sample
            if args.crop_mode == "grid":
                maps = multicrop_cam(lambda x: method.cams(model, x), *views, label, size, device, amp=args.amp,
                                     flip=flip, norm=norm, batch=args.crop_batch)
            else:
                maps = multiscale_cam(lambda x: method.cams(model, x), views, label, size, device, amp=args.amp,
                                      norm=norm)
            cams = cam_dict_from_maps(maps.cpu().numpy(), label.numpy())
            if args.out_cam:
                io.save_cam_dict(os.path.join(args.out_cam, image_id + ".npy"), cams)
            if args.out_cam_pred:
                io.save_mask_png(os.path.join(args.out_cam_pred, image_id + ".png"),
                                 cam_to_label(cams, args.out_cam_pred_alpha, size))
            if args.out_crf:
                pool.submit(image_id, _crf_job, voc.image_path(image_id), cams,
                            os.path.join(args.out_crf, image_id + ".png"), args.crf_alpha, args.crf_iters,
                            voc.spec.num_classes)
            if vis_left[0] > 0:
                vis_left[0] -= 1
                _save_overlay(args.vis_dir, voc, image_id, cams)

        data = (MultiCropDataset(voc, todo, args.scales, args.crop_size, args.crop_stride)
                if args.crop_mode == "grid" else MultiScaleDataset(voc, todo, args.scales, flip=flip))
        done = run_images(data, todo, process, failures, args.num_workers, desc="cam")
        pool.drain("crf")
    failures.check(len(todo))
    return {"done": len(ids), "inferred": done, "network": method.name, "crop_mode": args.crop_mode, "norm": norm}


def _save_overlay(folder: str, voc, image_id: str, cams) -> None:
    img = io.load_image(voc.image_path(image_id))
    panels = [img] + [io.overlay_cam(img, np.clip(c, 0, 1)) for _, c in sorted(cams.items())]
    io.save_image(os.path.join(folder, image_id + "_cam.png"), io.side_by_side(panels))
