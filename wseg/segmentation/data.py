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


PIPELINES = ("deeplab", "mmseg")


def train_transform(cfg: Mapping[str, Any]):
    """The joint train transform of ``data_pipeline``: the published DeepLab one (:class:`SegTrainTransform`) or
    mmseg's (:class:`~wseg.data.mmseg_transforms.MMSegTrainTransform`); both reseeded per sample."""
    pipeline = cfg.get("data_pipeline", "deeplab")
    if pipeline == "mmseg":
        from wseg.data.mmseg_transforms import MMSegTrainTransform

        return MMSegTrainTransform(crop=int(cfg["crop_size"]), img_scale=cfg["img_scale"],
                                   ratio_range=cfg["scale_range"], cat_max_ratio=float(cfg["cat_max_ratio"]),
                                   flip=float(cfg["flip_prob"]), photometric=bool(cfg["photometric"]),
                                   pad_before_normalize=bool(cfg["pad_before_normalize"]), mean=cfg["mean"],
                                   std=cfg["std"])
    if pipeline != "deeplab":
        raise WsegError(f"data_pipeline {pipeline}: choose {' or '.join(PIPELINES)}")
    return SegTrainTransform(crop=int(cfg["crop_size"]), scale_range=cfg["scale_range"], flip=float(cfg["flip_prob"]),
                             hsv=cfg["hsv_jitter"], mean=cfg["mean"], std=cfg["std"], long_side=cfg.get("long_side"))


def check_mask_sizes(voc: VOCRoot, ids: Sequence[str], mask_dir: Optional[str]) -> None:
    """Fail before training when a (pseudo) mask differs in size from its image: reads only the file headers."""
    from PIL import Image

    for i in ids:
        mpath = os.path.join(mask_dir, i + ".png") if mask_dir else voc.mask_path(i)
        if mpath is None:
            raise WsegError(f"{voc.root}: no ground-truth mask for {i}; set pseudo_mask_dir or fix train_list")
        sizes = []
        for path, what in ((voc.image_path(i), "image"), (mpath, "mask")):
            try:
                with Image.open(path) as f:
                    sizes.append(f.size)
            except OSError as exc:
                raise WsegError(f"{path}: cannot read the {what} header of {i} ({exc.__class__.__name__}); the file "
                                "is missing or corrupt: restore or regenerate it") from None
        isize, msize = sizes
        if isize != msize:
            raise WsegError(f"{mpath}: mask size {msize[1]}x{msize[0]} differs from the image size "
                            f"{isize[1]}x{isize[0]} of {i}; the mask belongs to another image or resolution: "
                            "regenerate the pseudo masks")


class MultiScaleJoint:
    """``joint_transform`` for validation: ``(img, mask) -> (per-scale normalised inputs, labels)``."""

    def __init__(self, scales: Sequence[float], mean: Sequence[float], std: Sequence[float],
                 long_side: Optional[int] = None):
        self.scales, self.mean, self.std, self.long_side = list(scales), list(mean), list(std), long_side

    def __call__(self, img, mask):
        return (multiscale_inputs(np.asarray(img), self.scales, self.mean, self.std, self.long_side),
                torch.from_numpy(np.array(mask, dtype=np.int64)))


class InferenceImages(Dataset):
    """``(uint8 HxWx3 image, per-scale normalised (3, h, w) inputs)`` for test-time inference (no labels needed:
    works on unlabelled splits such as VOC test)."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], scales: Sequence[float], mean: Sequence[float],
                 std: Sequence[float], long_side: Optional[int] = None):
        self.voc, self.ids, self.long_side = voc, list(ids), long_side
        self.scales, self.mean, self.std = list(scales), list(mean), list(std)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        img = np.asarray(open_rgb(self.voc.image_path(self.ids[i])))
        return img, multiscale_inputs(img, self.scales, self.mean, self.std, self.long_side)


def mmseg_inputs(path: str, test: Any, mean: Sequence[float], std: Sequence[float]):
    """``(RGB uint8 image, normalised views)`` of mmseg's test (:func:`~wseg.data.mmseg_transforms.test_views` of
    the OpenCV-decoded image, :func:`~wseg.data.mmseg_transforms.to_input`)."""
    from wseg.data.mmseg_transforms import read_bgr, test_views, to_input

    bgr = read_bgr(path)
    views = test_views(bgr, test.scales, test.resize, test.ratio_of)
    return np.ascontiguousarray(bgr[:, :, ::-1]), [to_input(v, mean, std) for v in views]


class MMSegInferenceImages(Dataset):
    """``(uint8 RGB image, normalised views)`` for mmseg's test (:class:`~wseg.segmentation.predict.MMSegTest`)."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], test: Any, mean: Sequence[float], std: Sequence[float]):
        self.voc, self.ids, self.test, self.mean, self.std = voc, list(ids), test, list(mean), list(std)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return mmseg_inputs(self.voc.image_path(self.ids[i]), self.test, self.mean, self.std)


class MMSegValImages(MMSegInferenceImages):
    """``(id, normalised views, labels)`` for validation with mmseg's test during training."""

    def __getitem__(self, i):
        from wseg.io import load_mask_png

        image_id = self.ids[i]
        _, views = mmseg_inputs(self.voc.image_path(image_id), self.test, self.mean, self.std)
        return image_id, views, torch.from_numpy(load_mask_png(self.voc.mask_path(image_id)).astype(np.int64))
