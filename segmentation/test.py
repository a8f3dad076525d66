"""Multi-scale + flip inference of a trained DeepLab, optional dense CRF, palette PNGs and the evaluation, after
the published usr922/wseg ``segmentation/experiment/*/test.py``.

For each test scale the image and its mirror go through the network; the logits, resized to the image and
un-mirrored, are averaged, soft-maxed, refined by the dense CRF (``crf``) and arg-maxed. Finished images are
skipped. A labelled split goes to ``<out_dir>/pred_<list>_crf`` (and, without CRF, ``<out_dir>/pred_<list>``) and is
evaluated with the code of ``scripts/eval.py`` (per-class IoU, mIoU, FP/FN, appended to ``eval_log``), with and
without the CRF; an unlabelled one (VOC ``test``) is written in the evaluation server's layout
``<out_dir>/results/VOC2012/Segmentation/comp6_test_cls/<id>.png``.

    python segmentation/test.py --config segmentation/configs/deeplabv1_resnet38.py --voc12_root VOC2012 \\
        --ckpt runs/segmentation/deeplabv1_resnet38/deeplabv1_resnet38_voc12_itr20000_all.pth
"""
import os
import sys

from wseg.cli import add_bool_flag, main
from wseg.pipeline import load_script


def config_module():
    """``segmentation/config.py``, imported by path (this folder is not a package)."""
    return load_script("segmentation/config.py")


def build_parser():
    p = config_module().ConfigArgumentParser(description=__doc__)
    p.add_argument("--ckpt", default=None,
                   help="network weights: our final/best .pth, last.pth, or a published DeepLab .pth "
                        "(default: the config's final weights in out_dir)")
    add_bool_flag(p, "--eval", "evaluate a labelled split against its ground truth", default=True)
    add_bool_flag(p, "--progress", "show progress bars", default=True)
    return p


def default_ckpt(cfg, out_dir: str, dataset: str) -> str:
    from wseg.errors import WsegError
    from wseg.segmentation import LAST_CKPT, final_weights_path

    for path in (final_weights_path(cfg, out_dir, dataset), os.path.join(out_dir, LAST_CKPT)):
        if os.path.isfile(path):
            return path
    raise WsegError(f"{out_dir}: no trained weights ({os.path.basename(final_weights_path(cfg, out_dir, dataset))} "
                    f"or {LAST_CKPT}); pass --ckpt or train first")


def list_path(voc, name: str) -> str:
    return name if os.path.isfile(name) else voc.split_path(name)


def evaluate(cfg, voc, ids_list: str, pred_dir: str, out_dir: str, comment: str, progress: bool) -> dict:
    """The evaluation of ``scripts/eval.py`` (same code, same report and log format) on the predictions."""
    from wseg.data.voc import read_list

    eval_mod = load_script("scripts/eval.py")
    n = len(read_list(ids_list))
    workers = min(4, os.cpu_count() or 1, max(1, n // 64))  # a process pool only pays off for longer lists
    classes = cfg.classes or (os.path.join(voc.root, "classes.txt")
                              if os.path.isfile(os.path.join(voc.root, "classes.txt")) else "voc12")
    argv = ["--list", ids_list, "--predict_dir", pred_dir, "--gt_dir", cfg.gt_dir or voc.gt_dir(), "--type", "png",
            "--classes", classes, "--logfile", cfg.eval_log or os.path.join(out_dir, "eval_log.txt"),
            "--comment", comment, "--num_workers", str(workers), "--progress", str(progress)]
    return eval_mod.run(eval_mod.build_parser().parse_args(argv))


def run(args) -> dict:
    """Predict (and evaluate). Returns ``{"miou", "fp", "fn", "precision", "recall", "pixel_acc", "iou"}`` of the
    MS+flip predictions and, with ``crf``, the same keys with ``_crf`` for the CRF-refined ones (percent; absent for
    an unlabelled split), plus ``pred_dir`` (final predictions), ``pred_dir_nocrf``, ``predicted``,
    ``images_per_s``, ``ckpt``, ``labelled``."""
    from wseg.data.voc import VOCRoot
    from wseg.engine import LOG, resolve_device, setup_logging
    from wseg.errors import WsegError
    from wseg.segmentation import (build_model, check_test_config, crf_params, load_segmentation_weights,
                                   predict_split, record_prediction_settings, server_layout_dir)

    cfg = config_module().config_from_args(args)
    check_test_config(cfg)
    out_dir = cfg.output_dir()
    os.makedirs(out_dir, exist_ok=True)
    setup_logging(os.path.join(out_dir, "test.log"))
    voc = VOCRoot(cfg.voc12_root, cfg.classes)
    ids = voc.ids(cfg.test_list)
    has_gt = [voc.mask_path(i) is not None for i in ids]
    labelled = all(has_gt)
    if any(has_gt) and not labelled:
        raise WsegError(f"{cfg.test_list}: {has_gt.count(False)} of {len(ids)} images have no ground truth; "
                        "use a fully labelled or a fully unlabelled list")
    ckpt = args.ckpt or default_ckpt(cfg, out_dir, voc.spec.name)
    device = resolve_device(cfg.device)
    model = build_model(cfg, voc.spec.num_classes, weights=False)
    load_segmentation_weights(model, ckpt)
    model.to(device).eval()

    crf = crf_params(cfg) if cfg.crf else None
    name = os.path.splitext(os.path.basename(cfg.test_list))[0]
    if labelled:
        pred_dir = cfg.pred_dir or os.path.join(out_dir, f"pred_{name}{'_crf' if crf else ''}")
        plain_dir = (pred_dir[:-4] if pred_dir.endswith("_crf") else pred_dir + "_nocrf") if crf else None
    else:  # the evaluation server takes one result: the final (CRF) predictions
        pred_dir, plain_dir = cfg.pred_dir or server_layout_dir(out_dir), None
    gt_dir = cfg.gt_dir or (voc.gt_dir() if labelled else None)
    for d in (pred_dir, plain_dir):
        if d and gt_dir and os.path.isdir(d) and os.path.isdir(gt_dir) and os.path.samefile(d, gt_dir):
            raise WsegError(f"pred_dir {d}: this is the ground-truth folder; its masks would count as finished "
                            "predictions and score 100%. Set pred_dir to another folder")
    settings = {"ckpt": os.path.abspath(ckpt), "ckpt_bytes": os.path.getsize(ckpt),
                "ckpt_mtime": round(os.path.getmtime(ckpt), 3), "scales": list(cfg.test_scales),
                "flip": bool(cfg.test_flip)}
    record_prediction_settings(out_dir, pred_dir, {**settings, "crf": crf})
    if plain_dir:
        record_prediction_settings(out_dir, plain_dir, {**settings, "crf": None})
    LOG.info("segmentation test %s -> %s (%d images, scales %s, flip %s, crf %s)", ckpt, pred_dir, len(ids),
             cfg.test_scales, cfg.test_flip, crf)
    res = predict_split(model, voc, ids, pred_dir, cfg.test_scales, cfg.test_flip, crf, cfg.mean, cfg.std, device,
                        bool(cfg.amp), int(cfg.num_workers), int(cfg.crf_workers), args.progress, plain_dir)
    LOG.info("predicted %d of %d images (%s img/s) into %s", res["predicted"], res["num_images"],
             res["images_per_s"], pred_dir)
    result = {**res, "pred_dir": pred_dir, "pred_dir_nocrf": plain_dir, "ckpt": ckpt, "labelled": labelled}
    if labelled and args.eval:
        keys = ("miou", "fp", "fn", "precision", "recall", "pixel_acc", "iou")
        comment = f"{cfg.exp_name} {os.path.basename(ckpt)} {name} scales={list(cfg.test_scales)} flip={cfg.test_flip}"
        lst = list_path(voc, cfg.test_list)
        if crf:
            ev_plain = evaluate(cfg, voc, lst, plain_dir, out_dir, comment + " crf=False", args.progress)
            ev = evaluate(cfg, voc, lst, pred_dir, out_dir, comment + " crf=True", args.progress)
            result.update({k: ev_plain[k] for k in keys})
            result.update({k + "_crf": ev[k] for k in keys})
            LOG.info("mIoU %.3f%% (MS+flip), %.3f%% (+ CRF)", ev_plain["miou"], ev["miou"])
        else:
            ev = evaluate(cfg, voc, lst, pred_dir, out_dir, comment + " crf=False", args.progress)
            result.update({k: ev[k] for k in keys})
            LOG.info("mIoU %.3f%% (MS+flip)", ev["miou"])
    return result


if __name__ == "__main__":
    sys.exit(main(build_parser, run))
