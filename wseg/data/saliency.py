"""Saliency maps for EPS / EPS+PPC: the per-image loader of ``--saliency_root`` and a synthetic stand-in.

Layout (as EPS reads it, ``metadata/dataset.py:24-25``): one PNG per image id, ``<saliency_root>/<id>.png``, the
same width and height as the image, 8-bit grayscale 0..255 (the PFAN maps EPS distributes; any PIL mode works: the
published code reads the file as RGB and averages the channels). The published default folder name is
``SALImages`` (``get_saliency_path``; the esp script's ``SALIENCY_ROOT=./SALImages``).

Synthetic maps (:func:`synthetic_saliency`) are made from a dataset's ground-truth masks and behave like a real
salient-object detector's output on VOC: labelled objects are salient with soft (blurred) edges and a slightly
uneven interior, some labelled objects are missed altogether (``miss_rate``, per connected object: this exercises
EPS's ``overlap <= tau`` path, where a labelled class is treated as background), and some images get salient blobs
on the background (``blob_rate``: false positives, the saliency model's mistakes EPS is meant to be robust to).
Deterministic per ``seed`` and image id (independent of the order and of the number of worker processes).
"""
from __future__ import annotations

import os
import zlib
from typing import Optional

import cv2
import numpy as np
from PIL import Image

from wseg.data.classes import object_regions
from wseg.errors import WsegError

#: The published default folder name (EPS ``metadata/dataset.py:24``; esp ``script/script_contrast.sh:4``).
DEFAULT_DIR = "SALImages"
#: Synthetic defaults: fraction of labelled objects missed, chance of background blobs per image.
MISS_RATE = 0.15
BLOB_RATE = 0.3
#: Gaussian edge softness as a fraction of the image diagonal (PFAN edges span a few pixels on 500x375 images).
EDGE_SIGMA = 0.006

_FIX = ("make them with scripts/make_saliency.py (synthetic) or download the EPS (PFAN) maps, and pass their folder "
        "as --saliency_root")


def saliency_path(root: str, image_id: str) -> str:
    return os.path.join(root, image_id + ".png")


def missing_saliency(root: str, ids) -> list:
    """Ids without a map in ``root``."""
    return [i for i in ids if not os.path.isfile(saliency_path(root, i))]


def image_size(path: str):
    """``(width, height)`` from the file header, or None when unreadable (the image loader reports that itself)."""
    try:
        with Image.open(path) as img:
            return img.size
    except Exception:
        return None


def check_sizes(root: str, voc, ids) -> None:
    """One-line error for the first map whose size differs from its image's (headers only: about 0.2 ms per image),
    so a wrong folder fails before training instead of when the map is first drawn."""
    bad = []
    for i in ids:
        sal, img = image_size(saliency_path(root, i)), image_size(voc.image_path(i))
        if sal is not None and img is not None and sal != img:
            bad.append((i, sal, img))
    if bad:
        i, sal, img = bad[0]
        raise WsegError(f"{saliency_path(root, i)}: saliency map is {sal[0]}x{sal[1]} but image {i} is "
                        f"{img[0]}x{img[1]} ({len(bad)} of {len(ids)} maps differ from their images); the maps belong "
                        f"to other images or another resolution: {_FIX}")


class SaliencyLoader:
    """``fn(image_id) -> PIL image`` for :class:`~wseg.data.datasets.ClsDataset` ``maps``: the map of ``image_id``,
    checked against the image's size (a one-line error names the file and the fix). 8-bit grayscale maps stay
    ``L``; other modes become the mean of their RGB channels (``F``, 0..255), as the published loader computes.
    Picklable, so DataLoader workers can use it."""

    def __init__(self, root: str, voc):
        self.root, self.voc = root, voc

    def __call__(self, image_id: str) -> Image.Image:
        path = saliency_path(self.root, image_id)
        if not os.path.isfile(path):
            raise WsegError(f"{path}: saliency map missing for image {image_id}; {_FIX}")
        try:
            with Image.open(path) as f:
                sal = f.copy() if f.mode == "L" else Image.fromarray(
                    np.asarray(f.convert("RGB"), np.float32).mean(-1))
        except Exception as exc:
            raise WsegError(f"{path}: cannot read saliency map ({exc.__class__.__name__}); the file is corrupt: "
                            "regenerate or re-download it")
        size = image_size(self.voc.image_path(image_id))
        if size is not None and sal.size != size:
            raise WsegError(f"{path}: saliency map is {sal.size[0]}x{sal.size[1]} but image {image_id} is "
                            f"{size[0]}x{size[1]}; the map belongs to another image or resolution: {_FIX}")
        return sal


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the image id."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(image_id.encode("utf-8"))])


def _smooth_field(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] (a coarse random grid, bicubic-upsampled)."""
    gh, gw = max(2, int(round(h / cell)) + 1), max(2, int(round(w / cell)) + 1)
    grid = rng.random((gh, gw)).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)


def synthetic_saliency(mask: np.ndarray, rng: np.random.Generator, miss_rate: float = MISS_RATE,
                       blob_rate: float = BLOB_RATE, edge_sigma: float = EDGE_SIGMA) -> np.ndarray:
    """A uint8 ``(H, W)`` saliency map (0..255) from a ground-truth label mask (0 background, 1..C classes, 255 the
    ignored object border).

    Objects are the 8-connected regions of each class; each is missed with probability ``miss_rate``. Kept objects
    get a saliency of 0.8-1.0 with a smooth uneven interior; the 255 border belongs to the object it touches (it is
    dropped with a missed object). With probability ``blob_rate`` one or two elliptic blobs (peak 0.6-1.0, 3-12 % of
    the image) appear centred on background pixels. A Gaussian blur of ``edge_sigma`` x the image diagonal softens
    every edge, so values are continuous, as a detector's output is."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise WsegError(f"saliency from a mask of shape {mask.shape}: expected a (H, W) label map")
    h, w = mask.shape
    diag = float(np.hypot(h, w))
    sal = np.zeros((h, w), np.float32)
    border = mask == 255
    dropped = np.zeros((h, w), bool)
    for _, region in object_regions(mask):
        if rng.random() < miss_rate:
            dropped |= region
        else:
            strength = rng.uniform(0.8, 1.0)
            sal = np.maximum(sal, region * strength)
    if border.any():
        # the border band goes with the objects it touches: salient unless only missed objects are near it
        kernel = np.ones((3, 3), np.uint8)
        near_kept = cv2.dilate((sal > 0).astype(np.uint8), kernel, iterations=3) > 0
        near_dropped = cv2.dilate(dropped.astype(np.uint8), kernel, iterations=3) > 0
        keep = border & (near_kept | ~near_dropped)
        sal = np.where(keep & (sal == 0), np.float32(0.9), sal)
    if sal.any():   # uneven interior: 75-100 % of the object's level
        sal *= 0.75 + 0.25 * _smooth_field(rng, h, w, cell=max(4.0, diag / 12))
    if rng.random() < blob_rate:
        bg = np.flatnonzero((mask == 0).reshape(-1))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for _ in range(int(rng.integers(1, 3))):
            centre = int(bg[rng.integers(len(bg))]) if len(bg) else int(rng.integers(h * w))
            cy, cx = divmod(centre, w)
            area = rng.uniform(0.03, 0.12) * h * w
            aspect = rng.uniform(0.5, 2.0)
            ry, rx = np.sqrt(area / np.pi / aspect), np.sqrt(area * aspect / np.pi)
            theta = rng.uniform(0, np.pi)
            dy, dx = yy - cy, xx - cx
            u = (dx * np.cos(theta) + dy * np.sin(theta)) / rx
            v = (-dx * np.sin(theta) + dy * np.cos(theta)) / ry
            blob = rng.uniform(0.6, 1.0) * (u * u + v * v <= 1)
            sal = np.maximum(sal, blob.astype(np.float32))
    sigma = max(0.7, edge_sigma * diag)
    sal = cv2.GaussianBlur(sal, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return np.clip(np.rint(sal * 255), 0, 255).astype(np.uint8)


def write_saliency(mask_path: str, out_path: str, seed: int, image_id: str, miss_rate: float = MISS_RATE,
                   blob_rate: float = BLOB_RATE, edge_sigma: float = EDGE_SIGMA) -> Optional[str]:
    """Write the synthetic map of one image atomically; returns None or the image's one-line error."""
    from wseg.io import atomic_path, load_mask_png

    try:
        mask = load_mask_png(mask_path)
        sal = synthetic_saliency(mask, image_rng(seed, image_id), miss_rate, blob_rate, edge_sigma)
        with atomic_path(out_path) as tmp:
            Image.fromarray(sal).save(tmp, format="PNG")
    except WsegError as exc:
        return str(exc)
    return None


def fg_bg_iou(saliency_root: str, masks: dict, threshold: float = 0.5) -> dict:
    """What the saliency alone gives: the maps thresholded at ``threshold`` (of 255) as a foreground/background mask,
    scored against the ground truth with every class merged into foreground (255 ignored). Returns the IoUs in
    percent: ``bg_iou``, ``fg_iou`` and their mean ``miou`` (2 classes)."""
    from wseg.io import load_mask_png

    inter, union = np.zeros(2), np.zeros(2)
    for image_id, mask_path in masks.items():
        gt = load_mask_png(mask_path)
        sal = np.asarray(Image.open(saliency_path(saliency_root, image_id)).convert("L"), dtype=np.float32)
        valid = gt != 255
        pred, truth = (sal > threshold * 255)[valid], (gt > 0)[valid]
        for k, (p, t) in enumerate(((~pred, ~truth), (pred, truth))):
            inter[k] += np.count_nonzero(p & t)
            union[k] += np.count_nonzero(p | t)
    iou = 100 * inter / np.maximum(union, 1)
    return {"bg_iou": float(iou[0]), "fg_iou": float(iou[1]), "miou": float(iou.mean())}
