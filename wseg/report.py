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


def write_report(work_dir: str, cfg: dict, results: Dict[str, dict], table: str, n: int = 4) -> str:
    """Write ``<work_dir>/report/summary.md`` (table, commands, pictures) and return its path."""
    rep = os.path.join(work_dir, "report")
    os.makedirs(rep, exist_ok=True)
    ds = cfg.get("dataset", {})
    root = os.path.join(work_dir, "data") if "make_toy_voc" in ds else ds.get("voc12_root")
    md = ["# wseg pipeline report", "", table, ""]
    try:
        voc = VOCRoot(root)
        split = lambda name: os.path.join(root, "ImageSets", "Segmentation", name + ".txt")  # noqa: E731
        train_ids = read_list(split(cfg.get("infer_list", "train")))[:n]
        W = lambda p: os.path.join(work_dir, p)  # noqa: E731
        pics = []
        p = write_overlays(os.path.join(rep, "overlays_train.png"), voc, train_ids,
                           [W("cam_crf"), W("rw"), W("pseudo")], W("cam"))
        if p:
            pics.append(("train: image | ground truth | PPC CAM | CAM+CRF | random walk | pseudo mask", p))
        seg_pred = W(os.path.join("seg", "pred_" + cfg.get("val_list", "val")))
        if os.path.isdir(seg_pred):
            val_ids = read_list(split(cfg.get("val_list", "val")))[:n]
            p = write_overlays(os.path.join(rep, "overlays_val.png"), voc, val_ids, [seg_pred])
            if p:
                pics.append(("val: image | ground truth | DeepLab prediction", p))
        for title, path in pics:
            md += [f"**{title}**", "", f"![{title}]({os.path.basename(path)})", ""]
    except Exception as exc:  # pictures are a courtesy; the table is the result
        md += [f"(pictures skipped: {exc})", ""]
    for curve in sorted(f for f in os.listdir(rep) if f.endswith("_curve.png")):
        md += [f"**background-threshold curve ({curve[:-10]})**", "", f"![curve]({curve})", ""]
    md += ["## Commands", ""] + [f"- `{name}`: `{rec.get('command', '')}`" for name, rec in results.items()]
    path = os.path.join(rep, "summary.md")
    io.atomic_write_text(path, "\n".join(md) + "\n")
    io.atomic_write_text(os.path.join(rep, "results.json"), json.dumps(results, indent=1))
    return path
