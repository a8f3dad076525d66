"""Class activation maps (CAMs): multi-scale + flip inference, normalisation, CAM -> label map.

One implementation of each, shared by CAM inference, evaluation, CRF labelling and the affinity stage.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Tuple

import numpy as np
import torch


def minmax_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-map min-max normalisation over the last two dims, exactly as PPC's ``contrast_infer.py``:
    negatives clipped to 0, values within ``eps`` of the minimum set to 0, then ``(x - min - eps) / (max - min + eps)``.
    """
    cam = cam.clamp_min(0)
    mx = cam.amax(dim=(-2, -1), keepdim=True)
    mn = cam.amin(dim=(-2, -1), keepdim=True)
    cam = torch.where(cam < mn + eps, torch.zeros_like(cam), cam)
    return (cam - mn - eps) / (mx - mn + eps)


def max_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """PSA's ``infer_cls.py`` ``sum_cam / (max + eps)`` per map (SEAM's ``infer_SEAM.py`` uses min-max, as PPC)."""
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + eps)


def minmax_noclip_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """PMM's multi-crop normalisation (``pipeline/infer_multi_crop.py``:74-77): min-max per map *without* clipping
    negatives to 0 and without the ``- eps`` shift of :func:`minmax_normalize`: values within ``eps`` of the minimum
    set to 0, then ``(x - min) / (max - min + eps)`` with the minimum taken before the zeroing."""
    mx = cam.amax(dim=(-2, -1), keepdim=True)
    mn = cam.amin(dim=(-2, -1), keepdim=True)
    cam = torch.where(cam < mn + eps, torch.zeros_like(cam), cam)
    return (cam - mn) / (mx - mn + eps)


NORMALIZERS = {"minmax": minmax_normalize, "max": max_normalize, "minmax_noclip": minmax_noclip_normalize}


def multiscale_cam(cam_fn: Callable[[torch.Tensor], torch.Tensor], scale_batches: Sequence[torch.Tensor],
                   label: torch.Tensor, size: Tuple[int, int], device: torch.device, amp: bool = False,
                   norm: str = "minmax") -> torch.Tensor:
    """Sum of CAMs over scales and flips (:func:`wseg.tta.multiscale_flip`), upsampled to ``size`` and normalised:
    ``(num_fg, H, W)`` float32.

    ``scale_batches[i]`` is ``(1 or 2, 3, h, w)``: an image at one scale and (second row) its mirror, as made by
    :func:`wseg.data.transforms.multiscale_flip_inputs`. ``cam_fn`` maps a batch to ``(B, C_fg, h', w')`` foreground
    scores (a method's :meth:`~wseg.methods.base.CamMethod.cams`). Absent classes are zeroed by ``label`` before
    the normalisation, as published.
    """
    from wseg.tta import multiscale_flip

    mask = label.to(device=device, dtype=torch.float32).view(1, -1, 1, 1)
    total = multiscale_flip(cam_fn, scale_batches, size, align_corners=False, per_scale=lambda c: c * mask,
                            device=device, amp=amp)
    return NORMALIZERS[norm](total)


def cam_dict_from_maps(norm_cam: np.ndarray, label: np.ndarray) -> Dict[int, np.ndarray]:
    """Keep the maps of the classes present in the image-level ``label`` (published ``cam_dict``)."""
    return {int(k): norm_cam[k].astype(np.float32) for k in np.flatnonzero(np.asarray(label) > 1e-5)}


def scores_with_background(cams: Dict[int, np.ndarray], bg: float | np.ndarray,
                           shape: Tuple[int, int] | None = None) -> Tuple[np.ndarray, np.ndarray]:
    """Stack ``[bg, cam_k...]`` for the present classes: returns ``(labels, scores)`` where ``labels[0] = 0`` and
    ``labels[1:] = k + 1`` are dataset class indices for each score channel. ``bg`` is a constant background
    score (the published ``--t`` / alpha 0.26) or an HxW map such as ``(1 - max cam)^alpha``."""
    keys = sorted(cams)
    if keys:
        stack = np.stack([cams[k] for k in keys]).astype(np.float32)
        shape = stack.shape[1:]
    else:
        stack = np.zeros((0,) + tuple(shape), np.float32)
    bg_map = np.broadcast_to(np.asarray(bg, np.float32), shape)[None]
    return np.array([0] + [k + 1 for k in keys], np.int64), np.concatenate([bg_map, stack], 0)


def background_power(cams: Dict[int, np.ndarray], alpha: float, shape: Tuple[int, int] | None = None) -> np.ndarray:
    """PSA's background score ``(1 - max_k cam_k)^alpha`` (low alpha: more background; high: less). Min-max
    normalised CAMs go below 0 where they were zeroed (down to about -40 for nearly constant maps), so the power can
    overflow float32 to inf, as in the published float32 code: the background then wins, as it would anyway, and the
    CRF clips scores to 1; the overflow is not worth a warning."""
    if cams:
        fg_max = np.max(np.stack(list(cams.values())), 0)
    else:
        fg_max = np.zeros(shape, np.float32)
    with np.errstate(over="ignore"):
        return np.power(np.clip(1.0 - fg_max, 0.0, None), alpha).astype(np.float32)


def cam_to_label(cams: Dict[int, np.ndarray], bg: float | np.ndarray, shape: Tuple[int, int] | None = None
                 ) -> np.ndarray:
    """Argmax of ``[bg, CAMs]`` as a uint8 label map in dataset class indices (ties go to background)."""
    labels, scores = scores_with_background(cams, bg, shape)
    return labels[np.argmax(scores, 0)].astype(np.uint8)
