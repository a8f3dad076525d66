"""AffinityNet training (stage 2b), after PSA ``train_aff.py`` / PPC ``aff_train.py``.

Labels: the low/high-alpha dCRF label PNGs of ``scripts/aff_prepare.py``. Augmentation as published: colour jitter
(0.3/0.3/0.3/0.1), a random ``--crop_size`` window (zero padding where the image is smaller; the labels are cut with
the same window and padding is "no score"), random horizontal flip; optionally (``--resize_long MIN MAX``, not in
the published recipe) a random long-side rescale first, for small images. The la/ha maps of the crop are reduced
to feature resolution as published (8x8 average pooling of their one-hot scores, then argmax each), combined into
confident labels (:func:`wseg.affinity.confident_labels`) and turned into pair labels within ``--radius``
(published ``ExtractAffinityLabelInRadius``: background-positive, foreground-positive, negative).

Loss (published): ``bg/4 + fg/4 + neg/2`` with ``bg = -sum(bg_label * log(a + 1e-5)) / (#bg + 1e-5)``, ``fg``
likewise and ``neg = -sum(neg_label * log(1 + 1e-5 - a)) / (#neg + 1e-5)``. Poly LR over the four published
parameter groups (x1/x2/x10/x20) with the published ``PolyOptimizer``. Starts from the ImageNet backbone weights.

A checkpoint is written atomically after every epoch; ``--resume`` (default on) continues from it, and every random
source is re-seeded per epoch, so a resumed run equals an uninterrupted one. ``torchrun`` runs it data-parallel
(DDP; NCCL on GPU, gloo on CPU).

Outputs: ``<session_name>.pth`` (final weights, a plain state dict as published), ``<session_name>_last.pth``
(resume checkpoint), ``<session_name>.log`` and ``<session_name>_scalars.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from wseg import io
from wseg.affinity import DEFAULT_RADIUS, IGNORE, AffinityLabelExtractor, confident_labels, pool_scores
from wseg.cli import add_bool_flag
from wseg.data.datasets import open_rgb
from wseg.data.transforms import ColorJitter, apply_crop, crop_box, hwc_to_chw, normalize, resize_long
from wseg.data.voc import VOCRoot
from wseg.engine import LOG, StepLogger, autocast, grad_scaler, optimizer_step, unwrap
from wseg.errors import WsegError
from wseg.stages.aff_prepare import SETTINGS_FILE as PREPARE_SETTINGS
from wseg.stages.common import begin_epoch, begin_training, check_schedule_flags, epoch_loader
from wseg.models.checkpoint import load_checkpoint, save_checkpoint, save_state_dict

STRIDE = 8
PREPARE_STAGE = "scripts/aff_prepare.py"
#: Settings a resume checkpoint must share with the current run (they fix the schedule and the network).
RESUME_KEYS = ("backbone", "batch_size", "max_epoches", "lr", "wt_dec", "crop_size", "radius", "train_list")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="ImageNet backbone: MXNet .params (ResNet-38) or .pth; omit to "
                                                   "train from scratch (synthetic demo). Not the CAM network.")
    p.add_argument("--backbone", default="resnet38", help="resnet38 | resnet38_tiny | resnet50 | resnet101 | ...")
    p.add_argument("--voc12_root", required=True)
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt (default: root's classes.txt)")
    p.add_argument("--train_list", required=True)
    p.add_argument("--la_crf_dir", required=True, help="low-alpha label PNGs (aff_prepare <out_crf>/crf_la)")
    p.add_argument("--ha_crf_dir", required=True, help="high-alpha label PNGs (aff_prepare <out_crf>/crf_ha)")
    p.add_argument("--session_name", default="resnet38_aff",
                   help="output prefix (path allowed): <name>.pth, <name>.log, <name>_last.pth")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_epoches", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01, help="base LR (PPC 0.01; PSA's VGG default 0.1)")
    p.add_argument("--wt_dec", type=float, default=5e-4)
    p.add_argument("--momentum", type=float, default=None,
                   help="SGD momentum; default reproduces the published PolyOptimizer quirk (momentum = wt_dec)")
    p.add_argument("--crop_size", type=int, default=448, help="square training crop (multiple of 8; published 448)")
    p.add_argument("--resize_long", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="random long-side rescale before the crop (off by default as published; e.g. for small "
                        "images)")
    p.add_argument("--radius", type=int, default=DEFAULT_RADIUS, help="pair radius at 1/8 resolution (published 5)")
    add_bool_flag(p, "--jitter", "colour jitter (published)", default=True)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    add_bool_flag(p, "--amp", "fp16 autocast + gradient scaling on GPU")
    p.add_argument("--seed", type=int, default=0)
    add_bool_flag(p, "--resume", "continue from <session_name>_last.pth when present (default on)", default=True)
    p.add_argument("--log_every", type=int, default=10, help="steps between scalar-log lines")


# --------------------------------------------------------------------------------------------- labels


def feature_label_map(la: np.ndarray, ha: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Confident affinity labels at feature resolution from la/ha label maps of one crop (255 = no score).

    As the published ``VOC12AffDataset``: each map's one-hot scores are average-pooled over ``stride x stride``
    blocks and arg-maxed (a block's majority class; ties go to the lower class index, background first), then
    combined by :func:`wseg.affinity.confident_labels`; blocks without any scored pixel become 255.
    """
    keys = np.union1d(np.union1d(np.unique(la), np.unique(ha)), [0])
    keys = keys[keys != IGNORE].astype(np.int64)
    la_p = pool_scores((la[None] == keys[:, None, None]).astype(np.float32), stride)
    ha_p = pool_scores((ha[None] == keys[:, None, None]).astype(np.float32), stride)
    return confident_labels(la_p, ha_p, keys)


def _prepared_alpha(folder: str):
    """The background power ``aff_prepare`` recorded for a label folder, or None (no or unreadable record)."""
    try:
        with open(os.path.join(folder, PREPARE_SETTINGS)) as f:
            return float(json.load(f)["alpha"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class AffinityTrainDataset(Dataset):
    """``(image (3, S, S), bg_pos (K, M), fg_pos (K, M), neg (K, M))`` for a random crop of side ``S``."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], la_dir: str, ha_dir: str, crop_size: int,
                 radius: int = DEFAULT_RADIUS, resize_range: Optional[Tuple[int, int]] = None, jitter: bool = True):
        self.voc, self.ids = voc, list(ids)
        self.la_dir, self.ha_dir = la_dir, ha_dir
        self.crop = int(crop_size)
        self.resize_range = tuple(resize_range) if resize_range else None
        self.jitter = ColorJitter() if jitter else None
        self.extract = AffinityLabelExtractor(self.crop // STRIDE, radius)
        self._check_files()

    def _check_files(self) -> None:
        for folder in (self.la_dir, self.ha_dir):
            io.require_dir(folder, "affinity label", f"run {PREPARE_STAGE} for this list first")
        if os.path.samefile(self.la_dir, self.ha_dir):
            raise WsegError(f"--la_crf_dir and --ha_crf_dir are the same folder ({self.la_dir}); pass "
                            f"{PREPARE_STAGE}'s low- and high-alpha folders")
        alphas = [_prepared_alpha(folder) for folder in (self.la_dir, self.ha_dir)]
        if None not in alphas and not alphas[0] < alphas[1]:
            raise WsegError(f"--la_crf_dir {self.la_dir} holds alpha {alphas[0]:g} labels and --ha_crf_dir "
                            f"{self.ha_dir} alpha {alphas[1]:g}: the low-alpha folder must have the lower alpha "
                            "(swapped?)")
        for folder in (self.la_dir, self.ha_dir):
            missing = [i for i in self.ids if not os.path.isfile(os.path.join(folder, i + ".png"))]
            if missing:
                raise WsegError(f"{os.path.join(folder, missing[0] + '.png')}: affinity label not found "
                                f"({len(missing)} of {len(self.ids)} missing); run {PREPARE_STAGE} on this list")
        for i in self.ids:  # headers only: cheap, and errors surface here rather than in a loader worker
            size = _png_size(self.voc.image_path(i))
            for folder in (self.la_dir, self.ha_dir):
                path = os.path.join(folder, i + ".png")
                if _png_size(path) != size:
                    raise WsegError(f"{path}: label size {_png_size(path)} differs from the image size {size} "
                                    f"(W, H); the labels belong to other images: re-run {PREPARE_STAGE}")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int):
        image_id = self.ids[idx]
        img = open_rgb(self.voc.image_path(image_id))
        la = io.load_mask_png(os.path.join(self.la_dir, image_id + ".png"))
        ha = io.load_mask_png(os.path.join(self.ha_dir, image_id + ".png"))
        if self.resize_range:
            img = resize_long(img, random.randint(*self.resize_range))
            la = _resize_nearest(la, img.size)
            ha = _resize_nearest(ha, img.size)
        if self.jitter is not None:
            img = self.jitter(img)
        arr = np.asarray(img)
        box = crop_box(arr.shape[0], arr.shape[1], self.crop)
        arr = apply_crop(arr, box, self.crop, fill=0)
        la = apply_crop(la, box, self.crop, fill=255)
        ha = apply_crop(ha, box, self.crop, fill=255)
        if bool(random.getrandbits(1)):
            arr, la, ha = arr[:, ::-1], la[:, ::-1], ha[:, ::-1]
        x = torch.from_numpy(hwc_to_chw(normalize(arr)))
        bg, fg, neg = self.extract(feature_label_map(la, ha))
        return x, bg, fg, neg


def _png_size(path: str) -> Tuple[int, int]:
    io.require_file(path, "file", f"check --voc12_root and the label folders, or re-run {PREPARE_STAGE}")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:
        raise WsegError(f"{path}: cannot read ({exc.__class__.__name__}); delete it and re-run its stage")


def _resize_nearest(mask: np.ndarray, size_wh: Tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(mask).resize(size_wh, resample=Image.NEAREST))


# --------------------------------------------------------------------------------------------- loss


def affinity_loss(aff: torch.Tensor, bg: torch.Tensor, fg: torch.Tensor, neg: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Published AffinityNet loss: ``bg/4 + fg/4 + neg/2`` (cross-entropies averaged within each pair set).

    ``aff`` are the predicted affinities ``(B, K, M)``; ``bg``/``fg``/``neg`` the 0/1 pair labels of the same shape.
    Returns ``loss``, the three parts and the pair counts.
    """
    bg_count = bg.sum() + 1e-5
    fg_count = fg.sum() + 1e-5
    neg_count = neg.sum() + 1e-5
    bg_loss = torch.sum(-bg * torch.log(aff + 1e-5)) / bg_count
    fg_loss = torch.sum(-fg * torch.log(aff + 1e-5)) / fg_count
    neg_loss = torch.sum(-neg * torch.log(1.0 + 1e-5 - aff)) / neg_count
    loss = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return {"loss": loss, "bg_loss": bg_loss, "fg_loss": fg_loss, "neg_loss": neg_loss,
            "bg_cnt": bg_count.detach(), "fg_cnt": fg_count.detach(), "neg_cnt": neg_count.detach()}


# --------------------------------------------------------------------------------------------- run


def _check_args(args: argparse.Namespace) -> None:
    if args.radius < 2:
        raise WsegError(f"--radius {args.radius}: must be at least 2 (published 5)")
    min_crop = STRIDE * (2 * args.radius - 1)   # the pair layout needs 2r - 1 feature columns
    if args.crop_size < min_crop or args.crop_size % STRIDE:
        raise WsegError(f"--crop_size {args.crop_size}: must be a multiple of {STRIDE} and at least {min_crop} "
                        f"for --radius {args.radius} (published 448)")
    check_schedule_flags(args)


def _check_resume(path: str, state_args: dict, args: argparse.Namespace) -> None:
    cur = vars(args)
    diff = [f"{k} {state_args.get(k)!r} -> {cur.get(k)!r}" for k in RESUME_KEYS
            if k in state_args and _norm(state_args.get(k)) != _norm(cur.get(k))]
    if diff:
        raise WsegError(f"{path}: resume checkpoint of another configuration ({'; '.join(diff)}); delete it, "
                        "change --session_name, or pass --resume False")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def run(args: argparse.Namespace) -> dict:
    from wseg.models.affinity_net import NETWORK_NAME, build_affinity_net_for_training
    from wseg.optim import PolyOptimizer

    _check_args(args)
    dist, voc, ids = begin_training(args, "aff_train")
    device = dist.device
    out_prefix = args.session_name
    dataset = AffinityTrainDataset(voc, ids, args.la_crf_dir, args.ha_crf_dir, args.crop_size, args.radius,
                                   args.resize_long, args.jitter)
    loader, sampler, gen, steps_per_epoch = epoch_loader(dataset, args, dist)
    per_step = args.batch_size * dist.world_size
    max_step = steps_per_epoch * args.max_epoches

    model = build_affinity_net_for_training(args.backbone, args.weights, radius=args.radius)
    model.to(device)
    optimizer = PolyOptimizer(unwrap(model).get_parameter_groups(), lr=args.lr, weight_decay=args.wt_dec,
                              max_step=max_step, momentum=args.momentum)
    scaler = grad_scaler(device, args.amp)
    start_epoch = 0
    last = out_prefix + "_last.pth"
    if args.resume and os.path.isfile(last):
        state = load_checkpoint(last, model, optimizer, scaler)
        _check_resume(last, state.get("args") or {}, args)
        start_epoch = int(state["epoch"]) + 1
        LOG.info("resumed from %s at epoch %d (step %d)", last, start_epoch, optimizer.global_step)
    net = dist.wrap(model)
    net.train()
    logger = StepLogger(out_prefix + "_scalars.jsonl" if dist.is_main else None, max_step, per_step,
                        args.log_every)
    first_loss = last_loss = None
    for epoch in range(start_epoch, args.max_epoches):
        begin_epoch(epoch, args, dist, sampler, gen)                  # data order, crops, flips, jitter, dropout
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.max_epoches}", disable=not dist.is_main,
                   dynamic_ncols=True, leave=False)
        for img, bg, fg, neg in bar:
            img = img.to(device, non_blocking=True)
            with autocast(device, args.amp):
                aff = net(img)
            aff = aff.float()
            if aff.shape[1:] != bg.shape[1:]:
                raise WsegError(f"AffinityNet gives {tuple(aff.shape[1:])} pair affinities for a {args.crop_size} "
                                f"crop but the labels have {tuple(bg.shape[1:])}; the backbone's output stride "
                                "must be 8 (check --backbone)")
            losses = affinity_loss(aff, bg.to(device), fg.to(device), neg.to(device))
            loss = losses["loss"]
            optimizer_step(loss, optimizer, scaler, f"step {optimizer.global_step}", losses)
            value = float(loss.detach())
            first_loss = value if first_loss is None else first_loss
            last_loss = value
            bar.set_postfix(loss=f"{value:.3f}")
            logger.step(optimizer.global_step, optimizer.param_groups[0]["lr"], losses)
        if dist.is_main:
            save_checkpoint(last, unwrap(model), optimizer, optimizer.global_step, vars(args), epoch=epoch,
                            scaler=scaler, meta={"network": NETWORK_NAME, "backbone": args.backbone})
        dist.barrier()
    if dist.is_main:
        save_state_dict(out_prefix + ".pth", unwrap(model),
                        meta={"network": NETWORK_NAME, "backbone": args.backbone, "radius": args.radius,
                              "num_classes": voc.spec.num_classes})
        LOG.info("saved %s.pth", out_prefix)
    dist.barrier()
    dist.close()
    return {"weights": out_prefix + ".pth", "steps": max_step, "first_loss": first_loss, "last_loss": last_loss}
