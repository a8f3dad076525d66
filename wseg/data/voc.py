"""PASCAL VOC-format dataset roots (VOC 2012, SBD-augmented VOC, COCO-2014 converted to VOC layout).

Layout::

    root/JPEGImages/<id>.jpg          images
    root/Annotations/<id>.xml         object annotations (image-level labels come from here when no cls_labels.npy)
    root/SegmentationClass/<id>.png   palette masks, 255 = ignore
    root/SegmentationClassAug/<id>.png  SBD-augmented masks (optional)
    root/ImageSets/Segmentation/*.txt split lists
    root/cls_labels.npy               {id: multi-hot over foreground classes} as the published repos ship
    root/classes.txt                  optional class list (the synthetic dataset writes one)
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from wseg.data.classes import DatasetSpec, get_spec
from wseg.errors import WsegError
from wseg.io import atomic_path, atomic_write_text, load_mask_png, require_dir

CLS_LABELS = "cls_labels.npy"
SPLIT_DIR = os.path.join("ImageSets", "Segmentation")


def read_list(path: str) -> List[str]:
    """Image ids of a split list.

    Accepts plain ``id`` lines and the published ``JPEGImages/id.jpg SegmentationClass/id.png`` lines;
    blank lines and ``#`` comments are skipped.
    """
    if not path or not os.path.isfile(path):
        raise WsegError(f"{path}: list file not found; pass an existing split list (e.g. "
                        "<root>/ImageSets/Segmentation/train.txt, made by voc12/make_cls_labels.py)")
    ids = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            ids.append(os.path.splitext(os.path.basename(line.split()[0]))[0])
    if not ids:
        raise WsegError(f"{path}: list file is empty; it needs one image id per line")
    return ids


def write_list(path: str, ids: Iterable[str]) -> None:
    """Write a split list (one id per line) atomically."""
    atomic_write_text(path, "".join(f"{i}\n" for i in ids))


def id_to_int(image_id: str) -> Optional[int]:
    """The integer key some published ``cls_labels.npy`` files use (``2007_000032`` -> ``2007000032``)."""
    digits = image_id.replace("_", "")
    return int(digits) if digits.isdigit() else None


class VOCRoot:
    """Paths and metadata of a VOC-format dataset root."""

    def __init__(self, root: str, spec: Optional[DatasetSpec | str] = None):
        require_dir(root, "dataset root", "pass --voc12_root pointing at the folder holding JPEGImages/")
        require_dir(os.path.join(root, "JPEGImages"), "JPEGImages",
                    f"{root} is not a VOC-format root: it needs JPEGImages/ (e.g. VOCdevkit/VOC2012)")
        self.root = root
        self.spec = spec if isinstance(spec, DatasetSpec) else get_spec(spec, root=root)
        own = os.path.join(root, "classes.txt")
        if spec is not None and os.path.isfile(own) and get_spec(own).class_names != self.spec.class_names:
            raise WsegError(f"--classes {spec if isinstance(spec, str) else self.spec.name}: {self.spec.num_classes} "
                            f"classes, but {own} lists {get_spec(own).num_classes} others; omit --classes to use the "
                            "root's own")

    def classes_arg(self) -> str:
        """What ``--classes`` names this root's classes by: its own ``classes.txt`` when the spec came from there,
        else the built-in name (``voc12``, ``coco14``)."""
        own = os.path.join(self.root, "classes.txt")
        if os.path.isfile(own) and get_spec(own).class_names == self.spec.class_names:
            return own
        return self.spec.name

    def image_path(self, image_id: str) -> str:
        return os.path.join(self.root, "JPEGImages", image_id + ".jpg")

    def annotation_path(self, image_id: str) -> str:
        return os.path.join(self.root, "Annotations", image_id + ".xml")

    def mask_path(self, image_id: str) -> Optional[str]:
        """Ground-truth mask: ``SegmentationClass`` first, then ``SegmentationClassAug``; None if neither."""
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            p = os.path.join(self.root, folder, image_id + ".png")
            if os.path.isfile(p):
                return p
        return None

    def gt_dir(self) -> str:
        """The ground-truth folder to evaluate against (``SegmentationClass``, else ``SegmentationClassAug``)."""
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            p = os.path.join(self.root, folder)
            if os.path.isdir(p):
                return p
        raise WsegError(f"{self.root}: no SegmentationClass/ or SegmentationClassAug/ folder; ground truth is "
                        "needed for evaluation")

    def split_path(self, name: str) -> str:
        return os.path.join(self.root, SPLIT_DIR, name + ".txt")

    def ids(self, list_path_or_split: str) -> List[str]:
        """Ids of a split given as a list path or a split name (``train``, ``val``, ``train_aug``)."""
        if os.path.isfile(list_path_or_split):
            return read_list(list_path_or_split)
        if os.sep in list_path_or_split or list_path_or_split.endswith(".txt"):    # a path, not a split name
            raise WsegError(f"{list_path_or_split}: list file not found; pass an existing list or a split name "
                            f"(train, val, ... under {os.path.join(self.root, SPLIT_DIR)})")
        return read_list(self.split_path(list_path_or_split))

    def cls_labels(self, ids: Sequence[str], path: Optional[str] = None) -> Dict[str, np.ndarray]:
        """Image-level labels for ``ids`` (see :func:`load_cls_labels`)."""
        return load_cls_labels(self, ids, path)


# --------------------------------------------------------------------------------------------- image-level labels


def labels_from_xml(path: str, spec: DatasetSpec) -> np.ndarray:
    """Multi-hot foreground label vector from a VOC XML annotation (every ``<object>``, as PSA does)."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as exc:
        raise WsegError(f"{path}: cannot parse annotation XML ({exc}); fix or remove the file")
    index = {n: i for i, n in enumerate(spec.fg_names)}
    vec = np.zeros(spec.num_fg, np.float32)
    for name in tree.getroot().iter("object"):
        cls = (name.findtext("name") or "").strip()
        if cls not in index:
            raise WsegError(f"{path}: object class {cls!r} is not in the {spec.name} class list; "
                            "pass the right --classes")
        vec[index[cls]] = 1.0
    return vec


def labels_from_mask(mask: np.ndarray, spec: DatasetSpec, path: str = "<mask>") -> np.ndarray:
    """Multi-hot foreground label vector from a label mask (classes present, ignoring 0 and 255)."""
    from wseg.io import check_labels

    check_labels(mask, spec.num_classes, path)
    present = np.unique(mask)
    present = present[(present > 0) & (present < 255)].astype(np.int64)
    vec = np.zeros(spec.num_fg, np.float32)
    vec[present - 1] = 1.0
    return vec


def _derive_label(voc: VOCRoot, image_id: str) -> np.ndarray:
    xml = voc.annotation_path(image_id)
    if os.path.isfile(xml):
        return labels_from_xml(xml, voc.spec)
    mask = voc.mask_path(image_id)
    if mask:
        return labels_from_mask(load_mask_png(mask), voc.spec, mask)
    raise WsegError(f"{voc.root}: no label source for image {image_id} (no cls_labels.npy entry, no "
                    f"Annotations/{image_id}.xml, no mask); run voc12/make_cls_labels.py or fix the list")


def load_cls_labels(voc: VOCRoot, ids: Sequence[str], path: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Image-level labels ``{id: float32 multi-hot over foreground classes}``.

    From ``path`` or ``<root>/cls_labels.npy`` when present (string or the published integer keys), otherwise
    derived from the XML annotations or, failing those, from the masks.
    """
    path = path or os.path.join(voc.root, CLS_LABELS)
    table = None
    if os.path.isfile(path):
        try:
            table = np.load(path, allow_pickle=True).item()
        except Exception as exc:
            raise WsegError(f"{path}: cannot read cls_labels ({exc.__class__.__name__}); "
                            "rebuild it with voc12/make_cls_labels.py")
        if not isinstance(table, dict):
            raise WsegError(f"{path}: expected a dict {{image id: label vector}}; rebuild it with "
                            "voc12/make_cls_labels.py")
    out = {}
    for i in ids:
        vec = None
        if table is not None:
            vec = table.get(i)
            if vec is None:
                vec = table.get(id_to_int(i))
        if vec is None:
            vec = _derive_label(voc, i)
        vec = np.asarray(vec, np.float32).reshape(-1)
        if vec.shape[0] != voc.spec.num_fg:
            raise WsegError(f"{path}: label of {i} has {vec.shape[0]} entries but {voc.spec.name} has "
                            f"{voc.spec.num_fg} foreground classes; pass the right --classes or rebuild it")
        out[i] = vec
    return out


def all_image_ids(voc: VOCRoot) -> List[str]:
    """Every id with an image in ``JPEGImages/`` (sorted)."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(voc.root, "JPEGImages"))
                  if f.lower().endswith((".jpg", ".jpeg", ".png")))


def write_cls_labels(root: str, ids: Optional[Sequence[str]] = None, out_path: Optional[str] = None,
                     spec: Optional[DatasetSpec | str] = None) -> str:
    """Build ``cls_labels.npy`` (``{id: multi-hot float32}``) from the XML annotations / masks, atomically.

    ``ids`` defaults to every image that has an annotation or a mask. Returns the written path.
    """
    voc = VOCRoot(root, spec)
    if ids is None:
        ids = [i for i in all_image_ids(voc) if os.path.isfile(voc.annotation_path(i)) or voc.mask_path(i)]
    if not ids:
        raise WsegError(f"{root}: no image has an annotation or a mask; nothing to build labels from")
    table = {i: _derive_label(voc, i) for i in ids}
    out_path = out_path or os.path.join(root, CLS_LABELS)
    with atomic_path(out_path) as tmp, open(tmp, "wb") as f:
        np.save(f, table, allow_pickle=True)
    return out_path


def make_split_lists(root: str, out_dir: Optional[str] = None) -> Dict[str, List[str]]:
    """Write ``train.txt``/``val.txt`` (kept if present) and ``train_aug.txt`` (= VOC train + SBD minus VOC val,
    when ``SegmentationClassAug`` exists) into ``out_dir`` (default ``<root>/ImageSets/Segmentation``)."""
    voc = VOCRoot(root)
    out_dir = out_dir or os.path.join(root, SPLIT_DIR)
    splits: Dict[str, List[str]] = {}
    for name in ("train", "val"):
        src = voc.split_path(name)
        if os.path.isfile(src):
            splits[name] = read_list(src)
    if not splits:
        seg = os.path.join(root, "SegmentationClass")
        if not os.path.isdir(seg):
            raise WsegError(f"{root}: neither ImageSets/Segmentation/train.txt nor SegmentationClass/; "
                            "cannot infer the splits")
        ids = sorted(os.path.splitext(f)[0] for f in os.listdir(seg) if f.endswith(".png"))
        splits["trainval"] = ids
    aug = os.path.join(root, "SegmentationClassAug")
    if os.path.isdir(aug) and "train" in splits:
        val = set(splits.get("val", []))
        aug_ids = {os.path.splitext(f)[0] for f in os.listdir(aug) if f.endswith(".png")}
        splits["train_aug"] = sorted((set(splits["train"]) | aug_ids) - val)
    for name, ids in splits.items():
        missing = [i for i in ids if not os.path.isfile(voc.image_path(i))]
        if missing:
            raise WsegError(f"{voc.image_path(missing[0])}: image of split {name} not found ({len(missing)} of "
                            f"{len(ids)} missing); restore the images or drop the ids from the split list")
    for name, ids in splits.items():
        write_list(os.path.join(out_dir, name + ".txt"), ids)
    return splits
