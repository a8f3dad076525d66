"""Dense CRF refinement (Krähenbühl & Koltun's fully connected CRF via ``pydensecrf``) as used by PSA/SEAM/PPC.

- :func:`crf_inference`: published ``tool/imutils.py crf_inference(img, probs, t=10, scale_factor=1, labels=21)``:
  unary ``-log(clip(probs, 1e-5, 1))``, Gaussian kernel ``sxy=3/scale, compat=3``, bilateral kernel
  ``sxy=80/scale, srgb=13, compat=10``, ``t=10`` mean-field iterations; returns the refined probabilities ``Q``.
- "CRF with alpha" (PSA ``infer_cls.py`` / SEAM ``infer_SEAM.py`` / PPC ``contrast_infer.py`` ``_crf_with_alpha``):
  background score ``(1 - max_k cam_k)^alpha`` stacked before the CAMs of the present classes, CRF, then mapped back
  to dataset class indices. Low alpha (4) over-estimates background, high alpha (PSA 32, SEAM 24) under-estimates it:
  the two AffinityNet label sources (see :func:`wseg.affinity.confident_labels`).
- :func:`crf_label_refine`: CRF on a hard label map (PPC ``aff_prepare.py``, from AdvCAM): unary from labels with
  ``gt_prob=0.7``, the same two kernels, argmax.
- :func:`map_pool`: a small process pool with a progress bar for running these per image.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from wseg.data.classes import IGNORE
from wseg.errors import WsegError

CRF_ITERS = 10
LOW_ALPHA = 4             # PSA / SEAM / PPC
PSA_HIGH_ALPHA = 32       # PSA infer_cls.py, PPC contrast_infer.py
SEAM_HIGH_ALPHA = 24      # SEAM infer_SEAM.py (crf_alpha = [4, 24]), which PPC's affinity stage follows
LABEL_GT_PROB = 0.7  # PPC aff_prepare.py / AdvCAM crf_inference_label


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:  # pragma: no cover - environment problem
        raise WsegError(f"pydensecrf is not importable ({exc}); install pydensecrf2 (tools/env.sh does)") from exc
    return dcrf


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise WsegError(f"CRF image of shape {img.shape}: expected an HxWx3 RGB image")
    if img.dtype != np.uint8:
        raise WsegError(f"CRF image of dtype {img.dtype}: expected uint8 RGB values 0..255 (the un-normalised "
                        "image, e.g. wseg.io.load_image)")
    return np.ascontiguousarray(img)


def _check_sizes(img: np.ndarray, maps_shape: Tuple[int, ...], what: str) -> None:
    if tuple(maps_shape[-2:]) != tuple(img.shape[:2]):
        raise WsegError(f"CRF: image of shape {tuple(img.shape)} and {what} of shape {tuple(maps_shape)} differ in "
                        "size; resize the scores to the image size (H, W) first")


# PSA / SEAM / PPC kernels: Gaussian (compat 3, sxy 3), bilateral (compat 10, sxy 80, srgb 13).
PSA_KERNELS = dict(pos_w=3, pos_xy_std=3, bi_w=10, bi_xy_std=80, bi_rgb_std=13)
# PPC contrast_infer.py's label CRF: same Gaussian, bilateral sxy 50, srgb 5, compat 10.
PPC_INFER_KERNELS = dict(pos_w=3, pos_xy_std=3, bi_w=10, bi_xy_std=50, bi_rgb_std=5)


#: More mean-field iterations than anyone runs (published 10; 1 after the random walk); pydensecrf takes a C int.
MAX_CRF_ITERS = 10000


def check_crf_params(t: int, scale_factor: float = 1, **kernels: float) -> None:
    """One-line error for CRF settings pydensecrf would crash on (a zero or NaN standard deviation kills the process)
    or overflow with: ``1 <= t <= MAX_CRF_ITERS`` iterations, finite kernel weights ``>= 0`` and finite standard
    deviations and ``scale_factor`` ``> 0``. Stages call it before starting CRF workers."""
    if not 1 <= t <= MAX_CRF_ITERS:
        raise WsegError(f"CRF: {t} mean-field iterations; need 1 to {MAX_CRF_ITERS} (published 10)")
    bad = {k: v for k, v in {**kernels, "scale_factor": scale_factor}.items()
           if not (0 <= float(v) < np.inf if k.endswith("_w") else 0 < float(v) < np.inf)}
    if bad:
        raise WsegError(f"CRF: {', '.join(f'{k}={v}' for k, v in bad.items())}: kernel weights must be finite and "
                        ">= 0, standard deviations and scales finite and > 0")


def _run_crf(img: np.ndarray, unary: np.ndarray, n_labels: int, t: int, scale_factor: float,
             pos_w: float = 3, pos_xy_std: float = 3, bi_w: float = 10, bi_xy_std: float = 80,
             bi_rgb_std: float = 13, yx_features: bool = False) -> np.ndarray:
    check_crf_params(t, scale_factor, pos_w=pos_w, pos_xy_std=pos_xy_std, bi_w=bi_w, bi_xy_std=bi_xy_std,
                     bi_rgb_std=bi_rgb_std)
    dcrf = _densecrf()
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    if yx_features:
        # pydensecrf.utils features, (y, x[, r, g, b]) order: the same kernels, but the permutohedral lattice is not
        # invariant to the feature order, so the result differs from the (x, y) helpers below at a few pixels.
        from pydensecrf.utils import create_pairwise_bilateral, create_pairwise_gaussian

        pos, bi = pos_xy_std / scale_factor, bi_xy_std / scale_factor
        d.addPairwiseEnergy(create_pairwise_gaussian(sdims=(pos, pos), shape=img.shape[:2]), compat=pos_w,
                            kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
        d.addPairwiseEnergy(create_pairwise_bilateral(sdims=(bi, bi), schan=(bi_rgb_std,) * 3, img=img, chdim=2),
                            compat=bi_w, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    else:
        d.addPairwiseGaussian(sxy=pos_xy_std / scale_factor, compat=pos_w)
        d.addPairwiseBilateral(sxy=bi_xy_std / scale_factor, srgb=bi_rgb_std, rgbim=np.copy(img), compat=bi_w)
    q = d.inference(int(t))
    return np.asarray(q, dtype=np.float32).reshape((n_labels, h, w))


#: The long side of the images the published CRF kernels were sized for (PASCAL VOC: ~500 x 375).
CRF_REFERENCE_SIDE = 500


def resolve_scale_factor(value, size: Tuple[int, int], flag: str = "scale_factor") -> float:
    """``crf_inference``'s ``scale_factor`` from a number or ``"auto"``: ``CRF_REFERENCE_SIDE / max(size)``, so that
    the kernels' pixel widths (published for VOC's ~500-pixel images) keep the same share of a smaller or larger
    image."""
    if str(value).strip().lower() == "auto":
        return CRF_REFERENCE_SIDE / float(max(size))
    try:
        factor = float(value)
    except (TypeError, ValueError):
        factor = -1.0
    if not factor > 0:
        raise WsegError(f"{flag} {value!r}: give a positive number (published 1) or 'auto' "
                        f"({CRF_REFERENCE_SIDE} / the image's long side)")
    return factor


def crf_inference(img: np.ndarray, probs: np.ndarray, t: int = CRF_ITERS, scale_factor: float = 1,
                  labels: Optional[int] = None, *, pos_w: float = 3, pos_xy_std: float = 3, bi_w: float = 10,
                  bi_xy_std: float = 80, bi_rgb_std: float = 13) -> np.ndarray:
    """Published dense CRF: ``img`` uint8 ``(H, W, 3)``, ``probs`` ``(C, H, W)`` scores (need not sum to 1; clipped
    to ``[1e-5, 1]`` for the unary ``-log p``). Returns float32 ``(C, H, W)`` probabilities summing to 1 per pixel.
    ``labels`` (published: the number of labels) defaults to ``C``. The kernel keywords default to PSA's
    (:data:`PSA_KERNELS`); DeepLab's test CRF passes its own (DeepLab v2: 3/1 Gaussian, 4/67/3 bilateral)."""
    img = _check_image(img)
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3:
        raise WsegError(f"CRF scores of shape {probs.shape}: expected (C, H, W)")
    _check_sizes(img, probs.shape, "scores")
    n_labels = probs.shape[0] if labels is None else int(labels)
    if n_labels != probs.shape[0]:
        raise WsegError(f"CRF: labels={n_labels} but the scores have {probs.shape[0]} channels")
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(n_labels, -1)   # pydensecrf.utils.unary_from_softmax
    return _run_crf(img, unary, n_labels, t, scale_factor, pos_w=pos_w, pos_xy_std=pos_xy_std, bi_w=bi_w,
                    bi_xy_std=bi_xy_std, bi_rgb_std=bi_rgb_std)


def crf_with_alpha_scores(img: np.ndarray, cams: Dict[int, np.ndarray], alpha: float, t: int = CRF_ITERS
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """CRF with alpha: ``[(1 - max_k cam_k)^alpha, cam_k for present k]`` -> CRF probabilities.

    ``cams``: the CAM dict ``{class index without background: (H, W)}`` (only present classes). Returns
    ``(keys, probs)``: int64 ``(K + 1,)`` dataset class indices per channel (``keys[0] = 0`` background,
    ``keys[i] = k + 1``) and float32 ``(K + 1, H, W)`` refined probabilities. ``1 - max`` is clipped at 0 (a no-op for
    CAMs normalised to ``[0, 1]``, as published). With no present class everything is background.
    """
    from wseg.cam import background_power, scores_with_background

    img = _check_image(img)
    for k, v in cams.items():
        _check_sizes(img, np.shape(v), f"CAM of class {k}")
    bg = background_power(cams, alpha, img.shape[:2])
    keys, scores = scores_with_background(cams, bg, img.shape[:2])
    if len(keys) == 1:
        return keys, np.ones((1,) + img.shape[:2], np.float32)
    return keys, crf_inference(img, scores, t=t, labels=len(keys))


def crf_with_alpha_dict(img: np.ndarray, cams: Dict[int, np.ndarray], alpha: float, t: int = CRF_ITERS
                        ) -> Dict[int, np.ndarray]:
    """Published ``_crf_with_alpha`` output: ``{0: background prob, k + 1: prob of class k}`` (the la/ha ``.npy``
    dicts read by the published AffinityNet training)."""
    keys, probs = crf_with_alpha_scores(img, cams, alpha, t)
    return {int(k): p for k, p in zip(keys, probs)}


def crf_with_alpha(img: np.ndarray, cams: Dict[int, np.ndarray], alpha: float, t: int = CRF_ITERS) -> np.ndarray:
    """CRF with alpha as a uint8 ``(H, W)`` label map in dataset class indices (argmax of the refined scores;
    only background and the present classes can appear)."""
    keys, probs = crf_with_alpha_scores(img, cams, alpha, t)
    return keys[np.argmax(probs, 0)].astype(np.uint8)


def crf_label_refine(img: np.ndarray, labels: np.ndarray, num_classes: int, iters: int = CRF_ITERS,
                     gt_prob: float = LABEL_GT_PROB, yx_features: bool = False, **kernels: float) -> np.ndarray:
    """Dense CRF on a hard label map (PPC ``aff_prepare.py`` ``_crf_inference``, after AdvCAM).

    Unary as ``pydensecrf.utils.unary_from_labels(labels, num_classes, gt_prob, zero_unsure=False)``: probability
    ``gt_prob`` for the given label, ``(1 - gt_prob) / (num_classes - 1)`` for each other; pixels labelled 255 get a
    uniform unary (they are filled in by the CRF). ``kernels``: as :func:`crf_inference` (default PSA's; PPC's
    ``contrast_infer.py`` uses :data:`PPC_INFER_KERNELS`). ``yx_features``: build the kernels as PPC's
    ``aff_prepare.py`` does (``pydensecrf.utils.create_pairwise_*``, (y, x) order) instead of with
    ``addPairwiseGaussian/Bilateral`` ((x, y) order, PPC's ``contrast_infer.py``); the dense CRF's lattice
    approximation makes the two differ at a few pixels. Returns uint8 ``(H, W)`` class indices in ``[0, num_classes)``.
    """
    img = _check_image(img)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise WsegError(f"CRF label map of shape {labels.shape}: expected (H, W)")
    _check_sizes(img, labels.shape, "label map")
    if num_classes < 2:
        raise WsegError(f"CRF: num_classes={num_classes}; need background and at least one class")
    if not 0 < gt_prob < 1:
        raise WsegError(f"CRF: gt_prob={gt_prob} must lie in (0, 1) (published 0.7)")
    lab = labels.reshape(-1).astype(np.int64)
    bad = (lab >= num_classes) & (lab != IGNORE)
    if bad.any() or (lab < 0).any():
        raise WsegError(f"CRF label map: values {np.unique(lab[bad | (lab < 0)])[:8].tolist()} outside "
                        f"[0, {num_classes}) and 255; check the class list")
    unary = np.full((num_classes, lab.size), -np.log((1.0 - gt_prob) / (num_classes - 1)), np.float32)
    sure = lab != IGNORE
    unary[lab[sure], np.flatnonzero(sure)] = -np.log(gt_prob)
    unary[:, ~sure] = -np.log(1.0 / num_classes)
    q = _run_crf(img, unary, num_classes, iters, 1, yx_features=yx_features, **kernels)
    return np.argmax(q, 0).astype(np.uint8)
