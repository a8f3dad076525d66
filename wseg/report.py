"""The pipeline's report folder: summary table (Markdown), curve plot and side-by-side overlay pictures."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

from wseg import io
from wseg.data.voc import VOCRoot, read_list


def _cam_heat(path: str, shape) -> Optional[np.ndarray]:
    if not os.path.isfile(path):
        return None
    cams = io.load_cam_dict(path)
    if not cams:
        return np.zeros(shape, np.float32)
    return np.clip(np.max(np.stack(list(cams.values())), 0), 0, 1)


def overlay_row(voc: VOCRoot, image_id: str, mask_dirs: List[str], cam_dir: Optional[str] = None) -> np.ndarray:
    """image | ground truth | CAM heat-map | each label folder in ``mask_dirs`` (skipped where missing)."""
    img = io.load_image(voc.image_path(image_id))
    panels = [img]
    gt = voc.mask_path(image_id)
    if gt:
        panels.append(io.overlay_mask(img, io.load_mask_png(gt), 0.6))
    if cam_dir:
        heat = _cam_heat(os.path.join(cam_dir, image_id + ".npy"), img.shape[:2])
        if heat is not None:
            panels.append(io.overlay_cam(img, heat))
    for d in mask_dirs:
        p = os.path.join(d, image_id + ".png")
        if os.path.isfile(p):
            panels.append(io.overlay_mask(img, io.load_mask_png(p), 0.6))
    return io.side_by_side(panels)


def write_overlays(out_png: str, voc: VOCRoot, ids: List[str], mask_dirs: List[str], cam_dir: Optional[str] = None,
                   scale: int = 2) -> Optional[str]:
    rows = [overlay_row(voc, i, mask_dirs, cam_dir) for i in ids]
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    grid = np.concatenate(rows, 0)
    if scale > 1:
        grid = grid.repeat(scale, 0).repeat(scale, 1)
    io.save_image(out_png, grid)
    return out_png


def _argv_value(argv: List[str], flag: str) -> Optional[str]:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def picture_sets(stages, results: Dict[str, dict]) -> Dict[str, dict]:
    """Per image list, the label-map folders the report rows evaluate (in stage order) and the first CAM folder:
    ``{list path: {"cam": dir or None, "masks": [(label, dir)]}}``."""
    sets: Dict[str, dict] = {}
    for st in stages:
        if not st.report:
            continue
        label = st.report[-1]["label"]
        lst, pred, kind = _argv_value(st.argv, "--list"), _argv_value(st.argv, "--predict_dir"), \
            _argv_value(st.argv, "--type")
        if pred is None:                                    # a prediction stage reporting its own result
            res = (results.get(st.name) or {}).get("result") or {}
            lst, pred, kind = res.get("list"), res.get("pred_dir"), "png"
        if not (lst and pred):
            continue
        entry = sets.setdefault(lst, {"cam": None, "masks": []})
        if kind == "npy":
            entry["cam"] = entry["cam"] or pred
        else:
            entry["masks"].append((label, pred))
    return sets


def write_report(work_dir: str, root: str, stages, results: Dict[str, dict], table: str, n: int = 4) -> str:
    """Write ``<work_dir>/report/summary.md`` (table, overlay pictures of every reported folder, curves, the
    commands) and return its path."""
    rep = os.path.join(work_dir, "report")
    os.makedirs(rep, exist_ok=True)
    md = ["# wseg pipeline report", "", table, ""]
    try:
        voc = VOCRoot(root)
        for k, (lst, entry) in enumerate(picture_sets(stages, results).items()):
            if not os.path.isfile(lst):
                continue
            ids = read_list(lst)[:n]
            name = os.path.splitext(os.path.basename(lst))[0]
            p = write_overlays(os.path.join(rep, f"overlays_{name}.png"), voc, ids, [d for _, d in entry["masks"]],
                               entry["cam"])
            if p:
                title = " | ".join(["image", "ground truth"] + (["CAM"] if entry["cam"] else [])
                                   + [label for label, _ in entry["masks"]])
                md += [f"**{name}: {title}**", "", f"![{name}]({os.path.basename(p)})", ""]
    except Exception as exc:  # pictures are a courtesy; the table is the result
        md += [f"(pictures skipped: {exc})", ""]
    for curve in sorted(f for f in os.listdir(rep) if f.endswith("_curve.png")):
        md += [f"**background-threshold curve ({curve[:-10]})**", "", f"![curve]({curve})", ""]
    md += ["## Commands", ""] + [f"- `{name}`: `{rec.get('command', '')}`" for name, rec in results.items()]
    path = os.path.join(rep, "summary.md")
    io.atomic_write_text(path, "\n".join(md) + "\n")
    io.atomic_write_text(os.path.join(rep, "results.json"), json.dumps(results, indent=1))
    return path
