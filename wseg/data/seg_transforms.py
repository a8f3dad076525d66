"""Joint image + label-map augmentation of the published segmentation stage (usr922/wseg
``segmentation/lib/datasets/transform.py``, "weak" augmentation) and its multi-scale test inputs.

Training, in the published order: random HSV shift (OpenCV HSV, hue +-10 of 180 wrapping, saturation and value
+-10 clipped), horizontal flip (p = 0.5), random rescale by a uniform factor in ``[0.5, 1.5]`` (bicubic image,
nearest-neighbour labels), ImageNet normalisation, and a random ``crop x crop`` window padded with 0 (the mean
colour after normalisation) in the image and 255 (ignore) in the label map.

Randomness comes from one ``random.Random`` per transform that :meth:`SegTrainTransform.reseed` resets per
sample, so a sample's augmentation depends only on its seed (not on worker count or on a resumed run).
"""
from __future__ import annotations

import random
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image

from wseg.data.classes import IGNORE
from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, crop_box, hwc_to_chw, normalize, scaled_size
from wseg.errors import WsegError



def random_hsv(img: np.ndarray, dh: int, ds: int, dv: int) -> np.ndarray:
    """Shift an RGB uint8 image in OpenCV's HSV space: hue wraps modulo 180, saturation/value clip to [0, 255]."""
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + dh) % 180
    hsv[..., 1:] = np.clip(hsv[..., 1:] + np.array([ds, dv], np.int32), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _resize_by(x: np.ndarray, scale: float, interpolation: int) -> np.ndarray:
    """Published ``cv2.resize(x, None, fx=scale, fy=scale)``: sampled with the exact factor (an explicit output size
    would sample with ``round(w * scale) / w``); an explicit size only where a side would round to 0 pixels."""
    h, w = x.shape[:2]
    if min(int(round(h * scale)), int(round(w * scale))) < 1:
        return cv2.resize(x, scaled_size(h, w, scale)[::-1], interpolation=interpolation)
    return cv2.resize(x, None, fx=scale, fy=scale, interpolation=interpolation)


def rescale_pair(img: np.ndarray, mask: Optional[np.ndarray], scale: float) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Rescale an image bicubically and its label map by nearest neighbour (published ``RandomScale``)."""
    img = _resize_by(img, float(scale), cv2.INTER_CUBIC)
    if mask is not None:
        mask = _resize_by(mask, float(scale), cv2.INTER_NEAREST)
    return img, mask


def crop_pair(img: np.ndarray, mask: np.ndarray, crop: int, rng: random.Random) -> Tuple[np.ndarray, np.ndarray]:
    """Crop image (padding 0) and labels (padding 255) with one window into ``crop x crop``."""
    ct, cl, it, il, ch, cw = crop_box(img.shape[0], img.shape[1], crop, rng)
    out_img = np.zeros((crop, crop) + img.shape[2:], img.dtype)
    out_img[ct:ct + ch, cl:cl + cw] = img[it:it + ch, il:il + cw]
    out_mask = np.full((crop, crop), IGNORE, mask.dtype)
    out_mask[ct:ct + ch, cl:cl + cw] = mask[it:it + ch, il:il + cw]
    return out_img, out_mask


class SegTrainTransform:
    """Published "weak" segmentation augmentation as a ``joint_transform(img, mask) -> (image, labels)`` for
    :class:`wseg.data.datasets.ImageMaskDataset`: float32 ``(3, crop, crop)`` normalised image and int64
    ``(crop, crop)`` labels (255 = ignore).

    ``hsv``: max shifts ``(h, s, v)`` (published 10, 10, 10; zeros disable it), ``flip``: probability,
    ``scale_range``: ``(lo, hi)`` uniform rescale (``None`` or ``(1, 1)`` disables it), ``crop``: side (0 = no crop,
    only possible with batch size 1 or equal-size images), ``long_side``: the rescale factor multiplies the factor
    that brings the image to this long side (:func:`base_factor`; ``None`` = published, the image's own size).
    """

    def __init__(self, crop: int = 448, scale_range: Optional[Sequence[float]] = (0.5, 1.5), flip: float = 0.5,
                 hsv: Sequence[int] = (10, 10, 10), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, seed: Optional[int] = None, long_side: Optional[int] = None):
        if crop < 0:
            raise WsegError(f"crop_size {crop}: must be positive (0 disables cropping)")
        if scale_range is not None:
            if len(scale_range) != 2 or not 0 < float(scale_range[0]) <= float(scale_range[1]):
                raise WsegError(f"scale_range {list(scale_range)}: expected [low, high] with 0 < low <= high")
        if len(hsv) != 3 or min(int(v) for v in hsv) < 0:
            raise WsegError(f"hsv_jitter {list(hsv)}: expected three non-negative shifts [h, s, v]")
        if not 0.0 <= flip <= 1.0:
            raise WsegError(f"flip_prob {flip}: must lie in [0, 1]")
        self.crop, self.flip = int(crop), float(flip)
        self.long_side = check_long_side(long_side)
        self.scale_range = None if scale_range is None else (float(scale_range[0]), float(scale_range[1]))
        self.hsv = tuple(int(v) for v in hsv)
        self.mean, self.std = tuple(mean), tuple(std)
        self.rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        """Make the next sample's augmentation a function of ``seed`` alone."""
        self.rng.seed(int(seed))

    def __call__(self, img, mask: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng
        img = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.uint8)
        mask = np.asarray(mask, dtype=np.uint8)
        if any(self.hsv):
            dh, ds, dv = (rng.randint(-r, r) for r in self.hsv)
            img = random_hsv(img, dh, ds, dv)
        if self.flip > 0 and rng.random() < self.flip:
            img, mask = img[:, ::-1], mask[:, ::-1]
        factor = base_factor(img.shape[0], img.shape[1], self.long_side)
        random_scale = self.scale_range is not None and self.scale_range != (1.0, 1.0)
        if random_scale:
            lo, hi = self.scale_range
            factor *= rng.random() * (hi - lo) + lo
        if random_scale or factor != 1.0:
            img, mask = rescale_pair(np.ascontiguousarray(img), np.ascontiguousarray(mask), factor)
        x = normalize(img, self.mean, self.std)
        if self.crop > 0:
            x, mask = crop_pair(x, mask, self.crop, rng)
        return torch.from_numpy(hwc_to_chw(x)), torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))


def check_long_side(long_side: Optional[int]) -> Optional[int]:
    """``long_side`` as an int (``None`` stays ``None``); a one-line error below 8 pixels."""
    if long_side is not None and int(long_side) < 8:
        raise WsegError(f"long_side {long_side}: expected at least 8 pixels (none = each image's own size)")
    return None if long_side is None else int(long_side)


def base_factor(h: int, w: int, long_side: Optional[int]) -> float:
    """The factor that brings an ``h x w`` image to ``long_side`` (1 when ``long_side`` is ``None``): the scales of
    training and test then multiply a common image size instead of each image's own."""
    return 1.0 if not long_side else float(long_side) / max(int(h), int(w))


def eval_input(img: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
               ) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` RGB -> normalised float32 ``(3, H, W)`` tensor."""
    return torch.from_numpy(hwc_to_chw(normalize(img, mean, std)))


def multiscale_inputs(img: np.ndarray, scales: Sequence[float], mean: Sequence[float] = IMAGENET_MEAN,
                      std: Sequence[float] = IMAGENET_STD, long_side: Optional[int] = None) -> List[torch.Tensor]:
    """Published test inputs (``ImageNorm`` then ``Multiscale``): the *normalised* image resized bicubically by
    each scale, as ``(3, h_s, w_s)`` float32 tensors (flips are made on the device).

    Resized as published, ``cv2.resize(x, None, fx=s, fy=s)`` (:func:`_resize_by`): OpenCV then samples with the
    exact factor ``s``, not with ``round(w * s) / w`` as for an explicit output size (same sizes; the pixels differ
    whenever ``w * s`` or ``h * s`` is not an integer). With ``long_side`` each scale multiplies the factor that
    brings the image to that long side (:func:`base_factor`), as in training."""
    x = normalize(img, mean, std)
    base = base_factor(img.shape[0], img.shape[1], long_side)
    out = []
    for s in scales:
        if float(s) <= 0:
            raise WsegError(f"test_scales {list(scales)}: scales must be positive")
        f = float(s) * base
        xs = x if f == 1.0 else _resize_by(x, f, cv2.INTER_CUBIC)
        out.append(torch.from_numpy(hwc_to_chw(xs)))
    return out
