"""Test-time augmentation: the one multi-scale + flip implementation (CAM inference, segmentation prediction,
validation, single-stage methods).

For every input scale, the image (and its mirror) goes through ``fn``; the outputs are resized bilinearly to
``out_size``, the mirror's un-mirrored, and all are summed (``reduce="sum"``: the published CAM inference) or
averaged (``"mean"``: the published DeepLab test, softmax after the mean). ``per_scale`` post-processes each
resized output first (e.g. the CAM's label mask).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from wseg.engine.runtime import autocast
from wseg.errors import WsegError


@torch.no_grad()
def multiscale_flip(fn: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[torch.Tensor],
                    out_size: Tuple[int, int], *, flip: bool = True, align_corners: bool = False,
                    reduce: str = "sum", per_scale: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                    device: Optional[torch.device] = None, amp: bool = False) -> torch.Tensor:
    """``inputs``: per scale a ``(3, h, w)`` image (mirrored here when ``flip``) or a ``(1 or 2, 3, h, w)`` batch
    whose second row is already the mirror. Returns float32 ``(C, H, W)`` on ``device``."""
    device = device or torch.device("cpu")
    total: Optional[torch.Tensor] = None
    count = 0
    for x in inputs:
        x = x.to(device, non_blocking=True)
        if x.dim() == 3:
            x = torch.stack([x, x.flip(-1)]) if flip else x[None]
        with autocast(device, amp):
            out = fn(x)
        out = F.interpolate(out.float(), out_size, mode="bilinear", align_corners=align_corners)
        if per_scale is not None:
            out = per_scale(out)
        s = out[0] + out[1].flip(-1) if out.shape[0] == 2 else out[0]
        total = s if total is None else total + s
        count += out.shape[0]
    if total is None:
        raise WsegError("no test scales: give at least one scale")
    if reduce == "mean":
        return total / count
    return total
