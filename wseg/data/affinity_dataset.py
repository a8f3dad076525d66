"""AffinityNet's training data (PSA ``VOC12AffDataset``): images with the low/high-alpha CRF label PNGs of
``scripts/aff_prepare.py``, augmented as published (colour jitter 0.3/0.3/0.3/0.1, a random ``crop_size`` window with
zero padding, where the labels are cut with the same window and padding is "no score", random horizontal flip;
optionally a random long-side rescale first, for small images), reduced to feature resolution as published (8x8
average pooling of their one-hot scores, then argmax each), combined into confident labels
(:func:`wseg.affinity.confident_labels`) and turned into pair labels within the radius (published
``ExtractAffinityLabelInRadius``: background-positive, foreground-positive, negative)."""
from __future__ import annotations

import json
import os
import random
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from wseg import io
from wseg.affinity import DEFAULT_RADIUS, AffinityLabelExtractor, confident_labels, pool_scores
from wseg.data.classes import IGNORE
from wseg.data.datasets import open_rgb
from wseg.data.transforms import ColorJitter, apply_crop, crop_box, hwc_to_chw, normalize, resize_long
from wseg.data.voc import VOCRoot
from wseg.errors import WsegError

STRIDE = 8
PREPARE_STAGE = "scripts/aff_prepare.py"
#: Each aff_prepare label folder records its settings here (io.record_folder_settings).
PREPARE_SETTINGS = ".aff_prepare.json"


def feature_label_map(la: np.ndarray, ha: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Confident affinity labels at feature resolution from la/ha label maps of one crop (255 = no score).

    As the published ``VOC12AffDataset``: each map's one-hot scores are average-pooled over ``stride x stride``
    blocks and arg-maxed (a block's majority class; ties go to the lower class index, background first), then
    combined by :func:`wseg.affinity.confident_labels`; blocks without any scored pixel become 255.
    """
    keys = np.union1d(np.union1d(np.unique(la), np.unique(ha)), [0])
    keys = keys[keys != IGNORE].astype(np.int64)
    la_p = pool_scores((la[None] == keys[:, None, None]).astype(np.float32), stride)
    ha_p = pool_scores((ha[None] == keys[:, None, None]).astype(np.float32), stride)
    return confident_labels(la_p, ha_p, keys)


def _prepared_alpha(folder: str):
    """The background power ``aff_prepare`` recorded for a label folder, or None (no or unreadable record)."""
    try:
        with open(os.path.join(folder, PREPARE_SETTINGS)) as f:
            return float(json.load(f)["alpha"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class AffinityTrainDataset(Dataset):
    """``(image (3, S, S), bg_pos (K, M), fg_pos (K, M), neg (K, M))`` for a random crop of side ``S``."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], la_dir: str, ha_dir: str, crop_size: int,
                 radius: int = DEFAULT_RADIUS, resize_range: Optional[Tuple[int, int]] = None, jitter: bool = True,
                 resize_scale: Optional[Tuple[float, float]] = None):
        self.voc, self.ids = voc, list(ids)
        self.la_dir, self.ha_dir = la_dir, ha_dir
        self.crop = int(crop_size)
        self.resize_range = tuple(resize_range) if resize_range else None
        self.resize_scale = tuple(resize_scale) if resize_scale else None
        self.jitter = ColorJitter() if jitter else None
        self.extract = AffinityLabelExtractor(self.crop // STRIDE, radius)
        self._check_files()

    def _check_files(self) -> None:
        for folder in (self.la_dir, self.ha_dir):
            io.require_dir(folder, "affinity label", f"run {PREPARE_STAGE} for this list first")
        if os.path.samefile(self.la_dir, self.ha_dir):
            raise WsegError(f"--la_crf_dir and --ha_crf_dir are the same folder ({self.la_dir}); pass "
                            f"{PREPARE_STAGE}'s low- and high-alpha folders")
        alphas = [_prepared_alpha(folder) for folder in (self.la_dir, self.ha_dir)]
        if None not in alphas and not alphas[0] < alphas[1]:
            raise WsegError(f"--la_crf_dir {self.la_dir} holds alpha {alphas[0]:g} labels and --ha_crf_dir "
                            f"{self.ha_dir} alpha {alphas[1]:g}: the low-alpha folder must have the lower alpha "
                            "(swapped?)")
        for folder in (self.la_dir, self.ha_dir):
            missing = [i for i in self.ids if not os.path.isfile(os.path.join(folder, i + ".png"))]
            if missing:
                raise WsegError(f"{os.path.join(folder, missing[0] + '.png')}: affinity label not found "
                                f"({len(missing)} of {len(self.ids)} missing); run {PREPARE_STAGE} on this list")
        for i in self.ids:  # headers only: cheap, and errors surface here rather than in a loader worker
            size = _png_size(self.voc.image_path(i))
            for folder in (self.la_dir, self.ha_dir):
                path = os.path.join(folder, i + ".png")
                if _png_size(path) != size:
                    raise WsegError(f"{path}: label size {_png_size(path)} differs from the image size {size} "
                                    f"(W, H); the labels belong to other images: re-run {PREPARE_STAGE}")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: int):
        image_id = self.ids[idx]
        img = open_rgb(self.voc.image_path(image_id))
        la = io.load_mask_png(os.path.join(self.la_dir, image_id + ".png"))
        ha = io.load_mask_png(os.path.join(self.ha_dir, image_id + ".png"))
        if self.resize_range or self.resize_scale:
            target = (random.randint(*self.resize_range) if self.resize_range
                      else max(8, int(round(max(img.size) * random.uniform(*self.resize_scale)))))
            img = resize_long(img, target)
            la = _resize_nearest(la, img.size)
            ha = _resize_nearest(ha, img.size)
        if self.jitter is not None:
            img = self.jitter(img)
        arr = np.asarray(img)
        box = crop_box(arr.shape[0], arr.shape[1], self.crop)
        arr = apply_crop(arr, box, self.crop, fill=0)
        la = apply_crop(la, box, self.crop, fill=255)
        ha = apply_crop(ha, box, self.crop, fill=255)
        if bool(random.getrandbits(1)):
            arr, la, ha = arr[:, ::-1], la[:, ::-1], ha[:, ::-1]
        x = torch.from_numpy(hwc_to_chw(normalize(arr)))
        bg, fg, neg = self.extract(feature_label_map(la, ha))
        return x, bg, fg, neg


def _png_size(path: str) -> Tuple[int, int]:
    io.require_file(path, "file", f"check --voc12_root and the label folders, or re-run {PREPARE_STAGE}")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:
        raise WsegError(f"{path}: cannot read ({exc.__class__.__name__}); delete it and re-run its stage")


def _resize_nearest(mask: np.ndarray, size_wh: Tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(mask).resize(size_wh, resample=Image.NEAREST))
