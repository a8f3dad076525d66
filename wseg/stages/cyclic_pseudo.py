"""Cyclic pseudo masks (Pseudo-mask Matters, ICCV 2021): a trained segmentation network relabels its own training
list, and the network is retrained on these masks with plain cross-entropy (one cycle, as released).

Published (Eli-YiLi/WSSS_MMSeg ``tools/run_wsss.sh``:13-17): train PSPNet with PUS on the PPMG masks, pick the
2k-step checkpoint with the best val mIoU (``tools/pick_best_pth.py``), run its test on ``trainaug``
(``configs/pspnet_wsss/*_cp.py``: ``test_cfg`` slide 512/480 + CRF, ``pred_output_path``) and retrain the network
without PUS on ``ann_dir='cyclic_mask'`` (``pspnet_wres38-d8_20k_voc12aug.py``). The test is the mmseg 0.x
``aug_test`` of ``encoder_decoder.py``:307-336: ratios 0.5-1.75 of the 2048x512 target x flip
(``configs/_base_/datasets/pascal_voc12.py``:19-33), slide 512/480, mean of the softmaxes, dense CRF (10
iterations, Gaussian 3/1, bilateral 4/67/3 on the RGB image, ``DenseCRF``:287), arg-max written as a PNG.

Here the prediction is :func:`wseg.segmentation.predict.predict_split` with the segmentation config's test keys
(``test_scales``, ``test_flip``, ``test_mode``/``test_crop``/``test_stride``, ``crf_*``); the PUS configs
``segmentation/configs/pspnet_r*-d8_512x512_20k_voc12aug_pus.py`` hold the published values. The flags are the
segmentation config's (``--config`` = the config the network was trained with, ``--out_dir`` = its training
folder) plus:

- ``--out_masks``: the new pseudo-mask PNGs (one per image, dataset class indices, no 255);
- ``--ckpt_choice last`` (default: the final weights of the run) or ``best_val`` (``<out_dir>/best.pth``, chosen
  with the val ground truth, as published); ``--ckpt`` names weights directly. The result says
  ``selected_by_val: true`` when the weights were chosen with val ground truth (``best_val``, or weights whose
  metadata carry a validation mIoU), so reports can mark every number downstream;
- ``--infer_list``: the images to relabel (default the config's ``train_list``; published ``trainaug``).

Per-image runner: finished PNGs are skipped (resume), ``torchrun`` ranks share the images, an unreadable image is
skipped and listed (``on_error``); the folder records checkpoint and test settings (``.cyclic_pseudo.json``), and a
re-run with others into the same folder is refused.
"""
from __future__ import annotations

import argparse
import os

from wseg.cli import add_bool_flag
from wseg.errors import WsegError

SETTINGS_FILE = ".cyclic_pseudo.json"
CKPT_CHOICES = ("last", "best_val")
BEST_CKPT = "best.pth"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from wseg.segmentation.config import add_schema_arguments

    add_schema_arguments(p)
    p.dict_keys = ("model",)          # --set model.KEY=VALUE merges into the model dict
    p.add_argument("--out_masks", required=True, help="folder of the cyclic pseudo-mask PNGs")
    p.add_argument("--infer_list", default=None,
                   help="images to relabel (default: the config's train_list; published trainaug)")
    p.add_argument("--ckpt_choice", choices=CKPT_CHOICES, default="last",
                   help="last: the run's final weights (default); best_val: <out_dir>/best.pth, the checkpoint with "
                        "the best val mIoU (published pick_best_pth.py; the result is then marked selected_by_val)")
    p.add_argument("--ckpt", default=None, help="weights to use instead of --ckpt_choice")
    add_bool_flag(p, "--progress", "show progress bars", default=True)


def choose_checkpoint(cfg, out_dir: str, dataset: str, choice: str, ckpt: str | None) -> str:
    """The weights that feed the cyclic step (see the module docstring)."""
    from wseg.segmentation.train import final_weights_path

    if ckpt:
        if not os.path.isfile(ckpt):
            raise WsegError(f"--ckpt {ckpt}: file not found")
        return ckpt
    if choice == "best_val":
        path = os.path.join(out_dir, BEST_CKPT)
        if not os.path.isfile(path):
            raise WsegError(f"{path}: not found; the run validated never (val_every 0 or no val_list) or is not "
                            "trained: train with validation, or use --ckpt_choice last")
        return path
    path = final_weights_path(cfg, out_dir, dataset)
    if not os.path.isfile(path):
        raise WsegError(f"{path}: the run's final weights are missing (training unfinished, or another --out_dir / "
                        "max_iters); finish training or pass --ckpt")
    return path


def run(args: argparse.Namespace) -> dict:
    from wseg import io
    from wseg.data.voc import VOCRoot
    from wseg.engine.per_image import rank_world
    from wseg.engine.runtime import LOG, resolve_device, setup_logging
    from wseg.segmentation.checks import check_test_config
    from wseg.segmentation.config import config_from_args
    from wseg.segmentation.models import build_model, load_segmentation_weights
    from wseg.segmentation.predict import MMSegTest, crf_params, predict_split

    cfg = config_from_args(args)
    check_test_config(cfg)
    if cfg.get("pred_dir"):
        raise WsegError(f"pred_dir {cfg['pred_dir']}: the cyclic masks go to --out_masks; drop pred_dir")
    out_masks = args.out_masks
    voc = VOCRoot(cfg.voc12_root, cfg.classes)
    ids = voc.ids(args.infer_list or cfg.train_list)
    try:
        gt_dir = voc.gt_dir(args.infer_list or cfg.train_list)
    except WsegError:                       # no ground truth: nothing to protect
        gt_dir = None
    for name, folder in (("pseudo_mask_dir (the masks the network was trained on)", cfg.get("pseudo_mask_dir")),
                         ("the ground-truth folder", gt_dir)):
        if folder and os.path.isdir(folder) and os.path.isdir(out_masks) and os.path.samefile(folder, out_masks):
            raise WsegError(f"--out_masks {out_masks}: is {name}; its PNGs would count as finished cyclic masks. "
                            "Pass another folder")
    out_dir = cfg.output_dir()
    ckpt = choose_checkpoint(cfg, out_dir, voc.spec.name, args.ckpt_choice, args.ckpt)
    crf = crf_params(cfg) if cfg.crf else None
    mmseg = MMSegTest.from_config(cfg) if cfg.get("data_pipeline") == "mmseg" else None
    test = {"scales": [float(s) for s in (mmseg.scales if mmseg else cfg.test_scales)],
            "flip": bool(mmseg.flip if mmseg else cfg.test_flip), "crf": crf}
    if mmseg is not None:
        test.update(mode=mmseg.mode, crop=mmseg.crop, stride=mmseg.stride, ratio_of=mmseg.ratio_of,
                    resize=None if mmseg.resize is None else list(mmseg.resize))

    device = resolve_device(cfg.device)
    model = build_model(cfg, voc.spec.num_classes, weights=False)
    meta = load_segmentation_weights(model, ckpt) or {}
    model.to(device).eval()
    choice = "given" if args.ckpt else args.ckpt_choice
    selected_by_val = choice == "best_val" or meta.get("val_miou") is not None
    settings = {"ckpt": os.path.abspath(ckpt), "ckpt_bytes": os.path.getsize(ckpt),
                "ckpt_mtime": round(os.path.getmtime(ckpt), 3), "ckpt_choice": choice,
                "selected_by_val": selected_by_val, "test": test, "mean": list(cfg.mean), "std": list(cfg.std),
                "classes": list(voc.spec.class_names)}
    io.record_folder_settings(out_masks, settings, SETTINGS_FILE, "--out_masks", suffixes=(".png",))
    setup_logging(os.path.join(out_masks, "cyclic_pseudo.log"), main_process=rank_world()[0] == 0)
    LOG.info("cyclic pseudo masks: %d images of %s -> %s; weights %s (%s%s); test %s", len(ids),
             args.infer_list or cfg.train_list, out_masks, ckpt, choice,
             ", chosen with val ground truth" if selected_by_val else "", test)
    res = predict_split(model, voc, ids, out_masks, cfg.test_scales, cfg.test_flip, crf, cfg.mean, cfg.std, device,
                        bool(cfg.amp), int(cfg.num_workers), int(cfg.crf_workers), args.progress, None,
                        on_error=cfg.get("on_error", "skip"), mmseg=mmseg)
    return {"out_dir": out_masks, "done": len(ids), "predicted": res["predicted"],
            "images_per_s": res["images_per_s"], "ckpt": ckpt, "ckpt_choice": choice,
            "selected_by_val": selected_by_val, "ckpt_iter": meta.get("iter", meta.get("iters")),
            "ckpt_val_miou": meta.get("val_miou"), "test": test}
