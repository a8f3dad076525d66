"""Dataset roots: PASCAL VOC format, and MS COCO 2014 in the layouts its WSSS users already have.

One class, :class:`VOCRoot` (alias :class:`DataRoot`), opens every root a stage takes (``--voc12_root``, alias
``--data_root``) and detects its layout:

``voc``: PASCAL VOC 2012 / SBD, and COCO converted to it (``coco14/make_coco_masks.py``)::

    root/JPEGImages/<id>.jpg          images
    root/Annotations/<id>.xml         object annotations (image-level labels come from here when no cls_labels.npy)
    root/SegmentationClass/<id>.png   palette masks, 255 = ignore
    root/SegmentationClassAug/<id>.png  SBD-augmented masks (optional)
    root/ImageSets/Segmentation/*.txt split lists
    root/cls_labels.npy               {id: multi-hot over foreground classes} as the published repos ship
    root/classes.txt                  optional class list (the synthetic dataset writes one)

``rsepm``: RecurSeed+EdgePredictMix's split folders (``core/abc_modules.py``: ``{domain}/image|mask|xml``; a split is
the images of its folder, labels come from the XML ``<name>`` tags)::

    root/{train,train_aug,validation,test}/{image/<id>.jpg, mask/<id>.png, xml/<id>.xml}

``coco2014``: the COCO download with masks beside it, as ToCo (``MSCOCO/{coco2014,SegmentationClass}``) and EPS
(``DATASET_ROOT/{train2014,SegmentationClass/train2014}``) lay it out; 81 contiguous classes by default::

    root/{train2014,val2014}/<id>.jpg   (or root/coco2014/..., root/images/...)
    root/SegmentationClass/{train2014,val2014}/<id>.png

``pmm``: PMM / WSSS_MMSeg's ``coco14`` root, raw category ids as labels (91 classes by default)::

    root/images/<id>.jpg   root/voc_format/{class_labels/<id>.png, train.txt, val.txt, cls_labels.npy}

Split names (``train``, ``val``, ...) resolve to a list file when the layout has one, else to the ids of the split's
folder (``val`` and ``validation`` name the same split).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from wseg.data.classes import CLASSES_TXT, DatasetSpec, get_spec
from wseg.errors import WsegError
from wseg.io import atomic_save_dict, atomic_write_text, load_dict, load_mask_png, require_dir

CLS_LABELS = "cls_labels.npy"
SPLIT_DIR = os.path.join("ImageSets", "Segmentation")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
#: RecurSeed+EdgePredictMix's split folders, in the order their images are searched.
RSEPM_SPLITS = ("train", "train_aug", "validation", "test")
#: COCO 2014 split folders of the ``coco2014`` layout.
COCO_SPLIT_FOLDERS = {"train": "train2014", "val": "val2014"}
_ALIASES = {"val": ("val", "validation"), "validation": ("validation", "val")}


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


def folder_ids(folder: str, exts: Tuple[str, ...] = IMAGE_EXTS) -> List[str]:
    """Sorted ids (file stems) of the files in ``folder`` ending in ``exts`` (hidden files skipped)."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder)
                  if f.lower().endswith(exts) and not f.startswith("."))


# --------------------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class Layout:
    """Where a root keeps each kind of file. Folders are searched in order; ``splits`` maps a split name to
    ``(folder listing its ids, extension, mask folder or None)`` for layouts whose splits are folders."""

    name: str
    image_dirs: Tuple[str, ...]
    mask_dirs: Tuple[str, ...]
    xml_dirs: Tuple[str, ...]
    list_dir: str
    cls_labels: Tuple[str, ...]
    default_classes: str = "voc12"
    splits: Tuple[Tuple[str, Tuple[str, Tuple[str, ...], Optional[str]]], ...] = ()

    def split(self, name: str) -> Optional[Tuple[str, Tuple[str, ...], Optional[str]]]:
        table = dict(self.splits)
        for alias in _ALIASES.get(name, (name,)):
            if alias in table:
                return table[alias]
        return None


def _existing(*paths: str) -> Tuple[str, ...]:
    return tuple(p for p in paths if os.path.isdir(p))


def detect_layout(root: str) -> Optional[Layout]:
    """The :class:`Layout` of ``root`` (see the module docstring), or None when it matches none."""
    j = lambda *p: os.path.join(root, *p)  # noqa: E731
    if os.path.isdir(j("JPEGImages")):
        return Layout("voc", (j("JPEGImages"),), (j("SegmentationClass"), j("SegmentationClassAug")),
                      (j("Annotations"),), j(SPLIT_DIR), (j(CLS_LABELS),))
    if os.path.isdir(j("images")) and os.path.isdir(j("voc_format")):
        return Layout("pmm", (j("images"),), (j("voc_format", "class_labels"),), (), j("voc_format"),
                      (j("voc_format", CLS_LABELS), j(CLS_LABELS)), "coco14_91")
    rsepm = [s for s in RSEPM_SPLITS + ("val",) if os.path.isdir(j(s, "image"))]
    if rsepm:
        return Layout("rsepm", tuple(j(s, "image") for s in rsepm), _existing(*(j(s, "mask") for s in rsepm)),
                      _existing(*(j(s, "xml") for s in rsepm)), j(SPLIT_DIR), (j(CLS_LABELS),), "voc12",
                      tuple((s, (j(s, "image"), IMAGE_EXTS, j(s, "mask") if os.path.isdir(j(s, "mask")) else None))
                            for s in rsepm))
    for base in (root, j("coco2014"), j("images")):
        folders = {s: os.path.join(base, f) for s, f in COCO_SPLIT_FOLDERS.items()
                   if os.path.isdir(os.path.join(base, f))}
        if folders:
            masks = {s: j("SegmentationClass", COCO_SPLIT_FOLDERS[s]) for s in folders}
            masks = {s: m for s, m in masks.items() if os.path.isdir(m)}
            splits = tuple((s, (masks[s], (".png",), masks[s]) if s in masks else (folders[s], IMAGE_EXTS, None))
                           for s in folders)
            return Layout("coco2014", tuple(folders.values()), tuple(masks.values()), (), j(SPLIT_DIR),
                          (j(CLS_LABELS), j("cls_labels_onehot.npy")), "coco14", splits)
    return None


class VOCRoot:
    """Paths and metadata of a dataset root in any layout of the module docstring (``voc`` when it has
    ``JPEGImages/``). ``spec``: ``voc12``/``coco14``/``coco14_91``/a ``classes.txt``; default the root's
    ``classes.txt``, else the layout's (``voc12``; ``coco14`` for ``coco2014``, ``coco14_91`` for ``pmm``)."""

    def __init__(self, root: str, spec: Optional[DatasetSpec | str] = None):
        require_dir(root, "dataset root", "pass --voc12_root (or --data_root) pointing at the folder holding "
                                          "JPEGImages/ (or another layout of docs/coco.md)")
        layout = detect_layout(root)
        if layout is None:
            parent = os.path.dirname(os.path.normpath(os.path.abspath(root)))
            if detect_layout(parent) is not None:  # a sub-folder of a root (JPEGImages/, SegmentationClass/, ...)
                raise WsegError(f"{root}: a folder inside the dataset root {parent}, not the root; pass "
                                f"--voc12_root (or --data_root) {parent}")
            require_dir(os.path.join(root, "JPEGImages"), "JPEGImages",
                        f"{root} is not a dataset root: a VOC-format root needs JPEGImages/ (e.g. "
                        "VOCdevkit/VOC2012); COCO roots need train2014/ + SegmentationClass/ (ToCo, EPS), "
                        "images/ + voc_format/ (PMM) or <split>/image/ (RS+EPM), see docs/coco.md")
        self.root = root
        self.layout: Layout = layout
        self.spec = spec if isinstance(spec, DatasetSpec) else get_spec(spec, root=root,
                                                                        default=layout.default_classes)
        own = os.path.join(root, CLASSES_TXT)
        if spec is not None and os.path.isfile(own) and get_spec(own).class_names != self.spec.class_names:
            raise WsegError(f"--classes {spec if isinstance(spec, str) else self.spec.name}: {self.spec.num_classes} "
                            f"classes, but {own} lists {get_spec(own).num_classes} others; omit --classes to use the "
                            "root's own")

    def classes_arg(self) -> str:
        """What ``--classes`` names this root's classes by: its own ``classes.txt`` when the spec came from there,
        else the built-in name (``voc12``, ``coco14``, ``coco14_91``)."""
        own = os.path.join(self.root, CLASSES_TXT)
        if os.path.isfile(own) and get_spec(own).class_names == self.spec.class_names:
            return own
        return self.spec.name

    def _find(self, folders: Sequence[str], name: str) -> Optional[str]:
        for folder in folders:
            p = os.path.join(folder, name)
            if os.path.isfile(p):
                return p
        return None

    def image_path(self, image_id: str) -> str:
        dirs = self.layout.image_dirs
        if len(dirs) == 1:
            return os.path.join(dirs[0], image_id + ".jpg")
        for folder in COCO_SPLIT_FOLDERS.values():          # COCO_train2014_000000000009 -> train2014/
            if self.layout.name == "coco2014" and f"_{folder}_" in image_id:
                hit = self._find([d for d in dirs if os.path.basename(d) == folder], image_id + ".jpg")
                if hit:
                    return hit
        return self._find(dirs, image_id + ".jpg") or os.path.join(dirs[0], image_id + ".jpg")

    def annotation_path(self, image_id: str) -> str:
        if self.layout.name == "voc":
            return os.path.join(self.root, "Annotations", image_id + ".xml")
        found = self._find(self.layout.xml_dirs, image_id + ".xml")
        return found or os.path.join(self.root, "Annotations", image_id + ".xml")

    def mask_path(self, image_id: str) -> Optional[str]:
        """Ground-truth mask: the first of the layout's mask folders holding it (``SegmentationClass`` first, then
        ``SegmentationClassAug`` for VOC); None if none does."""
        return self._find(self.layout.mask_dirs, image_id + ".png")

    def gt_dir(self, split: Optional[str] = None) -> str:
        """The ground-truth folder to evaluate against: ``SegmentationClass``, else ``SegmentationClassAug`` (VOC);
        for layouts with one mask folder per split, that of ``split`` (default the val split)."""
        if self.layout.name == "voc" or len(self.layout.mask_dirs) == 1:
            for p in self.layout.mask_dirs:
                if os.path.isdir(p):
                    return p
        elif split and os.path.isfile(split):       # a list file: the mask folder of its first image
            first = self.mask_path(read_list(split)[0])
            if first:
                return os.path.dirname(first)
        else:
            entry = self.layout.split(split or "val")
            if entry is not None and entry[2] and os.path.isdir(entry[2]):
                return entry[2]
        if self.layout.name == "voc":
            raise WsegError(f"{self.root}: no SegmentationClass/ or SegmentationClassAug/ folder; ground truth is "
                            "needed for evaluation")
        looked = ", ".join(os.path.relpath(p, self.root) for p in self.layout.mask_dirs) or "no mask folder"
        raise WsegError(f"{self.root}: no ground-truth folder ({looked}{' for split ' + split if split else ''}); "
                        "ground truth is needed for evaluation")

    def split_path(self, name: str) -> str:
        return os.path.join(self.layout.list_dir, name + ".txt")

    def list_path(self, name: str) -> Optional[str]:
        """An existing list file for ``name`` (a path, or a split name with a list in the layout), else None."""
        if os.path.isfile(name):
            return name
        for alias in _ALIASES.get(name, (name,)):
            if os.path.isfile(self.split_path(alias)):
                return self.split_path(alias)
        return None

    def split_names(self) -> List[str]:
        """Split names this root offers (list files and split folders)."""
        names = [n for n, _ in self.layout.splits]
        if os.path.isdir(self.layout.list_dir):
            names += [os.path.splitext(f)[0] for f in sorted(os.listdir(self.layout.list_dir)) if f.endswith(".txt")]
        return list(dict.fromkeys(names))

    def ids(self, list_path_or_split: str) -> List[str]:
        """Ids of a split given as a list path or a split name (``train``, ``val``, ``train_aug``; for layouts whose
        splits are folders, the ids of the folder)."""
        if os.path.isfile(list_path_or_split):
            return read_list(list_path_or_split)
        if os.sep in list_path_or_split or list_path_or_split.endswith(".txt"):    # a path, not a split name
            raise WsegError(f"{list_path_or_split}: list file not found; pass an existing list or a split name "
                            f"(train, val, ... under {os.path.join(self.root, SPLIT_DIR)})")
        if self.layout.name == "voc":
            return read_list(self.split_path(list_path_or_split))
        listed = self.list_path(list_path_or_split)
        if listed:
            return read_list(listed)
        entry = self.layout.split(list_path_or_split)
        if entry is None:
            raise WsegError(f"{list_path_or_split}: no such split in {self.root} ({self.layout.name} layout); use one "
                            f"of {', '.join(self.split_names()) or 'none found'} or pass a list file")
        ids = folder_ids(entry[0], entry[1])
        if not ids:
            raise WsegError(f"{entry[0]}: split {list_path_or_split} is empty; add its files or pass a list file")
        return ids

    def cls_labels(self, ids: Sequence[str], path: Optional[str] = None) -> Dict[str, np.ndarray]:
        """Image-level labels for ``ids`` (see :func:`load_cls_labels`)."""
        return load_cls_labels(self, ids, path)

    def cls_labels_path(self) -> str:
        """The layout's ``cls_labels.npy`` (the first that exists, else where it would go)."""
        return next((p for p in self.layout.cls_labels if os.path.isfile(p)), self.layout.cls_labels[0])


#: The dataset root of every layout (the historical name :class:`VOCRoot` stays).
DataRoot = VOCRoot


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
    from wseg.data.classes import present_classes
    from wseg.io import check_labels

    check_labels(mask, spec.num_classes, path)
    return present_classes(mask, spec.num_fg)


def _derive_label(voc: VOCRoot, image_id: str) -> np.ndarray:
    xml = voc.annotation_path(image_id)
    if os.path.isfile(xml):
        return labels_from_xml(xml, voc.spec)
    mask = voc.mask_path(image_id)
    if mask:
        return labels_from_mask(load_mask_png(mask), voc.spec, mask)
    raise WsegError(f"{voc.root}: no label source for image {image_id} (no cls_labels.npy entry, no "
                    f"{os.path.relpath(xml, voc.root)}, no mask); run voc12/make_cls_labels.py (COCO: "
                    "coco14/make_coco_masks.py) or fix the list")


def load_cls_labels(voc: VOCRoot, ids: Sequence[str], path: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Image-level labels ``{id: float32 multi-hot over foreground classes}``.

    From ``path`` or ``<root>/cls_labels.npy`` when present (string or the published integer keys), otherwise
    derived from the XML annotations or, failing those, from the masks.
    """
    path = path or voc.cls_labels_path()
    table = None
    if os.path.isfile(path):
        table = load_dict(path, "a cls_labels dict {image id: label vector}",
                          "rebuild it with voc12/make_cls_labels.py")
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
    """Every id with an image in the root's image folders (``JPEGImages/`` for VOC; sorted, each once)."""
    return sorted({i for d in voc.layout.image_dirs for i in folder_ids(d)})


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
    atomic_save_dict(out_path, table)
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
