"""torch Datasets over a :class:`~wseg.data.voc.VOCRoot`: image-level classification (CAM training),
multi-scale inference, and image + label map pairs (affinity / segmentation training)."""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from wseg.data.transforms import multiscale_flip_inputs
from wseg.data.voc import VOCRoot
from wseg.errors import WsegError
from wseg.io import check_labels, load_mask_png, require_file


def open_rgb(path: str) -> Image.Image:
    require_file(path, "image", "check --voc12_root and the list file")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:
        raise WsegError(f"{path}: cannot read image ({exc.__class__.__name__}); the file is corrupt")


class ClsDataset(Dataset):
    """``{"id", "image", "label", ...}`` samples for classification (CAM) training. ``transform`` is a joint
    transform of a dict of PIL maps (:class:`~wseg.data.transforms.CamTrainTransform`); ``maps`` loads further
    per-image maps a method needs (``{"saliency": fn(image_id) -> PIL image}``)."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], transform: Callable,
                 labels: Optional[Dict[str, np.ndarray]] = None,
                 maps: Optional[Dict[str, Callable[[str], Image.Image]]] = None):
        self.voc, self.ids, self.transform = voc, list(ids), transform
        self.labels = labels if labels is not None else voc.cls_labels(self.ids)
        self.maps = dict(maps or {})

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        image_id = self.ids[i]
        sample = {"image": open_rgb(self.voc.image_path(image_id))}
        sample.update({k: load(image_id) for k, load in self.maps.items()})
        return {"id": image_id, **self.transform(sample), "label": torch.from_numpy(self.labels[image_id])}


class MultiScaleDataset(Dataset):
    """``(id, [per-scale (2, 3, h, w) image+flip batches], label, (H, W))`` for multi-scale + flip CAM inference."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], scales: Sequence[float], flip: bool = True,
                 labels: Optional[Dict[str, np.ndarray]] = None):
        self.voc, self.ids, self.scales, self.flip = voc, list(ids), list(scales), flip
        self.labels = labels if labels is not None else voc.cls_labels(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def views(self, img: Image.Image):
        """What the network sees of one image: here its rescaled copies and their mirrors."""
        return multiscale_flip_inputs(img, self.scales, self.flip)

    def __getitem__(self, i):
        image_id = self.ids[i]
        img = open_rgb(self.voc.image_path(image_id))
        return image_id, self.views(img), torch.from_numpy(self.labels[image_id]), (img.size[1], img.size[0])


def unbatch_one(batch):
    """``collate_fn`` for batch size 1 that keeps lists of differently-sized tensors as they are."""
    assert len(batch) == 1
    return batch[0]


class ImageMaskDataset(Dataset):
    """``(id, image, label map)`` pairs; ``mask_dir`` (pseudo masks, CRF labels) or the ground truth.

    ``joint_transform(img: PIL.Image, mask: np.ndarray) -> (image tensor, mask tensor)`` applies the same
    geometric augmentation to both. Masks must match the image size and hold labels in [0, C) ∪ {255}.
    """

    def __init__(self, voc: VOCRoot, ids: Sequence[str], mask_dir: Optional[str] = None,
                 joint_transform: Optional[Callable] = None, check: bool = True):
        self.voc, self.ids, self.mask_dir = voc, list(ids), mask_dir
        self.joint_transform, self.check = joint_transform, check
        if mask_dir is not None:
            missing = [i for i in self.ids if not os.path.isfile(os.path.join(mask_dir, i + ".png"))]
            if missing:
                other = sorted(f for f in os.listdir(mask_dir) if os.path.splitext(f)[0] == missing[0]) \
                    if os.path.isdir(mask_dir) else []
                kind = (f"; it holds {other[0]} instead: not a folder of label PNGs (CAM .npy files or images?), "
                        "pass the pseudo-mask folder (e.g. aff_infer.py --out_rw)") if other else \
                    "; run the stage that writes them or fix the list"
                raise WsegError(f"{mask_dir}: {len(missing)} of {len(self.ids)} masks missing for the list "
                                f"(first: {missing[0]}.png){kind}")

    def mask_path(self, image_id: str) -> str:
        if self.mask_dir is not None:
            return os.path.join(self.mask_dir, image_id + ".png")
        path = self.voc.mask_path(image_id)
        if path is None:
            raise WsegError(f"{self.voc.root}: no ground-truth mask for {image_id}")
        return path

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        image_id = self.ids[i]
        img = open_rgb(self.voc.image_path(image_id))
        path = self.mask_path(image_id)
        mask = load_mask_png(path)
        if mask.shape != (img.size[1], img.size[0]):
            raise WsegError(f"{path}: mask size {mask.shape} differs from image size {(img.size[1], img.size[0])}; "
                            "the mask belongs to another image or resolution: regenerate it")
        if self.check:
            check_labels(mask, self.voc.spec.num_classes, path)
        if self.joint_transform is not None:
            return (image_id,) + tuple(self.joint_transform(img, mask))
        return image_id, np.asarray(img), mask
