"""Dataset definitions: class names and counts come from here, never from a hard-coded 20/21.

Index 0 is always ``background``; CAM dicts and ``cls_labels.npy`` vectors use foreground indices
(class index - 1), as the published repositories do.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from wseg.errors import WsegError

#: The label of unlabelled pixels in every mask (object borders, crowd regions, "no score").
IGNORE = 255


@dataclass(frozen=True)
class DatasetSpec:
    """Name and ordered class names (``class_names[0] == 'background'``) of a segmentation dataset."""

    name: str
    class_names: Tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes including background (21 for VOC)."""
        return len(self.class_names)

    @property
    def num_fg(self) -> int:
        """Number of foreground classes (20 for VOC): the length of an image-level label vector."""
        return len(self.class_names) - 1

    @property
    def fg_names(self) -> Tuple[str, ...]:
        return self.class_names[1:]


VOC12 = DatasetSpec("voc12", (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"))

# COCO-2014 converted to VOC format: 80 object categories in the official category-id order + background.
COCO14 = DatasetSpec("coco14", (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush"))

#: The 10 MS COCO category ids (1..90) that no 2014 annotation uses ("street sign", "hat", "shoe", "eye glasses",
#: "plate", "mirror", "window", "desk", "door", "blender" in the COCO paper's list of 91).
COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
#: The raw COCO category id of each ``COCO14`` foreground class, in order (``COCO14`` index ``k`` = id
#: ``COCO_CATEGORY_IDS[k - 1]``): the json's ``category_id`` values.
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in COCO_UNUSED_IDS)

# COCO-2014 with the raw category ids as labels (PMM / WSSS_MMSeg's ``voc_format/class_labels``, coco2voc's
# ``class_labels``): 91 entries, index = category id, 0 = background; the 10 ids no annotation uses are kept as
# placeholders ``unused_<id>`` (the published code names all 91 classes by their number, ``str(i)``).
COCO14_91 = DatasetSpec("coco14_91", tuple(
    ["background"] + [COCO14.class_names[COCO_CATEGORY_IDS.index(i) + 1] if i in COCO_CATEGORY_IDS else f"unused_{i}"
                      for i in range(1, 91)]))

BUILTIN = {"voc12": VOC12, "voc": VOC12, "coco14": COCO14, "coco": COCO14, "coco14_91": COCO14_91,
           "coco91": COCO14_91}


def object_regions(mask, num_classes: Optional[int] = None):
    """``(class, region)`` for each object of a label map: every 8-connected region of one foreground class (not
    background 0, not ``IGNORE``, below ``num_classes`` when given), by class, then by region, as boolean masks."""
    import cv2
    import numpy as np

    mask = np.asarray(mask)
    for c in np.unique(mask):
        if c == 0 or c == IGNORE or (num_classes is not None and c >= num_classes):
            continue
        count, regions = cv2.connectedComponents((mask == c).astype(np.uint8), connectivity=8)
        for r in range(1, count):
            yield c, regions == r


def present_classes(mask, num_fg: int):
    """Float32 multi-hot over the ``num_fg`` foreground classes of the ones a label map holds (1..``num_fg``;
    background, ``IGNORE`` and anything larger left out): an image's labels as its mask gives them."""
    import numpy as np

    values = np.unique(np.asarray(mask)).astype(np.int64)
    vec = np.zeros(int(num_fg), np.float32)
    vec[values[(values > 0) & (values <= num_fg)] - 1] = 1.0
    return vec


def is_coco(spec: DatasetSpec) -> bool:
    """Whether ``spec`` holds the MS COCO classes (81 contiguous or 91 raw ids), whatever its name."""
    return spec.class_names in (COCO14.class_names, COCO14_91.class_names)

CLASSES_TXT = "classes.txt"


def read_classes_txt(path: str) -> DatasetSpec:
    """Read a ``classes.txt`` (one class name per line, the first being ``background``)."""
    if not os.path.isfile(path):
        raise WsegError(f"{path}: class list not found; pass --classes voc12|coco14|coco14_91 or a classes.txt path")
    with open(path) as f:
        names = tuple(line.strip() for line in f if line.strip())
    if len(names) < 2 or names[0].lower() != "background":
        raise WsegError(f"{path}: a class list needs 'background' on its first line and at least one class")
    return DatasetSpec(os.path.basename(os.path.dirname(os.path.abspath(path))) or "custom", names)


def write_classes_txt(root: str, class_names: Sequence[str]) -> str:
    """Write ``<root>/classes.txt`` atomically and return its path."""
    from wseg.io import atomic_write_text

    path = os.path.join(root, CLASSES_TXT)
    atomic_write_text(path, "\n".join(class_names) + "\n")
    return path


def get_spec(name_or_path: Optional[str] = None, root: Optional[str] = None, default: str = "voc12") -> DatasetSpec:
    """Resolve a dataset definition.

    ``name_or_path`` is ``voc12``/``coco14``/``coco14_91``, a path to a ``classes.txt``, or a dataset root holding one.
    With ``None`` (or ``auto``), ``<root>/classes.txt`` is used when present (the synthetic dataset writes it),
    else the built-in ``default`` (VOC 2012; a dataset layout may imply another, e.g. PMM's COCO ``coco14_91``).
    """
    if name_or_path is None or name_or_path == "auto":
        if root and os.path.isfile(os.path.join(root, CLASSES_TXT)):
            return read_classes_txt(os.path.join(root, CLASSES_TXT))
        return BUILTIN[default]
    key = str(name_or_path).lower()
    if key in BUILTIN:
        return BUILTIN[key]
    if os.path.isdir(name_or_path):
        return read_classes_txt(os.path.join(name_or_path, CLASSES_TXT))
    if os.path.isfile(name_or_path):
        return read_classes_txt(name_or_path)
    raise WsegError(f"{name_or_path}: unknown dataset; use voc12, coco14, coco14_91, or a classes.txt path "
                    "(one class per line, background first)")
