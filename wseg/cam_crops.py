"""Multi-crop CAM inference (``--crop_mode grid`` of the CAM inference stage): the CAMs of PMM's classification
part (Li et al., ICCV 2021; Eli-YiLi/PMM ``pipeline/infer_multi_crop.py`` with ``tool/data.py``
``VOC12ClsDatasetMultiCrop``).

Where it differs from the multi-scale CAM (:func:`wseg.cam.multiscale_cam`, whole rescaled images):

1. **Views are crops** (:func:`crop_boxes`). For each scale ``s`` the image size is scaled to
   ``(int(W s), int(H s))`` and tiled with windows every ``stride`` pixels: a window that is not the last of its
   row/column spans ``[i stride, min(size, (i + 1) stride))``, i.e. only ``stride`` wide, the last spans the
   final ``crop_size`` pixels (or all of them when the scaled side is shorter). Each window is mapped back to the
   original image (``int(x / s)``), cropped from the *original* image and resized to ``crop_size x crop_size``
   (PIL bilinear; the aspect ratio is not kept).
2. **Merging**: each crop and its mirror go through the network; the CAMs (background dropped) are resized
   bilinearly (``align_corners=False``) to the crop's window, label-masked, the mirror's un-mirrored, and added
   into the window; the sum is divided per pixel by the number of views that covered it (uncovered pixels by 1).
3. **Normalisation** :func:`wseg.cam.minmax_noclip_normalize` (no clipping of negatives, no ``- 1e-5`` shift).

Published defaults: scales ``0.75, 1, ..., 3`` (``run.py``:47 ``--scales``), stride 300 (``run.py``:48), crop 448
(``infer_multi_crop.py``:31). The network runs on batches of crops and mirrors; each crop's pair is resized,
masked and un-mirrored by the shared multi-scale + flip machinery (:func:`wseg.tta.multiscale_flip`); the sum is
accumulated in float64 as the published numpy code does.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from wseg.data.datasets import MultiScaleDataset
from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wseg.errors import WsegError

GRID_SCALES = (0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0)   # PMM run.py:47
GRID_CROP = 448                                                         # infer_multi_crop.py:31
GRID_STRIDE = 300                                                       # run.py:48
CROP_BATCH = 8                                                          # crops per network call (speed only)


def crop_boxes(height: int, width: int, scales: Sequence[float], crop_size: int = GRID_CROP,
               stride: int = GRID_STRIDE) -> np.ndarray:
    """``(N, 4)`` int64 windows ``[x, y, w, h]`` in original-image pixels, in the published order (per scale,
    columns outer, rows inner; ``VOC12ClsDatasetMultiCrop.__getitem__``)."""
    if crop_size < 1 or stride < 1:
        raise WsegError(f"--crop_size {crop_size} / --crop_stride {stride}: need positive sizes (published 448 / 300)")
    boxes: List[Tuple[int, int, int, int]] = []
    for s in scales:
        w, h = int(width * s), int(height * s)
        w_num = 1 + int(math.ceil(max(0.0, float(w - crop_size)) / stride))
        h_num = 1 + int(math.ceil(max(0.0, float(h - crop_size)) / stride))
        for wi in range(w_num):
            x1, x2 = _span(wi, w_num, w, crop_size, stride)
            for hi in range(h_num):
                y1, y2 = _span(hi, h_num, h, crop_size, stride)
                x1o, x2o, y1o, y2o = (int(float(v) / s) for v in (x1, x2, y1, y2))
                if x2o <= x1o or y2o <= y1o:
                    raise WsegError(f"scale {s:g} of a {width}x{height} image gives an empty crop window; raise "
                                    "--scales (published 0.75 to 3)")
                boxes.append((x1o, y1o, x2o - x1o, y2o - y1o))
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def _span(i: int, n: int, size: int, crop: int, stride: int) -> Tuple[int, int]:
    if i == n - 1:
        return max(0, size - crop), size
    return i * stride, min(size, (i + 1) * stride)


def grid_crops(img: Image.Image, boxes: np.ndarray, crop_size: int) -> np.ndarray:
    """``(N, crop, crop, 3)`` uint8: each window of the original image resized to ``crop x crop`` (PIL bilinear)."""
    out = np.empty((len(boxes), crop_size, crop_size, 3), np.uint8)
    for k, (x, y, w, h) in enumerate(boxes.tolist()):
        out[k] = np.asarray(img.crop((x, y, x + w, y + h)).resize((crop_size, crop_size), resample=Image.BILINEAR))
    return out


class MultiCropDataset(MultiScaleDataset):
    """``(id, (crops uint8 (N, c, c, 3), boxes (N, 4)), label, (H, W))`` for multi-crop CAM inference. The crops stay
    uint8 (a VOC image has ~90 crops at the published scales: 4x less to ship from loader workers) and are
    normalised on the device (:func:`normalize_crops`)."""

    def __init__(self, voc, ids: Sequence[str], scales: Sequence[float], crop_size: int = GRID_CROP,
                 stride: int = GRID_STRIDE, labels: Optional[Dict[str, np.ndarray]] = None):
        super().__init__(voc, ids, scales, flip=False, labels=labels)
        self.crop_size, self.stride = int(crop_size), int(stride)

    def views(self, img: Image.Image):
        boxes = crop_boxes(img.size[1], img.size[0], self.scales, self.crop_size, self.stride)
        return torch.from_numpy(grid_crops(img, boxes, self.crop_size)), torch.from_numpy(boxes)


def normalize_crops(crops: torch.Tensor, device: torch.device, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 ``(N, h, w, 3)`` RGB -> float32 ``(N, 3, h, w)`` on ``device``, the float32 arithmetic of
    :func:`wseg.data.transforms.normalize` (the published ``model.normalize``)."""
    x = crops.to(device).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return (x - m) / s


def multicrop_cam(cam_fn: Callable[[torch.Tensor], torch.Tensor], crops: torch.Tensor, boxes: torch.Tensor,
                  label: torch.Tensor, size: Tuple[int, int], device: torch.device, amp: bool = False,
                  flip: bool = True, norm: str = "minmax_noclip", batch: int = CROP_BATCH) -> torch.Tensor:
    """PMM's multi-crop CAM of one image (module docstring): ``(num_fg, H, W)`` float32, normalised with
    ``norm`` (a key of :data:`wseg.cam.NORMALIZERS`; published ``minmax_noclip``).

    ``crops``/``boxes`` as :class:`MultiCropDataset` gives them; ``cam_fn`` maps a ``(B, 3, c, c)`` batch to
    ``(B, C_fg, h', w')`` foreground scores (a method's ``cams``). Absent classes are zeroed by ``label``. The
    network sees ``batch`` crops (and their mirrors) per call (published: one view per call; the network is in
    eval mode, so only the speed differs); :func:`wseg.tta.multiscale_flip` then resizes each crop's pair to its
    window, masks, un-mirrors and sums it."""
    from wseg.cam import NORMALIZERS
    from wseg.engine.runtime import autocast
    from wseg.tta import multiscale_flip

    if batch < 1:
        raise WsegError(f"--crop_batch {batch}: need at least 1 crop per network call")
    height, width = size
    mask = label.to(device=device, dtype=torch.float32).view(1, -1, 1, 1)
    total: Optional[torch.Tensor] = None
    count = torch.zeros((1, height, width), dtype=torch.float64, device=device)
    views = 2 if flip else 1
    box_list = boxes.tolist()
    for start in range(0, len(box_list), batch):
        x = normalize_crops(crops[start:start + batch], device)
        pairs = torch.stack([x, x.flip(-1)], 1) if flip else x[:, None]         # (b, views, 3, c, c)
        with torch.no_grad(), autocast(device, amp):
            out = cam_fn(pairs.flatten(0, 1))
        out = out.unflatten(0, (pairs.shape[0], views))
        for k, (bx, by, bw, bh) in enumerate(box_list[start:start + batch]):
            s = multiscale_flip(lambda _pair, o=out[k]: o, [pairs[k]], (bh, bw), flip=flip, align_corners=False,
                                per_scale=lambda c: c * mask, device=device)
            if total is None:
                total = torch.zeros((s.shape[0], height, width), dtype=torch.float64, device=device)
            total[:, by:by + bh, bx:bx + bw] += s.double()
            count[:, by:by + bh, bx:bx + bw] += views
    if total is None:
        raise WsegError("multi-crop CAM: no crop windows; give at least one scale")
    return NORMALIZERS[norm](total / count.clamp_min(1)).float()
