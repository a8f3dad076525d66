"""The segmentation test's two wseg additions, chosen on the training images (the published test has neither).

- **Background scale** (``bg_scale``): the background probability times a factor before the arg-max and the CRF,
  i.e. ``log(factor)`` added to the background logit (post-hoc logit adjustment, Menon et al., ICLR 2021). A
  network trained briefly on masks whose objects cover a small share of the pixels under-segments: on the demo's
  robustness sets the DeepLab calls 27-40 % of the foreground background (README, "The test's background scale").
  The published CAM stages choose their background threshold the same way, by a curve (``eval.py --curve``).
- **The label filter's check** (``label_filter_check``): the classes of an image-label classifier
  (:mod:`wseg.label_filter`) help only where they name the classes better than the network does.

Both are one choice among candidates: the test unfiltered, or filtered by the classifier's held-out labels of the
training images, or (``label_filter_powers``) with each foreground probability weighted by the classifier's held-out
score to a power (:class:`wseg.label_filter.ClassGate`: a soft filter, the network's evidence and the classifier's
weighed against each other; the power's counterpart of the background factor), at each factor of
``bg_scale_grid``. Each is scored as the test would score it (mIoU) on at most
1,000 training images against the masks the network was trained on (``pseudo_mask_dir``: what the weak supervision
made; the dataset's masks for a network trained on them), and the best is taken. No val image takes part.

One MS+flip pass serves every candidate: a pixel stays foreground at factor ``f`` iff its best foreground
probability exceeds ``f`` times the background's, so the ratio of the two is thresholded at the sorted factors
with the CAM curve's histogram (:func:`wseg.metrics.threshold_histogram`).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from wseg.errors import WsegError

#: the factors ``bg_scale auto`` tries (1: the published test)
DEFAULT_GRID = (1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05)
#: candidate names: the test as published (no class filter) and with the classifier's classes
UNFILTERED, FILTERED = "unfiltered", "filtered"


def soft_name(power: float) -> str:
    """The candidate name of the soft filter at ``power`` (``scores^0.5``)."""
    return f"scores^{float(power):g}"


def bg_scale_setting(value: Any, key: str = "bg_scale") -> Optional[float]:
    """``bg_scale`` as a factor, or None for ``auto``; one-line errors for anything else."""
    if str(value).strip().lower() == "auto":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise WsegError(f"{key} {value!r}: give a factor in (0, 1] for the background probability (1: the "
                        "published test) or auto (chosen on the training images)") from None
    if not 0 < f <= 1:
        raise WsegError(f"{key} {value}: the background factor must lie in (0, 1] (1: the published test)")
    return f


def check_grid(grid: Sequence[float]) -> None:
    if not grid or any(not 0 < float(f) <= 1 for f in grid):
        raise WsegError(f"bg_scale_grid {list(grid)}: give factors in (0, 1], e.g. {list(DEFAULT_GRID)}")


def scale_background(probs: torch.Tensor, factor: float) -> torch.Tensor:
    """``probs (C, H, W)`` with the background (class 0) times ``factor``, renormalised (the CRF reads a
    distribution); the arg-max equals that of the background logit plus ``log(factor)``
    (:func:`wseg.label_filter.reweight_classes`)."""
    from wseg.label_filter import reweight_classes

    if factor == 1:
        return probs
    weights = torch.ones(probs.shape[0], device=probs.device, dtype=probs.dtype)
    weights[0] = factor
    return reweight_classes(probs, weights)


def factor_histogram(probs: torch.Tensor, mask: np.ndarray, factors: np.ndarray, num_classes: int) -> np.ndarray:
    """``(n + 1, C + 1, C + 1)`` counts of one image for the ascending float32 ``factors``: the ratio of each
    pixel's best foreground probability to its background probability, binned by the factors it exceeds, against
    ``mask`` (:func:`wseg.metrics.threshold_histogram`; :func:`wseg.metrics.histogram_to_confusions` gives one
    confusion matrix per factor). ``probs`` may have classes zeroed by the label filter."""
    from wseg.metrics import threshold_histogram

    fg_max, fg_arg = probs[1:].max(0)
    ratio = (fg_max / probs[0].clamp_min(1e-12)).float().cpu().numpy()
    label = (fg_arg + 1).to(torch.int64).cpu().numpy()
    return threshold_histogram(ratio, label, mask, factors, num_classes)


def choose(confusions: Mapping[str, np.ndarray], factors: Sequence[float]) -> Dict[str, Any]:
    """The best candidate of ``{name: (n, C + 1, C + 1) confusions over ascending factors}``: ``{"candidate",
    "bg_scale", "miou", "curve": {name: [mIoU percent per factor]}}``. Ties go to the unfiltered test, then to the
    earlier candidate, and to the larger factor (the published test first)."""
    from wseg.metrics import scores

    curve = {name: [100.0 * float(scores(c)["miou"]) for c in confs] for name, confs in confusions.items()}
    order = sorted(curve, key=lambda n: n != UNFILTERED)
    best = max(((curve[n][j], -k, j, n) for k, n in enumerate(order) for j in range(len(factors))),
               key=lambda t: (round(t[0], 9), t[1], t[2]))
    return {"candidate": best[3], "bg_scale": float(factors[best[2]]), "miou": best[0], "curve": curve}


__all__ = ["DEFAULT_GRID", "FILTERED", "UNFILTERED", "bg_scale_setting", "check_grid", "choose", "factor_histogram",
           "scale_background", "soft_name"]
