"""RS+EPM seeds (released ``infer_rsepm.py``): the single-stage network's segmentation softmax over scales
1.0 0.5 1.5 2.0 + flips (logits nearest-resized), its foreground channels divided by their maxima, kept for the
image's classes (ground-truth labels with ``--conf_th -1``, the default; mean sigmoid class score ``>= --conf_th``
otherwise: the README passes 0.34 for validation / test). See wseg/rsepm.py.

Released flags: ``--root_dir --dataset --domain --single --backbone --class_fn --same --interpolation --conf_th
--tag --strategy --pred_dir --reverse --gpus``. Weights default to the released ``./experiments/models/{tag}/
{strategy}.pth`` (``--weights`` to point elsewhere); seeds go to ``{pred_dir}/predictions/{tag}/{domain}/<id>.pkl``
(``train_aug`` -> ``train``; ``--out_dir`` to point elsewhere) in the released pickle, or as wseg CAM dicts with
``--seed_format npy`` (what ``scripts/eval.py --type npy --curve --start 0.10 --end 0.80 --step 0.05 --absent nan``
scores, the released evaluation of seeds). The dataset root may be RS+EPM's ``{train,train_aug,validation,test}/
{image,mask,xml}`` or VOC's layout. Finished images are skipped (resume), ``torchrun`` ranks share the images, an
unreadable image is skipped and listed at the end (``--on_error``); the folder records its settings.

    python scripts/infer_rsepm.py --root_dir ../VOC2012/ --dataset VOC --domain validation \\
        --backbone resnet50 --tag "ResNet50@VOC@RS+EPM@Official" --conf_th 0.34
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Dict, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from wseg import io, rsepm
from wseg.cli import add_bool_flag
from wseg.engine.per_image import Failures, add_on_error_flag, pending_shard, rank_world, run_images
from wseg.engine.runtime import LOG, resolve_device, setup_logging
from wseg.errors import WsegError

SETTINGS_FILE = ".rsepm_infer.json"
DATASETS = {"VOC": "voc12", "COCO": "coco14"}


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    """Flags both RS+EPM stages share (released names first)."""
    p.add_argument("--root_dir", "--voc12_root", "--data_root", dest="root_dir", default="../VOC2012/",
                   help="dataset root: RS+EPM's {train,train_aug,validation,test}/{image,mask,xml} or VOC's layout "
                        "(default ../VOC2012/, released)")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS),
                   help="VOC (21 classes) or COCO (81); default: the root's classes.txt, else VOC")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (instead of --dataset)")
    p.add_argument("--domain", default="train",
                   help="split: train, train_aug, validation (= VOC's val), test, or a list file (default train)")
    add_bool_flag(p, "--single", "only images with exactly one class (released --single)")
    add_bool_flag(p, "--released_xml", "image labels as the released XML reader gives them (objects whose clipped "
                                       "box has zero width or height are dropped); default: every object")
    p.add_argument("--tag", default=rsepm.TAG, help="experiment tag naming the released folders")
    p.add_argument("--pred_dir", default="./experiments/", help="released experiments folder (default ./experiments/)")
    add_bool_flag(p, "--reverse", "process the images in reverse order (released; torchrun shards share the work)")
    p.add_argument("--log", default=None, help="log file (default: next to the output folder)")
    add_on_error_flag(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p)
    p.add_argument("--weights", default=None,
                   help="network weights (released last.pth or wseg's); default {pred_dir}/models/{tag}/{strategy}.pth")
    p.add_argument("--strategy", default="last", help="weights file name under the tag's model folder (released)")
    p.add_argument("--backbone", default=None, help="resnet50 | resnet101 (default: from the weights, else resnet50)")
    p.add_argument("--output_stride", type=int, default=None, choices=(8, 16), help="default: the weights', else 16")
    p.add_argument("--class_fn", default=None, choices=("sigmoid", "softmax"), help="default sigmoid (released)")
    add_bool_flag(p, "--same", "resize the segmentation logits to the scaled input before the softmax (released "
                               "default True)", default=True)
    p.add_argument("--interpolation", default="nearest", choices=("nearest", "bilinear"),
                   help="resize mode of the segmentation maps (released default nearest)")
    p.add_argument("--conf_th", type=float, default=rsepm.CONF_GT,
                   help="class threshold on the mean sigmoid score; -1 (default) = the ground-truth image labels "
                        f"(README: {rsepm.README_CONF_TH} for validation / test)")
    p.add_argument("--scales", type=float, nargs="+", default=list(rsepm.SCALES),
                   help="test scales, the first fixes the averaged map's size (released 1.0 0.5 1.5 2.0)")
    add_bool_flag(p, "--hflip", "add mirrored inputs (released True)", default=True)
    p.add_argument("--out_dir", default=None, help="seed folder (default {pred_dir}/predictions/{tag}/{domain})")
    p.add_argument("--seed_format", default="pkl", choices=("pkl", "npy"),
                   help="pkl: the released {'keys', 'seed'} pickle (default); npy: wseg CAM dicts")
    p.add_argument("--device", default="auto")
    p.add_argument("--gpus", default=None, help="released: CUDA_VISIBLE_DEVICES, set before CUDA starts (else use "
                                                "--device)")
    add_bool_flag(p, "--amp", "fp16 autocast on GPU (not released)")
    p.add_argument("--num_workers", type=int, default=2, help="image-loading worker processes")


def open_root(args: argparse.Namespace):
    from wseg.data.voc import VOCRoot

    spec = args.classes or (DATASETS[args.dataset] if args.dataset else None)
    voc = VOCRoot(args.root_dir, spec)
    ids = rsepm.domain_ids(voc, args.domain)
    return voc, ids


def load_labels(voc, ids, args: argparse.Namespace, needed: bool) -> Optional[Dict[str, np.ndarray]]:
    """Image labels when the classes come from them (``--conf_th -1``) or ``--single`` needs them."""
    if not needed:
        return None
    try:
        return rsepm.image_labels(voc, ids, args.released_xml)
    except WsegError as exc:
        raise WsegError(f"{exc}; (labels are needed for --conf_th -1 and --single: pass --conf_th "
                        f"{rsepm.README_CONF_TH} for unlabelled splits)")


def single_ids(ids, labels) -> list:
    return [i for i in ids if int(np.asarray(labels[i]).sum()) == 1]


class _Images(Dataset):
    """``(normalised (3, H, W) tensor, label or None)`` per id."""

    def __init__(self, voc, ids, labels):
        self.voc, self.ids, self.labels = voc, list(ids), labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        img = io.load_image(self.voc.image_path(image_id))
        label = None if self.labels is None else np.asarray(self.labels[image_id], np.float32)
        return torch.from_numpy(rsepm.normalize_image(img)), label


def check(args: argparse.Namespace) -> None:
    """One-line errors for flag values before anything is read or written (the pipeline calls it before its first
    stage)."""
    if not all(math.isfinite(s) and 0 < s <= 4 for s in args.scales):
        raise WsegError(f"--scales {' '.join(f'{s:g}' for s in args.scales)}: each must lie in (0, 4] "
                        "(released 1.0 0.5 1.5 2.0)")
    if not math.isfinite(args.conf_th):
        raise WsegError(f"--conf_th {args.conf_th}: need a number (-1 = ground-truth labels, README 0.34)")
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: must be >= 0 (0 = load in this process)")


def run(args: argparse.Namespace) -> dict:
    from wseg.models.rsepm import build_rsepm

    check(args)
    if args.gpus is not None:
        if torch.cuda.is_initialized():
            LOG.warning("--gpus %s ignored: CUDA already started in this process; use --device", args.gpus)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpus)
    voc, ids = open_root(args)
    labels = load_labels(voc, ids, args, args.conf_th == rsepm.CONF_GT or args.single)
    if args.single:
        ids = single_ids(ids, labels)
    folder = rsepm.domain_folder(args.domain)
    out_dir = args.out_dir or os.path.join(args.pred_dir, "predictions", args.tag, folder)
    weights = args.weights or os.path.join(args.pred_dir, "models", args.tag, args.strategy + ".pth")
    ext = "." + args.seed_format
    setup_logging(args.log or os.path.join(os.path.dirname(os.path.abspath(out_dir)), "infer_rsepm.log"),
                  main_process=rank_world()[0] == 0)
    settings = {"weights": os.path.abspath(weights), "conf_th": float(args.conf_th), "scales": list(args.scales),
                "hflip": bool(args.hflip), "same": bool(args.same), "interpolation": args.interpolation,
                "backbone": args.backbone, "class_fn": args.class_fn, "output_stride": args.output_stride,
                "format": args.seed_format, "released_xml": bool(args.released_xml),
                "classes": list(voc.spec.class_names), "amp": bool(args.amp)}
    io.record_folder_settings(out_dir, settings, SETTINGS_FILE, "--out_dir", suffixes=rsepm.SEED_EXTS)
    todo = pending_shard(ids[::-1] if args.reverse else ids, [(out_dir, ext)])
    LOG.info("infer_rsepm: %d images, %d to do in this process -> %s", len(ids), len(todo), out_dir)
    if not todo:
        return {"out_dir": out_dir, "done": len(ids), "inferred": 0}
    device = resolve_device(args.device)
    net = build_rsepm(weights, args.backbone, voc.spec.num_classes, args.output_stride, args.class_fn)
    net.to(device).eval()
    LOG.info("network %s, %.2fM parameters; conf_th %g, scales %s, %s", net.config["backbone"],
             sum(p.numel() for p in net.parameters()) / 1e6, args.conf_th, args.scales, args.interpolation)
    failures = Failures("infer_rsepm", args.on_error)
    needs_label = args.conf_th == rsepm.CONF_GT

    def process(image_id: str, sample) -> None:
        image, label = sample
        pred_class, pred_mask = rsepm.infer_image(net, image, args.scales, args.hflip, args.same,
                                                  args.interpolation, device, args.amp)
        classes = rsepm.select_classes(pred_class, label if needs_label else None, args.conf_th)
        keys, seed = rsepm.make_seed(pred_mask, classes)
        rsepm.save_seed(os.path.join(out_dir, image_id + ext), keys, seed)

    done = run_images(_Images(voc, todo, labels), todo, process, failures, args.num_workers, desc="infer_rsepm")
    failures.check(len(todo))
    return {"out_dir": out_dir, "done": len(ids), "inferred": done, "weights": weights}
