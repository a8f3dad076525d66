"""Segmentation metrics as the published WSSS evaluation computes them (SEAM ``evaluation.py``, PPC ``eval.py``).

Per class ``i``: ``P`` = pixels predicted ``i``, ``T`` = ground-truth pixels of ``i``, ``TP`` = both, all over
pixels whose ground truth is not ignored (``gt != 255``). Then ``IoU = TP / (T + P - TP + 1e-10)``, mIoU is the
mean over *all* classes (a class absent from both counts as 0), and the published false-positive / false-negative
shares are ``FP = mean_i (P - TP) / (T + P - TP + 1e-10)`` and ``FN = mean_i (T - TP) / (...)``.

Classes absent from the ground truth (``absent``, see :data:`ABSENT_MODES`): ``zero`` averages over all classes as
above (SEAM/PSA/PPC ``eval.py``, the published VOC numbers); ``skip`` leaves classes with no ground-truth pixel out of
every mean, as the published COCO evaluations do (PMM ``pipeline/evaluation.py``: ``IoU = -1`` if ``T == 0`` and
``miou = ious[ious >= 0].mean()``; ToCo ``utils/evaluate.py``: ``valid = hist.sum(axis=1) > 0``); ``nan`` leaves
out only classes with an empty union ``T + P - TP == 0`` (``np.nanmean`` of mmseg's ``mean_iou`` in WSSS_MMSeg, EPS
``evaluate_png.py``, RS+EPM ``evaluators.py``): a class predicted but absent from the ground truth counts as 0.

A CAM dict ``{class index without background: HxW}`` becomes a label map as published: a dense ``(C, H, W)``
float32 tensor with ``tensor[k + 1] = cam_k``, zeros for absent classes, ``tensor[0] = t`` (the background
threshold), argmax (ties to the lowest index). :func:`cam_fg_argmax` computes the same from the present maps
only, and :func:`evaluate_list` evaluates every threshold of a curve in one pass over the files: a pixel is
foreground at threshold ``t_j`` iff its foreground maximum exceeds ``t_j``, so one histogram over
(number of thresholds below the maximum, gt, foreground label) gives every threshold's confusion matrix by a
cumulative sum.

Confusion matrices here are ``(C + 1, C + 1)`` int64, rows = ground truth, columns = prediction; index ``C`` is the
"outside ``[0, C)``" bin (a predicted 255 or an out-of-range gt label). Those pixels count toward ``T`` of their
gt class (a miss) or ``P`` of their predicted class (a false positive) but never toward ``TP``: exactly the
published ``P``/``T``/``TP`` definition.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from wseg.errors import WsegError

EPS = 1e-10  # the published denominator guard
#: How classes absent from the ground truth enter the means (see the module docstring).
ABSENT_MODES = ("zero", "skip", "nan")

# --------------------------------------------------------------------------------------------- confusion matrices


def _gt_index(gt: np.ndarray, num_classes: int, ignore_index: int, scale: int = 1) -> np.ndarray:
    """gt -> bin index (times ``scale``): class ``[0, C)`` itself, ``C`` for other labels, ``C + 1`` for ignored
    pixels (dropped later)."""
    c = num_classes
    if gt.dtype == np.uint8:
        lut = np.full(256, c, np.intp)
        lut[:min(c, 256)] = np.arange(min(c, 256))
        if 0 <= ignore_index < 256:
            lut[ignore_index] = c + 1
        return np.take(lut * scale, gt)
    g = gt.astype(np.int64, copy=False)
    out = np.where((g >= 0) & (g < c), g, c)
    out[g == ignore_index] = c + 1
    return out.astype(np.intp, copy=False) * scale


def _pred_index(pred: np.ndarray, num_classes: int) -> np.ndarray:
    """prediction -> bin index: class ``[0, C)`` itself, ``C`` for anything else (e.g. a predicted 255)."""
    c = num_classes
    if pred.dtype == np.uint8:
        lut = np.full(256, c, np.intp)
        lut[:min(c, 256)] = np.arange(min(c, 256))
        return lut[pred]
    p = pred.astype(np.int64, copy=False)
    return np.where((p >= 0) & (p < c), p, c).astype(np.intp, copy=False)


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """``(C + 1, C + 1)`` int64 confusion matrix (rows gt, columns prediction) of one label map, via one bincount.

    Pixels with ``gt == ignore_index`` are skipped (published ``cal = gt < 255``). Values outside ``[0, C)`` land
    in the extra last row/column, so they count as misses / false positives but never as hits, as published.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    c1 = num_classes + 1
    idx = _gt_index(gt, num_classes, ignore_index, c1) + _pred_index(pred, num_classes)
    hist = np.bincount(idx.ravel(), minlength=(c1 + 1) * c1)
    return hist.reshape(c1 + 1, c1)[:c1].astype(np.int64, copy=False)


def counts(conf: np.ndarray, num_classes: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Published ``(T, P, TP)`` per class from a ``(C + 1, C + 1)`` matrix (or a plain ``(C, C)`` one when
    ``num_classes == C`` is given)."""
    conf = np.asarray(conf, dtype=np.int64)
    c = conf.shape[0] - 1 if num_classes is None else int(num_classes)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1] or conf.shape[0] not in (c, c + 1):
        raise ValueError(f"expected a ({c}+1, {c}+1) or ({c}, {c}) confusion matrix, got {conf.shape}")
    T = conf[:c, :].sum(1)
    P = conf[:, :c].sum(0)
    TP = np.diagonal(conf)[:c].copy()
    return T, P, TP


def present_classes(T: np.ndarray, P: np.ndarray, TP: np.ndarray, absent: str = "zero") -> np.ndarray:
    """Boolean mask of the classes that enter the means under ``absent`` (:data:`ABSENT_MODES`)."""
    if absent == "zero":
        return np.ones(len(T), bool)
    if absent == "skip":
        return T > 0
    if absent == "nan":
        return (T + P - TP) > 0
    raise WsegError(f"--absent {absent}: unknown mode; use one of {', '.join(ABSENT_MODES)}")


def scores(conf: np.ndarray, num_classes: Optional[int] = None, absent: str = "zero") -> Dict[str, object]:
    """Published metrics from a confusion matrix (fractions in [0, 1], not percent).

    Returns ``iou``, ``precision`` (TP/P), ``recall`` (TP/T), ``fp_share`` ((P-TP)/union), ``fn_share``
    ((T-TP)/union) per class as float64 arrays, their means ``miou``, ``mean_precision``, ``mean_recall``,
    ``fp``, ``fn``, ``pixel_acc`` and the counts ``T``, ``P``, ``TP``. The means run over all classes (``absent=
    "zero"``, as published for VOC) or over the classes in ``present`` (``skip``/``nan``: a nan-mean; the per-class
    values of the others are NaN); ``num_present`` counts them (a mean over no class is NaN).
    """
    T, P, TP = counts(conf, num_classes)
    union = T + P - TP + EPS
    iou = TP / union
    fp_share = (P - TP) / union
    fn_share = (T - TP) / union
    precision = TP / (P + EPS)
    recall = TP / (T + EPS)
    total = int(T.sum())
    present = present_classes(T, P, TP, absent)
    if absent != "zero":
        for a in (iou, fp_share, fn_share, precision, recall):
            a[~present] = np.nan

    def mean(a: np.ndarray) -> float:
        return float(np.mean(a[present])) if present.any() else float("nan")

    return {
        "iou": iou, "miou": mean(iou),
        "precision": precision, "mean_precision": mean(precision),
        "recall": recall, "mean_recall": mean(recall),
        "fp_share": fp_share, "fp": mean(fp_share),
        "fn_share": fn_share, "fn": mean(fn_share),
        "pixel_acc": float(TP.sum() / total) if total else 0.0,
        "T": T, "P": P, "TP": TP, "present": present, "num_present": int(present.sum()), "absent": absent,
    }


# --------------------------------------------------------------------------------------------- CAM -> labels


def cam_fg_argmax(cams: Dict[int, np.ndarray], num_classes: int,
                  shape: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Foreground maximum (float32) and its label (class index, intp) of the published dense CAM tensor.

    Equal to ``argmax``/``max`` over channels ``1..C-1`` of ``tensor[k + 1] = cam_k`` with zeros for absent
    classes, ties to the lowest index: only the present maps and one zero map for the smallest absent class are
    needed (every other absent class ties with it and loses). An empty dict (all channels zero) needs ``shape``.
    """
    keys = sorted(int(k) for k in cams)
    present = set(keys)
    absent = next((k for k in range(num_classes - 1) if k not in present), None)
    channels = [(k, cams[k]) for k in keys]
    if absent is not None:
        channels.append((absent, None))
        channels.sort(key=lambda kv: kv[0])
    if not keys:
        if shape is None:
            raise ValueError("an empty CAM dict needs the image shape")
    else:
        shape = np.shape(cams[keys[0]])
    best: Optional[np.ndarray] = None
    label: Optional[np.ndarray] = None
    for k, arr in channels:
        if best is None:
            best = np.zeros(shape, np.float32) if arr is None else np.array(arr, dtype=np.float32, copy=True)
            label = np.full(shape, k + 1, np.intp)
            continue
        if arr is None:
            upd = best < 0
            np.maximum(best, 0, out=best)
        else:
            arr = np.asarray(arr, dtype=np.float32)
            upd = arr > best  # strict: a tie keeps the lower class index, as np.argmax does
            np.maximum(best, arr, out=best)
        label[upd] = k + 1
    return best, label


def published_cam_label(cams: Dict[int, np.ndarray], threshold: float, num_classes: int,
                 shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """The label map the published ``eval.py`` scores for a CAM dict: background (0) where
    ``float32(threshold) >= fg max``, else the fg argmax over all classes (absent ones as zero maps, so they can win
    where every present CAM is negative). For labelling images use :func:`wseg.cam.cam_to_label`, which
    considers only the present classes."""
    fg_max, fg_label = cam_fg_argmax(cams, num_classes, shape)
    out = fg_label.astype(np.uint8)
    out[~(fg_max > np.float32(threshold))] = 0
    return out


def threshold_histogram(fg_max: np.ndarray, fg_label: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                        num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """``(n + 1, C + 1, C + 1)`` counts over (``k`` = number of ``thresholds`` below ``fg_max``, gt, fg label).

    ``thresholds`` must be sorted ascending float32. A pixel is foreground at threshold ``j`` iff ``k > j``;
    :func:`histogram_to_confusions` turns the histogram into one confusion matrix per threshold.
    """
    n = len(thresholds)
    c1 = num_classes + 1
    if n == 1:
        k = (fg_max > thresholds[0]).view(np.uint8).astype(np.intp)
    else:
        k = np.searchsorted(thresholds, fg_max, side="left")
    idx = k
    idx *= (c1 + 1) * c1
    idx += _gt_index(gt, num_classes, ignore_index, c1)
    idx += fg_label
    hist = np.bincount(idx.ravel(), minlength=(n + 1) * (c1 + 1) * c1)
    return hist.reshape(n + 1, c1 + 1, c1)[:, :c1]


def histogram_to_confusions(hist: np.ndarray) -> np.ndarray:
    """``(n + 1, G, L)`` threshold histogram -> ``(n, G, L)`` confusion matrices (threshold ``j``: bins ``k > j``
    keep their fg label, the rest are predicted background, class 0)."""
    hist = np.asarray(hist, np.int64)
    fg = np.cumsum(hist[::-1], axis=0)[::-1][1:]  # fg[j] = sum_{k > j} hist[k]
    total = hist.sum(0)
    conf = fg.copy()
    conf[:, :, 0] += (total[None] - fg).sum(2)
    return conf


def curve_thresholds(start: float = 0.0, end: float = 0.59, step: float = 0.01) -> np.ndarray:
    """Background thresholds ``start, start + step, ... <= end`` (float64), equal to the published ``i / 100.0``
    for the default 0.00..0.59 (60 values): each value is rounded to 10 decimals, the nearest double."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise WsegError(f"--start {start} / --end {end}: the curve needs finite bounds (published 0 and 0.59)")
    if not (step > 0 and math.isfinite(step)):
        raise WsegError(f"--step {step}: the curve needs a positive, finite step (published 0.01)")
    if end < start:
        raise WsegError(f"--start {start} > --end {end}: the curve needs start <= end")
    n = int(math.floor((end - start) / step + 1e-9)) + 1
    if n > 100000:
        raise WsegError(f"--step {step}: {n} thresholds is too many; use a step of at least {(end - start) / 1e5:g}")
    return np.array([round(start + i * step, 10) for i in range(n)], np.float64)


# --------------------------------------------------------------------------------------------- files


def _missing(folder: str, ids: Sequence[str], ext: str) -> List[str]:
    return [i for i in ids if not os.path.isfile(os.path.join(folder, i + ext))]


GtSource = Union[str, Sequence[str]]


def _gt_paths(ids: Sequence[str], gt: GtSource) -> Optional[List[str]]:
    """Per-id ground-truth paths when ``gt`` gives them (a sequence aligned with ``ids``), else None (a folder)."""
    if isinstance(gt, (str, os.PathLike)):
        return None
    paths = [os.fspath(p) for p in gt]
    if len(paths) != len(ids):
        raise ValueError(f"{len(paths)} ground-truth paths for {len(ids)} ids")
    return paths


def check_files(ids: Sequence[str], predict_dir: str, gt_dir: GtSource, input_type: str) -> None:
    """Raise a one-line :class:`WsegError` when a prediction or ground-truth file of ``ids`` is missing.
    ``gt_dir`` is a folder of ``<id>.png`` or one mask path per id (a dataset root's masks)."""
    if len(ids) == 0:
        raise WsegError("the image list is empty; pass a --list with at least one image id")
    paths = _gt_paths(ids, gt_dir)
    gt_folders = sorted({os.path.dirname(p) for p in paths}) if paths is not None else [gt_dir]
    for folder in gt_folders:
        if os.path.isdir(predict_dir) and os.path.isdir(folder) and os.path.samefile(predict_dir, folder):
            raise WsegError(f"{predict_dir}: the prediction folder is the ground-truth folder ({folder}); every mask "
                            "would score 100% against itself. Point --predict_dir at the predictions")
    ext = ".npy" if input_type == "npy" else ".png"
    if paths is not None:
        miss = [i for i, p in zip(ids, paths) if not os.path.isfile(p)]
        if miss:
            more = f" and {len(miss) - 1} more" if len(miss) > 1 else ""
            raise WsegError(f"{paths[list(ids).index(miss[0])]}: no ground-truth mask for image {miss[0]}{more}; "
                            "check the dataset root and --list")
    checks = [(predict_dir, ext, "prediction", "run the stage that writes them or fix --list")]
    if paths is None:
        checks.append((gt_dir, ".png", "ground-truth mask", "check --gt_dir and --list"))
    for folder, e, what, fix in checks:
        if not os.path.isdir(folder):
            raise WsegError(f"{folder}: {what} folder not found; {fix}")
        miss = _missing(folder, ids, e)
        if miss:
            more = f" and {len(miss) - 1} more" if len(miss) > 1 else ""
            raise WsegError(f"{folder}: no {what} for image {miss[0]} ({miss[0]}{e}){more}; {fix}")


def _check_labels(mask: np.ndarray, num_classes: int, path: str, allowed_extra: Tuple[int, ...] = (255,)) -> None:
    if mask.size == 0:
        raise WsegError(f"{path}: empty label map; regenerate it")
    hi = int(mask.max())
    if hi < num_classes:
        return
    vals = np.unique(mask[mask >= num_classes])
    bad = [int(v) for v in vals if int(v) not in allowed_extra]
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        raise WsegError(f"{path}: labels {shown} outside [0, {num_classes}) and 255; "
                        f"pass the right --classes/--num_classes or regenerate the file")


def evaluate_file(image_id: str, predict_dir: str, gt_dir: Optional[str], num_classes: int, input_type: str = "npy",
                  thresholds: Optional[np.ndarray] = None, ignore_index: int = 255,
                  gt_path: Optional[str] = None) -> np.ndarray:
    """Histogram of one image: ``(n + 1, C + 1, C + 1)`` for a CAM dict (``.npy``, ``thresholds`` sorted
    float32), ``(C + 1, C + 1)`` for a predicted label PNG. The ground truth is ``gt_path`` when given, else
    ``<gt_dir>/<id>.png``. Module-level so worker processes can run it."""
    from wseg.io import load_cam_dict, load_mask_png

    gt_path = gt_path or os.path.join(gt_dir, image_id + ".png")
    gt = load_mask_png(gt_path)
    _check_labels(gt, num_classes, gt_path)
    if input_type == "png":
        pred_path = os.path.join(predict_dir, image_id + ".png")
        pred = load_mask_png(pred_path)
        if pred.shape != gt.shape:
            raise WsegError(f"{pred_path}: prediction size {pred.shape} differs from the ground truth {gt.shape} "
                            f"({gt_path}); predict at the original image size")
        _check_labels(pred, num_classes, pred_path)
        return confusion_matrix(pred, gt, num_classes, ignore_index)
    pred_path = os.path.join(predict_dir, image_id + ".npy")
    cams = load_cam_dict(pred_path, num_fg=num_classes - 1)
    if cams:
        shape = next(iter(cams.values())).shape
        if tuple(shape) != gt.shape:
            raise WsegError(f"{pred_path}: CAM size {tuple(shape)} differs from the ground truth {gt.shape} "
                            f"({gt_path}); the CAMs belong to other images or another resolution: re-run CAM "
                            "inference")
    fg_max, fg_label = cam_fg_argmax(cams, num_classes, gt.shape)     # finite: load_cam_dict checks the maps
    return threshold_histogram(fg_max, fg_label, gt, thresholds, num_classes, ignore_index)


def _evaluate_chunk(job) -> Tuple[int, np.ndarray]:
    """Sum of :func:`evaluate_file` over a chunk of ids (one pickled result per chunk, not per image)."""
    ids, gts, rest = job
    total = None
    for k, image_id in enumerate(ids):
        h = evaluate_file(image_id, *rest, gt_path=gts[k] if gts is not None else None)
        if total is None:
            total = h.astype(np.int64, copy=True)
        else:
            total += h
    return len(ids), total


def evaluate_list(ids: Sequence[str], predict_dir: str, gt_dir: GtSource, num_classes: int, input_type: str = "npy",
                  thresholds: Optional[Sequence[float]] = None, num_workers: int = 1, ignore_index: int = 255,
                  progress: bool = False, chunk_size: Optional[int] = None) -> np.ndarray:
    """Confusion matrices ``(len(thresholds), C + 1, C + 1)`` of a list of images, each file read once.

    ``input_type="npy"``: CAM dicts thresholded at every value of ``thresholds`` (the published ``--t``; a
    whole curve costs about one evaluation). ``"png"``: predicted label maps; returns shape ``(1, C + 1, C + 1)``.
    ``gt_dir``: a folder of ``<id>.png`` masks, or one mask path per id (roots whose masks lie in several folders).
    Files are spread over ``num_workers`` processes (a Pool over chunks of files, with a tqdm progress bar).
    """
    ids = list(ids)
    if input_type not in ("npy", "png"):
        raise WsegError(f"--type {input_type}: unknown prediction type; use npy (CAM dicts) or png (label maps)")
    check_files(ids, predict_dir, gt_dir, input_type)
    order = inverse = None
    if input_type == "npy":
        if thresholds is None or len(thresholds) == 0:
            raise WsegError("--type npy needs a background threshold (--t) or --curve")
        t32 = np.asarray(thresholds, np.float64).astype(np.float32)
        if not np.isfinite(t32).all():
            raise WsegError(f"--t {' '.join(f'{float(t):g}' for t in thresholds)}: thresholds must be finite numbers")
        order, inverse = np.unique(t32, return_inverse=True)  # sorted float32, as the published tensor holds t
    gt_paths = _gt_paths(ids, gt_dir)
    rest = (predict_dir, None if gt_paths is not None else gt_dir, int(num_classes), input_type, order, ignore_index)
    num_workers = max(1, min(int(num_workers), len(ids)))
    if chunk_size is None:
        chunk_size = max(1, min(16, len(ids) // (num_workers * 4) or 1))
    jobs = [(ids[i:i + chunk_size], gt_paths[i:i + chunk_size] if gt_paths is not None else None, rest)
            for i in range(0, len(ids), chunk_size)]

    from wseg.parallel import imap_pool

    total = None
    for _, (n, h) in imap_pool(_evaluate_chunk, jobs, num_workers, desc="eval", progress=progress,
                               weight=lambda job: len(job[0])):
        total = h if total is None else total + h
    if input_type == "png":
        return total[None]
    return histogram_to_confusions(total)[inverse.reshape(-1)]


def best_threshold(thresholds: Sequence[float], confs: np.ndarray, absent: str = "zero") -> Tuple[int, float]:
    """Index and mIoU (fraction) of the threshold with the highest mIoU (the first one on ties)."""
    mious = [scores(c, absent=absent)["miou"] for c in confs]
    j = int(np.argmax(np.nan_to_num(mious, nan=-1.0)))
    return j, float(mious[j])
