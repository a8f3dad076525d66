"""Evaluation of CAMs and label maps against ground truth (the numbers of SEAM's ``evaluation.py`` / PPC's ``eval.py``):
class names, the per-class table, the published log format and the threshold curve files. The confusion matrices
themselves are :mod:`wseg.metrics`; the stage is :mod:`wseg.stages.eval` (``scripts/eval.py``)."""
from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from wseg.errors import WsegError


def resolve_class_names(classes: Optional[str], num_classes: Optional[int]) -> List[str]:
    """Class names (background first) from ``--classes`` and/or ``--num_classes``."""
    from wseg.data.classes import get_spec

    if num_classes is not None and num_classes < 2:
        raise WsegError(f"--num_classes {num_classes}: needs at least 2 (background and one class)")
    if classes is None and num_classes is not None:
        for name in ("voc12", "coco14"):
            spec = get_spec(name)
            if spec.num_classes == num_classes:
                return list(spec.class_names)
        return ["background"] + [f"class{i}" for i in range(1, num_classes)]
    spec = get_spec(classes or "voc12")
    if num_classes is not None and num_classes != spec.num_classes:
        raise WsegError(f"--num_classes {num_classes} contradicts --classes {classes or 'voc12'} "
                        f"({spec.num_classes} classes); pass only one of them")
    return list(spec.class_names)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def output_paths(args) -> Dict[str, Optional[str]]:
    """Where the log and the curve files go; never inside ``--gt_dir``."""
    out = {"logfile": args.logfile or None, "csv": None, "png": None}
    if args.curve:
        out_dir = args.out_dir
        if out_dir is None:  # next to the predictions they describe (not the current folder)
            out_dir = os.path.dirname(os.path.abspath(args.predict_dir.rstrip("/\\") or "."))
        stem = os.path.basename(os.path.abspath(args.predict_dir)) or "predict"
        out["csv"] = args.curve_csv or os.path.join(out_dir, f"{stem}_curve.csv")
        out["png"] = args.curve_png or os.path.join(out_dir, f"{stem}_curve.png")
    for key, flag in (("logfile", "--logfile"), ("csv", "--curve_csv/--out_dir"), ("png", "--curve_png/--out_dir")):
        if out[key] and _inside(out[key], args.gt_dir):
            raise WsegError(f"{out[key]}: would be written inside the ground-truth folder {args.gt_dir}; "
                            f"pass another {flag}")
        if out[key] and os.path.isdir(out[key]):
            raise WsegError(f"{out[key]}: is a folder; pass a file path to {flag}")
    return out


def format_table(names: Sequence[str], s: dict) -> str:
    """Per-class IoU / precision / recall table and the summary line (percent)."""
    w = max(11, max(len(n) for n in names))
    lines = [f"{'class':>{w}}  {'IoU':>7}  {'prec':>7}  {'recall':>7}"]
    for i, n in enumerate(names):
        lines.append(f"{n:>{w}}  {s['iou'][i] * 100:7.3f}  {s['precision'][i] * 100:7.3f}  {s['recall'][i] * 100:7.3f}")
    lines.append("=" * (w + 29))
    lines.append("%*s:%7.3f%%" % (w, "mIoU", s["miou"] * 100))
    lines.append(f"precision = {s['mean_precision'] * 100:.3f}, recall = {s['mean_recall'] * 100:.3f}, "
                 f"FP = {s['fp'] * 100:.3f}, FN = {s['fn'] * 100:.3f}, pixel acc = {s['pixel_acc'] * 100:.3f}")
    return "\n".join(lines)


def loglist(names: Sequence[str], s: dict) -> Dict[str, float]:
    """The published log dict: per-class IoU, mIoU, FP, FN in percent."""
    out = {n: float(s["iou"][i] * 100) for i, n in enumerate(names)}
    out.update(mIoU=s["miou"] * 100, FP=s["fp"] * 100, FN=s["fn"] * 100)
    return out


def append_log(path: str, metric: Dict[str, object], comment: str) -> None:
    """Append ``timestamp\\tcomment`` / ``key:value  ...`` / ``=====`` as the published ``writelog``, atomically."""
    from wseg.io import atomic_write_text

    old = ""
    if os.path.isfile(path):
        with open(path) as f:
            old = f.read()
    entry = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime()) + f"\t{comment}\n"
             + "".join(f"{k}:{v}  " for k, v in metric.items()) + "\n" + "=" * 37 + "\n")
    atomic_write_text(path, old + entry)


def write_curve_csv(path: str, thresholds: np.ndarray, rows: List[dict]) -> None:
    from wseg.io import atomic_write_text

    text = "threshold,mIoU,FP,FN\n" + "".join(
        f"{t:.4f},{r['miou'] * 100:.6f},{r['fp'] * 100:.6f},{r['fn'] * 100:.6f}\n" for t, r in zip(thresholds, rows))
    atomic_write_text(path, text)


def write_curve_png(path: str, thresholds: np.ndarray, rows: List[dict], best: int, title: str = "") -> None:
    """mIoU / FP / FN against the background threshold (Agg canvas: no display, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from wseg.io import atomic_path

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    ax.plot(thresholds, [r["miou"] * 100 for r in rows], "-", color="C0", label="mIoU")
    ax.plot(thresholds, [r["fp"] * 100 for r in rows], "--", color="C3", label="FP")
    ax.plot(thresholds, [r["fn"] * 100 for r in rows], ":", color="C2", label="FN")
    ax.axvline(thresholds[best], color="0.5", lw=0.8)
    ax.plot([thresholds[best]], [rows[best]["miou"] * 100], "o", color="C0",
            label=f"best t={thresholds[best]:.2f}: mIoU {rows[best]['miou'] * 100:.2f}%")
    ax.set_xlabel("background threshold t")
    ax.set_ylabel("%")
    ax.set_title(title or "threshold curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
