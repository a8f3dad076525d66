"""MS COCO 2014 for semantic segmentation: instance annotations -> label masks, image-level labels and split lists,
and conversions between the layouts COCO's WSSS users have.

Masks follow coco2voc (``alicranck/coco2voc``, used for the masks of ToCo and PMM): every annotation of an image is
decoded with ``pycocotools`` (polygons merged per annotation, uncompressed and compressed RLE), the annotations are
sorted by their ``area`` field, smallest first, and a pixel takes the class of the *smallest* annotation covering it
(``coco2voc_aux.annotations_to_mask`` sorts by area and ``annotations_to_seg`` keeps the first label a pixel gets), so
small objects stay on top of the large ones they overlap; ties keep the annotation order. Unlike coco2voc, crowd
annotations (``iscrowd=1``) become 255 (ignore) by default (``crowd="ignore"``; coco2voc gives them their class,
``crowd="class"``), placed by the same area order. Labels are contiguous (``coco14``: 0 background, 1..80 in category
id order, as ToCo / EPS / RS+EPM use) or the raw category ids (``coco14_91``: 1..90 with 10 ids unused, as coco2voc
and PMM / WSSS_MMSeg use). Images without any annotation get no mask and are left out of the lists, as coco2voc
skips them (ToCo's lists: 82081 train / 40137 val images); ``keep_empty`` keeps them as all-background.

Image-level labels (``cls_labels.npy``, ``{id: multi-hot float32 over foreground classes}``) hold the category of
every annotation of the image, crowd ones included.

Output layouts (``out_layout``): ``voc`` (read by :class:`wseg.data.voc.VOCRoot`)::

    out/JPEGImages/<id>.jpg -> <coco_root>/<split>2014/<id>.jpg   (relative symlinks, or copies)
    out/SegmentationClass/<id>.png                                  palette PNG masks
    out/ImageSets/Segmentation/{train,val}.txt
    out/cls_labels.npy   out/classes.txt

and ``rsepm`` (RecurSeed+EdgePredictMix): ``out/{train,validation}/{image,mask,xml}``, with one XML ``<object>`` per
class of the image spanning the whole image, as RS+EPM's ``xml_utils.write_xml`` writes tags.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from wseg.data.classes import IGNORE, DatasetSpec, get_spec, write_classes_txt
from wseg.errors import WsegError
from wseg.io import (atomic_path, atomic_save_dict, atomic_write_text, is_done, load_mask_png, record_folder_settings,
                     save_mask_png)

SPLITS = ("train", "val")
CROWD_MODES = ("ignore", "class")
IMAGE_MODES = ("symlink", "copy", "none")
OUT_LAYOUTS = ("voc", "rsepm")
RSEPM_NAMES = {"train": "train", "val": "validation", "validation": "validation", "train_aug": "train_aug",
               "test": "test"}
SETTINGS = ".make_coco_masks.json"


def _mask_utils():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:                                     # pragma: no cover - pycocotools is a requirement
        raise WsegError("pycocotools: not installed; pip install pycocotools (it decodes COCO polygons and RLE)")
    return mask_utils


# --------------------------------------------------------------------------------------------- json


def load_instances(path: str) -> Dict:
    """Read an ``instances_*.json`` and check the fields this module uses (one-line errors)."""
    if not os.path.isfile(path):
        raise WsegError(f"{path}: COCO annotation file not found; download annotations_trainval2014.zip into "
                        "<coco_root>/annotations (or pass --ann_dir)")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise WsegError(f"{path}: cannot read COCO json ({exc.__class__.__name__}); re-download it")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise WsegError(f"{path}: not a COCO instances file (needs the lists images, annotations, categories)")
    return data


def category_table(categories: Sequence[Dict], raw_ids: bool, where: str = "json") -> Tuple[List[str], Dict[int, int]]:
    """Class names (background first) and ``{category id: label}``: contiguous (rank in id order + 1) or the raw
    ids (gaps named ``unused_<id>``)."""
    try:
        cats = sorted((int(c["id"]), str(c["name"])) for c in categories)
    except (KeyError, TypeError, ValueError):
        raise WsegError(f"{where}: a category lacks an integer id or a name")
    if not cats:
        raise WsegError(f"{where}: no categories")
    ids = [i for i, _ in cats]
    if len(set(ids)) != len(ids) or ids[0] < 1:
        raise WsegError(f"{where}: category ids must be unique and >= 1 (0 is background)")
    if raw_ids:
        if ids[-1] > 254:
            raise WsegError(f"{where}: category id {ids[-1]} does not fit an 8-bit mask with 255 = ignore; use "
                            "contiguous labels (--classes coco14)")
        names = {i: n for i, n in cats}
        return ["background"] + [names.get(i, f"unused_{i}") for i in range(1, ids[-1] + 1)], {i: i for i in ids}
    if len(ids) > 254:
        raise WsegError(f"{where}: {len(ids)} categories do not fit an 8-bit mask")
    return ["background"] + [n for _, n in cats], {i: k + 1 for k, i in enumerate(ids)}


def annotation_rle(ann: Dict, h: int, w: int, where: str = "json"):
    """One RLE of an annotation: polygons (merged), uncompressed RLE (``counts`` a list) or compressed RLE."""
    mu = _mask_utils()
    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list):
            polys = [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
            if not polys:                                    # degenerate outline: an empty mask, as it covers nothing
                return mu.encode(np.zeros((h, w), np.uint8, order="F"))
            return mu.merge(mu.frPyObjects(polys, h, w))
        if isinstance(seg, dict) and "counts" in seg:
            if list(seg.get("size", [])) != [h, w]:
                raise WsegError(f"{where}: annotation {ann.get('id')} RLE size {seg.get('size')} differs from its "
                                f"image ({h}, {w}); fix the json")
            if isinstance(seg["counts"], list):
                return mu.frPyObjects(seg, h, w)
            return {"size": [h, w], "counts": seg["counts"]}
    except WsegError:
        raise
    except Exception as exc:
        raise WsegError(f"{where}: annotation {ann.get('id')} has an unreadable segmentation ({exc}); fix the json")
    raise WsegError(f"{where}: annotation {ann.get('id')} has no polygon or RLE segmentation; fix the json")


def render_label(anns: Sequence[Dict], h: int, w: int, lut: Dict[int, int], crowd: str = "ignore",
                 where: str = "json") -> np.ndarray:
    """``uint8 (h, w)`` label map of one image's annotations (see the module docstring for the overlap rule)."""
    if not anns:
        return np.zeros((h, w), np.uint8)
    mu = _mask_utils()
    rles = [annotation_rle(a, h, w, where) for a in anns]
    areas = [float(a["area"]) if isinstance(a.get("area"), (int, float)) else float(mu.area(r))
             for a, r in zip(anns, rles)]
    order = sorted(range(len(anns)), key=lambda k: areas[k])      # stable: ties keep the annotation order
    try:
        with warnings.catch_warnings():                            # pycocotools' numpy 2 copy-keyword notice
            warnings.simplefilter("ignore", DeprecationWarning)
            masks = mu.decode([rles[k] for k in order])           # (h, w, n), smallest first
    except Exception as exc:
        raise WsegError(f"{where}: cannot decode the masks of image {anns[0].get('image_id')} ({exc}); fix the json")
    stack = masks.T                                                # (n, w, h): C-contiguous view of the Fortran array
    label_t = np.zeros(stack.shape[1:], np.uint8)
    for k in range(len(order) - 1, -1, -1):                        # largest first, so smaller ones end on top
        a = anns[order[k]]
        value = IGNORE if crowd == "ignore" and a.get("iscrowd") else lut[int(a["category_id"])]
        np.copyto(label_t, value, where=stack[k].view(bool))
    return np.ascontiguousarray(label_t.T)


def label_vector(anns: Sequence[Dict], lut: Dict[int, int], num_fg: int) -> np.ndarray:
    """Multi-hot float32 image-level label over foreground classes: the category of every annotation."""
    vec = np.zeros(num_fg, np.float32)
    idx = [lut[int(a["category_id"])] - 1 for a in anns]
    vec[idx] = 1.0
    return vec


# --------------------------------------------------------------------------------------------- files


def link_image(src: str, dst: str, mode: str) -> None:
    """Put image ``src`` at ``dst``: a relative symlink (replaced atomically when it points elsewhere), a copy
    (atomic), or nothing (``none``)."""
    if mode == "none":
        return
    if not os.path.isfile(src):
        raise WsegError(f"{src}: image not found; download the COCO images into the root (or pass --images none)")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if mode == "copy":
        if not is_done(dst) or os.path.islink(dst):
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        return
    rel = os.path.relpath(os.path.abspath(src), os.path.dirname(os.path.abspath(dst)))
    if os.path.islink(dst) and os.readlink(dst) == rel:
        return
    tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(rel, tmp)
    os.replace(tmp, dst)


def tags_xml(image_id: str, width: int, height: int, tags: Sequence[str]) -> str:
    """RS+EPM's tag XML (``tools/general/xml_utils.write_xml``): size and one whole-image ``<object>`` per tag."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image_id + ".jpg"
    size = ET.SubElement(root, "size")
    for key, val in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, key).text = str(val)
    for tag in tags:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = tag
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for key, val in (("xmin", 0), ("ymin", 0), ("xmax", width - 1), ("ymax", height - 1)):
            ET.SubElement(box, key).text = str(val)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


class OutPaths:
    """Where one split's files go in the output layout."""

    def __init__(self, out: str, layout: str, split: str):
        self.out, self.layout, self.split = out, layout, split
        if layout == "voc":
            self.image_dir = os.path.join(out, "JPEGImages")
            self.mask_dir = os.path.join(out, "SegmentationClass")
            self.xml_dir = None
            self.split_name = "val" if split == "validation" else split
        else:
            self.split_name = RSEPM_NAMES.get(split, split)
            base = os.path.join(out, self.split_name)
            self.image_dir, self.mask_dir, self.xml_dir = (os.path.join(base, k) for k in ("image", "mask", "xml"))

    def files(self, image_id: str) -> Tuple[str, str, Optional[str]]:
        return (os.path.join(self.image_dir, image_id + ".jpg"), os.path.join(self.mask_dir, image_id + ".png"),
                os.path.join(self.xml_dir, image_id + ".xml") if self.xml_dir else None)

    def done(self, image_id: str, images: str, with_mask: bool = True) -> bool:
        img, mask, xml = self.files(image_id)
        return ((not with_mask or is_done(mask)) and (xml is None or is_done(xml))
                and (images == "none" or os.path.lexists(img)))


def _write_item(item: Dict, images: str) -> None:
    """Write one image's mask (and link, XML); the mask last, so its presence marks the image done."""
    img, mask_path, xml = item["dst"]
    link_image(item["src_image"], img, images)
    if xml is not None:
        atomic_write_text(xml, tags_xml(item["id"], item["width"], item["height"], item["tags"]))
    if item.get("label") is not None:
        save_mask_png(mask_path, item["label"])


def _json_job(job) -> int:
    """Worker: render and write a chunk of images from their annotations."""
    items, lut, crowd, images, where = job
    for item in items:
        if item["with_mask"]:
            item["label"] = render_label(item["anns"], item["height"], item["width"], lut, crowd, where)
        _write_item(item, images)
    return len(items)


def _remap_job(job) -> int:
    """Worker: remap a chunk of existing masks through ``lut`` (uint16, 256 = a class the target lacks)."""
    items, lut, src_classes, images = job
    for item in items:
        if item["src_mask"]:
            m = load_mask_png(item["src_mask"])
            out = lut[m]
            if (out > 255).any():
                bad = sorted({int(v) for v in np.unique(m[out > 255])})
                raise WsegError(f"{item['src_mask']}: label(s) {bad} have no class in the target class list "
                                f"(from {src_classes}); convert to a list that holds them or fix the mask")
            item["label"] = out.astype(np.uint8)
            item["height"], item["width"] = m.shape
        elif item["dst"][2] is not None:                  # an image without a mask (test split): its XML needs the size
            from PIL import Image
            with Image.open(item["src_image"]) as im:
                item["width"], item["height"] = im.size
        _write_item(item, images)
    return len(items)


def _run_jobs(fn, jobs: List, num_workers: int, progress: bool, desc: str) -> None:
    from wseg.parallel import imap_pool

    for _ in imap_pool(fn, jobs, num_workers, desc=desc, progress=progress, weight=lambda j: len(j[0])):
        pass


def _chunks(items: List, size: int = 16) -> List[List]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _finish(out: str, layout: str, names: Sequence[str], lists: Dict[str, List[str]],
            labels: Dict[str, np.ndarray]) -> None:
    write_classes_txt(out, names)
    if layout == "voc":
        from wseg.data.voc import SPLIT_DIR, write_list

        for split, ids in lists.items():
            write_list(os.path.join(out, SPLIT_DIR, split + ".txt"), ids)
    atomic_save_dict(os.path.join(out, "cls_labels.npy"), labels)


def _check_out(out: str, settings: Dict, folders: Sequence[str]) -> None:
    """Refuse an output root whose masks were made with other settings (resume safety)."""
    os.makedirs(out, exist_ok=True)
    for folder in sorted(set(folders)):
        record_folder_settings(folder, settings, SETTINGS, "--out", (".png",),
                               record=os.path.join(out, f".{os.path.basename(folder)}{SETTINGS}"))


# --------------------------------------------------------------------------------------------- json -> masks


def _image_folder(coco_root: str, split: str) -> str:
    name = f"{split}2014"
    for base in (coco_root, os.path.join(coco_root, "images"), os.path.join(coco_root, "coco2014")):
        if os.path.isdir(os.path.join(base, name)):
            return os.path.join(base, name)
    return os.path.join(coco_root, name)


def convert_coco(coco_root: str, out: str, splits: Sequence[str] = SPLITS, classes: str = "coco14",
                 crowd: str = "ignore", images: str = "symlink", out_layout: str = "voc", keep_empty: bool = False,
                 ann_dir: Optional[str] = None, num_workers: int = 1, progress: bool = True) -> Dict:
    """``<coco_root>/annotations/instances_{split}2014.json`` -> masks, labels, lists and classes under ``out``.

    ``classes``: ``coco14`` (contiguous labels) or ``coco14_91`` (raw category ids). Re-running skips finished
    images; settings that differ from an earlier run into the same ``out`` are refused. Returns a summary dict.
    """
    raw = _check_modes(classes, crowd, images, out_layout)
    ann_dir = ann_dir or os.path.join(coco_root, "annotations")
    t0 = time.perf_counter()
    names: Optional[List[str]] = None
    lut: Dict[int, int] = {}
    lists: Dict[str, List[str]] = {}
    labels: Dict[str, np.ndarray] = {}
    jobs, counts = [], {"images": 0, "skipped": 0, "empty": 0, "crowd": 0, "annotations": 0}
    settings = {"classes": "coco14_91" if raw else "coco14", "crowd": crowd, "keep_empty": bool(keep_empty)}
    per_split = []
    for split in splits:
        path = os.path.join(ann_dir, f"instances_{split}2014.json")
        data = load_instances(path)
        split_names, split_lut = category_table(data["categories"], raw, path)
        if names is None:
            names, lut = split_names, split_lut
        elif split_names != names:
            raise WsegError(f"{path}: its categories differ from the other split's; use annotation files of one "
                            "COCO release")
        per_split.append((split, path, data))
    _check_out(out, settings, [OutPaths(out, out_layout, s).mask_dir for s, _, _ in per_split])
    spec = DatasetSpec("coco", tuple(names))
    for split, path, data in per_split:
        by_image: Dict[int, List[Dict]] = {}
        for a in data["annotations"]:
            if not isinstance(a, dict) or "image_id" not in a or a.get("category_id") not in lut:
                raise WsegError(f"{path}: annotation {a.get('id') if isinstance(a, dict) else a!r} lacks an image_id "
                                "or names a category the file does not list; fix the json")
            by_image.setdefault(a["image_id"], []).append(
                {k: a[k] for k in ("id", "image_id", "category_id", "segmentation", "area", "iscrowd") if k in a})
        img_dir = _image_folder(coco_root, split)
        if images != "none" and not os.path.isdir(img_dir):
            raise WsegError(f"{img_dir}: image folder not found; unzip {split}2014.zip into {coco_root} (or pass "
                            "--images none to write masks only)")
        paths = OutPaths(out, out_layout, split)
        ids, todo = [], []
        for im in sorted(data["images"], key=lambda im: str(im.get("file_name", ""))):
            try:
                stem, h, w = os.path.splitext(im["file_name"])[0], int(im["height"]), int(im["width"])
            except (KeyError, TypeError, ValueError):
                raise WsegError(f"{path}: image entry {im!r:.80} lacks file_name, height or width; fix the json")
            anns = by_image.get(im.get("id"), [])
            if not anns and not keep_empty:
                counts["empty"] += 1
                continue
            ids.append(stem)
            labels[stem] = label_vector(anns, lut, spec.num_fg)
            counts["annotations"] += len(anns)
            counts["crowd"] += sum(bool(a.get("iscrowd")) for a in anns)
            if paths.done(stem, images):
                counts["skipped"] += 1
                continue
            todo.append({"id": stem, "anns": anns, "height": h, "width": w, "with_mask": True,
                         "src_image": os.path.join(img_dir, im["file_name"]), "dst": paths.files(stem),
                         "tags": [names[k + 1] for k in np.flatnonzero(labels[stem])]})
        lists[paths.split_name] = ids
        counts["images"] += len(ids)
        jobs += [(chunk, lut, crowd, images, path) for chunk in _chunks(todo)]
    written = sum(len(j[0]) for j in jobs)
    t1 = time.perf_counter()
    _run_jobs(_json_job, jobs, num_workers, progress, "coco masks")
    seconds = time.perf_counter() - t1
    _finish(out, out_layout, names, lists, labels)
    return {"out": out, "layout": out_layout, "classes": len(names), "splits": {k: len(v) for k, v in lists.items()},
            "written": written, "skipped": counts["skipped"], "empty_images_left_out": counts["empty"],
            "annotations": counts["annotations"], "crowd_annotations": counts["crowd"],
            "seconds": round(time.perf_counter() - t0, 3),
            "masks_per_s": round(written / seconds, 1) if written and seconds > 0 else None}


def _check_modes(classes: Optional[str], crowd: str, images: str, out_layout: str) -> bool:
    if crowd not in CROWD_MODES:
        raise WsegError(f"--crowd {crowd}: use one of {', '.join(CROWD_MODES)}")
    if images not in IMAGE_MODES:
        raise WsegError(f"--images {images}: use one of {', '.join(IMAGE_MODES)}")
    if out_layout not in OUT_LAYOUTS:
        raise WsegError(f"--out_layout {out_layout}: use one of {', '.join(OUT_LAYOUTS)}")
    if classes not in (None, "coco14", "coco", "coco14_91", "coco91"):
        raise WsegError(f"--classes {classes}: COCO masks are coco14 (contiguous 0..80) or coco14_91 (raw ids 0..90)")
    return classes in ("coco14_91", "coco91")


# --------------------------------------------------------------------------------------------- root -> root


def remap_lut(src: DatasetSpec, dst: DatasetSpec) -> np.ndarray:
    """``uint16 (256,)`` table taking ``src`` labels to ``dst`` labels by class name (0 -> 0, 255 -> 255); a class
    ``dst`` lacks (e.g. an ``unused_<id>`` of the 91 list) maps to 256, an error when a mask holds it."""
    lut = np.full(256, 256, np.uint16)
    index = {n: i for i, n in enumerate(dst.class_names)}
    for i, n in enumerate(src.class_names):
        if n in index:
            lut[i] = index[n]
    lut[0], lut[IGNORE] = 0, IGNORE
    return lut


def remap_vector(vec: np.ndarray, lut: np.ndarray, num_fg: int) -> np.ndarray:
    """An image-level label vector through :func:`remap_lut` (foreground index ``k`` is label ``k + 1``)."""
    out = np.zeros(num_fg, np.float32)
    src = np.flatnonzero(np.asarray(vec) > 0)
    dst = lut[src + 1].astype(np.int64) - 1
    keep = (dst >= 0) & (dst < num_fg)
    out[dst[keep]] = 1.0
    return out


def convert_root(src_root: str, out: str, classes: Optional[str] = None, out_layout: str = "voc",
                 splits: Sequence[str] = SPLITS, images: str = "symlink", src_classes: Optional[str] = None,
                 num_workers: int = 1, progress: bool = True) -> Dict:
    """Rewrite a dataset root in any layout :class:`~wseg.data.voc.VOCRoot` reads into ``out_layout`` with the
    labels of ``classes`` (``coco14`` <-> ``coco14_91`` by class name; default: the source's classes): the 81 <-> 91
    conversion, and to / from RS+EPM's split folders."""
    from wseg.data.voc import VOCRoot

    _check_modes(classes, "ignore", images, out_layout)
    src = VOCRoot(src_root, src_classes)
    dst = get_spec(classes) if classes else src.spec
    lut = remap_lut(src.spec, dst)
    if os.path.abspath(out) == os.path.abspath(src_root):
        raise WsegError(f"--out {out}: is the source root; write the converted root elsewhere")
    t0 = time.perf_counter()
    settings = {"classes": list(dst.class_names), "from": os.path.abspath(src_root)}
    _check_out(out, settings, [OutPaths(out, out_layout, s).mask_dir for s in splits])
    lists: Dict[str, List[str]] = {}
    labels: Dict[str, np.ndarray] = {}
    jobs, skipped = [], 0
    for split in splits:
        ids = src.ids(split)
        paths = OutPaths(out, out_layout, split)
        vecs = src.cls_labels(ids)
        todo = []
        for i in ids:
            labels[i] = remap_vector(vecs[i], lut, dst.num_fg)
            src_mask = src.mask_path(i)
            if paths.done(i, images, with_mask=src_mask is not None):
                skipped += 1
                continue
            todo.append({"id": i, "src_image": src.image_path(i), "src_mask": src_mask, "dst": paths.files(i),
                         "tags": [dst.class_names[k + 1] for k in np.flatnonzero(labels[i])]})
        lists[paths.split_name] = ids
        jobs += [(chunk, lut, src.spec.name, images) for chunk in _chunks(todo)]
    written = sum(len(j[0]) for j in jobs)
    t1 = time.perf_counter()
    _run_jobs(_remap_job, jobs, num_workers, progress, "convert")
    seconds = time.perf_counter() - t1
    _finish(out, out_layout, dst.class_names, lists, labels)
    return {"out": out, "layout": out_layout, "from": src_root, "from_layout": src.layout.name,
            "classes": dst.num_classes, "splits": {k: len(v) for k, v in lists.items()}, "written": written,
            "skipped": skipped, "seconds": round(time.perf_counter() - t0, 3),
            "masks_per_s": round(written / seconds, 1) if written and seconds > 0 else None}
