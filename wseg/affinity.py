"""AffinityNet pairs and labels (Ahn & Kwak, CVPR 2018, "Learning Pixel-level Semantic Affinity").

AffinityNet predicts a semantic affinity ``a_ij = exp(-||f_i - f_j||_1 / D)`` for every pair of feature-map
positions closer than ``radius`` (published: 5, at 1/8 of the image resolution). Each unordered pair is listed once:
the offsets form a half disc (``(0, dx)`` for ``dx > 0`` and ``(dy, dx)`` for ``dy > 0``), and only "source" pixels
whose whole half disc lies inside the map are used (published ``get_indices_of_pairs``: the last ``radius - 1`` rows
and the first/last ``radius - 1`` columns are cropped off as sources).

Pair order everywhere is offset-major: ``[pairs of offset 0 over all sources, pairs of offset 1, ...]``, i.e. the
flat ``(K, M)`` layout of the network output, ``K`` offsets x ``M`` sources.

Affinity labels come from a label map at feature resolution (0 = background, 1.. = classes, 255 = ignore):
background-positive (both 0), foreground-positive (same non-zero class) and negative (different labels) pairs, pairs
touching 255 ignored (published ``ExtractAffinityLabelInRadius``). The label map is built from two dCRF-refined CAM
maps: low alpha ``la`` (background over-estimated, so its foreground is confident) and high alpha ``ha`` (background
under-estimated, so its background is confident); the rest is 255 (published ``VOC12AffDataset``).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from wseg.data.classes import IGNORE
from wseg.errors import WsegError

DEFAULT_RADIUS = 5  # published train and inference radius (at 1/8 resolution)

ArrayLike = Union[np.ndarray, torch.Tensor]


# --------------------------------------------------------------------------------------------- pairs


def search_offsets(radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """The published half disc of offsets ``(dy, dx)``, ``(K, 2)`` int64, in the published order.

    ``(0, 1) .. (0, r-1)`` first, then rows ``dy = 1 .. r-1`` with ``dx = -(r-1) .. r-1`` and ``dy^2 + dx^2 < r^2``.
    ``radius=5`` gives ``K = 34``.
    """
    if int(radius) < 2:
        raise WsegError(f"affinity radius {radius}: must be at least 2 (published 5)")
    r = int(radius)
    dy, dx = np.meshgrid(np.arange(0, r), np.arange(-r + 1, r), indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)
    keep = ((dy == 0) & (dx > 0)) | ((dy > 0) & (dy * dy + dx * dx < r * r))
    return np.stack([dy[keep], dx[keep]], 1).astype(np.int64)


def _check_size(radius: int, height: int, width: int) -> None:
    rf = int(radius) - 1
    if height - rf <= 0 or width - 2 * rf <= 0:
        raise WsegError(f"feature map {height}x{width}: too small for affinity radius {radius} (needs at least "
                        f"{rf + 1} rows and {2 * rf + 1} columns); use larger images/crops or a smaller radius")


def get_indices_of_pairs(radius: int, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Published ``get_indices_of_pairs(radius, size)``: flat pixel indices of the pairs within ``radius``.

    Returns ``indices_from`` (``(M,)`` int64: the sources, rows ``0 .. H-r`` and columns ``r-1 .. W-r`` of the
    ``size = (H, W)`` map, row-major) and ``indices_to`` (``(K * M,)`` int64: for each offset in
    :func:`search_offsets` order, ``source + dy * W + dx``).
    """
    height, width = int(size[0]), int(size[1])
    _check_size(radius, height, width)
    rf = int(radius) - 1
    rows = np.arange(0, height - rf, dtype=np.int64)
    cols = np.arange(rf, width - rf, dtype=np.int64)
    indices_from = (rows[:, None] * width + cols[None, :]).reshape(-1)
    offs = search_offsets(radius)
    shift = offs[:, 0] * width + offs[:, 1]
    indices_to = (indices_from[None, :] + shift[:, None]).reshape(-1)
    return indices_from, indices_to


def get_indices_in_radius(height: int, width: int, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Published ``infer_aff.get_indices_in_radius``: the pairs as a ``(K * M, 2)`` int64 array of (from, to)."""
    ind_from, ind_to = get_indices_of_pairs(radius, (height, width))
    return np.stack([np.tile(ind_from, len(ind_to) // max(len(ind_from), 1)), ind_to], 1)


def pair_indices(height: int, width: int, radius: int = DEFAULT_RADIUS,
                 device: Optional[Union[str, torch.device]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`get_indices_of_pairs` as torch int64 tensors on ``device``: ``(M,)`` sources and ``(K * M,)`` targets."""
    ind_from, ind_to = get_indices_of_pairs(radius, (height, width))
    return torch.from_numpy(ind_from).to(device), torch.from_numpy(ind_to).to(device)


def num_pairs(height: int, width: int, radius: int = DEFAULT_RADIUS) -> Tuple[int, int]:
    """``(K, M)``: number of offsets and of source pixels for a ``height x width`` feature map."""
    _check_size(radius, height, width)
    rf = int(radius) - 1
    return len(search_offsets(radius)), (height - rf) * (width - 2 * rf)


# --------------------------------------------------------------------------------------------- labels


def extract_affinity_labels(label: ArrayLike, radius: int = DEFAULT_RADIUS
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Affinity labels of all pairs within ``radius`` (published ``ExtractAffinityLabelInRadius``).

    ``label``: ``(H, W)`` or ``(B, H, W)`` integer label map at feature resolution (numpy or torch; 0 = background,
    255 = ignore). Returns float32 tensors ``(bg_pos, fg_pos, neg)``, each ``(K, M)`` (or ``(B, K, M)``):
    ``bg_pos`` = both ends background, ``fg_pos`` = both ends the same foreground class, ``neg`` = different
    labels; a pair with a 255 end is in none of them.
    """
    lab = torch.as_tensor(np.ascontiguousarray(label) if not isinstance(label, torch.Tensor) else label)
    if lab.ndim not in (2, 3):
        raise WsegError(f"affinity label map: expected (H, W) or (B, H, W), got shape {tuple(lab.shape)}")
    height, width = lab.shape[-2:]
    ind_from, ind_to = pair_indices(height, width, radius, device=lab.device)
    flat = lab.reshape(*lab.shape[:-2], -1).long()
    k = ind_to.numel() // max(ind_from.numel(), 1)
    lab_from = flat[..., ind_from].unsqueeze(-2)                                   # (..., 1, M)
    lab_to = flat[..., ind_to].reshape(*flat.shape[:-1], k, ind_from.numel())     # (..., K, M)
    valid = (lab_from < IGNORE) & (lab_to < IGNORE)
    same = lab_from == lab_to
    bg_pos = same & (lab_from == 0)
    fg_pos = same & (lab_from != 0) & valid
    neg = ~same & valid
    return bg_pos.float(), fg_pos.float(), neg.float()


class AffinityLabelExtractor:
    """Callable form of :func:`extract_affinity_labels` for a data pipeline (published ``cropsize // 8`` maps).

    ``size`` is the feature-map size ``(H, W)`` (or one int for a square crop); the pair indices are computed once.
    """

    def __init__(self, size: Union[int, Sequence[int]], radius: int = DEFAULT_RADIUS):
        h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
        self.radius = int(radius)
        self.size = (h, w)
        ind_from, ind_to = get_indices_of_pairs(self.radius, self.size)
        self._from = torch.from_numpy(ind_from)
        self._to = torch.from_numpy(ind_to)

    def __call__(self, label: ArrayLike) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lab = torch.as_tensor(np.ascontiguousarray(label) if not isinstance(label, torch.Tensor) else label)
        if tuple(lab.shape[-2:]) != self.size:
            raise WsegError(f"affinity label map of size {tuple(lab.shape[-2:])}: expected {self.size} "
                            "(crop size // 8); crop and downsample the label map first")
        return extract_affinity_labels(lab, self.radius)


# --------------------------------------------------------------------------------------------- la / ha labels


def confident_labels(la: Union[np.ndarray, dict], ha: Union[np.ndarray, dict], keys: Optional[Sequence[int]] = None,
                     eps: float = 1e-5) -> np.ndarray:
    """Combine low-alpha (``la``) and high-alpha (``ha``) dCRF results into AffinityNet training labels.

    Published ``VOC12AffDataset.__getitem__``::

        label = la; label[la == 0] = 255; label[ha == 0] = 0; label[no_score_region] = 255

    i.e. confident foreground where ``la`` says foreground, confident background where ``ha`` says background
    (this wins over ``la``), everything else 255. Inputs are either

    - label maps ``(H, W)`` in dataset class indices (255 = outside the image in either map -> 255), or
    - score stacks ``(C, H, W)`` (the CRF probabilities, e.g. after the published 8x8 average pooling):
      the labels are the argmax channels mapped through ``keys`` (channel -> class index; default
      ``0 .. C-1``, so ``keys[0]`` must be background 0), and pixels where every score of both stacks is below
      ``eps`` (published ``no_score_region``: padding of the random crop) become 255.

    - the published la/ha ``.npy`` dicts ``{0: bg prob, k + 1: prob}`` (same keys in both; ``keys`` from them).

    Returns a uint8 ``(H, W)`` label map.
    """
    if isinstance(la, dict) or isinstance(ha, dict):
        if not (isinstance(la, dict) and isinstance(ha, dict)) or sorted(la) != sorted(ha) or 0 not in la:
            raise WsegError("la/ha CRF dicts: both must be {class index: HxW} dicts with the same keys, including "
                            "background 0; re-run the CRF stage for this image")
        keys = sorted(int(k) for k in la)
        la = np.stack([np.asarray(la[k]) for k in keys])
        ha = np.stack([np.asarray(ha[k]) for k in keys])
    la = np.asarray(la)
    ha = np.asarray(ha)
    if la.shape != ha.shape or la.ndim not in (2, 3):
        raise WsegError(f"la/ha labels: shapes {la.shape} and {ha.shape} differ or are not (H, W) / (C, H, W); "
                        "pass both low- and high-alpha CRF results of the same image")
    if la.ndim == 3:
        keys = np.arange(la.shape[0], dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
        if keys.shape != (la.shape[0],) or keys[0] != 0:
            raise WsegError(f"la/ha score stacks: keys {keys.tolist()} must name the {la.shape[0]} channels' "
                            "classes with background (0) first")
        no_score = np.maximum(la.max(0), ha.max(0)) < eps
        la_lab = keys[np.argmax(la, 0)]
        ha_lab = keys[np.argmax(ha, 0)]
    else:
        no_score = (la == IGNORE) | (ha == IGNORE)
        la_lab, ha_lab = la.astype(np.int64), ha.astype(np.int64)
    out = la_lab.copy()
    out[la_lab == 0] = IGNORE
    out[ha_lab == 0] = 0
    out[no_score] = IGNORE
    return out.astype(np.uint8)


def pool_scores(scores: np.ndarray, stride: int = 8) -> np.ndarray:
    """Published ``AvgPool2d(8)`` of the la/ha CRF scores down to feature resolution: the mean over
    ``stride x stride`` blocks of a ``(C, H, W)`` stack; partial blocks at the bottom/right are padded with zeros
    (skimage ``block_reduce`` semantics). Returns float32 ``(C, ceil(H / stride), ceil(W / stride))``."""
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 3:
        raise WsegError(f"score stack: expected (C, H, W), got shape {s.shape}")
    c, h, w = s.shape
    hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
    if (hp, wp) != (h, w):
        s = np.pad(s, ((0, 0), (0, hp - h), (0, wp - w)))
    return s.reshape(c, hp // stride, stride, wp // stride, stride).mean((2, 4))


# --------------------------------------------------------------------------------------------- pair affinities


@functools.lru_cache(maxsize=64)
def _pairs_np(radius: int, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    return get_indices_of_pairs(radius, (height, width))


def _pairs(radius: int, height: int, width: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    ind_from, ind_to = _pairs_np(int(radius), int(height), int(width))
    return torch.from_numpy(ind_from).to(device), torch.from_numpy(ind_to).to(device)


def pair_affinities(f: torch.Tensor, radius: int = DEFAULT_RADIUS) -> torch.Tensor:
    """``exp(-mean_d |f_i - f_j|)`` for the published pairs of a ``(B, D, h, w)`` feature map -> ``(B, K, M)``.

    Computed in float32 with one gather per end (no Python loop over pixels or offsets); differentiable.
    """
    b, d, h, w = f.shape
    ind_from, ind_to = _pairs(radius, h, w, f.device)
    m = ind_from.numel()
    x = f.float().reshape(b, d, h * w)
    ff = x.index_select(2, ind_from).unsqueeze(2)                  # (B, D, 1, M)
    ft = x.index_select(2, ind_to).view(b, d, -1, m)               # (B, D, K, M)
    return torch.exp(-(ft - ff).abs().mean(1))


def border_pad(radius: int) -> Tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding that makes every position of a map a source of the published pairs."""
    rf = int(radius) - 1
    return rf, rf, 0, rf


def full_pair_affinities(f: torch.Tensor, radius: int = DEFAULT_RADIUS) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Affinities of *all* in-radius pairs of a ``(1, D, h, w)`` map, including the border pairs the published
    layout leaves out (its sources skip the last ``radius - 1`` rows and the first/last ``radius - 1`` columns, so
    e.g. the top row's corner positions get no edge at all -- a large share of a small image's map).

    The map is padded (:func:`border_pad`) with dummy positions; pairs touching one get affinity 0, so the dummies
    are isolated (only their self-loop) and the real positions see exactly their in-radius neighbours. Returns
    ``(aff (K, M'), (h', w'))`` in the published layout of the padded ``h' x w'`` map; pad the CAMs the same way
    (:func:`pad_scores`) and crop the walk's result (:func:`crop_scores`).
    """
    if f.shape[0] != 1:
        raise WsegError(f"affinity features of shape {tuple(f.shape)}: full-pair affinities take one image")
    left, right, top, bottom = border_pad(radius)
    _, d, h, w = f.shape
    fp = F.pad(f.float(), (left, right, top, bottom))
    hp, wp = h + top + bottom, w + left + right
    aff = pair_affinities(fp, radius)[0]                                     # (K, M')
    valid = torch.zeros(hp, wp, dtype=torch.bool, device=f.device)
    valid[top:top + h, left:left + w] = True
    valid = valid.reshape(-1)
    ind_from, ind_to = _pairs(radius, hp, wp, f.device)
    keep = valid[ind_to].view(aff.shape) & valid[ind_from].unsqueeze(0)
    return aff * keep, (hp, wp)


def pad_scores(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Zero-pad ``(C, h, w)`` scores like :func:`full_pair_affinities` pads the features."""
    return F.pad(scores, border_pad(radius))


def crop_scores(scores: torch.Tensor, radius: int, size: Tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_scores`: the ``(C, h, w)`` real part of padded scores (``size = (h, w)``)."""
    left, _, top, _ = border_pad(radius)
    return scores[..., top:top + int(size[0]), left:left + int(size[1])]
