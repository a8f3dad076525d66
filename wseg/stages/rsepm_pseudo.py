"""RS+EPM pseudo masks from seeds (released ``convert_seed_to_pseudo_masks.py``): background ``(1 - max seed)^2``
(``--bg_gamma``; a constant with ``--bg_th``; none for multi-stage seeds, i.e. a tag holding ``MS``), dense CRF (10
iterations, Gaussian sxy 1 / compat 3, bilateral sxy 67 / srgb 3 / compat 4), argmax -> dataset classes, a palette
PNG per image. See wseg/rsepm.py.

Released flags: ``--root_dir --dataset --domain --single --pred_dir --folder --tag --mode --bg_th --bg_gamma
--num_workers --reverse``. Seeds are read from ``{pred_dir}/{folder}/{tag}/{domain}/<id>.pkl`` (released pickle)
or ``<id>.npy`` (wseg CAM dict), or from ``--seed_dir``; masks go to ``{pred_dir}/pseudo-labels/{tag}/{domain}/``
(or ``--out_dir``). The CRF sees the image as the released de-normalisation returns it (``--raw_image`` for the
file's pixels). Finished images are skipped, ``torchrun`` ranks share the images, a missing or broken seed is skipped
and listed at the end (``--on_error``; the released script prints "not found" and goes on); the folder records its
settings.

    python scripts/convert_seed_to_pseudo_masks.py --root_dir ../VOC2012/ --dataset VOC --domain validation \\
        --folder predictions --tag "ResNet50@VOC@RS+EPM@Official"
"""
from __future__ import annotations

import argparse
import math
import os
from typing import Optional, Tuple

from wseg import io, rsepm
from wseg.cli import add_bool_flag
from wseg.crf import MAX_CRF_ITERS, check_crf_params
from wseg.engine.per_image import Failures, pending_shard, rank_world
from wseg.engine.runtime import LOG, setup_logging
from wseg.errors import WsegError
from wseg.parallel import imap_pool
from wseg.stages.rsepm_infer import add_dataset_arguments, load_labels, open_root, single_ids

SETTINGS_FILE = ".rsepm_pseudo.json"


def _gamma(value: str):
    if str(value).strip().lower() == "none":
        return "none"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {value!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p)
    p.add_argument("--folder", default="predictions", help="seed folder under {pred_dir}/ (released)")
    p.add_argument("--seed_dir", default=None, help="seed folder (default {pred_dir}/{folder}/{tag}/{domain})")
    p.add_argument("--out_dir", default=None, help="mask folder (default {pred_dir}/pseudo-labels/{tag}/{domain})")
    p.add_argument("--mode", default="crf", help="crf (released default); anything else: constant --bg_th, no CRF")
    p.add_argument("--bg_th", type=float, default=None, help="constant background score (released default none)")
    p.add_argument("--bg_gamma", type=_gamma, default=None,
                   help=f"background = (1 - max seed)^gamma; default {rsepm.BG_GAMMA}, or none when the tag holds MS "
                        "(released); 'none' adds no background (seeds that carry their own)")
    p.add_argument("--crf_iters", type=int, default=rsepm.CRF_PARAMS["t"], help="mean-field iterations (10)")
    p.add_argument("--pos_w", type=float, default=rsepm.CRF_PARAMS["pos_w"], help="Gaussian kernel weight (3)")
    p.add_argument("--pos_xy_std", type=float, default=rsepm.CRF_PARAMS["pos_xy_std"], help="Gaussian sxy (1)")
    p.add_argument("--bi_w", type=float, default=rsepm.CRF_PARAMS["bi_w"], help="bilateral kernel weight (4)")
    p.add_argument("--bi_xy_std", type=float, default=rsepm.CRF_PARAMS["bi_xy_std"], help="bilateral sxy (67)")
    p.add_argument("--bi_rgb_std", type=float, default=rsepm.CRF_PARAMS["bi_rgb_std"], help="bilateral srgb (3)")
    add_bool_flag(p, "--raw_image", "give the CRF the file's pixels instead of the released de-normalised image")
    p.add_argument("--num_workers", type=int, default=min(16, os.cpu_count() or 1),
                   help="CRF worker processes (released 16; default min(16, CPUs); 0 = in this process)")
    p.add_argument("--gpus", default=None, help="released flag, unused (the conversion runs on CPUs)")


def crf_params(args: argparse.Namespace) -> dict:
    return dict(t=int(args.crf_iters), pos_w=args.pos_w, pos_xy_std=args.pos_xy_std, bi_w=args.bi_w,
                bi_xy_std=args.bi_xy_std, bi_rgb_std=args.bi_rgb_std)


def _check_args(args: argparse.Namespace) -> Tuple[str, Optional[float]]:
    if not 1 <= args.crf_iters <= MAX_CRF_ITERS:
        raise WsegError(f"--crf_iters {args.crf_iters}: need 1 to {MAX_CRF_ITERS} mean-field iterations (released 10)")
    params = crf_params(args)
    check_crf_params(params.pop("t"), **params)
    if args.bg_th is not None and not math.isfinite(args.bg_th):
        raise WsegError(f"--bg_th {args.bg_th}: need a finite background score")
    if args.num_workers < 0:
        raise WsegError(f"--num_workers {args.num_workers}: must be >= 0 (0 = CRFs in this process)")
    bg, value = rsepm.resolve_bg(args.tag, args.bg_th, args.bg_gamma)
    if bg == "gamma" and not (math.isfinite(value) and value > 0):
        raise WsegError(f"--bg_gamma {value:g}: need a finite power > 0 (released 2)")
    if args.mode != "crf" and bg != "th":
        raise WsegError(f"--mode {args.mode}: without the CRF the background is the constant --bg_th; pass --bg_th")
    return bg, value


def _job(item: Tuple) -> Optional[str]:
    """One image: image + seed -> pseudo-mask PNG. Module level for process pools; returns None or the error."""
    image_path, seed_dir, image_id, out_path, num_classes, mode, bg, value, params, released_image = item
    try:
        img = io.load_image(image_path)
        keys, seed = rsepm.load_seed(rsepm.find_seed(seed_dir, image_id), num_classes)
        label = rsepm.seed_to_pseudo(img, keys, seed, mode, bg, value, params, released_image)
        io.save_mask_png(out_path, label)
    except WsegError as exc:
        return str(exc)
    return None


def run(args: argparse.Namespace) -> dict:
    bg, value = _check_args(args)
    voc, ids = open_root(args)
    if args.single:
        ids = single_ids(ids, load_labels(voc, ids, args, True))
    folder = rsepm.domain_folder(args.domain)
    seed_dir = args.seed_dir or os.path.join(args.pred_dir, args.folder, args.tag, folder)
    out_dir = args.out_dir or os.path.join(args.pred_dir, "pseudo-labels", args.tag, folder)
    if os.path.abspath(out_dir) == os.path.abspath(seed_dir):
        raise WsegError(f"--out_dir {out_dir}: is the seed folder; write the pseudo masks elsewhere")
    io.require_dir(seed_dir, "seed", "run scripts/infer_rsepm.py first (or fix --pred_dir/--folder/--tag/--seed_dir)")
    params = crf_params(args)
    settings = {"seed_dir": os.path.abspath(seed_dir), "mode": args.mode, "bg": bg, "bg_value": value,
                "crf": params, "raw_image": bool(args.raw_image), "classes": list(voc.spec.class_names)}
    io.record_folder_settings(out_dir, settings, SETTINGS_FILE, "--out_dir", suffixes=(".png",))
    setup_logging(args.log or os.path.join(os.path.dirname(os.path.abspath(out_dir)), "convert_seed.log"),
                  main_process=rank_world()[0] == 0)
    todo = pending_shard(ids[::-1] if args.reverse else ids, [(out_dir, ".png")])
    LOG.info("convert_seed_to_pseudo_masks: %d images, %d to do in this process; background %s %s, mode %s -> %s",
             len(ids), len(todo), bg, value, args.mode, out_dir)
    failures = Failures("convert_seed_to_pseudo_masks", args.on_error)
    items = [(voc.image_path(i), seed_dir, i, os.path.join(out_dir, i + ".png"), voc.spec.num_classes, args.mode,
              bg, value, params, not args.raw_image) for i in todo]
    for index, error in imap_pool(_job, items, num_workers=args.num_workers, desc="pseudo"):
        if error is not None:
            failures.record(todo[index], error)
    failures.check(len(todo))
    return {"out_dir": out_dir, "done": len(ids), "processed": len(todo), "skipped": len(failures.items)}
