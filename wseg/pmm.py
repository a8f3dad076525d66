"""Pseudo-mask Matters (Li et al., ICCV 2021): coefficient-of-variation smoothing (CVS) and proportional
pseudo-mask generation (PPMG), as in Eli-YiLi/PMM ``pipeline/refine_cam.py`` (``get_CoV`` and ``ppmg``).

- **CVS** (:func:`coefficient_of_variation`, :func:`cv_smoothing`): per class ``k``, over the pixels with
  ``v_k > t`` (``t`` = ``cam_thresh`` 0.05), ``cv_k = std / mean * scale`` (population std, ``scale`` = ``cv_scale``
  0.3; 0 for a class with no such pixel); pixels with ``v_k < t`` are set to 0 and the rest raised to
  ``1 - cv_k``: a peaky (high-variation) CAM is flattened more.
- **PPMG** (:func:`ppmg_details`, :func:`ppmg`): one binary dense CRF per class on ``[(1 - cvs_k)^alpha, cvs_k]``
  (10 mean-field iterations; Gaussian ``sxy 3, compat 10``; bilateral ``sxy 80, srgb 13, compat 10``), foreground
  ``fg_k = Q_k > 0.5``; the *proportion* ``p_k = v_k / (1 + sum(v_k * fg_k))`` on the unsmoothed CAM (a class with a
  large mask gets a small proportion, so small objects are not swallowed by big ones); the label is the argmax over
  ``[1 if no class is foreground, fg_k * p_k]`` (background, class ``k + 1``).

Published facts this follows (and where it deliberately differs):

- Kernels: ``crf_inference`` there uses ``addPairwiseGaussian(3, compat=10)`` (compat 10, not PSA's 3).
- Image: the published code reads images with ``cv2.imread``, so the CRF's bilateral kernel sees **BGR**. The dense
  CRF's permutohedral lattice is not invariant to the channel order, so that changes a few pixels; ``rgb=False``
  (default) reproduces it, ``rgb=True`` passes the RGB image.
- ``alpha``: the final masks use 11 (``run.py`` sets ``crf_threshs = '11'`` for both ``--eval`` and
  ``--gen_seg_mask``); 24 is only the argparse default of ``--crf_threshs`` (:data:`PUBLISHED_CLI_ALPHA`).
  The published code casts it with ``int()``; here any ``alpha > 0`` is accepted (integers give the same numbers).
- Intent over breakage: for ``cv_k >= 1`` (unreachable for CAMs in ``[0, 1]`` with ``cv_scale <= 0.47``) the
  published ``0 ** (1 - cv_k)`` turns zeroed pixels into 1 or inf (every pixel foreground); here they stay 0.
  ``1 - cvs`` is clipped at 0 before the power (a no-op for CAMs in ``[0, 1]``; the published code can give NaN or
  a huge background score for CAMs above 1).
- Precision: the published CAMs are float16 (``infer_multi_crop.py``); here CVS runs on float32 CAMs with float64
  statistics, the CRF inputs are float32 as published.

pydensecrf cannot batch CRFs; the kernels (lattices) are built once per image and reused for all its classes
(identical results, ~20% less time at three classes).
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np

from wseg.crf import CRF_ITERS, _check_image, _check_sizes, _densecrf, check_crf_params
from wseg.errors import WsegError

CAM_THRESH = 0.05          # run.py --cam_thresh
CV_SCALE = 0.3             # run.py --cv_scale
PPMG_ALPHA = 11            # run.py --eval / --gen_seg_mask: args.crf_threshs = '11' (the paper's final masks)
PUBLISHED_CLI_ALPHA = 24   # run.py: parser default of --crf_threshs (not used by its pipeline steps)
FG_THRESH = 0.5            # ppmg(): fg_k[crf_k > 0.5] = 1
UNARY_CLIP = 1e-5          # pydensecrf.utils.unary_from_softmax
#: refine_cam.py crf_inference: Gaussian sxy 3 compat 10, bilateral sxy 80 srgb 13 compat 10 (scale_factor 1).
PPMG_KERNELS = dict(pos_w=10, pos_xy_std=3, bi_w=10, bi_xy_std=80, bi_rgb_std=13)
_MEAN_EPS = 1e-8           # get_CoV: (v[v > t] + 0.00000001).mean()


def coefficient_of_variation(cams: np.ndarray, cam_thresh: float = CAM_THRESH, cv_scale: float = CV_SCALE
                             ) -> np.ndarray:
    """CVS coefficients ``cv_k``: ``cams`` ``(..., K, H, W)`` -> float32 ``(..., K)``.

    Over the pixels with ``v_k > cam_thresh``: population std (numpy's default ``ddof=0``, as published) divided by
    the mean of ``v_k + 1e-8``, times ``cv_scale``; 0 for a class without such a pixel.
    """
    v = np.asarray(cams, dtype=np.float64)
    if v.ndim < 3:
        raise WsegError(f"CVS: CAMs of shape {v.shape}; expected (..., K, H, W)")
    x = v.reshape(v.shape[:-2] + (v.shape[-2] * v.shape[-1],))
    sel = x > cam_thresh
    n = sel.sum(-1)
    n1 = np.maximum(n, 1)
    mean = np.where(sel, x, 0.0).sum(-1) / n1
    var = np.square(np.where(sel, x - mean[..., None], 0.0)).sum(-1) / n1
    cv = np.sqrt(var) / (mean + _MEAN_EPS) * cv_scale
    return np.where(n > 0, cv, 0.0).astype(np.float32)


def cv_smoothing(cams: np.ndarray, cam_thresh: float = CAM_THRESH, cv_scale: float = CV_SCALE,
                 cv: Optional[np.ndarray] = None) -> np.ndarray:
    """Coefficient-of-variation smoothing: ``v_k < t -> 0``, else ``v_k ** (1 - cv_k)``; float32, same shape as
    ``cams`` ``(..., K, H, W)``. ``cv``: precomputed :func:`coefficient_of_variation` (the published ``get_CoV``)."""
    v = np.asarray(cams, dtype=np.float32)
    if cv is None:
        cv = coefficient_of_variation(v, cam_thresh, cv_scale)
    expo = (np.float32(1) - np.asarray(cv, dtype=np.float32))[..., None, None]
    keep = (v >= cam_thresh) & (v > 0)          # published: cvs[cvs < t] = 0; zeros stay 0 (see module doc)
    return np.where(keep, np.power(np.where(keep, v, np.float32(1)), expo), np.float32(0)).astype(np.float32)


class PPMGResult(NamedTuple):
    """Intermediate PPMG results of one image (``K`` = classes in the CAM dict, in its order)."""
    keys: np.ndarray        # int64 (K,) class indices without background
    cv: np.ndarray          # float32 (K,) CVS coefficients
    cvs: np.ndarray         # float32 (K, H, W) smoothed CAMs
    q: np.ndarray           # float32 (K, H, W) CRF foreground probability per class
    proportion: np.ndarray  # float32 (K, H, W) p_k on the unsmoothed CAM
    labels: np.ndarray      # uint8 (H, W) dataset class indices (0 background, k + 1)


def binary_crf_foreground(img: np.ndarray, cvs: np.ndarray, alpha: float = PPMG_ALPHA, iters: int = CRF_ITERS,
                          rgb: bool = False, **kernels: float) -> np.ndarray:
    """Per-class binary dense CRF on ``[(1 - cvs_k)^alpha, cvs_k]``: float32 ``(K, H, W)`` foreground ``Q_k``.

    ``img``: uint8 RGB ``(H, W, 3)``; it is handed to the CRF as BGR unless ``rgb`` (the published quirk). The
    kernels are built once and reused for every class; the unary is ``-log clip(score, 1e-5, 1)``.
    """
    img = _check_image(img)
    cvs = np.asarray(cvs, dtype=np.float32)
    if cvs.ndim != 3:
        raise WsegError(f"PPMG: smoothed CAMs of shape {cvs.shape}; expected (K, H, W)")
    _check_sizes(img, cvs.shape, "CAMs")
    kern = {**PPMG_KERNELS, **kernels}
    check_crf_params(iters, 1, **kern)
    k, (h, w) = cvs.shape[0], img.shape[:2]
    if k == 0:
        return np.zeros((0, h, w), np.float32)
    bg = np.power(np.maximum(np.float32(1) - cvs, np.float32(0)), alpha).astype(np.float32)
    scores = np.stack([bg, cvs], 1).reshape(k, 2, h * w)
    unary = -np.log(np.clip(scores, np.float32(UNARY_CLIP), np.float32(1))).astype(np.float32)
    crf_img = np.ascontiguousarray(img if rgb else img[..., ::-1])
    dcrf = _densecrf()
    d = dcrf.DenseCRF2D(w, h, 2)
    d.addPairwiseGaussian(sxy=kern["pos_xy_std"], compat=kern["pos_w"])
    d.addPairwiseBilateral(sxy=kern["bi_xy_std"], srgb=kern["bi_rgb_std"], rgbim=crf_img, compat=kern["bi_w"])
    q = np.empty((k, h, w), np.float32)
    for i in range(k):                          # one CRF per class; pydensecrf does not batch
        d.setUnaryEnergy(np.ascontiguousarray(unary[i]))
        q[i] = np.asarray(d.inference(int(iters)), dtype=np.float32)[1].reshape(h, w)
    return q


def proportion(cams: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """PPMG proportion ``p_k = v_k / (1 + sum(v_k * fg_k))`` on the unsmoothed CAMs ``(..., K, H, W)``."""
    v = np.asarray(cams, dtype=np.float32)
    area = (v * fg).reshape(v.shape[:-2] + (v.shape[-2] * v.shape[-1],)).sum(-1)
    return (v / (np.float32(1) + area)[..., None, None]).astype(np.float32)


def proportional_labels(fg: np.ndarray, prop: np.ndarray, keys: Sequence[int]) -> np.ndarray:
    """Argmax over ``[1 where no class is foreground, fg_k * p_k]`` -> uint8 ``(H, W)`` (0, or ``keys[k] + 1``).
    Ties go to the first entry, as ``np.argmax`` does in the published code (a foreground pixel whose CAM is
    ``<= 0`` is background)."""
    fg = np.asarray(fg, dtype=bool)
    bg = (~fg.any(0))[None].astype(np.float32)
    scores = np.concatenate([bg, np.where(fg, prop, np.float32(0))], 0)
    lut = np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1])
    if lut.max() > 254:
        raise WsegError(f"PPMG: class index {int(lut.max())} does not fit a uint8 label map (255 = ignore)")
    return lut[np.argmax(scores, 0)].astype(np.uint8)


def ppmg_details(img: np.ndarray, cams: Dict[int, np.ndarray], alpha: float = PPMG_ALPHA,
                 cam_thresh: float = CAM_THRESH, cv_scale: float = CV_SCALE, iters: int = CRF_ITERS,
                 rgb: bool = False) -> PPMGResult:
    """CVS + PPMG of one image. ``img`` uint8 RGB ``(H, W, 3)``; ``cams`` the CAM dict ``{class index without
    background: (H, W)}`` (classes in dict order, as published; no entry = all background)."""
    img = _check_image(img)
    h, w = img.shape[:2]
    keys = np.array([int(k) for k in cams], dtype=np.int64)
    for k, v in cams.items():
        _check_sizes(img, np.shape(v), f"CAM of class {k}")
    v = (np.stack([np.asarray(cams[k], dtype=np.float32) for k in cams]) if len(keys)
         else np.zeros((0, h, w), np.float32))
    cv = coefficient_of_variation(v, cam_thresh, cv_scale)
    cvs = cv_smoothing(v, cam_thresh, cv_scale, cv)
    q = binary_crf_foreground(img, cvs, alpha, iters, rgb)
    fg = q > FG_THRESH
    prop = proportion(v, fg)
    return PPMGResult(keys, cv, cvs, q, prop, proportional_labels(fg, prop, keys))


def ppmg(img: np.ndarray, cams: Dict[int, np.ndarray], alpha: float = PPMG_ALPHA, cam_thresh: float = CAM_THRESH,
         cv_scale: float = CV_SCALE, iters: int = CRF_ITERS, rgb: bool = False) -> np.ndarray:
    """PPMG pseudo mask of one image: uint8 ``(H, W)`` dataset class indices (no 255). See :func:`ppmg_details`."""
    return ppmg_details(img, cams, alpha, cam_thresh, cv_scale, iters, rgb).labels
