"""Segmentation training and test data: the joint train transform of a config, mask checks, test-time inputs."""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from wseg.data.datasets import open_rgb
from wseg.data.seg_transforms import SegTrainTransform, multiscale_inputs
from wseg.data.voc import VOCRoot
from wseg.errors import WsegError


def train_transform(cfg: Mapping[str, Any]) -> SegTrainTransform:
    return SegTrainTransform(crop=int(cfg["crop_size"]), scale_range=cfg["scale_range"], flip=float(cfg["flip_prob"]),
                             hsv=cfg["hsv_jitter"], mean=cfg["mean"], std=cfg["std"])


def check_mask_sizes(voc: VOCRoot, ids: Sequence[str], mask_dir: Optional[str]) -> None:
    """Fail before training when a (pseudo) mask differs in size from its image: reads only the file headers."""
    from PIL import Image

    for i in ids:
        mpath = os.path.join(mask_dir, i + ".png") if mask_dir else voc.mask_path(i)
        if mpath is None:
            raise WsegError(f"{voc.root}: no ground-truth mask for {i}; set pseudo_mask_dir or fix train_list")
        try:
            with Image.open(voc.image_path(i)) as im, Image.open(mpath) as mk:
                isize, msize = im.size, mk.size
        except OSError as exc:
            raise WsegError(f"{mpath}: cannot read image/mask header of {i} ({exc.__class__.__name__}); the file is "
                            "corrupt: regenerate it")
        if isize != msize:
            raise WsegError(f"{mpath}: mask size {msize[1]}x{msize[0]} differs from the image size "
                            f"{isize[1]}x{isize[0]} of {i}; the mask belongs to another image or resolution: "
                            "regenerate the pseudo masks")


class MultiScaleJoint:
    """``joint_transform`` for validation: ``(img, mask) -> (per-scale normalised inputs, labels)``."""

    def __init__(self, scales: Sequence[float], mean: Sequence[float], std: Sequence[float]):
        self.scales, self.mean, self.std = list(scales), list(mean), list(std)

    def __call__(self, img, mask):
        return (multiscale_inputs(np.asarray(img), self.scales, self.mean, self.std),
                torch.from_numpy(np.array(mask, dtype=np.int64)))


class InferenceImages(Dataset):
    """``(uint8 HxWx3 image, per-scale normalised (3, h, w) inputs)`` for test-time inference (no labels needed:
    works on unlabelled splits such as VOC test)."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], scales: Sequence[float], mean: Sequence[float],
                 std: Sequence[float]):
        self.voc, self.ids = voc, list(ids)
        self.scales, self.mean, self.std = list(scales), list(mean), list(std)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        img = np.asarray(open_rgb(self.voc.image_path(self.ids[i])))
        return img, multiscale_inputs(img, self.scales, self.mean, self.std)
