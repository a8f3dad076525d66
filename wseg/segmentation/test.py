"""The segmentation test stage (``segmentation/test.py``), after the published usr922/wseg
``segmentation/experiment/*/test.py``.

For each test scale the image and its mirror go through the network; the logits, resized to the image and
un-mirrored, are averaged, soft-maxed, refined by the dense CRF (``crf``) and arg-maxed. Finished images are
skipped. A labelled split goes to ``<out_dir>/pred_<list>_crf`` (and, without CRF, ``<out_dir>/pred_<list>``) and is
evaluated with :mod:`wseg.stages.eval` (per-class IoU, mIoU, FP/FN, appended to ``eval_log``), with and without the
CRF; an unlabelled one (VOC ``test``) is written in the evaluation server's layout
``<out_dir>/results/VOC2012/Segmentation/comp6_test_cls/<id>.png``. Each prediction folder records the checkpoint and
test settings that made it beside itself (``.<folder>.predictions.json``, :func:`wseg.io.record_folder_settings`):
another checkpoint or other settings into a folder that already holds predictions is refused.

With ``data_pipeline = "mmseg"`` the predictions are mmseg's (:class:`wseg.segmentation.predict.MMSegTest`): the
test resize to ``img_scale``, ``test_mode`` whole or slide (``test_crop``/``test_stride``), the TTA ratios
``test_scales`` (multiplying the resize target, mmseg 0.x, or the original image, 1.x: ``tta_ratio_of``) x
``test_flip`` with the mean of the softmaxes, then the optional CRF. ``test_scales=[1.0] test_flip=False
crf=False`` is mmseg 1.2.2's own single-scale ``inference`` of the config, PNG for PNG.

Two wseg additions, off by default as published (:mod:`wseg.segmentation.calibration`): ``bg_scale`` multiplies
the background probability before the arg-max and the CRF, and ``label_filter`` names predicted image labels
(:mod:`wseg.label_filter`, ``scripts/label_train.py``) whose other classes are dropped. ``bg_scale=auto`` and
``label_filter_check`` (held-out labels of training images, ``label_train.py --out_cv``) choose the factor and
whether to filter on the training images, against the masks the network was trained on (``pseudo_mask_dir``);
``label_filter_powers`` adds soft filters to that choice (each class weighted by the classifier's score to a power).
With either addition in use the published arg-max goes to ``<plain folder>_published`` and is scored as
``miou_published``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from wseg.errors import WsegError

PREDICTION_SETTINGS = ".predictions.json"


def default_ckpt(cfg, out_dir: str, dataset: str) -> str:
    from wseg.segmentation.train import LAST_CKPT, final_weights_path

    for path in (final_weights_path(cfg, out_dir, dataset), os.path.join(out_dir, LAST_CKPT)):
        if os.path.isfile(path):
            return path
    raise WsegError(f"{out_dir}: no trained weights ({os.path.basename(final_weights_path(cfg, out_dir, dataset))} "
                    f"or {LAST_CKPT}); pass --ckpt or train first")


def evaluate(cfg, voc, ids_list: str, pred_dir: str, out_dir: str, comment: str, progress: bool) -> dict:
    """The evaluation of ``scripts/eval.py`` (same code, same report and log format) on the predictions."""
    from wseg.cli import stage_parser
    from wseg.stages import eval as eval_stage

    n = len(voc.ids(ids_list))
    workers = min(4, os.cpu_count() or 1, max(1, n // 64))  # a process pool only pays off for longer lists
    argv = ["--list", ids_list, "--data_root", voc.root, "--predict_dir", pred_dir, "--gt_dir",
            cfg.gt_dir or voc.gt_dir(cfg.test_list), "--type", "png",
            "--classes", voc.classes_arg(), "--logfile",
            cfg.eval_log or os.path.join(out_dir, "eval_log.txt"), "--comment", comment, "--num_workers", str(workers),
            "--progress", str(progress)]
    return eval_stage.run(stage_parser(eval_stage)().parse_args(argv))


#: the background scale's and the label filter check's choice predicts at most this many of the training images
CHECK_IMAGES = 1000


def _file_record(path: str) -> Dict[str, Any]:
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "mtime": round(os.path.getmtime(path), 3)}


def _training_masks(cfg, voc, ids: Sequence[str]) -> Dict[str, str]:
    """The masks the network was trained on (``pseudo_mask_dir``, else the dataset's own) of ``ids``."""
    folder = cfg.get("pseudo_mask_dir")
    paths = {i: os.path.join(folder, i + ".png") if folder else voc.mask_path(i) for i in ids}
    missing = [i for i, p in paths.items() if not p or not os.path.isfile(p)]
    if missing:
        where = folder or "the dataset's SegmentationClass"
        raise WsegError(f"{where}: no training mask for {len(missing)} of {len(ids)} training images (e.g. "
                        f"{missing[0]}); bg_scale=auto and label_filter_check score the test on the training images "
                        "against the masks the network learned from: set pseudo_mask_dir to them (as in training)")
    return paths


def _folder_record(path: str) -> Dict[str, Any]:
    return {"path": path, "files": len(os.listdir(path)), "mtime": round(os.path.getmtime(path), 3)}


def _cached_choice(path: str, inputs: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The choice recorded in ``path`` when it was made from the same ``inputs`` (JSON-equal), else None."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved.get("choice") if saved.get("inputs") == json.loads(json.dumps(inputs)) else None


def _test_choices(cfg, voc, ids: Sequence[str], model, device, mmseg, progress: bool, settings: Dict[str, Any],
                  choice_file: str) -> Tuple[Optional[Any], float, Dict[str, Any], Dict[str, Any]]:
    """The test's label filter (a :class:`wseg.label_filter.ClassGate` over ``ids``, or None) and background
    factor, chosen on the training images where ``bg_scale`` is ``auto`` or ``label_filter_check`` is set
    (:mod:`wseg.segmentation.calibration`); what the folder records say of them; the choice's numbers. The choice
    is kept in ``choice_file`` and reused by a re-run with the same checkpoint (``settings``), test settings,
    held-out labels and training masks (the pass over the training images costs about as much as the test)."""
    from wseg import io
    from wseg.engine.runtime import LOG
    from wseg.label_filter import ClassGate, label_arrays, read_label_file, read_scores, scores_path, soft_weights
    from wseg.segmentation.calibration import FILTERED, UNFILTERED, bg_scale_setting, choose, soft_name

    path, check = cfg.get("label_filter"), cfg.get("label_filter_check")
    powers = {soft_name(a): float(a) for a in cfg.get("label_filter_powers") or []} if check else {}
    fixed = bg_scale_setting(cfg.get("bg_scale", 1.0))
    k = voc.spec.num_classes - 1
    record: Dict[str, Any] = {}
    labels = None
    if path:
        labels = dict(zip(ids, label_arrays(read_label_file(path), ids, k, path)))
        record["label_filter"] = _file_record(path)
    if fixed is not None and not check:
        if fixed != 1:
            record["bg_scale"] = fixed
        return (ClassGate(labels) if labels else None), fixed, record, ({"bg_scale": fixed} if fixed != 1 else {})
    from wseg.segmentation.predict import training_image_confusions

    # the candidates: the unfiltered test; the filtered one by the classifier's held-out labels of the training
    # images (label_filter_check) and by their held-out scores to each power, or, with the filter always on, by
    # their own image-level labels
    held = read_label_file(check) if check else None
    train_ids = voc.ids(cfg.train_list)
    if check:                                     # the training images the classifier has held-out labels of
        train_ids = sorted(set(held) & set(train_ids))
        if not train_ids:
            raise WsegError(f"label_filter_check {check}: holds none of the train_list {cfg.train_list}'s images; "
                            "pass the held-out labels label_train wrote for that list (--out_cv)")
    if len(train_ids) > CHECK_IMAGES:                   # evenly spaced, e.g. 1,000 of VOC's 10,582
        train_ids = [train_ids[i] for i in np.linspace(0, len(train_ids) - 1, CHECK_IMAGES).round().astype(int)]
    candidates: Dict[str, Any] = {}
    if not path or check:
        candidates[UNFILTERED] = None
    if path:
        source, where = (held, check) if check else (voc.cls_labels(train_ids), voc.cls_labels_path())
        candidates[FILTERED] = ClassGate(dict(zip(train_ids, label_arrays(source, train_ids, k, where))))
    held_scores = read_scores(check, train_ids, k, "label_filter_check") if powers else None
    for name, a in powers.items():
        candidates[name] = ClassGate(soft_weights(held_scores, a), soft=True)
    factors = sorted({fixed} if fixed is not None else {float(f) for f in cfg.bg_scale_grid})
    masks = _training_masks(cfg, voc, train_ids)
    test = {**settings, "mean": list(cfg.mean), "std": list(cfg.std), "long_side": cfg.get("long_side"),
            "amp": bool(cfg.amp)}
    inputs = {"test": test, "factors": factors, "candidates": sorted(candidates),
              "label_filter_check": _file_record(check) if check else None, "train_ids": train_ids,
              "masks": _folder_record(os.path.dirname(os.path.abspath(masks[train_ids[0]])))}
    if powers:
        inputs["held_out_scores"] = _file_record(scores_path(check))
    best = _cached_choice(choice_file, inputs)
    if best is None:
        confs = training_image_confusions(model, voc, train_ids, masks, candidates, factors, cfg.test_scales,
                                          cfg.test_flip, cfg.mean, cfg.std, device, bool(cfg.amp),
                                          int(cfg.num_workers), progress, mmseg, cfg.get("long_side"))
        best = choose(confs, factors)
        io.atomic_write_text(choice_file, json.dumps({"inputs": inputs, "choice": best}, indent=1))
    else:
        LOG.info("background scale / label filter check: the choice of %s (same checkpoint, settings and training "
                 "masks)", choice_file)
    for name, curve in best["curve"].items():
        LOG.info("training images (%d), %s test against the training masks, mIoU per background factor: %s",
                 len(train_ids), name, ", ".join(f"x{f:g} {m:.2f}" for f, m in zip(factors, curve)))
    chosen = best["candidate"]
    use = chosen != UNFILTERED
    LOG.info("chosen: %s, background x%g (%.2f mIoU on the training images)", chosen, best["bg_scale"], best["miou"])
    curves = {n: [round(m, 3) for m in c] for n, c in best["curve"].items()}
    numbers = {"bg_scale": best["bg_scale"], "train_images": len(train_ids), "train_miou": round(best["miou"], 3),
               "bg_scale_curve": {"factors": factors, **curves}}
    if check:
        numbers.update({"label_filter_used": use, "label_filter_candidate": chosen,
                        "train_miou_filtered": round(max(max(c) for n, c in best["curve"].items()
                                                         if n != UNFILTERED), 3),
                        "train_miou_unfiltered": round(max(best["curve"][UNFILTERED]), 3)})
        record["label_filter"]["check"] = {**_file_record(check), "use": use,
                                           **({"candidate": chosen} if chosen not in (UNFILTERED, FILTERED) else {})}
    gate = ClassGate(labels) if labels is not None and (use or not check) else None
    if chosen in powers:                                          # the soft filter at the chosen power
        power = numbers["label_filter_power"] = powers[chosen]
        record["label_filter"]["scores"] = _file_record(scores_path(path))
        gate = ClassGate(soft_weights(read_scores(path, ids, k, "label_filter"), power), soft=True)
    record["bg_scale"] = best["bg_scale"]
    return gate, best["bg_scale"], record, numbers


def run_test(cfg, ckpt: Optional[str] = None, do_eval: bool = True, progress: bool = True) -> Dict[str, Any]:
    """Predict (and evaluate). Returns ``{"miou", "fp", "fn", "precision", "recall", "pixel_acc", "iou"}`` of the
    MS+flip predictions and, with ``crf``, the same keys with ``_crf`` for the CRF-refined ones (percent; absent for
    an unlabelled split), ``miou_published`` with ``bg_scale``/``label_filter``, ``miou_true_labels`` with
    ``test_true_labels`` (the MS+flip probabilities arg-maxed over each image's true classes), plus ``pred_dir``
    (final predictions), ``pred_dir_nocrf``, ``predicted``, ``images_per_s``, ``ckpt``, ``labelled``."""
    from wseg import io
    from wseg.data.voc import VOCRoot
    from wseg.engine.runtime import LOG, resolve_device, setup_logging
    from wseg.segmentation.checks import check_test_config
    from wseg.segmentation.models import build_model, load_segmentation_weights
    from wseg.segmentation.predict import crf_params, predict_split, server_layout_dir

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
    ckpt = ckpt or default_ckpt(cfg, out_dir, voc.spec.name)
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
    true_dir = (plain_dir or pred_dir) + "_true_labels" if labelled and cfg.get("test_true_labels") else None
    from wseg.segmentation.predict import MMSegTest

    mmseg = MMSegTest.from_config(cfg) if cfg.get("data_pipeline") == "mmseg" else None
    settings = {"ckpt": os.path.abspath(ckpt), "ckpt_bytes": os.path.getsize(ckpt),
                "ckpt_mtime": round(os.path.getmtime(ckpt), 3), "scales": list(cfg.test_scales),
                "flip": bool(cfg.test_flip)}
    if mmseg is not None:
        settings["mmseg_test"] = {"mode": mmseg.mode, "crop": mmseg.crop, "stride": mmseg.stride,
                                  "resize": None if mmseg.resize is None else list(mmseg.resize),
                                  "ratio_of": mmseg.ratio_of}
    choice_file = os.path.join(os.path.dirname(os.path.abspath(pred_dir)),
                               f".{os.path.basename(os.path.abspath(pred_dir))}.choice.json")
    class_filter, bg_scale, filter_record, filter_numbers = _test_choices(
        cfg, voc, ids, model, device, mmseg, progress, settings, choice_file)
    adjusted = class_filter is not None or bg_scale != 1
    published_dir = (plain_dir or pred_dir) + "_published" if labelled and adjusted else None
    gt_dir = cfg.gt_dir or (voc.gt_dir(cfg.test_list) if labelled else None)
    for d in (pred_dir, plain_dir, true_dir, published_dir):
        if d and gt_dir and os.path.isdir(d) and os.path.isdir(gt_dir) and os.path.samefile(d, gt_dir):
            raise WsegError(f"pred_dir {d}: this is the ground-truth folder; its masks would count as finished "
                            "predictions and score 100%. Set pred_dir to another folder")
    for folder, extra in ((pred_dir, {"crf": crf, **filter_record}), (plain_dir, {"crf": None, **filter_record}),
                          (true_dir, {"crf": None, "true_labels": True,
                                      **({"bg_scale": bg_scale} if bg_scale != 1 else {})}),
                          (published_dir, {"crf": None})):  # records beside the folders
        if folder:
            record = os.path.join(os.path.dirname(os.path.abspath(folder)),
                                  f".{os.path.basename(os.path.abspath(folder))}{PREDICTION_SETTINGS}")
            io.record_folder_settings(folder, {**settings, **extra}, PREDICTION_SETTINGS, "--pred_dir",
                                      (".png",), record)
    LOG.info("segmentation test %s -> %s (%d images, scales %s, flip %s, crf %s)", ckpt, pred_dir, len(ids),
             cfg.test_scales, cfg.test_flip, crf)
    res = predict_split(model, voc, ids, pred_dir, cfg.test_scales, cfg.test_flip, crf, cfg.mean, cfg.std, device,
                        bool(cfg.amp), int(cfg.num_workers), int(cfg.crf_workers), progress, plain_dir,
                        on_error=cfg.get("on_error", "skip"), mmseg=mmseg, long_side=cfg.get("long_side"),
                        true_label_dir=true_dir, class_filter=class_filter, bg_scale=bg_scale,
                        published_dir=published_dir)
    LOG.info("predicted %d of %d images (%s img/s) into %s", res["predicted"], res["num_images"],
             res["images_per_s"], pred_dir)
    lst = voc.list_path(cfg.test_list) or cfg.test_list      # a list file, or a split name of a folder layout
    result = {**res, "pred_dir": pred_dir, "pred_dir_nocrf": plain_dir, "ckpt": ckpt, "labelled": labelled,
              "list": lst, **filter_numbers}
    if labelled and do_eval:
        keys = ("miou", "fp", "fn", "precision", "recall", "pixel_acc", "iou")
        comment = f"{cfg.exp_name} {os.path.basename(ckpt)} {name} scales={list(cfg.test_scales)} flip={cfg.test_flip}"
        if crf:
            ev_plain = evaluate(cfg, voc, lst, plain_dir, out_dir, comment + " crf=False", progress)
            ev = evaluate(cfg, voc, lst, pred_dir, out_dir, comment + " crf=True", progress)
            result.update({k: ev_plain[k] for k in keys})
            result.update({k + "_crf": ev[k] for k in keys})
            LOG.info("mIoU %.3f%% (MS+flip), %.3f%% (+ CRF)", ev_plain["miou"], ev["miou"])
        else:
            ev = evaluate(cfg, voc, lst, pred_dir, out_dir, comment + " crf=False", progress)
            result.update({k: ev[k] for k in keys})
            LOG.info("mIoU %.3f%% (scales %s, flip %s)", ev["miou"], list(cfg.test_scales), cfg.test_flip)
        if published_dir:
            ev = evaluate(cfg, voc, lst, published_dir, out_dir, comment + " published (no bg_scale/label_filter)",
                          progress)
            result["miou_published"] = ev["miou"]
            LOG.info("mIoU %.3f%% without the background scale and the label filter (the published test)", ev["miou"])
        elif filter_numbers:                    # the choice kept the published test
            result["miou_published"] = result["miou"]
        if true_dir:
            ev = evaluate(cfg, voc, lst, true_dir, out_dir, comment + " true_labels=True", progress)
            result["miou_true_labels"] = ev["miou"]
            LOG.info("mIoU %.3f%% given the true image labels (recognition solved)", ev["miou"])
    return result
