"""AffinityNet random walk (stage 2c) and pseudo-mask generation, after PSA ``infer_aff.py`` / PPC ``aff_infer.py``.

Per image: the CAM dict (``--cam_dir``) gets a background channel (PPC's constant ``--bg_score`` 0.27, or PSA's
``(1 - max_k cam_k)^alpha`` with ``--alpha``), is zero-padded to a multiple of 8 and average-pooled by 8; the
trained AffinityNet gives the pair affinities of the padded image; the scores are propagated by ``2^logt`` steps of
the random walk with transition ``D^-1 W^{o beta}`` -- as a sparse matrix (:mod:`wseg.randomwalk`), never the
published dense ``N x N`` power -- then upsampled bilinearly, arg-maxed and cropped: ``--out_rw/<id>.png``.

By default the walk uses every in-radius pair, including those at the map border that the published pair layout
leaves out (:func:`wseg.models.affinity_net.full_pair_affinities`; matters for small images);
``--published_pairs`` restores the published graph exactly (with its smaller radius on maps under ``2r + 1`` nodes).

``--crf`` (also ``--crf True``): the published pseudo-mask step (SEAM/PPC ``aff_infer.py``, commented out in PPC):
dense CRF (``crf_inference``, ``--crf_iters``, published 1) of the upsampled random-walk scores, written to
``--out_crf/<id>.png`` (without ``--out_crf``: into ``--out_rw`` instead of the plain walk, as published). The CRF
runs in a process pool while the network works.

``--out_rw_npy``: the walked foreground scores at image size as a CAM dict (``{class index without background:
HxW}``, the format of ``--cam_dir``), so ``scripts/eval.py --type npy --curve`` can sweep the walk's background
threshold (with a constant background the walked background stays that constant).

Finished images are skipped, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from wseg import io
from wseg.affinity import DEFAULT_RADIUS
from wseg.cli import add_bool_flag
from wseg.crf import MAX_CRF_ITERS
from wseg.data.datasets import open_rgb
from wseg.data.transforms import hwc_to_chw, normalize, rescale, scaled_size
from wseg.data.voc import VOCRoot
from wseg.engine.per_image import Failures, add_on_error_flag, pending_shard, run_images
from wseg.engine.runtime import LOG, resolve_device, setup_logging
from wseg.errors import WsegError
from wseg.io import require_cams
from wseg.methods.affinitynet import build_affinity_net_from_weights, walk_image
from wseg.randomwalk import (DEFAULT_BETA, DEFAULT_BG_SCORE, MAX_LOGT, PPC_LOGT, STRIDE, argmax_labels,
                             upsample_scores, with_background)

CRF_ITERS_RW = 1        # SEAM / PPC aff_infer.py: crf_inference(img, cam_rw, t=1)
SETTINGS_FILE = ".aff_infer.json"   # each output folder records the walk settings (io.record_folder_settings)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="AffinityNet weights (scripts/aff_train.py or published .pth)")
    p.add_argument("--backbone", default=None, help="resnet38 | resnet38_tiny | ... (default: from the checkpoint)")
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True, help="dataset root (VOC layout)")
    p.add_argument("--infer_list", required=True)
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt)")
    p.add_argument("--cam_dir", required=True, help="CAM .npy dicts (scripts/contrast_infer.py --out_cam)")
    p.add_argument("--out_rw", default=None, help="folder for random-walk label PNGs")
    p.add_argument("--out_rw_npy", default=None, help="folder for the walked CAM dicts (.npy, optional)")
    add_bool_flag(p, "--crf", "dense-CRF refine the walk into pseudo masks (published pseudo-mask step)")
    p.add_argument("--out_crf", default=None, help="folder for the CRF pseudo masks (implies --crf)")
    p.add_argument("--crf_iters", type=int, default=CRF_ITERS_RW, help="CRF mean-field iterations (published 1)")
    p.add_argument("--crf_scale_factor", default="1",
                   help="divide the CRF kernels' pixel widths by this (published crf_inference scale_factor 1, "
                        "kernels sized for VOC's ~500-pixel images); 'auto' = 500 / the image's long side")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA, help="Hadamard power of the affinities (8)")
    p.add_argument("--logt", type=int, default=PPC_LOGT, help="2^logt walk steps (PPC/SEAM 6, PSA 8)")
    p.add_argument("--radius", type=int, default=DEFAULT_RADIUS, help="pair radius at 1/8 resolution (5)")
    add_bool_flag(p, "--published_pairs", "only the published pair layout (no pairs at the map border)")
    p.add_argument("--bg_score", type=float, default=None,
                   help=f"constant background score (PPC; the default, {DEFAULT_BG_SCORE})")
    p.add_argument("--alpha", "--bg_alpha", dest="alpha", type=float, default=None,
                   help="background (1 - max CAM)^alpha instead of a constant (PSA 16, SEAM 6)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="resize the image by this factor for AffinityNet (published 1; small images such as the "
                        "synthetic demo's give 1/8-resolution maps too coarse to walk on); CAMs are resized to "
                        "match and the walk is resized back to the image size")
    p.add_argument("--num_workers", type=int, default=2, help="image-loading and CRF worker processes")
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast on GPU (affinities and the walk stay float32)")
    p.add_argument("--log", default=None, help="log file (default: next to the first output folder)")
    add_on_error_flag(p)


class _Images(Dataset):
    """``(normalised image padded to a multiple of 8 (3, H8, W8), (H, W))``; with ``scale != 1`` the image is first
    resized bicubically by ``scale`` (``(H, W)`` stays the original size)."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], scale: float = 1.0):
        self.voc, self.ids, self.scale = voc, list(ids), float(scale)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        pil = open_rgb(self.voc.image_path(self.ids[i]))
        size = (pil.height, pil.width)
        img = np.asarray(pil if self.scale == 1.0 else rescale(pil, self.scale))
        h, w = img.shape[:2]
        x = torch.from_numpy(hwc_to_chw(normalize(img)))
        x = F.pad(x, (0, -(-w // STRIDE) * STRIDE - w, 0, -(-h // STRIDE) * STRIDE - h))
        return x, size


def _crf_job(image_path: str, scores: np.ndarray, keys: np.ndarray, out_path: str, iters: int,
             scale_factor: str = "1") -> None:
    """Dense CRF of the walked scores ``(C, H, W)`` -> pseudo-mask PNG (module level: runs in a process pool)."""
    from wseg.crf import crf_inference, resolve_scale_factor

    img = io.load_image(image_path)
    if scores.shape[0] == 1:
        labels = np.zeros(img.shape[:2], np.uint8)
    else:
        factor = resolve_scale_factor(scale_factor, img.shape[:2])
        labels = keys[np.argmax(crf_inference(img, scores, t=iters, scale_factor=factor), 0)].astype(np.uint8)
    io.save_mask_png(out_path, labels)


def check(args: argparse.Namespace) -> None:
    """One-line errors for flag values, before any file is read (the pipeline calls it before its first stage)."""
    if args.bg_score is not None and args.alpha is not None:
        raise WsegError("--bg_score and --alpha both given: the background is either a constant (PPC 0.27) or "
                        "(1 - max CAM)^alpha (PSA 16); pass one")
    bg_score = _bg_score(args)
    if not (0 <= args.logt <= MAX_LOGT and 0 < args.beta <= 100 and 1 <= args.crf_iters <= MAX_CRF_ITERS):
        raise WsegError(f"--logt {args.logt} / --beta {args.beta:g} / --crf_iters {args.crf_iters}: need 0 <= logt <= "
                        f"{MAX_LOGT}, 0 < beta <= 100 and 1 to {MAX_CRF_ITERS} CRF iterations (published 6 or 8, 8, 1)")
    if args.radius < 2:
        raise WsegError(f"--radius {args.radius}: must be at least 2, the radius AffinityNet was trained with "
                        "(published 5)")
    if not 0 < args.scale <= 4:
        raise WsegError(f"--scale {args.scale:g}: must lie in (0, 4] (1 = published)")
    if bg_score is not None and not 0 <= bg_score <= 1:
        raise WsegError(f"--bg_score {bg_score:g}: must lie in [0, 1], the range of the normalised CAMs (PPC 0.27)")
    if args.alpha is not None and not 0 < args.alpha < 1000:
        raise WsegError(f"--alpha {args.alpha:g}: must lie in (0, 1000) (PSA 16, SEAM 6)")
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: must be >= 0 (0 = load in this process)")
    from wseg.crf import resolve_scale_factor
    resolve_scale_factor(args.crf_scale_factor, (1, 1), "--crf_scale_factor")   # fails here, not in a worker
    outs = _outputs(args)
    if not any(d for d, _ in outs):
        raise WsegError("nothing to write: pass --out_rw (and/or --out_rw_npy, --out_crf)")
    named = [os.path.abspath(d) for d, _ in outs if d]
    if len(set(named)) < len(named):
        raise WsegError(f"--out_rw / --out_rw_npy / --out_crf name the same folder ({', '.join(named)}); the walk, "
                        "its CAM dicts and the CRF masks need separate folders")


def _bg_score(args: argparse.Namespace) -> Optional[float]:
    """The constant background score (PPC's 0.27 unless given), or None with PSA's ``--alpha``."""
    return DEFAULT_BG_SCORE if args.bg_score is None and args.alpha is None else args.bg_score


def _crf(args: argparse.Namespace) -> bool:
    """Whether the walk is CRF-refined into pseudo masks (``--crf``, implied by ``--out_crf``)."""
    return bool(args.crf or args.out_crf)


def _outputs(args: argparse.Namespace) -> list:
    """``[(walk PNG folder, ".png"), (--out_rw_npy, ".npy"), (CRF folder, ".png")]`` (``None``: not written)."""
    crf = _crf(args)
    crf_dir = args.out_crf or (args.out_rw if crf else None)
    rw_dir = args.out_rw if not (crf and not args.out_crf) else None
    return [(rw_dir, ".png"), (args.out_rw_npy, ".npy"), (crf_dir, ".png")]


def run(args: argparse.Namespace) -> dict:
    from wseg.parallel import WorkerPool

    check(args)
    bg_score = _bg_score(args)
    outs = _outputs(args)
    (rw_dir, _), _, (crf_dir, _) = outs
    crf = _crf(args)
    voc = VOCRoot(args.voc12_root, args.classes)
    ids = voc.ids(args.infer_list)
    first = next(d for d, _ in outs if d)
    setup_logging(args.log or os.path.join(os.path.dirname(os.path.abspath(first)), "aff_infer.log"))
    walk = {"weights": os.path.abspath(args.weights), "cam_dir": os.path.abspath(args.cam_dir), "beta": args.beta,
            "logt": args.logt, "radius": args.radius, "published_pairs": bool(args.published_pairs),
            "bg_score": bg_score, "alpha": args.alpha, "scale": args.scale, "classes": list(voc.spec.class_names)}
    for folder, flag, extra in ((rw_dir, "--out_rw", {}), (args.out_rw_npy, "--out_rw_npy", {}),
                                (crf_dir, "--out_crf", {"crf_iters": args.crf_iters, **(
                                    {} if str(args.crf_scale_factor) == "1" else
                                    {"crf_scale_factor": str(args.crf_scale_factor)})})):
        if folder:
            io.record_folder_settings(folder, {**walk, **extra}, SETTINGS_FILE, flag)
    todo = pending_shard(ids, outs)
    LOG.info("aff_infer: %d images, %d to do in this process; beta %g logt %d radius %d bg %s%s", len(ids),
             len(todo), args.beta, args.logt, args.radius,
             f"{bg_score:g}" if bg_score is not None else f"(1-max)^{args.alpha:g}", " + CRF" if crf else "")
    if not todo:
        return {"done": len(ids), "inferred": 0, "out_rw": rw_dir, "out_crf": crf_dir}
    require_cams(args.cam_dir, todo, "aff_infer")
    device = resolve_device(args.device)
    model, meta = build_affinity_net_from_weights(args.weights, args.backbone, radius=args.radius)
    model.to(device).eval()
    failures = Failures("aff_infer", args.on_error)

    def process(image_id: str, sample) -> None:
        x, size = sample
        h, w = int(size[0]), int(size[1])
        cams = io.load_cam_dict(os.path.join(args.cam_dir, image_id + ".npy"), voc.spec.num_fg, (h, w))
        fg_keys, stack = io.cam_dict_to_stack(cams, (h, w))
        scores = with_background(torch.from_numpy(stack), bg_score=bg_score,
                                 bg_alpha=None if bg_score is not None else args.alpha)
        keys = np.concatenate([[0], fg_keys + 1]).astype(np.int64)
        scaled = scaled_size(h, w, args.scale)  # the image size _Images gave AffinityNet
        if scaled != (h, w):
            scores = F.interpolate(scores[None], size=scaled, mode="bilinear", align_corners=False)[0]
        rw = walk_image(model, x[None].to(device), scores, args.radius, args.beta, args.logt, args.published_pairs,
                        args.amp)
        up = upsample_scores(rw, scaled)  # walked scores at the image size (through the scaled size)
        if scaled != (h, w):
            up = F.interpolate(up[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        if rw_dir:
            io.save_mask_png(os.path.join(rw_dir, image_id + ".png"), argmax_labels(up, keys))
        if args.out_rw_npy or crf:
            up = up.cpu().numpy().astype(np.float32)
            if args.out_rw_npy:
                io.save_cam_dict(os.path.join(args.out_rw_npy, image_id + ".npy"),
                                 {int(k): up[i + 1] for i, k in enumerate(fg_keys)})
            if crf:
                pool.submit(image_id, _crf_job, voc.image_path(image_id), up, keys,
                            os.path.join(crf_dir, image_id + ".png"), int(args.crf_iters),
                            str(args.crf_scale_factor))

    with WorkerPool(max(1, args.num_workers) if crf else 0, failures) as pool:
        done = run_images(_Images(voc, todo, args.scale), todo, process, failures, args.num_workers, "aff_infer")
        pool.drain("crf")
    failures.check(len(todo))
    return {"done": len(ids), "inferred": done, "out_rw": rw_dir, "out_crf": crf_dir,
            "backbone": meta.get("backbone")}
