"""mmsegmentation's data pipeline for its VOC configs, in NumPy/OpenCV (no mmcv), training and test.

Sources (read line by line): mmcv 2.1.0 ``mmcv/image/geometric.py`` (``_scale_size``, ``rescale_size``,
``imrescale``, ``imresize``: OpenCV, bilinear images, nearest labels), ``mmcv/transforms/processing.py``
(``Resize``, ``RandomResize``, ``RandomFlip``, ``Pad``), mmseg 1.2.2 ``mmseg/datasets/transforms/transforms.py``
(``RandomCrop`` with ``cat_max_ratio``, ``PhotoMetricDistortion``), ``configs/_base_/datasets/pascal_voc12_aug.py``
(pipelines) and ``mmseg/models/data_preprocessor.py`` (``SegDataPreProcessor``); mmseg 0.x as Eli-YiLi/WSSS_MMSeg
has it (``configs/_base_/datasets/pascal_voc12.py``, ``mmseg/datasets/pipelines/test_time_aug.py``).

Training (:class:`MMSegTrainTransform`), in mmseg's order:

1. ``RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)``: ``r ~ U(lo, hi)``, target
   ``(int(2048 r), int(512 r))``, the image rescaled to fit inside it (short side about ``512 r`` on VOC);
2. ``RandomCrop(512, cat_max_ratio=0.75)``: a window is redrawn up to 10 times until it holds more than one label
   and no label covers 75 % or more of its labelled pixels (255 not counted); the 11th draw is taken unchecked;
3. ``RandomFlip(0.5)``;
4. ``PhotoMetricDistortion``: brightness ``+U(-32, 32)`` (p 0.5), contrast ``x U(0.5, 1.5)`` (p 0.5, before or
   after the HSV steps with p 0.5 each), saturation ``x U(0.5, 1.5)`` and hue ``+randint(-18, 18)`` (NumPy's
   ``randint``: -18..17) mod 180 in OpenCV HSV (p 0.5 each); each step clips and truncates to uint8;
5. ``Pad`` to the crop: mmseg 1.x ``pascal_voc12_aug.py`` pads the *uint8* image with 0 (black, before the
   normalisation; ``pad_before_normalize=True``), mmseg 0.x (PMM) pads the *normalised* image with 0 (the mean
   colour; ``False``); labels with 255;
6. ``SegDataPreProcessor``: BGR->RGB, ``(x - mean) / std`` with mmseg's 0..255 values (wseg's 0..1 ``mean``/``std``
   times 255: the same float32 numbers).

Random draws come from one ``numpy.random.Generator`` that :meth:`MMSegTrainTransform.reseed` resets per sample, so
a sample's augmentation is a pure function of its seed (resumed runs equal uninterrupted ones). The draws follow
mmseg's distributions, not its random stream.

Test (:func:`test_views`): ``Resize(scale=(2048, 512), keep_ratio=True)`` on the uint8 BGR image (OpenCV bilinear)
then normalisation, no padding (the test ``SegDataPreProcessor`` has no size). Multi-scale ratios ``r``: mmseg 0.x
(``MultiScaleFlipAug(img_scale=(2048, 512), img_ratios)``) multiplies the *resize target*: ``(int(2048 r),
int(512 r))`` (``ratio_of="resized"``); mmseg 1.x (``tta_pipeline``: ``Resize(scale_factor=r, keep_ratio=True)``)
multiplies the *original image* (``ratio_of="original"``), so on VOC 0.x's scales are about 1.37x 1.x's. Images are
decoded as mmcv does (:func:`read_bgr`: OpenCV, ``IMREAD_COLOR``), not with PIL.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from wseg.data.classes import IGNORE
from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wseg.errors import WsegError

#: mmseg's VOC/ADE/Cityscapes-style resize target (long, short) of ``RandomResize`` and the test ``Resize``.
IMG_SCALE = (2048, 512)
RATIO_OF = ("resized", "original")

Scale = Union[float, int, Tuple[int, int]]


def scale_size(w: int, h: int, factor: Union[float, Tuple[float, float]]) -> Tuple[int, int]:
    """mmcv ``_scale_size``: ``(int(w * fx + 0.5), int(h * fy + 0.5))``."""
    fx, fy = (factor, factor) if isinstance(factor, (int, float)) else factor
    return int(w * float(fx) + 0.5), int(h * float(fy) + 0.5)


def rescale_size(w: int, h: int, scale: Scale) -> Tuple[int, int]:
    """mmcv ``rescale_size``: a number scales both sides; a ``(a, b)`` tuple fits the image inside it, the long side
    within ``max(a, b)`` and the short side within ``min(a, b)``. Returns the new ``(w, h)``."""
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise WsegError(f"scale {scale}: must be positive")
        factor = float(scale)
    else:
        long_edge, short_edge = max(scale), min(scale)
        factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return scale_size(w, h, factor)


def imrescale(img: np.ndarray, scale: Scale, nearest: bool = False) -> np.ndarray:
    """mmcv ``imrescale`` with the OpenCV backend: bilinear (images) or nearest (label maps)."""
    h, w = img.shape[:2]
    size = rescale_size(w, h, scale)
    out = cv2.resize(img, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)
    return out


def read_bgr(path: str) -> np.ndarray:
    """mmcv ``LoadImageFromFile`` (``imfrombytes``, cv2 backend, ``IMREAD_COLOR``): uint8 ``(H, W, 3)`` BGR."""
    if not os.path.isfile(path):
        raise WsegError(f"{path}: image not found; check --voc12_root and the list file")
    img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise WsegError(f"{path}: cannot decode the image; the file is corrupt")
    return img


def to_input(img: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
             bgr: bool = True) -> torch.Tensor:
    """mmseg ``SegDataPreProcessor`` on one image: uint8 ``(H, W, 3)`` (BGR when ``bgr``) -> RGB float32
    ``(3, H, W)``, ``(x - mean) / std`` in 0..255 units (``mean``/``std`` are wseg's 0..1 values)."""
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    if bgr:
        x = x[[2, 1, 0]]
    m = torch.tensor([float(v) * 255 for v in mean], dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor([float(v) * 255 for v in std], dtype=torch.float32).view(-1, 1, 1)
    return (x.float() - m) / s


def test_views(img: np.ndarray, ratios: Sequence[float], resize: Optional[Sequence[int]] = IMG_SCALE,
               ratio_of: str = "resized") -> List[np.ndarray]:
    """The resized uint8 images of mmseg's test: per ratio, ``imrescale`` to its target (module docstring). With
    ``ratios == [1.0]`` and ``ratio_of="resized"`` this is the plain test pipeline (``Resize(2048, 512)``)."""
    h, w = img.shape[:2]
    out = []
    for r in ratios:
        if not float(r) > 0:
            raise WsegError(f"test_scales {list(ratios)}: ratios must be positive")
        if resize and ratio_of == "resized":
            target: Scale = (int(resize[0] * float(r)), int(resize[1] * float(r)))
        elif ratio_of in RATIO_OF:
            target = scale_size(w, h, float(r))
        else:
            raise WsegError(f"tta_ratio_of {ratio_of}: choose resized (mmseg 0.x) or original (mmseg 1.x)")
        out.append(imrescale(img, target))
    return out


class MMSegTrainTransform:
    """mmseg's VOC training pipeline (module docstring) as a ``joint_transform(img, mask) -> (image, labels)``:
    float32 ``(3, crop, crop)`` normalised RGB and int64 ``(crop, crop)`` labels (255 = ignore). ``img`` is RGB (PIL
    or uint8 array): the photometric steps are channel-order free (HSV from RGB equals HSV from BGR)."""

    def __init__(self, crop: int = 512, img_scale: Sequence[int] = IMG_SCALE,
                 ratio_range: Optional[Sequence[float]] = (0.5, 2.0), cat_max_ratio: float = 0.75,
                 flip: float = 0.5, photometric: bool = True, pad_before_normalize: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 brightness_delta: int = 32, contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5), hue_delta: int = 18, seed: Optional[int] = None):
        if crop < 1:
            raise WsegError(f"crop_size {crop}: mmseg's pipeline needs a crop (512)")
        if ratio_range is not None and not 0 < float(ratio_range[0]) <= float(ratio_range[1]):
            raise WsegError(f"scale_range {list(ratio_range)}: expected [low, high] with 0 < low <= high")
        if len(img_scale) != 2 or min(img_scale) < 1:
            raise WsegError(f"img_scale {list(img_scale)}: expected [long, short] sides, e.g. [2048, 512]")
        if not 0 < float(cat_max_ratio) <= 1:
            raise WsegError(f"cat_max_ratio {cat_max_ratio}: must lie in (0, 1] (1 disables the check; mmseg 0.75)")
        if not 0 <= float(flip) <= 1:
            raise WsegError(f"flip_prob {flip}: must lie in [0, 1]")
        self.crop, self.img_scale = int(crop), (int(img_scale[0]), int(img_scale[1]))
        self.ratio_range = None if ratio_range is None else (float(ratio_range[0]), float(ratio_range[1]))
        self.cat_max_ratio, self.flip, self.photometric = float(cat_max_ratio), float(flip), bool(photometric)
        self.pad_before_normalize = bool(pad_before_normalize)
        self.mean, self.std = tuple(mean), tuple(std)
        self.brightness_delta, self.hue_delta = float(brightness_delta), int(hue_delta)
        self.contrast_range, self.saturation_range = tuple(contrast_range), tuple(saturation_range)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Make the next sample's augmentation a function of ``seed`` alone."""
        self.rng = np.random.default_rng(int(seed))

    # -- steps (each a function of the generator's state)
    def random_resize(self, img: np.ndarray, mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.ratio_range is None:
            target: Tuple[int, int] = self.img_scale
        else:
            lo, hi = self.ratio_range
            r = self.rng.random() * (hi - lo) + lo
            target = (int(self.img_scale[0] * r), int(self.img_scale[1] * r))
        return imrescale(img, target), imrescale(mask, target, nearest=True)

    def _window(self, h: int, w: int) -> Tuple[int, int]:
        return (int(self.rng.integers(0, max(h - self.crop, 0) + 1)),
                int(self.rng.integers(0, max(w - self.crop, 0) + 1)))

    def crop_box(self, mask: np.ndarray) -> Tuple[int, int]:
        """mmseg ``RandomCrop.crop_bbox``: the window's top-left corner."""
        h, w = mask.shape
        y, x = self._window(h, w)
        if self.cat_max_ratio < 1:
            for _ in range(10):
                labels, counts = np.unique(mask[y:y + self.crop, x:x + self.crop], return_counts=True)
                counts = counts[labels != IGNORE]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                y, x = self._window(h, w)
        return y, x

    @staticmethod
    def _convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def photometric_distortion(self, img: np.ndarray) -> np.ndarray:
        rng = self.rng
        if rng.integers(2):
            img = self._convert(img, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        mode = rng.integers(2)
        if mode == 1 and rng.integers(2):
            img = self._convert(img, alpha=rng.uniform(*self.contrast_range))
        if rng.integers(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 1] = self._convert(hsv[:, :, 1], alpha=rng.uniform(*self.saturation_range))
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if rng.integers(2):
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + int(rng.integers(-self.hue_delta, self.hue_delta))) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if mode == 0 and rng.integers(2):
            img = self._convert(img, alpha=rng.uniform(*self.contrast_range))
        return img

    def __call__(self, img, mask) -> Tuple[torch.Tensor, torch.Tensor]:
        img = np.ascontiguousarray(np.asarray(img.convert("RGB") if hasattr(img, "convert") else img, np.uint8))
        mask = np.ascontiguousarray(np.asarray(mask, np.uint8))
        img, mask = self.random_resize(img, mask)
        y, x = self.crop_box(mask)
        img, mask = img[y:y + self.crop, x:x + self.crop], mask[y:y + self.crop, x:x + self.crop]
        if self.flip > 0 and self.rng.random() < self.flip:
            img, mask = img[:, ::-1], mask[:, ::-1]
        img = np.ascontiguousarray(img)
        if self.photometric:
            img = self.photometric_distortion(img)
        h, w = mask.shape
        labels = np.full((self.crop, self.crop), IGNORE, np.int64)
        labels[:h, :w] = mask
        if self.pad_before_normalize:
            padded = np.zeros((self.crop, self.crop, 3), np.uint8)
            padded[:h, :w] = img
            x_t = to_input(padded, self.mean, self.std, bgr=False)
        else:
            x_t = torch.zeros(3, self.crop, self.crop)
            x_t[:, :h, :w] = to_input(img, self.mean, self.std, bgr=False)
        return x_t, torch.from_numpy(labels)


__all__ = ["IMG_SCALE", "MMSegTrainTransform", "RATIO_OF", "imrescale", "read_bgr", "rescale_size", "scale_size",
           "test_views", "to_input"]
