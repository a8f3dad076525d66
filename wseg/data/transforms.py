"""Image transforms of the published CAM / affinity training recipes (PSA/SEAM ``tool/imutils.py``).

Randomness comes from Python's ``random`` and torch's generator, which PyTorch's DataLoader seeds per worker from
the main process' torch seed, so ``--seed`` makes a run repeatable.
"""
from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(img: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 HxWx3 RGB -> float32 ImageNet-normalised HxWx3 (the published ``model.normalize``)."""
    x = np.asarray(img, np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def denormalize(x: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Inverse of :func:`normalize` back to uint8 RGB (for pictures of what the network saw)."""
    return ((np.asarray(x) * np.asarray(std) + np.asarray(mean)) * 255).clip(0, 255).astype(np.uint8)


def hwc_to_chw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (2, 0, 1)))


def resize_long(img: Image.Image, target_long: int, resample=Image.BICUBIC) -> Image.Image:
    """Resize so the longer side is ``target_long`` (bicubic, as published ``RandomResizeLong``)."""
    w, h = img.size
    if w > h:
        size = (target_long, int(round(h * target_long / w)))
    else:
        size = (int(round(w * target_long / h)), target_long)
    return img.resize(size, resample=resample)


def scaled_size(h: int, w: int, scale: float) -> Tuple[int, int]:
    """``(h, w)`` times ``scale``, rounded (PIL's multi-scale and OpenCV's ``fx``/``fy`` sizing), at least 1 pixel."""
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def rescale(img: Image.Image, scale: float, resample=Image.BICUBIC) -> Image.Image:
    """Scale both sides by ``scale`` (:func:`scaled_size`), as the published multi-scale inference does."""
    w, h = img.size
    return img.resize(scaled_size(h, w, scale)[::-1], resample=resample)


def crop_box(h: int, w: int, crop: int, rng=random) -> Tuple[int, int, int, int, int, int]:
    """A random crop window ``(cont_top, cont_left, img_top, img_left, ch, cw)``: where the image part lands in
    a ``crop x crop`` container (zero padded when the image is smaller, as published). ``rng``: anything with
    ``randrange`` (default: Python's global ``random``)."""
    ch, cw = min(crop, h), min(crop, w)
    if w > crop:
        cont_left, img_left = 0, rng.randrange(w - crop + 1)
    else:
        cont_left, img_left = rng.randrange(crop - w + 1), 0
    if h > crop:
        cont_top, img_top = 0, rng.randrange(h - crop + 1)
    else:
        cont_top, img_top = rng.randrange(crop - h + 1), 0
    return cont_top, cont_left, img_top, img_left, ch, cw


def apply_crop(arr: np.ndarray, box, crop: int, fill=0) -> np.ndarray:
    """Cut ``arr`` (HxW or HxWxC) with a :func:`crop_box` window into a ``crop x crop`` container."""
    cont_top, cont_left, img_top, img_left, ch, cw = box
    out = np.full((crop, crop) + arr.shape[2:], fill, dtype=arr.dtype)
    out[cont_top:cont_top + ch, cont_left:cont_left + cw] = arr[img_top:img_top + ch, img_left:img_left + cw]
    return out


class RandomCrop:
    """Published ``imutils.RandomCrop``: a ``crop x crop`` window, zero-padded where the image is smaller."""

    def __init__(self, crop: int):
        self.crop = crop

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        return apply_crop(arr, crop_box(arr.shape[0], arr.shape[1], self.crop), self.crop)


class ColorJitter:
    """torchvision's ``ColorJitter`` (published: brightness 0.3, contrast 0.3, saturation 0.3, hue 0.1)."""

    def __init__(self, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1):
        from torchvision import transforms

        self.t = transforms.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.t(img)


#: Published colour jitter (brightness, contrast, saturation, hue).
PUBLISHED_JITTER = (0.3, 0.3, 0.3, 0.1)


class CamTrainTransform:
    """The SEAM/PPC classification-training augmentation as one joint transform of a sample dict: random long-side
    resize (``image`` bicubic, other maps such as ``saliency`` bilinear), flip, colour jitter on the image only,
    ImageNet normalisation, one random ``crop x crop`` window (zero padding) for every map, CHW float tensors.
    ``jitter``: True = :data:`PUBLISHED_JITTER`, False/all zeros = none, or (brightness, contrast, saturation, hue).
    ``resize_scale``: the long side is resized to a random factor of its own length instead of a random length
    (the published 448-768 on ~500-pixel VOC images is about 0.9-1.5).
    The random draws are those of the published image-only ``Compose`` in its order."""

    def __init__(self, crop_size: int, resize_long_range: Tuple[int, int] = (448, 768),
                 jitter: Sequence[float] | bool = True, resize_scale: Optional[Tuple[float, float]] = None):
        self.crop, self.resize_range = int(crop_size), tuple(resize_long_range)
        self.resize_scale = tuple(resize_scale) if resize_scale else None
        if jitter is True:
            jitter = PUBLISHED_JITTER
        self.jitter = ColorJitter(*(float(v) for v in jitter)) if jitter and any(float(v) for v in jitter) else None

    def __call__(self, sample: Dict[str, Image.Image]) -> Dict[str, torch.Tensor]:
        if self.resize_scale:       # relative to the image's own long side (datasets of other image sizes)
            target = max(8, int(round(max(sample["image"].size) * random.uniform(*self.resize_scale))))
        else:
            target = random.randint(*self.resize_range)
        out = {k: resize_long(v, target, Image.BICUBIC if k == "image" else Image.BILINEAR) for k, v in sample.items()}
        if random.random() < 0.5:
            out = {k: v.transpose(Image.FLIP_LEFT_RIGHT) for k, v in out.items()}
        if self.jitter is not None:
            out["image"] = self.jitter(out["image"])
        arrays = {k: normalize(np.asarray(v)) if k == "image" else np.asarray(v, np.float32) / 255.0
                  for k, v in out.items()}
        h, w = arrays["image"].shape[:2]
        box = crop_box(h, w, self.crop)
        tensors = {}
        for k, a in arrays.items():
            a = apply_crop(a, box, self.crop)
            tensors[k] = torch.from_numpy(hwc_to_chw(a) if a.ndim == 3 else np.ascontiguousarray(a[None]))
        return tensors


def cam_train_transform(crop_size: int, resize_long_range: Tuple[int, int] = (448, 768),
                        jitter: Sequence[float] | bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """Image-only form of :class:`CamTrainTransform` (PIL image -> CHW tensor)."""
    joint = CamTrainTransform(crop_size, resize_long_range, jitter)
    return lambda img: joint({"image": img})["image"]


def multiscale_flip_inputs(img: Image.Image, scales: Sequence[float], flip: bool = True) -> List[torch.Tensor]:
    """For each scale, a ``(1 or 2, 3, h, w)`` normalised batch: the rescaled image and its mirror (published
    ``VOC12ClsDatasetMSF``: bicubic rescale, ImageNet normalisation)."""
    out = []
    for s in scales:
        x = hwc_to_chw(normalize(np.asarray(rescale(img, s) if s != 1 else img)))
        batch = [x, np.ascontiguousarray(x[:, :, ::-1])] if flip else [x]
        out.append(torch.from_numpy(np.stack(batch)))
    return out


def random_crop_with_box(arr: np.ndarray, crop: int, rng) -> Tuple[np.ndarray, np.ndarray]:
    """``random_crop(image, crop_size, mean_rgb=[0, 0, 0])`` (T:datasets/transforms.py:147-198): the image placed at
    a random offset in a black canvas of at least ``crop x crop``, a random ``crop x crop`` window of it, and
    ``img_box = [h0, h1, w0, w1]``: where the image lies in the window. The canvas has the array's dtype (uint8
    pixels for ToCo / LOC-BE, normalised float32 for RS+EPM: zero there is the mean colour)."""
    h, w = arr.shape[:2]
    big_h, big_w = max(crop, h), max(crop, w)
    canvas = np.zeros((big_h, big_w, 3), arr.dtype)
    h_pad, w_pad = rng.randrange(big_h - h + 1), rng.randrange(big_w - w + 1)
    canvas[h_pad:h_pad + h, w_pad:w_pad + w] = arr
    h0, w0 = rng.randrange(big_h - crop + 1), rng.randrange(big_w - crop + 1)
    box = np.asarray([max(h_pad - h0, 0), min(crop, h + h_pad - h0), max(w_pad - w0, 0), min(crop, w + w_pad - w0)],
                     np.int64)
    return canvas[h0:h0 + crop, w0:w0 + crop], box
