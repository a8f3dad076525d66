"""Single-stage WSSS inference: segmentation predictions of a network trained by ``scripts/wsss_train.py`` (any
single-stage method; the method, backbone and method flags come from the weights' metadata, or ``--network`` /
``--backbone`` for published checkpoints).

Per image, the method's published inference (``predict``; ``--procedure`` picks one by name where the method
publishes several, e.g. one per dataset) gives the logits at the image size. Writes ``--out_pred/<id>.png``
(arg-max, palette PNG), ``--out_crf/<id>.png`` (the method's published dense CRF on the softmax, computed in a
process pool while the network goes on) and ``--out_logits/<id>.npy`` (``{"msc_seg": (1, C, H, W) float32}``, the
published ``infer_seg_voc.py`` file). Each folder records the weights and settings that made it beside itself
(``.<folder>.predictions.json``): other weights or settings into a folder holding predictions are refused.
Finished images are skipped, so an interrupted run resumes; under ``torchrun`` every process takes its share; an
unreadable image is skipped and listed at the end (``--on_error``). Predictions of the training split are the
pseudo labels of the method (their quality is the published "pseudo label" number).
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from wseg import io
from wseg.cli import add_bool_flag
from wseg.crf import MAX_CRF_ITERS
from wseg.engine.per_image import Failures, add_on_error_flag, pending_shard, run_images
from wseg.engine.runtime import LOG, autocast, resolve_device, setup_logging
from wseg.errors import WsegError
from wseg.methods.single_stage import get_single_stage

PREDICTION_SETTINGS = ".predictions.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="trained network (scripts/wsss_train.py <session_name>.pth, or a "
                                                    "published checkpoint with --network/--backbone)")
    p.add_argument("--network", default=None, help="single-stage method (default: from the weights' metadata)")
    p.add_argument("--backbone", default=None, help="backbone (default: from the weights' metadata, else the "
                                                    "method's published one)")
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True, help="dataset root")
    p.add_argument("--classes", default=None,
                   help="voc12 | coco14 | classes.txt (default: root's classes.txt or voc12)")
    p.add_argument("--infer_list", required=True, help="split list (or split name) of the images to predict")
    p.add_argument("--out_pred", default=None, help="folder for the arg-max label PNGs")
    p.add_argument("--out_crf", default=None, help="folder for the dense-CRF label PNGs")
    p.add_argument("--out_logits", default=None, help="folder for the logits .npy files (published format)")
    p.add_argument("--procedure", default=None, help="the method's published inference procedure by name (default: "
                                                     "its first; an unknown name lists the method's)")
    p.add_argument("--scales", type=float, nargs="+", default=None, help="test scales (default: the procedure's "
                                                                         "published ones)")
    p.add_argument("--crf_iters", type=int, default=None, help="CRF mean-field iterations (default: the method's)")
    p.add_argument("--num_workers", type=int, default=2, help="data-loading and CRF worker processes")
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast on GPU")
    p.add_argument("--log", default=None, help="log file (default: wsss_infer.log beside the first output folder)")
    add_on_error_flag(p)


class _Images(Dataset):
    """``(uint8 HxWx3 image, normalised (3, H, W) tensor)`` of each id."""

    def __init__(self, voc, ids: Sequence[str], mean: Sequence[float], std: Sequence[float]):
        self.voc, self.ids, self.mean, self.std = voc, list(ids), tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        from wseg.data.datasets import open_rgb
        from wseg.data.transforms import hwc_to_chw, normalize

        img = np.asarray(open_rgb(self.voc.image_path(self.ids[i])))
        return img, torch.from_numpy(hwc_to_chw(normalize(img, self.mean, self.std)))


def _crf_job(img: np.ndarray, probs: np.ndarray, params: Mapping[str, float], path: str) -> None:
    """Worker: the dense CRF on the softmax, arg-max, palette PNG."""
    from wseg.crf import crf_inference

    kernels = {k: float(v) for k, v in params.items() if k != "iters"}
    q = crf_inference(img, probs, t=int(params["iters"]), **kernels)
    io.save_mask_png(path, np.argmax(q, 0).astype(np.uint8))


def _save_logits(path: str, logits: np.ndarray) -> None:
    with io.atomic_path(path) as tmp:
        np.save(tmp, {"msc_seg": logits[None]})


def check(args: argparse.Namespace) -> None:
    """One-line errors for flag values before anything is read or written (the pipeline calls it before its first
    stage)."""
    if args.scales is not None and not all(0 < s <= 4 for s in args.scales):
        raise WsegError(f"--scales {' '.join(f'{s:g}' for s in args.scales)}: each must lie in (0, 4]")
    if args.crf_iters is not None and not 1 <= args.crf_iters <= MAX_CRF_ITERS:
        raise WsegError(f"--crf_iters {args.crf_iters}: need 1 to {MAX_CRF_ITERS} mean-field iterations")
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: must be >= 0")


def load_trained(path: str, network=None, backbone=None, num_classes=None):
    """``(method, network, meta)`` of trained single-stage weights: the method and its flags from the metadata
    (or ``network``), every key must fit."""
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    state, meta = read_state_dict(path)
    name = network or meta.get("network")
    if not name:
        raise WsegError(f"{path}: no wseg metadata names the method; pass --network (and --backbone)")
    cls = get_single_stage(name)
    method = cls.from_meta(meta)
    backbone = backbone or meta.get("backbone") or cls.defaults.get("backbone")
    num_classes = int(num_classes or meta.get("num_classes") or 21)
    if meta.get("num_classes") and int(meta["num_classes"]) != num_classes:
        raise WsegError(f"{path}: trained for {meta['num_classes']} classes, the dataset has {num_classes}; pass the "
                        "--classes it was trained with")
    net = method.build_network(backbone, num_classes)
    load_state_dict_strict(net, state, path)
    return method, net, {**meta, "network": cls.name, "backbone": backbone, "num_classes": num_classes}


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from wseg.data.voc import VOCRoot
    from wseg.parallel import WorkerPool

    check(args)
    voc = VOCRoot(args.voc12_root, args.classes)
    ids = voc.ids(args.infer_list)
    outs = [(args.out_pred, ".png"), (args.out_crf, ".png"), (args.out_logits, ".npy")]
    if not any(d for d, _ in outs):
        raise WsegError("nothing to write: pass at least one of --out_pred, --out_crf, --out_logits")
    first = next(d for d, _ in outs if d)
    setup_logging(args.log or os.path.join(os.path.dirname(os.path.abspath(first)), "wsss_infer.log"))
    method, model, meta = load_trained(args.weights, args.network, args.backbone, voc.spec.num_classes)
    procedure = method.procedure(args.procedure)
    scales = [float(s) for s in (args.scales or method.infer_scales(procedure))]
    crf = None
    if args.out_crf:
        if method.crf is None and args.crf_iters is None:
            raise WsegError(f"--out_crf: method {method.name} has no published CRF; leave --out_crf out")
        crf = {**(method.crf or {}), **({"iters": args.crf_iters} if args.crf_iters else {})}
        from wseg.crf import check_crf_params

        check_crf_params(int(crf["iters"]), **{k: v for k, v in crf.items() if k != "iters"})
    settings = {"weights": os.path.abspath(args.weights), "weights_bytes": os.path.getsize(args.weights),
                "weights_mtime": round(os.path.getmtime(args.weights), 3), "network": method.name,
                "backbone": meta["backbone"], "procedure": procedure, "scales": scales}
    for folder, flag, extra in ((args.out_pred, "--out_pred", {}), (args.out_crf, "--out_crf", {"crf": crf}),
                                (args.out_logits, "--out_logits", {})):
        if folder:
            base = os.path.basename(os.path.abspath(folder))
            record = os.path.join(os.path.dirname(os.path.abspath(folder)), f".{base}{PREDICTION_SETTINGS}")
            io.record_folder_settings(folder, {**settings, **extra}, PREDICTION_SETTINGS, flag,
                                      (".png", ".npy"), record)
            os.makedirs(folder, exist_ok=True)
    todo = pending_shard(ids, outs)
    LOG.info("wsss inference (%s, %s, %s procedure, scales %s): %d images, %d to do in this process", method.name,
             meta["backbone"], procedure, scales, len(ids), len(todo))
    if not todo:
        return {"done": len(ids), "inferred": 0, "network": method.name}
    device = resolve_device(args.device)
    model.to(device).eval()
    failures = Failures("wsss_infer", args.on_error)
    with WorkerPool(max(1, args.num_workers) if crf else 0, failures) as pool:

        def process(image_id: str, sample) -> None:
            img, x = sample
            with torch.no_grad(), autocast(device, args.amp):
                logits = method.predict(model, x[None].to(device), img.shape[:2], scales, procedure)
            logits = logits.float().cpu()
            if args.out_pred:
                io.save_mask_png(os.path.join(args.out_pred, image_id + ".png"),
                                 logits.argmax(0).to(torch.uint8).numpy())
            if args.out_logits:
                _save_logits(os.path.join(args.out_logits, image_id + ".npy"), logits.numpy())
            if crf:
                pool.submit(image_id, _crf_job, img, torch.softmax(logits, 0).numpy(), crf,
                            os.path.join(args.out_crf, image_id + ".png"))

        done = run_images(_Images(voc, todo, method.mean, method.std), todo, process, failures, args.num_workers,
                          desc="wsss infer")
        pool.drain("crf")
    failures.check(len(todo))
    return {"done": len(ids), "inferred": done, "network": method.name}
