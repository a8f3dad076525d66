"""The ImageNet stand-in: a procedurally generated, many-class image-classification corpus for pretraining backbones.

Every published WSSS recipe fine-tunes an ImageNet-pretrained backbone; ImageNet cannot be downloaded here, so the
reduced backbones of the demo are pretrained on this corpus instead (``scripts/pretrain_backbone.py``) and the demo
runs the published recipes on their weights. The corpus is not the demo's dataset or generator: it shares no class,
no shape code and no drawing code with :mod:`wseg.data.synthetic`, and it teaches what ImageNet features give a WSSS
recipe: colour, texture, shape and part detectors that survive scale changes, clutter and occlusion.

A class is a *motif*: an outline (one of :data:`SHAPES`), a fill texture (one of :data:`TEXTURES`, in shades of the
motif's colour) and a colour hue (one of :data:`HUE_BINS` bins): 16 x 16 x 12 = 3,072 classes, told apart by outline,
texture and colour together. An image shows one instance of its class at 35-75 % of the image side, rotated and
aspect-jittered, on a smooth-noise background with 1-4 smaller clutter motifs of any attributes (before or behind
it, so it is sometimes occluded), then brightness, contrast, noise and blur. Image ``i`` of a split is a pure function
of ``(seed, split, i)``: the corpus is endless and needs no disk; the held-out split never shares an image with the
training one.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

SHAPES = ("disc", "square", "triangle", "diamond", "star", "cross", "ring", "hexagon", "crescent", "ellipse",
          "lshape", "tshape", "arrow", "bowtie", "semidisc", "octagon")
TEXTURES = ("solid", "stripes", "checker", "dots", "waves", "zigzag", "grid", "rings", "blotches", "gradient",
            "hatch", "spots", "bricks", "spiral", "scales", "speckle")
HUE_BINS = 12
SPLITS = {"train": 0, "heldout": 1}


@dataclass(frozen=True)
class Motif:
    shape: int
    texture: int
    hues: Tuple[int, int]


# --------------------------------------------------------------------------------------------- outlines


def _poly(kind: str) -> List[np.ndarray]:
    """Outline of a shape in unit coordinates ([-1, 1]^2): a list of polygons, the first filled, the others cut out."""
    t = np.linspace(0, 2 * np.pi, 33)[:-1]
    circle = np.stack([np.cos(t), np.sin(t)], 1)
    if kind == "disc":
        return [circle]
    if kind == "ellipse":
        return [circle * [1.0, 0.55]]
    if kind == "ring":
        return [circle, circle * 0.55]
    if kind == "crescent":
        return [circle, circle * 0.85 + [0.45, 0.0]]
    if kind == "semidisc":
        h = np.linspace(0, np.pi, 17)
        return [np.stack([np.cos(h), -np.sin(h)], 1) * [1, 1] + [0, 0.4]]
    if kind in ("hexagon", "octagon", "triangle", "square"):
        n = {"hexagon": 6, "octagon": 8, "triangle": 3, "square": 4}[kind]
        a = np.arange(n) * 2 * np.pi / n + (np.pi / 4 if n == 4 else -np.pi / 2)
        return [np.stack([np.cos(a), np.sin(a)], 1)]
    if kind == "diamond":
        return [np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], float)]
    if kind == "star":
        a = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [np.stack([r * np.cos(a), r * np.sin(a)], 1)]
    if kind == "cross":
        w = 0.33
        return [np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w],
                          [-1, -w], [-w, -w]], float)]
    if kind == "lshape":
        return [np.array([[-1, -1], [-0.3, -1], [-0.3, 0.3], [1, 0.3], [1, 1], [-1, 1]], float)]
    if kind == "tshape":
        return [np.array([[-1, -1], [1, -1], [1, -0.4], [0.3, -0.4], [0.3, 1], [-0.3, 1], [-0.3, -0.4],
                          [-1, -0.4]], float)]
    if kind == "arrow":
        return [np.array([[-1, -0.3], [0.2, -0.3], [0.2, -0.8], [1, 0], [0.2, 0.8], [0.2, 0.3], [-1, 0.3]], float)]
    if kind == "bowtie":
        return [np.array([[-1, -0.8], [0, -0.15], [1, -0.8], [1, 0.8], [0, 0.15], [-1, 0.8]], float)]
    raise ValueError(kind)


_OUTLINES = {k: _poly(k) for k in SHAPES}


def _mask(kind: str, h: int, w: int, cx: float, cy: float, r: float, aspect: float, angle: float) -> np.ndarray:
    """Boolean ``(h, w)`` mask of an outline placed at ``(cx, cy)`` with radius ``r``, anti-aliasing-free."""
    c, s = math.cos(angle), math.sin(angle)
    out = np.zeros((h, w), np.uint8)
    for k, poly in enumerate(_OUTLINES[kind]):
        pts = (poly * [aspect, 1.0] @ np.array([[c, s], [-s, c]]) * r + [cx, cy]) * 16
        cv2.fillPoly(out, [np.round(pts).astype(np.int32)], 0 if k else 1, lineType=cv2.LINE_8, shift=4)
    return out.astype(bool)


# --------------------------------------------------------------------------------------------- textures


def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """Texture value in [0, 1] at local coordinates ``u, v`` (pixels, rotated with the motif)."""
    f = 2 * np.pi / period
    if kind == "solid":
        return np.zeros_like(u)
    if kind == "stripes":
        return (np.sin(f * u) > 0).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "dots":
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        return (du * du + dv * dv < (period * 0.3) ** 2).astype(np.float32)
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(f * u + 2.0 * np.sin(f * 0.5 * v))
    if kind == "zigzag":
        return ((np.abs((u % period) - period / 2) * 2 + v) % period < period / 2).astype(np.float32)
    if kind == "grid":
        return (((u % period) < period * 0.25) | ((v % period) < period * 0.25)).astype(np.float32)
    if kind == "rings":
        return (np.sin(f * np.sqrt(u * u + v * v)) > 0).astype(np.float32)
    if kind == "blotches":
        return (np.sin(f * 0.7 * u + 1.3) * np.sin(f * 0.6 * v + 0.4) > 0.15).astype(np.float32)
    if kind == "gradient":
        span = max(float(np.ptp(u)), 1.0)
        return (u - u.min()) / span
    if kind == "hatch":
        return ((np.sin(f * (u + v)) > 0.3) | (np.sin(f * (u - v)) > 0.3)).astype(np.float32)
    if kind == "spots":
        pu, pv = rng.uniform(0, period, 2)
        return (np.sin(f * 0.8 * (u + pu)) + np.sin(f * 0.8 * (v + pv)) > 1.2).astype(np.float32)
    if kind == "bricks":
        row = np.floor(v / period)
        return (((u + (row % 2) * period) % (2 * period) < period * 0.2) | ((v % period) < period * 0.2)
                ).astype(np.float32)
    if kind == "spiral":
        return (np.sin(np.arctan2(v, u) * 3 + f * 0.5 * np.sqrt(u * u + v * v)) > 0).astype(np.float32)
    if kind == "scales":
        du, dv = (u % period) - period / 2, (v % period)
        return (du * du + dv * dv < (period * 0.55) ** 2).astype(np.float32) * (dv > period * 0.2)
    if kind == "speckle":
        return (rng.random(u.shape) < 0.3).astype(np.float32)
    raise ValueError(kind)


def _rgb(hue_bin: int, rng: np.random.Generator, sat: Tuple[float, float] = (0.55, 1.0),
         val: Tuple[float, float] = (0.45, 1.0)) -> np.ndarray:
    h = (hue_bin + rng.uniform(-0.3, 0.3)) / HUE_BINS % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val)), np.float32)


# --------------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class StandInConfig:
    size: int = 64
    seed: int = 0
    clutter: Tuple[int, int] = (1, 4)
    scale: Tuple[float, float] = (0.35, 0.75)          # the main object (its side, relative to the image's)
    clutter_scale: Tuple[float, float] = (0.1, 0.3)    # clutter is always smaller than the main object

    @property
    def factors(self) -> Tuple[int, int, int]:
        """The class factors: (outline, fill texture, colour hue bin)."""
        return len(SHAPES), len(TEXTURES), HUE_BINS

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.factors))


def render(index: int, cfg: StandInConfig, split: str = "train") -> Tuple[np.ndarray, Tuple[int, int, int]]:
    """Image ``index`` of ``split``: ``(uint8 (S, S, 3) RGB, its class as (outline, texture, hue))``."""
    rng = np.random.default_rng([cfg.seed, SPLITS[split], index])
    s = cfg.size
    cls = (int(rng.integers(len(SHAPES))), int(rng.integers(len(TEXTURES))), int(rng.integers(HUE_BINS)))
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    # background: smooth colour noise, a faint random texture
    coarse = rng.uniform(0, 1, (3, 3, 3)).astype(np.float32)
    img = cv2.resize(coarse, (s, s), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    img = img * rng.uniform(0.4, 0.9) + rng.uniform(0, 0.3)
    tex = _texture(TEXTURES[rng.integers(len(TEXTURES))], xx, yy, rng.uniform(4, 12), rng)
    img = img * (1 - 0.1 * tex[..., None])

    def draw(motif: Motif, scale: float, inside: bool = False) -> None:
        r = scale * s / 2
        lo, hi = ((r * 0.8) / s, 1 - (r * 0.8) / s) if inside else (-0.1, 1.1)   # the main object stays in view
        cx, cy = rng.uniform(lo, hi) * s, rng.uniform(lo, hi) * s
        angle = rng.uniform(0, 2 * np.pi)
        mask = _mask(SHAPES[motif.shape], s, s, cx, cy, r, rng.uniform(0.7, 1.4), angle)
        if not mask.any():
            return
        c, si = math.cos(angle), math.sin(angle)
        u = (xx - cx) * c + (yy - cy) * si
        v = -(xx - cx) * si + (yy - cy) * c
        t = _texture(TEXTURES[motif.texture], u[mask], v[mask], rng.uniform(2.5, 6.5) * max(0.6, r / 10), rng)
        c1 = _rgb(motif.hues[0], rng)
        c2 = c1 * rng.uniform(0.25, 0.6) if motif.hues[1] % 2 else 1 - (1 - c1) * rng.uniform(0.25, 0.6)
        img[mask] = c1 * (1 - t[:, None]) + c2 * t[:, None]          # the texture in shades of one hue

    def random_motif() -> Motif:
        return Motif(int(rng.integers(len(SHAPES))), int(rng.integers(len(TEXTURES))),
                     (int(rng.integers(HUE_BINS)), int(rng.integers(HUE_BINS))))

    n_clutter = int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))
    behind = int(rng.integers(0, n_clutter + 1))
    for k in range(n_clutter):
        if k == behind:
            draw(Motif(cls[0], cls[1], (cls[2], int(rng.integers(HUE_BINS)))), rng.uniform(*cfg.scale), inside=True)
        draw(random_motif(), rng.uniform(*cfg.clutter_scale))
    if behind == n_clutter:
        draw(Motif(cls[0], cls[1], (cls[2], int(rng.integers(HUE_BINS)))), rng.uniform(*cfg.scale), inside=True)
    img = (img - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.12, 0.12)
    img = img + rng.normal(0, rng.uniform(0, 0.04), img.shape).astype(np.float32)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 1.0))
    return (img.clip(0, 1) * 255).astype(np.uint8), cls


class StandInCorpus(Dataset):
    """``(normalised (3, S, S) float tensor, (outline, texture, hue) long tensor)`` for images ``0 .. length - 1``
    of a split."""

    def __init__(self, cfg: StandInConfig, split: str = "train", length: int = 1_000_000):
        self.cfg, self.split, self.length = cfg, split, int(length)
        self.mean = np.asarray(IMAGENET_MEAN, np.float32)
        self.std = np.asarray(IMAGENET_STD, np.float32)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        img, cls = render(int(index), self.cfg, self.split)
        x = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), torch.tensor(cls)
