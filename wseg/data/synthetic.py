"""Synthetic VOC-format dataset ("toy VOC"): the embedded default for the demo and the tests.

A fair weakly-supervised task in a few seconds of CPU time, written in the exact PASCAL VOC layout
(``JPEGImages``, ``Annotations``, palette ``SegmentationClass`` with a 255 ignore band on object borders,
``ImageSets/Segmentation/{train,val,trainval}.txt``, ``classes.txt``, ``cls_labels.npy``).

What makes it a WSSS task rather than a colour-thresholding one:

- Every class is a *body* plus a *head* (the discriminative part). Bodies come in groups: all classes of a
  group share the body shape family, fill texture and colour, so the body alone does not identify the class.
  The head (shape + pattern + saturated colour, unique per class) alone does. A classifier's class activation
  map (CAM) therefore fires mainly on the head and is incomplete on the body; bodies are texture/colour coherent
  and bounded by edges, so CRF and AffinityNet random walk can propagate the head's activation over them.
- Textured, cluttered backgrounds (smooth noise, stripes, patchy regions, gradients) with distractor shapes that
  belong to no class, including occasional head-less bodies (background by definition) and front occluders.
- 1-4 objects per image (occasionally the same class twice), sizes 15-60 % of the shorter image side, random
  positions, rotations and aspect ratios, occlusion with depth order respected in the mask, truncation at the
  image border, colour jitter, sensor noise, blur and JPEG compression.

Every image is drawn from its own RNG seeded with ``(seed, index)``: the output is byte-identical for a seed,
independent of ``workers`` and of which images already exist (re-runs skip complete images).
"""
from __future__ import annotations

import colorsys
import json
import math
import multiprocessing
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from wseg.errors import WsegError
from wseg.io import (atomic_write_text, colorize_mask, is_done, load_image, load_mask_png, overlay_mask,
                     save_image, save_mask_png)

GENERATOR_VERSION = 1
DEFAULT_SIZE = (128, 96)  # (W, H): non-square on purpose, so H/W mix-ups fail loudly
CONFIG_JSON = "toy_voc.json"
SPLIT_DIR = os.path.join("ImageSets", "Segmentation")

BODY_KINDS = ("ellipse", "roundrect", "blob", "triangle", "capsule", "pentagon")
BODY_TEXTURES = ("stripes", "dots", "checker", "waves", "mottled", "zigzag")
HEAD_SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon")
HEAD_PATTERNS = ("rings", "cross", "dot", "split", "quad", "bar")
_SS = 4  # supersampling factor of the polygon rasteriser (anti-aliased image edges, exact hard masks)


# --------------------------------------------------------------------------------------------- configuration


def parse_size(size: Union[str, int, Sequence[int], None]) -> Tuple[int, int]:
    """``"W"``, ``"WxH"``, an int or a ``(W, H)`` pair -> ``(W, H)``; None -> :data:`DEFAULT_SIZE`."""
    if size is None:
        return DEFAULT_SIZE
    try:
        if isinstance(size, str):
            parts = size.lower().replace("*", "x").split("x")
            if len(parts) not in (1, 2):
                raise ValueError
            wh = [int(p) for p in parts]
        elif isinstance(size, (int, np.integer)):
            wh = [int(size)]
        else:
            wh = [int(v) for v in size]
            if len(wh) not in (1, 2):
                raise ValueError
    except (TypeError, ValueError):
        raise WsegError(f"--size {size!r}: expected W or WxH in pixels, e.g. 128 or 128x96")
    w, h = (wh[0], wh[0]) if len(wh) == 1 else wh
    if min(w, h) < 32 or max(w, h) > 4096:
        raise WsegError(f"--size {size!r}: each side must lie in [32, 4096] pixels; e.g. 128x96")
    return w, h


def toy_class_names(num_classes: int) -> List[str]:
    """``["background", "class01", ..., "classNN"]`` for ``num_classes`` foreground classes."""
    width = max(2, len(str(num_classes)))
    return ["background"] + [f"class{c + 1:0{width}d}" for c in range(num_classes)]


@dataclass(frozen=True)
class ClassDesign:
    """Appearance of one foreground class: a group-shared body and a class-specific head (discriminative part)."""

    group: int
    body_kind: str
    body_texture: str
    body_hsv: Tuple[float, float, float]
    head_shape: str
    head_pattern: str
    head_rgb: Tuple[float, float, float]
    head_rgb2: Tuple[float, float, float]


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(float(h) % 1.0, min(max(float(s), 0.0), 1.0), min(max(float(v), 0.0), 1.0))
    return np.array(rgb, np.float32) * 255.0


def class_designs(num_classes: int, cue: str = "part") -> List[ClassDesign]:
    """Designs of the ``num_classes`` foreground classes (fixed by the class count, not by the seed).

    ``cue="part"``: classes ``c`` and ``c + G`` (``G = max(1, num_classes // 2)`` groups) share body shape, texture
    and colour; within a group heads differ in shape, pattern and hue. Head hues are evenly spaced over all classes
    and lie opposite their body's hue, so the discriminative part stands out from the body it sits on.
    ``cue="whole"``: every class has its own body (shape, texture, colour) and all share one head design, so the
    class is told by the whole object, not by a part.
    """
    if cue == "whole":
        common = class_designs(num_classes, "part")[0]
        return [ClassDesign(c, BODY_KINDS[c % len(BODY_KINDS)],
                            BODY_TEXTURES[(c + c // len(BODY_KINDS)) % len(BODY_TEXTURES)],
                            ((0.08 + c / num_classes) % 1.0, 0.5 + 0.15 * ((c // 3) % 2), 0.7), common.head_shape,
                            common.head_pattern, common.head_rgb, common.head_rgb2) for c in range(num_classes)]
    groups = max(1, num_classes // 2)
    out = []
    for c in range(num_classes):
        g, m = c % groups, c // groups
        members = len(range(g, num_classes, groups))
        body_hue = (0.08 + g / groups) % 1.0
        body_sat = 0.5 + 0.15 * ((g // 3) % 2)
        head_hue = (body_hue + 0.5 + (m - (members - 1) / 2) / num_classes) % 1.0
        out.append(ClassDesign(
            group=g,
            body_kind=BODY_KINDS[g % len(BODY_KINDS)],
            body_texture=BODY_TEXTURES[(g + g // len(BODY_KINDS)) % len(BODY_TEXTURES)],
            body_hsv=(body_hue, body_sat, 0.7),
            head_shape=HEAD_SHAPES[c % len(HEAD_SHAPES)],  # (shape, pattern) unique for the first 36 classes
            head_pattern=HEAD_PATTERNS[(c + c // len(HEAD_SHAPES)) % len(HEAD_PATTERNS)],
            head_rgb=tuple(_hsv(head_hue, 0.9, 0.95).tolist()),
            head_rgb2=tuple(_hsv(0, 0, 0.1 if c % 2 == 0 else 0.97).tolist()),
        ))
    return out


@dataclass(frozen=True)
class ToyConfig:
    """Everything that determines the pixels of image ``index`` (together with ``seed`` and ``index``)."""

    num_classes: int = 6
    width: int = DEFAULT_SIZE[0]
    height: int = DEFAULT_SIZE[1]
    seed: int = 0
    max_objects: int = 4
    min_scale: float = 0.15
    max_scale: float = 0.6
    ignore_width: int = 2
    head_ratio: Tuple[float, float] = (0.4, 0.48)  # head radius / body half-length
    distractors: Tuple[int, int] = (2, 5)  # class-less clutter shapes behind the objects (min, max)
    headless_prob: float = 0.15
    occluder_prob: float = 0.3
    jpeg_quality: Tuple[int, int] = (70, 95)
    long_side: Tuple[int, int] = (0, 0)  # (min, max) > 0: each image's long side drawn from it (width x height unused)
    aspect: Tuple[float, float] = (0.75, 0.75)  # short / long side of those images (portrait with probability 0.3)
    cue: str = "part"  # part: shared bodies, class-specific heads; whole: class-specific bodies, one common head
    version: int = GENERATOR_VERSION

    def validate(self) -> "ToyConfig":
        if self.num_classes < 1 or self.num_classes > 254:
            raise WsegError(f"--num_classes {self.num_classes}: need 1..254 foreground classes")
        if self.seed < 0:
            raise WsegError(f"--seed {self.seed}: the seed must be a non-negative integer")
        if not 1 <= self.max_objects <= 16:
            raise WsegError(f"max_objects={self.max_objects}: need 1..16")
        if not 0.02 <= self.min_scale <= self.max_scale <= 1.0:
            raise WsegError(f"object scale range ({self.min_scale}, {self.max_scale}) must satisfy "
                            "0.02 <= min <= max <= 1")
        widest = max(2, min(self.width, self.height) // 16)   # wider bands swallow the small objects whole
        if not 0 <= self.ignore_width <= widest:
            raise WsegError(f"--ignore_width {self.ignore_width}: need 0..{widest} pixels for "
                            f"{self.width}x{self.height} images (default 2)")
        if not 0 <= self.distractors[0] <= self.distractors[1] <= 32:
            raise WsegError(f"distractors={tuple(self.distractors)}: need 0 <= min <= max <= 32")
        if self.long_side[1] and not 32 <= self.long_side[0] <= self.long_side[1] <= 4096:
            raise WsegError(f"long_side={tuple(self.long_side)}: need 32 <= min <= max <= 4096 pixels")
        if not 0.3 <= self.aspect[0] <= self.aspect[1] <= 1.0:
            raise WsegError(f"aspect={tuple(self.aspect)}: need 0.3 <= min <= max <= 1")
        if self.cue not in ("part", "whole"):
            raise WsegError(f"cue={self.cue!r}: choose part or whole")
        return self

    def image_size(self, rng: np.random.Generator) -> Tuple[int, int]:
        """``(height, width)`` of one image: fixed, or drawn from ``long_side`` and ``aspect``."""
        if not self.long_side[1]:
            return self.height, self.width
        long = int(rng.integers(self.long_side[0], self.long_side[1] + 1))
        short = max(32, int(round(long * rng.uniform(*self.aspect))))
        return (long, short) if rng.random() < 0.3 else (short, long)


# Clutter presets (ToyConfig fields); "normal" is the default task. "easy" keeps the WSSS structure (shared
# bodies, discriminative heads, occlusion) with less clutter and bigger heads, for very short CPU trainings.
# (Whole datasets that differ from the demo's in ways that matter are PRESETS, below.)
DIFFICULTY = {
    "easy": {"distractors": (0, 2), "headless_prob": 0.0, "occluder_prob": 0.1, "head_ratio": (0.45, 0.55)},
    "normal": {},
    "hard": {"distractors": (3, 7), "headless_prob": 0.3, "occluder_prob": 0.5, "head_ratio": (0.32, 0.4),
             "min_scale": 0.12},
}


#: Datasets that differ from the demo's in ways that matter for WSSS (make_toy_voc --preset NAME; any explicit flag
#: overrides): where the class cue sits, image sizes and aspect ratios, number of classes, clutter. ``demo`` is the
#: embedded default's own.
PRESETS = {
    "demo": {"num_classes": 6, "image_size": "128x96", "difficulty": "easy"},
    "small_part": {"num_classes": 6, "difficulty": "normal", "head_ratio": (0.26, 0.32), "long_side": (96, 192),
                   "aspect": (0.6, 0.9)},
    "whole_object": {"num_classes": 8, "image_size": "128x96", "difficulty": "normal", "cue": "whole"},
    "varied_sizes": {"num_classes": 6, "difficulty": "easy", "long_side": (96, 256), "aspect": (0.5, 1.0)},
    "many_classes": {"num_classes": 12, "image_size": "160x120", "difficulty": "hard"},
}


# --------------------------------------------------------------------------------------------- drawing helpers


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1] with features about ``cell`` pixels wide (bicubic upsampling of a random grid)."""
    gh, gw = max(2, int(math.ceil(h / cell)) + 1), max(2, int(math.ceil(w / cell)) + 1)
    grid = rng.random((gh, gw), dtype=np.float32)
    up = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / max(hi - lo, 1e-6)


def _radial_polygon(kind: str, rng: np.random.Generator, n: int = 72) -> np.ndarray:
    """Unit-radius outline ``(n, 2)`` of a star-convex shape, as (x, y) in the shape's own frame."""
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(th), np.sin(th)

    def ngon(k: int, rot: float = -np.pi / 2) -> np.ndarray:
        a = np.mod(th - rot, 2 * np.pi / k) - np.pi / k
        return np.cos(np.pi / k) / np.cos(a)

    if kind in ("ellipse", "circle", "capsule"):
        r = np.ones_like(th)
        if kind == "capsule":
            p = 3.0
            r = (np.abs(c) ** p + np.abs(s) ** p) ** (-1 / p)
    elif kind in ("roundrect", "square"):
        p = 4.0 if kind == "roundrect" else 12.0
        r = (np.abs(c) ** p + np.abs(s) ** p) ** (-1 / p)
    elif kind == "diamond":
        r = 1.0 / (np.abs(c) + np.abs(s))
    elif kind == "triangle":
        r = ngon(3)
    elif kind == "pentagon":
        r = ngon(5)
    elif kind == "hexagon":
        r = ngon(6, 0.0)
    elif kind == "star":
        a = np.mod(th + np.pi / 2, 2 * np.pi / 5) / (2 * np.pi / 5)  # 0..1 within one spike period
        r = 0.45 + 0.55 * np.abs(1 - 2 * a) ** 1.3
    elif kind == "blob":
        r = np.ones_like(th)
    else:
        raise ValueError(kind)
    if kind in ("blob", "ellipse", "roundrect", "capsule", "triangle", "pentagon"):
        # organic wobble: a few low harmonics (stronger for blobs), keeps each instance slightly different
        amp = 0.16 if kind == "blob" else 0.05
        for k in (2, 3, 4):
            r = r * (1 + amp / k * rng.uniform(-1, 1) * np.cos(k * th + rng.uniform(0, 2 * np.pi)))
    if kind == "triangle":  # round the corners a little
        r = np.minimum(r, 1.35)
    r = r / r.max()
    return np.stack([r * c, r * s], 1)


def _place(unit: np.ndarray, cx: float, cy: float, rx: float, ry: float, rot: float) -> np.ndarray:
    """Scale ``unit`` by (rx, ry), rotate by ``rot`` and move to (cx, cy); returns image (x, y) points."""
    x, y = unit[:, 0] * rx, unit[:, 1] * ry
    cr, sr = math.cos(rot), math.sin(rot)
    return np.stack([cx + x * cr - y * sr, cy + x * sr + y * cr], 1)


Window = Tuple[slice, slice]


def _window(polys: Sequence[np.ndarray], h: int, w: int, pad: int = 2) -> Window:
    """The image window (row slice, column slice) holding ``polys``, clipped to the image (may be empty)."""
    allp = np.concatenate(polys, 0)
    lo, hi = allp.min(0), allp.max(0)
    x0, x1 = (min(max(int(v), 0), w) for v in (math.floor(lo[0]) - pad, math.ceil(hi[0]) + pad))
    y0, y1 = (min(max(int(v), 0), h) for v in (math.floor(lo[1]) - pad, math.ceil(hi[1]) + pad))
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _raster(poly: np.ndarray, win: Window) -> np.ndarray:
    """Coverage in [0, 1] (float32, window-sized) of a polygon in image pixel coordinates (pixel (0,0) spans
    [0, 1)), rasterised with ``_SS``x supersampling so image edges are anti-aliased and masks exact."""
    h, w = win[0].stop - win[0].start, win[1].stop - win[1].start
    if h == 0 or w == 0:
        return np.zeros((h, w), np.float32)
    big = np.zeros((h * _SS, w * _SS), np.uint8)
    pts = np.round((poly - [win[1].start, win[0].start]) * _SS * 16).astype(np.int32)  # 4 fractional bits
    cv2.fillPoly(big, [pts], 255, lineType=cv2.LINE_8, shift=4)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _local(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rot: float) -> Tuple[np.ndarray, np.ndarray]:
    """Image coordinates -> the object's rotated frame (pixels)."""
    dx, dy = xx - cx, yy - cy
    cr, sr = math.cos(rot), math.sin(rot)
    return dx * cr + dy * sr, -dx * sr + dy * cr


def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """A fill pattern in [0, 1] evaluated in object coordinates (it moves and rotates with the object)."""
    p = period
    if kind == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * u / p)
    if kind == "dots":
        du, dv = np.mod(u, p) - p / 2, np.mod(v + 0.5 * p * (np.floor(u / p) % 2), p) - p / 2
        return (np.hypot(du, dv) < 0.32 * p).astype(np.float32)
    if kind == "checker":
        return (np.mod(np.floor(u / p) + np.floor(v / p), 2)).astype(np.float32)
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(2 * np.pi * (v + 0.35 * p * np.sin(2 * np.pi * u / (1.6 * p))) / p)
    if kind == "mottled":
        h, w = u.shape
        return _smooth_noise(rng, h, w, max(2.0, 0.45 * p)) > 0.5
    if kind == "zigzag":
        return (np.mod((v + np.abs(np.mod(u, p) - p / 2)) / p, 1.0) < 0.5).astype(np.float32)
    raise ValueError(kind)


def _head_pattern(kind: str, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """The head's class-specific two-colour pattern in [0, 1] (head coordinates, head radius ``r``)."""
    rho = np.hypot(a, b)
    if kind == "rings":
        return (np.mod(rho / (0.42 * r), 1.0) > 0.5).astype(np.float32)
    if kind == "cross":
        return ((np.abs(a) < 0.2 * r) | (np.abs(b) < 0.2 * r)).astype(np.float32)
    if kind == "dot":
        return (rho < 0.42 * r).astype(np.float32)
    if kind == "split":
        return (a > 0).astype(np.float32)
    if kind == "quad":
        return ((a > 0) ^ (b > 0)).astype(np.float32)
    if kind == "bar":
        return (np.abs(b) < 0.25 * r).astype(np.float32)
    raise ValueError(kind)


def _blend(canvas: np.ndarray, fill: np.ndarray, alpha: np.ndarray) -> None:
    """``canvas = canvas * (1 - alpha) + fill * alpha`` in place (``fill`` HxWx3 or a colour)."""
    a = alpha[..., None]
    canvas *= 1 - a
    canvas += a * fill


def _mix(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, np.float32)[..., None]
    return c1 * (1 - t) + c2 * t


# --------------------------------------------------------------------------------------------- scene parts


def _background(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A textured / cluttered background: smooth noise, stripes, patchy regions or a gradient scene."""
    h, w = xx.shape
    h0 = rng.random()
    cols = [_hsv(h0 + rng.uniform(-0.25, 0.25), rng.uniform(0.05, 0.55), rng.uniform(0.25, 0.9)) for _ in range(6)]
    kind = int(rng.integers(4))
    side = min(h, w)
    if kind == 0:  # smooth noise in two colours
        img = _mix(cols[0], cols[1], _smooth_noise(rng, h, w, rng.uniform(0.15, 0.4) * side))
    elif kind == 1:  # low-contrast stripes
        th = rng.uniform(0, np.pi)
        per = rng.uniform(0.06, 0.2) * side
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / per)
        img = _mix(cols[0], cols[1], 0.25 + 0.5 * t)
        img = _mix(img, cols[2][None, None], 0.5 * _smooth_noise(rng, h, w, 0.3 * side))
    elif kind == 2:  # patchy regions (Voronoi cells), like a cluttered scene
        k = int(rng.integers(3, 8))
        sx, sy = rng.uniform(0, w, k), rng.uniform(0, h, k)
        d = (xx[None] - sx[:, None, None]) ** 2 + (yy[None] - sy[:, None, None]) ** 2
        lab = np.argmin(d, 0)
        img = np.stack([cols[i % len(cols)] for i in range(k)])[lab]
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.2)
    else:  # gradient "sky / ground" with a textured lower part
        horizon = rng.uniform(0.2, 0.8) * h
        t = np.clip((yy - horizon) / rng.uniform(2, 10) + 0.5, 0, 1)
        top = _mix(cols[0], cols[1], yy / h)
        bottom = _mix(cols[2], cols[3], _smooth_noise(rng, h, w, rng.uniform(3, 8)))
        img = top * (1 - t[..., None]) + bottom * t[..., None]
    img = img.astype(np.float32)
    img += (rng.standard_normal((h, w, 1)).astype(np.float32) * rng.uniform(2, 9))
    return img


def _distractor(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, small: bool = False
                ) -> Tuple[Window, np.ndarray, np.ndarray]:
    """A class-less shape (polygon, ellipse, bar) with a plain or mottled fill: ``(window, fill, coverage)``."""
    h, w = xx.shape
    side = min(h, w)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    rot = rng.uniform(0, 2 * np.pi)
    kind = int(rng.integers(4))
    if kind == 0:  # bar / pole
        length = rng.uniform(0.3, 0.9) * side
        unit = _radial_polygon("square", rng)
        poly = _place(unit, cx, cy, length / 2, rng.uniform(1.0, 2.8), rot)
    else:
        r = rng.uniform(0.05, 0.12 if small else 0.2) * side
        if kind == 1:
            unit = _radial_polygon("ellipse", rng)
        elif kind == 2:  # random irregular polygon
            n = int(rng.integers(3, 8))
            th = np.sort(rng.uniform(0, 2 * np.pi, n))
            rr = rng.uniform(0.5, 1.0, n)
            unit = np.stack([rr * np.cos(th), rr * np.sin(th)], 1)
        else:
            unit = _radial_polygon("blob", rng)
        poly = _place(unit, cx, cy, r, r * rng.uniform(0.4, 1.0), rot)
    win = _window([poly], h, w)
    cov = _raster(poly, win)
    c1 = _hsv(rng.random(), rng.uniform(0.05, 0.6), rng.uniform(0.15, 0.9))
    if rng.random() < 0.5 or cov.size == 0:
        fill = c1
    else:
        c2 = c1 * rng.uniform(0.6, 1.3)
        fill = _mix(c1, c2, _smooth_noise(rng, cov.shape[0], cov.shape[1], rng.uniform(2, 6)))
    return win, fill, cov


@dataclass
class _Obj:
    cls: int  # foreground index (0-based)
    win: Window  # image window of the arrays below
    body: np.ndarray  # coverage of the body
    head: np.ndarray  # coverage of the head (zeros for head-less distractor bodies)
    fill: np.ndarray  # colours of body + head (window x 3)
    area: float  # full (untruncated) polygon area in pixels of body + head, approximately
    truncated: bool

    @property
    def cov(self) -> np.ndarray:
        return np.maximum(self.body, self.head)

    def full(self, part: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
        """A window-sized coverage as a full-image boolean mask (coverage >= 0.5)."""
        out = np.zeros(shape, bool)
        out[self.win] = part >= 0.5
        return out


def _make_object(rng: np.random.Generator, design: ClassDesign, cls: int, xx: np.ndarray, yy: np.ndarray,
                 cfg: ToyConfig, with_head: bool = True) -> _Obj:
    """Render one object (body + head) at a random pose, scale and position."""
    h, w = xx.shape
    side = min(h, w)
    size = rng.uniform(cfg.min_scale, cfg.max_scale) * side  # longer extent of the body
    aspect = rng.uniform(0.35, 0.55) if design.body_kind == "capsule" else rng.uniform(0.6, 1.0)
    rx, ry = size / 2, size / 2 * aspect
    rot = rng.uniform(0, 2 * np.pi)
    # centres keep most of the object inside; objects near the border are truncated now and then
    mx, my = min(0.2 * size, w / 2), min(0.2 * size, h / 2)
    cx, cy = rng.uniform(mx, w - mx), rng.uniform(my, h - my)
    unit = _radial_polygon(design.body_kind, rng)
    body_poly = _place(unit, cx, cy, rx, ry, rot)
    polys = [body_poly]
    if with_head:  # the head sits on the body outline at a random angle, protruding a little
        hr = max(4.0, rng.uniform(*cfg.head_ratio) * size / 2)
        k = int(rng.integers(len(unit)))
        ex, ey = unit[k, 0] * rx, unit[k, 1] * ry  # contour point in the body frame
        norm = math.hypot(ex, ey) + 1e-6
        scale = (norm + 0.3 * hr) / norm
        hcx = cx + (ex * scale) * math.cos(rot) - (ey * scale) * math.sin(rot)
        hcy = cy + (ex * scale) * math.sin(rot) + (ey * scale) * math.cos(rot)
        hrot = rng.uniform(0, 2 * np.pi)
        polys.append(_place(_radial_polygon(design.head_shape, rng), hcx, hcy, hr, hr, hrot))
    win = _window(polys, h, w)
    xs, ys = xx[win], yy[win]
    body = _raster(body_poly, win)

    # body fill: group-shared texture + colour (jittered), mild shading -> coherent, affinity-friendly
    bh, bs, _ = design.body_hsv
    c1 = _hsv(bh + rng.uniform(-0.025, 0.025), bs + rng.uniform(-0.1, 0.1), rng.uniform(0.5, 0.85))
    c2 = c1 * rng.uniform(0.62, 0.75)
    u, v = _local(xs, ys, cx, cy, rot)
    period = float(np.clip(0.3 * size, 3.2, 9.0))
    fill = _mix(c1, c2, _texture(design.body_texture, u, v, period, rng))
    shade_dir = rng.uniform(0, 2 * np.pi)
    shade = 1 + 0.12 * ((u * np.cos(shade_dir) + v * np.sin(shade_dir)) / max(rx, 1.0))
    fill *= shade[..., None]
    area = float(abs(cv2.contourArea(body_poly.astype(np.float32))))

    head = np.zeros_like(body)
    if with_head:
        head = _raster(polys[1], win)
        a, b = _local(xs, ys, hcx, hcy, hrot)
        hc1 = np.array(design.head_rgb, np.float32) * rng.uniform(0.9, 1.05)
        hc2 = np.array(design.head_rgb2, np.float32)
        _blend(fill, _mix(hc1, hc2, _head_pattern(design.head_pattern, a, b, hr)), head)
        area += float(abs(cv2.contourArea(polys[1].astype(np.float32)))) * 0.75  # ~ part outside the body
    allp = np.concatenate(polys, 0)
    truncated = bool(allp[:, 0].min() < 0 or allp[:, 1].min() < 0 or allp[:, 0].max() > w or allp[:, 1].max() > h)
    return _Obj(cls, win, body, head, fill.astype(np.float32), max(area, 1.0), truncated)


# --------------------------------------------------------------------------------------------- one sample


@dataclass
class ToySample:
    """One generated image with its ground truth.

    ``mask``: VOC label map (0 background, ``1..C`` classes, 255 ignore band). ``labels``: the same without the
    band. ``parts``: visible discriminative heads = 2, bodies = 1, else 0. ``decoy``: the visible pixels of the
    head-less body (background by definition: a decoy for any network that names a class by its body), as the class
    index of the design it was drawn from; 0 elsewhere and in images without one. ``instances``: visible object ids.
    ``objects``: one dict per annotated object, back to front (class index with background, instance id,
    1-based VOC bndbox of the visible pixels, truncated, occluded, visible fraction, visible head pixels).
    """

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    parts: np.ndarray
    instances: np.ndarray
    objects: List[Dict] = field(default_factory=list)
    jpeg_quality: int = 90
    decoy: Optional[np.ndarray] = None


def _sample_classes(rng: np.random.Generator, cfg: ToyConfig) -> List[int]:
    """1..max_objects foreground class indices, mostly distinct, occasionally one class twice."""
    probs = np.array([0.35, 0.3, 0.2, 0.15] + [0.1] * max(0, cfg.max_objects - 4))[:cfg.max_objects]
    n = int(rng.choice(len(probs), p=probs / probs.sum())) + 1
    distinct = min(n, cfg.num_classes)
    classes = list(rng.choice(cfg.num_classes, size=distinct, replace=False))
    while len(classes) < n:
        classes.append(int(rng.choice(classes)))
    if n >= 2 and distinct == n and rng.random() < 0.12:  # the same class twice
        classes[-1] = classes[0]
    return [int(c) for c in classes]


def render_sample(index: int, cfg: ToyConfig) -> ToySample:
    """Generate image ``index`` of the dataset ``cfg`` (deterministic in ``(cfg.seed, index)``)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(index), GENERATOR_VERSION]))
    designs = class_designs(cfg.num_classes, cfg.cue)
    h, w = cfg.image_size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    canvas = _background(rng, xx, yy)

    # back distractors (class-less clutter) and, sometimes, a head-less body (background by definition)
    for _ in range(int(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1))):
        win, fill, cov = _distractor(rng, xx, yy)
        _blend(canvas[win], fill, cov)
    decoy = None                              # (class index of its design, its body as drawn)
    if rng.random() < cfg.headless_prob:
        design = int(rng.integers(cfg.num_classes))
        ob = _make_object(rng, designs[design], -1, xx, yy, cfg, with_head=False)
        _blend(canvas[ob.win], ob.fill, ob.body)
        decoy = (design + 1, ob.full(ob.body, (h, w)))

    # objects, back to front; re-draw a pose until every object stays clearly visible with its head
    objs: List[_Obj] = []
    hard: List[np.ndarray] = []  # each object's in-image mask (body + head)
    vis: List[np.ndarray] = []  # ... minus what later objects hide
    head_full: List[int] = []
    head_vis: List[np.ndarray] = []
    for cls in _sample_classes(rng, cfg):
        for _ in range(25):
            ob = _make_object(rng, designs[cls], cls, xx, yy, cfg)
            m = ob.full(ob.cov, (h, w))
            mh = ob.full(ob.head, (h, w))
            if m.sum() < 0.5 * ob.area or mh.sum() < 12:
                continue  # mostly outside the image, or the head is cut off
            if all((v & ~m).sum() >= 0.35 * pm.sum() and (hv & ~m).sum() >= 0.5 * hf
                   for v, pm, hv, hf in zip(vis, hard, head_vis, head_full)):
                break  # every earlier object keeps >= 35 % of its area and half of its head
        else:
            continue
        for j in range(len(objs)):
            vis[j] = vis[j] & ~m
            head_vis[j] = head_vis[j] & ~m
        objs.append(ob)
        hard.append(m)
        vis.append(m.copy())
        head_full.append(int(mh.sum()))
        head_vis.append(mh)
        _blend(canvas[ob.win], ob.fill, ob.cov)

    # front occluder (e.g. a pole) -> background label over the objects it hides
    occluder = None
    if rng.random() < cfg.occluder_prob:
        win, fill, cov = _distractor(rng, xx, yy, small=True)
        occluder = np.zeros((h, w), bool)
        occluder[win] = cov >= 0.5
        _blend(canvas[win], fill, cov)

    # label maps in depth order
    labels = np.zeros((h, w), np.uint8)
    inst = np.zeros((h, w), np.uint8)
    parts = np.zeros((h, w), np.uint8)
    for k, (ob, m) in enumerate(zip(objs, hard)):
        labels[m] = ob.cls + 1
        inst[m] = k + 1
        parts[m] = 1
        parts[ob.full(ob.head, (h, w))] = 2
    if occluder is not None:
        labels[occluder] = 0
        inst[occluder] = 0
        parts[occluder] = 0
    decoy_map = np.zeros((h, w), np.uint8)
    if decoy is not None:                     # what the objects and the occluder drawn over it leave visible
        visible = decoy[1] & (inst == 0)
        if occluder is not None:
            visible &= ~occluder
        decoy_map[visible] = decoy[0]

    # the VOC ignore band: a few pixels around every object outline (object/background and object/object)
    mask = labels.copy()
    if cfg.ignore_width > 0:
        ker = np.ones((cfg.ignore_width + 1, cfg.ignore_width + 1), np.uint8)
        band = cv2.dilate(inst, ker) != cv2.erode(inst, ker)
        mask[band] = 255

    objects = []
    for k, (ob, m) in enumerate(zip(objs, hard)):
        vis = inst == k + 1
        if ((mask != 255) & vis).sum() < 4:  # a sliver lost in the band: void, like VOC's unlabelled bits
            mask[vis], labels[vis], parts[vis], inst[vis] = 255, 0, 0, 0
            continue
        ys, xs = np.nonzero(vis)
        in_img = int(m.sum())
        objects.append({
            "class_index": ob.cls + 1,
            "instance": k + 1,
            "bndbox": (int(xs.min()) + 1, int(ys.min()) + 1, int(xs.max()) + 1, int(ys.max()) + 1),
            "truncated": int(ob.truncated),
            "occluded": int(vis.sum() < 0.97 * in_img),
            "visible_fraction": float(vis.sum()) / float(in_img),
            "head_pixels": int(((parts == 2) & vis).sum()),
        })

    # camera: colour jitter, blur, sensor noise (JPEG compression is applied when saving)
    gain = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    contrast = rng.uniform(0.85, 1.15)
    bright = rng.uniform(-12, 12)
    mean = canvas.mean()
    img = (canvas - mean) * contrast + mean + bright
    img = img * gain
    sigma = rng.uniform(0.0, 0.8)
    if sigma > 0.35:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(1.5, 5.0)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)
    q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    return ToySample(image, mask, labels, parts, inst, objects, q, decoy_map)


# --------------------------------------------------------------------------------------------- VOC files


def annotation_xml(image_id: str, width: int, height: int, objects: Sequence[Dict],
                   class_names: Sequence[str]) -> str:
    """A PASCAL VOC annotation (``<annotation>`` with filename, size, segmented and one ``<object>`` each)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "ToyVOC"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "wseg synthetic toy VOC"
    ET.SubElement(src, "annotation").text = "wseg.data.synthetic"
    ET.SubElement(src, "image").text = "synthetic"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "1"
    for o in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = class_names[o["class_index"]]
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(o["truncated"])
        ET.SubElement(el, "occluded").text = str(o["occluded"])
        ET.SubElement(el, "difficult").text = "0"
        box = ET.SubElement(el, "bndbox")
        for key, val in zip(("xmin", "ymin", "xmax", "ymax"), o["bndbox"]):
            ET.SubElement(box, key).text = str(val)
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="unicode") + "\n"


def image_id(index: int, prefix: str = "toy") -> str:
    """``toy_000001``-style id of image ``index``."""
    return f"{prefix}_{index:06d}"


def read_config(root: str) -> ToyConfig:
    """The generator settings a toy VOC root was made with (its ``toy_voc.json``; fields missing from an older file
    count as their defaults), so a diagnostic can re-render what it holds (:func:`render_sample` is a pure function
    of the index and these settings)."""
    path = os.path.join(root, CONFIG_JSON)
    try:
        with open(path) as f:
            have = json.load(f)
        fields = {**_as_json(ToyConfig()), **have}
        cfg = ToyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}).validate()
    except (OSError, ValueError, TypeError) as exc:
        raise WsegError(f"{path}: not a toy VOC root's generator settings ({exc}); pass a root made by "
                        "scripts/make_toy_voc.py") from None
    if cfg.version != GENERATOR_VERSION:
        raise WsegError(f"{path}: made by generator version {cfg.version}, this code draws version "
                        f"{GENERATOR_VERSION}; regenerate the root to re-render its images")
    return cfg


def image_index(iid: str) -> int:
    """The generator index of a ``<prefix>_000001``-style id (:func:`image_id`)."""
    try:
        return int(iid.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        raise WsegError(f"image id {iid!r}: not a toy VOC id (<prefix>_<number>)") from None


def _paths(root: str, iid: str) -> Tuple[str, str, str]:
    return (os.path.join(root, "JPEGImages", iid + ".jpg"), os.path.join(root, "Annotations", iid + ".xml"),
            os.path.join(root, "SegmentationClass", iid + ".png"))


def _write_one(index: int, root: str, cfg: ToyConfig, prefix: str) -> Optional[Dict]:
    """Generate and write image ``index`` unless its three files exist; returns its statistics or None."""
    iid = image_id(index, prefix)
    jpg, xml, png = _paths(root, iid)
    if is_done(jpg) and is_done(xml) and is_done(png):
        return None
    s = render_sample(index, cfg)
    names = toy_class_names(cfg.num_classes)
    save_image(jpg, s.image, quality=s.jpeg_quality)
    save_mask_png(png, s.mask)
    atomic_write_text(xml, annotation_xml(iid, s.image.shape[1], s.image.shape[0], s.objects, names))  # last: done
    classes = {o["class_index"] for o in s.objects}
    return {"objects": len(s.objects), "classes": len(classes), "occluded": any(o["occluded"] for o in s.objects),
            "repeat": len(classes) < len(s.objects)}


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


def _write_if_changed(path: str, text: str) -> None:
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    atomic_write_text(path, text)


def _as_json(cfg: ToyConfig) -> Dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def _check_config(root: str, cfg: ToyConfig) -> None:
    """Refuse to mix images of another generator configuration into an existing root (resume safety).

    Fields missing from an older ``toy_voc.json`` count as their defaults (the behaviour before they existed).
    """
    path = os.path.join(root, CONFIG_JSON)
    want = _as_json(cfg)
    if os.path.isfile(path):
        try:
            with open(path) as f:
                have = json.load(f)
        except (OSError, ValueError):
            have = None
        if not isinstance(have, dict):
            raise WsegError(f"{path}: unreadable generator settings; delete the folder to regenerate it")
        have = {**_as_json(ToyConfig()), **have}
        diff = ", ".join(f"{k}: {have.get(k)} -> {v}" for k, v in want.items() if have.get(k) != v)
        if diff:
            raise WsegError(f"{path}: this root was generated with other settings ({diff}); use another --out "
                            "or delete the folder to regenerate")
    elif os.path.isdir(os.path.join(root, "JPEGImages")) and os.listdir(os.path.join(root, "JPEGImages")):
        raise WsegError(f"{root}: holds images but no {CONFIG_JSON}, so it is not a toy VOC root (a real dataset?); "
                        "pass an empty or new folder as --out")
    _write_if_changed(path, json.dumps(want, indent=1, sort_keys=True) + "\n")


def make_toy_voc(root: str, num_train: int = 240, num_val: int = 60, num_classes: int = 6,
                 image_size: Union[str, int, Sequence[int], None] = None, seed: int = 0, workers: int = 1,
                 prefix: str = "toy", difficulty: str = "normal", log=None, **options) -> Dict:
    """Write a synthetic VOC-format dataset to ``root`` and return a summary dict.

    ``num_classes`` counts foreground classes (``classes.txt`` gets ``background`` + ``class01..``);
    ``image_size`` is ``W``, ``"WxH"`` or ``(W, H)`` (default 128x96). Ids ``<prefix>_000001..`` are train, the
    next ``num_val`` are val. Re-running skips complete images; ``workers > 1`` uses a process pool with
    identical output. ``difficulty`` picks a clutter preset (:data:`DIFFICULTY`); extra ``options`` are
    :class:`ToyConfig` fields (``max_objects``, ``ignore_width``, ...) and override the preset.
    """
    from wseg.data.classes import write_classes_txt
    from wseg.data.voc import write_cls_labels

    if num_train < 1 or num_val < 0 or num_train + num_val > 10 ** 6:
        raise WsegError(f"--num_train {num_train} --num_val {num_val}: need at least one train image, no negative "
                        "count, and at most a million images")
    if difficulty not in DIFFICULTY:
        raise WsegError(f"--difficulty {difficulty!r}: choose one of {', '.join(DIFFICULTY)}")
    unknown = set(options) - set(ToyConfig.__dataclass_fields__) - {"version"}
    if unknown:
        raise WsegError(f"make_toy_voc: unknown option(s) {sorted(unknown)}; see wseg.data.synthetic.ToyConfig")
    options = {**DIFFICULTY[difficulty], **options}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    w, h = parse_size(image_size)
    cfg = ToyConfig(num_classes=int(num_classes), width=w, height=h, seed=int(seed), **options).validate()
    os.makedirs(root, exist_ok=True)
    _check_config(root, cfg)
    names = toy_class_names(cfg.num_classes)
    write_classes_txt(root, names)

    indices = list(range(1, num_train + num_val + 1))
    t0 = time.perf_counter()
    job = partial(_write_one, root=root, cfg=cfg, prefix=prefix)
    workers = max(1, min(int(workers), len(indices)))
    if workers > 1:
        # "spawn": children inherit no threads or locks from the caller (torch, OpenCV pools)
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            stats = list(pool.imap(job, indices, chunksize=max(1, len(indices) // (workers * 8))))
    else:
        stats = []
        for k, i in enumerate(indices):
            stats.append(job(i))
            if log and (k + 1) % 200 == 0:
                log(f"toy VOC: {k + 1}/{len(indices)} images")
    seconds = time.perf_counter() - t0

    ids = [image_id(i, prefix) for i in indices]
    train, val = ids[:num_train], ids[num_train:]
    split_dir = os.path.join(root, SPLIT_DIR)
    os.makedirs(split_dir, exist_ok=True)
    for name, lst in (("train", train), ("val", val), ("trainval", ids)):
        _write_if_changed(os.path.join(split_dir, name + ".txt"), "".join(f"{i}\n" for i in lst))
    write_cls_labels(root, ids=ids)

    made = [s for s in stats if s is not None]
    n = max(len(made), 1)
    return {
        "root": root, "num_train": num_train, "num_val": num_val, "num_classes": cfg.num_classes,
        "class_names": names, "size": (w, h), "seed": cfg.seed, "generated": len(made),
        "skipped": len(stats) - len(made), "seconds": round(seconds, 3),
        "images_per_s": round(len(made) / seconds, 1) if made and seconds > 0 else None,
        "mean_objects": round(sum(s["objects"] for s in made) / n, 3),
        "multi_class_fraction": round(sum(s["classes"] > 1 for s in made) / n, 3),
        "occluded_fraction": round(sum(s["occluded"] for s in made) / n, 3),
        "repeat_class_fraction": round(sum(s["repeat"] for s in made) / n, 3),
    }


# --------------------------------------------------------------------------------------------- preview


def save_preview(root: str, out_png: str, n: int = 8, ids: Optional[Sequence[str]] = None, scale: int = 2,
                 columns: int = 2) -> str:
    """Write a grid of ``image | mask colours | overlay`` triplets for ``n`` images of a VOC-format root."""
    from wseg.data.voc import read_list

    if ids is None:
        lst = os.path.join(root, SPLIT_DIR, "trainval.txt")
        ids = read_list(lst) if os.path.isfile(lst) else sorted(
            os.path.splitext(f)[0] for f in os.listdir(os.path.join(root, "SegmentationClass")))
    ids = list(ids)[:n]
    if not ids:
        raise WsegError(f"{root}: no images to preview")
    gap = 4
    tiles = []
    for iid in ids:
        img = load_image(os.path.join(root, "JPEGImages", iid + ".jpg"))
        mask = load_mask_png(os.path.join(root, "SegmentationClass", iid + ".png"))
        over = overlay_mask(img, mask, 0.5)
        over[mask == 255] = 255
        panels = [img, colorize_mask(mask), over]
        hh, ww = img.shape[:2]
        panels = [cv2.resize(p, (ww * scale, hh * scale), interpolation=cv2.INTER_NEAREST) for p in panels]
        row = np.full((hh * scale, 3 * ww * scale + 2 * gap, 3), 255, np.uint8)
        for k, p in enumerate(panels):
            row[:, k * (ww * scale + gap):k * (ww * scale + gap) + ww * scale] = p
        tiles.append(row)
    th, tw = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)   # images may differ in size
    tiles = [np.pad(t, ((0, th - t.shape[0]), (0, tw - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    columns = max(1, min(columns, len(tiles)))
    rows = int(math.ceil(len(tiles) / columns))
    grid = np.full((rows * (th + 2 * gap), columns * (tw + 4 * gap), 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[r * (th + 2 * gap):r * (th + 2 * gap) + th, c * (tw + 4 * gap):c * (tw + 4 * gap) + tw] = t
    save_image(out_png, grid)
    return out_png
