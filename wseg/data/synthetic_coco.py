"""Synthetic MS COCO-format dataset ("toy COCO"): the COCO demo and the tests' input, in the official download's layout.

Images are the synthetic VOC generator's (:func:`wseg.data.synthetic.render_sample`: bodies shared within class
groups, discriminative heads, clutter, occlusion), so the WSSS task is the same; the annotations are COCO's::

    root/annotations/instances_{train,val}2014.json
    root/train2014/COCO_train2014_<id:012d>.jpg   root/val2014/COCO_val2014_<id:012d>.jpg

Every visible object becomes one annotation: a polygon outline (several parts when occlusion splits it; traced on the
mask at twice the resolution, so pycocotools rasterises it back to the same pixels) or, with probability
``crowd_prob``, an ``iscrowd=1`` annotation with an uncompressed RLE mask, as COCO stores crowds. ``area`` and
``bbox`` are pycocotools' of that segmentation. The json lists all 80 COCO categories with their real ids; toy class
``c`` is the category :func:`toy_category_ids` picks (spread over the id range, across its gaps), so converted roots
carry exactly the ``coco14`` (81) or ``coco14_91`` class lists and most classes are absent from the ground truth, as
in a small COCO subset. Each image comes from the RNG seeded with ``(seed, index)``: byte-identical per seed,
independent of ``workers``; re-runs skip finished images.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from typing import Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from wseg.data import synthetic
from wseg.data.classes import COCO14, COCO_CATEGORY_IDS
from wseg.errors import WsegError
from wseg.io import atomic_write_text, is_done, save_image

CONFIG_JSON = "toy_coco.json"
SPLITS = ("train", "val")


def toy_category_ids(num_classes: int) -> List[int]:
    """COCO category id of each toy class: evenly spread over the 80 used ids (first and last included)."""
    if not 1 <= num_classes <= len(COCO_CATEGORY_IDS):
        raise WsegError(f"--num_classes {num_classes}: toy COCO maps classes onto COCO's 80 categories; use 1..80")
    if num_classes == 1:
        return [COCO_CATEGORY_IDS[0]]
    return [COCO_CATEGORY_IDS[int(round(c * (len(COCO_CATEGORY_IDS) - 1) / (num_classes - 1)))]
            for c in range(num_classes)]


def coco_categories() -> List[Dict]:
    """The 80 COCO categories (real ids and names) as the json lists them."""
    return [{"id": cid, "name": name, "supercategory": "toy"}
            for cid, name in zip(COCO_CATEGORY_IDS, COCO14.fg_names)]


def rle_counts(mask: np.ndarray) -> List[int]:
    """Uncompressed COCO RLE ``counts`` of a binary mask: run lengths in column-major order, zeros first."""
    flat = np.asarray(mask, bool).ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def mask_polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons (``[x1, y1, x2, y2, ...]`` per part) whose pycocotools rasterisation is ``mask``: outlines traced
    at twice the resolution through boundary sub-pixel centres."""
    h, w = mask.shape
    big = cv2.resize(mask.astype(np.uint8), (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [np.round((c.reshape(-1, 2) + 0.5) / 2, 2).ravel().tolist() for c in contours if len(c) >= 3]


def _file_name(split: str, image_id: int) -> str:
    return f"COCO_{split}2014_{image_id:012d}.jpg"


def _render(job) -> Tuple[int, List[Dict]]:
    """Worker: image ``index`` -> its jpg (unless written) and its annotations (without ids)."""
    from pycocotools import mask as mu

    index, split, root, cfg, cat_ids, crowd_prob = job
    s = synthetic.render_sample(index, cfg)
    path = os.path.join(root, f"{split}2014", _file_name(split, index))
    if not is_done(path):
        save_image(path, s.image, quality=s.jpeg_quality)
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(index), 2014]))
    h, w = s.instances.shape
    anns = []
    for o in s.objects:
        vis = s.instances == o["instance"]
        crowd = bool(rng.random() < crowd_prob)
        if crowd:
            seg = {"counts": rle_counts(vis), "size": [h, w]}
            rle = mu.frPyObjects(seg, h, w)
        else:
            seg = mask_polygons(vis)
            if not seg:
                continue
            rle = mu.merge(mu.frPyObjects(seg, h, w))
        anns.append({"image_id": index, "category_id": cat_ids[o["class_index"] - 1], "segmentation": seg,
                     "area": float(mu.area(rle)), "bbox": [float(v) for v in mu.toBbox(rle)],
                     "iscrowd": int(crowd)})
    return index, anns


def _config(cfg: synthetic.ToyConfig, crowd_prob: float, num_train: int, num_val: int) -> Dict:
    return {"toy": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            "crowd_prob": crowd_prob, "num_train": num_train, "num_val": num_val}


def make_toy_coco(root: str, num_train: int = 40, num_val: int = 10, num_classes: int = 6,
                  image_size: Union[str, int, Sequence[int], None] = None, seed: int = 0, workers: int = 1,
                  crowd_prob: float = 0.15, difficulty: str = "normal", progress: bool = False, **options) -> Dict:
    """Write the toy COCO dataset to ``root`` (see the module docstring) and return a summary dict.

    ``num_classes`` toy classes (1..80) map onto COCO categories; images ``1..num_train`` are train2014, the next
    ``num_val`` val2014. Extra ``options`` are :class:`~wseg.data.synthetic.ToyConfig` fields.
    """
    if num_train < 1 or num_val < 1 or num_train + num_val > 10 ** 6:
        raise WsegError(f"--num_train {num_train} --num_val {num_val}: need at least one image in each split and at "
                        "most a million")
    if not 0.0 <= crowd_prob <= 1.0:
        raise WsegError(f"--crowd_prob {crowd_prob}: a probability in [0, 1]")
    if difficulty not in synthetic.DIFFICULTY:
        raise WsegError(f"--difficulty {difficulty!r}: choose one of {', '.join(synthetic.DIFFICULTY)}")
    cat_ids = toy_category_ids(int(num_classes))
    w, h = synthetic.parse_size(image_size)
    options = {**synthetic.DIFFICULTY[difficulty], **options}
    unknown = set(options) - set(synthetic.ToyConfig.__dataclass_fields__)
    if unknown:
        raise WsegError(f"make_toy_coco: unknown option(s) {sorted(unknown)}; see wseg.data.synthetic.ToyConfig")
    cfg = synthetic.ToyConfig(num_classes=int(num_classes), width=w, height=h, seed=int(seed),
                              **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}).validate()
    want = _config(cfg, float(crowd_prob), int(num_train), int(num_val))
    record = os.path.join(root, CONFIG_JSON)
    ann_paths = {s: os.path.join(root, "annotations", f"instances_{s}2014.json") for s in SPLITS}
    if os.path.isfile(record):
        try:
            with open(record) as f:
                have = json.load(f)
        except (OSError, ValueError):
            have = None
        if have != want:
            raise WsegError(f"{record}: this root was generated with other settings; use another --out or delete "
                            "the folder to regenerate")
        if all(is_done(p) for p in ann_paths.values()):
            return {"root": root, "generated": 0, "skipped": num_train + num_val, "seconds": 0.0,
                    "num_train": num_train, "num_val": num_val, "category_ids": cat_ids, "annotations": None,
                    "crowd": None, "images_per_s": None}
    elif os.path.isdir(root) and any(os.path.isdir(os.path.join(root, f"{s}2014")) for s in SPLITS):
        raise WsegError(f"{root}: holds COCO image folders but no {CONFIG_JSON}, so it is not a toy COCO root; pass "
                        "an empty or new folder as --out")
    os.makedirs(root, exist_ok=True)
    atomic_write_text(record, json.dumps(want, indent=1, sort_keys=True) + "\n")

    split_of = {i: ("train" if i <= num_train else "val") for i in range(1, num_train + num_val + 1)}
    jobs = [(i, split_of[i], root, cfg, cat_ids, float(crowd_prob)) for i in split_of]
    for s in SPLITS:
        os.makedirs(os.path.join(root, f"{s}2014"), exist_ok=True)
    t0 = time.perf_counter()
    from wseg.parallel import imap_pool

    results: Dict[int, List[Dict]] = {}
    for _, (index, anns) in imap_pool(_render, jobs, workers, desc="toy coco", progress=progress):
        results[index] = anns
    seconds = time.perf_counter() - t0
    ann_id, total, crowd = 1, 0, 0
    for s in SPLITS:
        images, annotations = [], []
        for i in sorted(k for k, v in split_of.items() if v == s):
            images.append({"id": i, "file_name": _file_name(s, i), "width": w, "height": h})
            for a in results[i]:
                annotations.append({"id": ann_id, **a})
                ann_id += 1
                crowd += a["iscrowd"]
        total += len(annotations)
        data = {"info": {"description": f"wseg toy COCO ({s}), seed {cfg.seed}", "version": "1.0"},
                "licenses": [], "images": images, "annotations": annotations, "categories": coco_categories()}
        atomic_write_text(ann_paths[s], json.dumps(data, separators=(",", ":")) + "\n")
    n = num_train + num_val
    return {"root": root, "num_train": num_train, "num_val": num_val, "category_ids": cat_ids,
            "generated": n, "skipped": 0, "annotations": total, "crowd": crowd, "seconds": round(seconds, 3),
            "images_per_s": round(n / seconds, 1) if seconds > 0 else None}


def default_voc_out(root: str, classes: str = "coco14") -> str:
    """Where the toy COCO stage puts the converted root: ``<root>/voc81`` or ``<root>/voc91``."""
    return os.path.join(root, "voc91" if classes in ("coco14_91", "coco91") else "voc81")
