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
        for name in ("voc12", "coco14", "coco14_91"):
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


def output_paths(args, gt_dirs: Optional[Sequence[str]] = None) -> Dict[str, Optional[str]]:
    """Where the log and the curve files go; never inside ``--gt_dir`` (or any of ``gt_dirs``, the ground-truth
    folders of a dataset root)."""
    out = {"logfile": args.logfile or None, "csv": None, "png": None}
    if args.curve:
        out_dir = args.out_dir
        if out_dir is None:  # next to the predictions they describe (not the current folder)
            out_dir = os.path.dirname(os.path.abspath(args.predict_dir.rstrip("/\\") or "."))
        stem = os.path.basename(os.path.abspath(args.predict_dir)) or "predict"
        out["csv"] = args.curve_csv or os.path.join(out_dir, f"{stem}_curve.csv")
        out["png"] = args.curve_png or os.path.join(out_dir, f"{stem}_curve.png")
    for key, flag in (("logfile", "--logfile"), ("csv", "--curve_csv/--out_dir"), ("png", "--curve_png/--out_dir")):
        for gt in (gt_dirs or [args.gt_dir]):
            if out[key] and _inside(out[key], gt):
                raise WsegError(f"{out[key]}: would be written inside the ground-truth folder {gt}; "
                                f"pass another {flag}")
        if out[key] and os.path.isdir(out[key]):
            raise WsegError(f"{out[key]}: is a folder; pass a file path to {flag}")
    return out


#: ``--table auto`` prints one class per line up to this many classes, a grid of columns above (COCO's 81 / 91).
LONG_TABLE_MAX = 30
ABSENT_HELP = {
    "zero": "absent classes count as IoU 0 in the means (SEAM/PSA/PPC eval.py, the published VOC numbers)",
    "skip": "classes absent from the ground truth are left out of the means (PMM, ToCo COCO evaluation)",
    "nan": "classes absent from both ground truth and prediction are left out (mmseg / EPS / RS+EPM nanmean)",
}

ABSENT_SHORT = {"skip": "no ground-truth pixel, as PMM / ToCo", "nan": "empty union, as mmseg / EPS / RS+EPM"}


def resolve_absent(absent: str, names: Sequence[str]) -> str:
    """``--absent auto``: ``skip`` for the COCO class lists (81 or 91), else ``zero`` (the published VOC eval)."""
    from wseg.data.classes import COCO14, COCO14_91

    if absent != "auto":
        return absent
    return "skip" if tuple(names) in (COCO14.class_names, COCO14_91.class_names) else "zero"


def _cell(v: float) -> str:
    return f"{v * 100:7.3f}" if np.isfinite(v) else f"{'-':>7}"


def format_table(names: Sequence[str], s: dict, layout: str = "auto") -> str:
    """Per-class IoU / precision / recall table and the summary lines (percent).

    ``layout``: ``long`` (one class per line, the published look), ``grid`` (two columns of classes read top to
    bottom, for COCO's 81 / 91), ``auto`` (long up to :data:`LONG_TABLE_MAX` classes). A class left out of the means
    (``--absent skip|nan``) shows ``-``; a line then says how many classes the means cover and why.
    """
    if layout == "auto":
        layout = "long" if len(names) <= LONG_TABLE_MAX else "grid"
    w = max(11, max(len(n) for n in names))
    cells = [f"{n:>{w}}  {_cell(s['iou'][i])}  {_cell(s['precision'][i])}  {_cell(s['recall'][i])}"
             for i, n in enumerate(names)]
    head = f"{'class':>{w}}  {'IoU':>7}  {'prec':>7}  {'recall':>7}"
    if layout == "grid":
        cols = 2
        rows = -(-len(cells) // cols)
        gap = " " * 4
        lines = [gap.join([head] * min(cols, len(cells)))]
        for r in range(rows):
            lines.append(gap.join(cells[c * rows + r] for c in range(cols) if c * rows + r < len(cells)).rstrip())
        width = len(lines[0])
    else:
        lines = [head] + cells
        width = w + 29
    lines.append("=" * width)
    lines.append("%*s:%7.3f%%" % (w, "mIoU", s["miou"] * 100))
    lines.append(f"precision = {s['mean_precision'] * 100:.3f}, recall = {s['mean_recall'] * 100:.3f}, "
                 f"FP = {s['fp'] * 100:.3f}, FN = {s['fn'] * 100:.3f}, pixel acc = {s['pixel_acc'] * 100:.3f}")
    absent = s.get("absent", "zero")
    if absent != "zero":
        left = len(names) - s["num_present"]
        lines.append(f"means over the {s['num_present']} of {len(names)} classes present; {left} left out "
                     f"(--absent {absent}: {ABSENT_SHORT[absent]})")
    return "\n".join(lines)


def loglist(names: Sequence[str], s: dict) -> Dict[str, float]:
    """The published log dict: per-class IoU, mIoU, FP, FN in percent (``nan`` for a class left out)."""
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
