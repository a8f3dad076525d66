"""ToCo / LOC-BE per-iteration pieces: multi-scale CAMs, the CAM region partition, the BE input, LOC and ToCo
crops, PAR pseudo labels and token affinity targets (see :mod:`wseg.locbe` for how one iteration uses them;
refs: T = rulixiang/ToCo, L = whn786/LOC-BE)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wseg.data.classes import IGNORE
from wseg.errors import WsegError
from wseg.losses.dense_energy import box_mask
from wseg.losses.toco import aff_mask_from_labels
from wseg.models.heads.par import PAR

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAM_SCALES = (1.0, 0.5, 1.5)

# ------------------------------------------------------------------------------------------- CAMs and partitions

def toco_normalize(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-map ``(cam - min) / (max(cam - min) + eps)`` (the published ``multi_scale_cam2`` normalisation)."""
    cam = cam - cam.amin(dim=(-2, -1), keepdim=True)
    return cam / (cam.amax(dim=(-2, -1), keepdim=True) + eps)


@torch.no_grad()
def multiscale_cams(net: nn.Module, x: torch.Tensor, scales: Sequence[float] = CAM_SCALES
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(cam, cam_aux)`` at the input size, in [0, 1] (``multi_scale_cam2``): scale 1 always, then every other
    scale (``int(s * size)``, bilinear); per scale the max of the image's and the un-flipped mirror's CAMs
    (bilinear to the input size), ReLU; summed over scales; :func:`toco_normalize`. Batched over images."""
    b, _, h, w = x.shape
    total = {"cam": 0.0, "cam_aux": 0.0}
    for s in [1.0] + [float(s) for s in scales if s != 1.0]:
        xs = x if s == 1.0 else F.interpolate(x, size=(int(s * h), int(s * w)), mode="bilinear",
                                              align_corners=False)
        out = net(torch.cat([xs, xs.flip(-1)]), cam_only=True)
        for key in total:
            c = F.interpolate(out[key].float(), size=(h, w), mode="bilinear", align_corners=False)
            total[key] = total[key] + F.relu(torch.max(c[:b], c[b:].flip(-1)))
    return toco_normalize(total["cam"]), toco_normalize(total["cam_aux"])


def roi_partition(cam: torch.Tensor, labels: torch.Tensor, low: float = 0.25, high: float = 0.7) -> torch.Tensor:
    """``cam_to_roi_mask2``: ``(N, H, W)`` int16, 0 where ``max_c y_c cam_c <= low``, 2 where ``>= high``, else 1."""
    v = (cam * labels.to(cam.dtype)[:, :, None, None]).amax(dim=1)
    roi = torch.ones_like(v, dtype=torch.int16)
    roi[v <= low] = 0
    roi[v >= high] = 2
    return roi


def be_input(x: torch.Tensor, roi: torch.Tensor, erase: Sequence[int] = (0, 2)) -> torch.Tensor:
    """The BE image: pixels whose ROI is in ``erase`` set to 0 on every channel (the ImageNet mean colour in the
    normalised input), keeping the uncertain band (``mask(inputs, roi, BQD=True)``)."""
    erase_t = torch.tensor(list(erase), device=roi.device, dtype=roi.dtype).view(-1, 1, 1, 1)
    keep = ~(roi.unsqueeze(0) == erase_t).any(dim=0)
    return x * keep.unsqueeze(1).to(x.dtype)


def loc_crops(x: torch.Tensor, roi: torch.Tensor, crop_size: int = 86, num_crops: int = 4,
              generator: Optional[torch.Generator] = None, min_size: int = 16) -> List[torch.Tensor]:
    """LOC crops (``random_crop``): ``num_crops`` centres drawn uniformly from the confident (roi 2) pixels of the
    *whole batch*; window ``[c - size//2, c - size//2 + size)`` clipped to the image (so 43-86 px); the same window
    cut from *every* image of the batch. Fixed: no confident pixel gives no crops (published: ValueError); a
    window under ``min_size`` (one ViT patch; only possible when ``crop_size < 2 * min_size``) is dropped."""
    h, w = x.shape[-2:]
    if crop_size > min(h, w):
        raise WsegError(f"LOC crop size {crop_size}: larger than the {h}x{w} input")
    pts = torch.nonzero(roi == 2)
    if pts.shape[0] == 0:
        return []
    gen_device = generator.device if generator is not None else torch.device("cpu")
    pick = torch.randint(0, pts.shape[0], (num_crops,), generator=generator, device=gen_device).to(pts.device)
    centres = pts[pick, 1:].tolist()
    crops = []
    for hc, wc in centres:        # a few crops of different sizes, each a forward of its own
        h0, w0 = max(hc - crop_size // 2, 0), max(wc - crop_size // 2, 0)
        h1, w1 = min(hc - crop_size // 2 + crop_size, h), min(wc - crop_size // 2 + crop_size, w)
        if min(h1 - h0, w1 - w0) >= min_size:
            crops.append(x[:, :, h0:h1, w0:w1])
    return crops


def toco_local_crops(images: torch.Tensor, roi: torch.Tensor, crop_num: int = 8, crop_size: int = 96,
                     generator: Optional[torch.Generator] = None) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """ToCo's ``crop_from_roi_neg``, vectorised: per image ``crop_num`` distinct top-left corners drawn from the
    pixels with roi <= 1 inside the ``crop_size // 2`` margin (from all of them when fewer than ``crop_num``);
    ``flags (N, crop_num + 2)``: 1, except 0 for crops whose ``sum(roi) / crop_size^2 <= 0.2`` (negatives; the
    first two columns are the global views). Returns ``crop_num`` tensors ``(N, 3, crop_size, crop_size)``."""
    n, _, h, w = images.shape
    m = crop_size // 2
    inner = roi[:, m:h - m, m:w - m]
    hi, wi = inner.shape[-2:]
    if hi * wi < crop_num:
        raise WsegError(f"ToCo local crops: a {h}x{w} input leaves fewer than {crop_num} crop positions")
    cand = (inner <= 1).flatten(1)
    cand = torch.where(cand.sum(1, keepdim=True) < crop_num, torch.ones_like(cand), cand)
    idx = torch.multinomial(cand.float().cpu(), crop_num, replacement=False, generator=generator).to(roi.device)
    h0, w0 = idx // wi, idx % wi                                            # (N, crop_num)
    ar = torch.arange(crop_size, device=roi.device)
    rows = (h0[..., None] + ar)[..., :, None]                               # (N, n, S, 1)
    cols = (w0[..., None] + ar)[..., None, :]                               # (N, n, 1, S)
    bi = torch.arange(n, device=roi.device).view(n, 1, 1, 1)
    crops = images.permute(0, 2, 3, 1)[bi, rows, cols].permute(1, 0, 4, 2, 3)   # (n, N, 3, S, S)
    ratio = roi[bi, rows, cols].float().sum(dim=(-2, -1)) / crop_size ** 2      # (N, n)
    flags = torch.ones(n, crop_num + 2, device=roi.device)
    flags[:, 2:] = (ratio > 0.2).float()
    return list(crops.unbind(0)), flags


# ------------------------------------------------------------------------------------------------- pseudo labels

def denormalize_01(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                   ) -> torch.Tensor:
    """``denormalize_img2``: the normalised input back to 0-255, truncated to integers as the uint8 cast does, /255."""
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1) * 255
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1) * 255
    return (x.float() * s + m).clamp(0, 255).floor() / 255.0


def cam_to_label(cam: torch.Tensor, labels: torch.Tensor, bkg_thre: float = 0.5, high: float = 0.7,
                 low: float = 0.25, ignore_mid: bool = False, img_box: Optional[torch.Tensor] = None,
                 box_stride: int = 1) -> torch.Tensor:
    """The published ``cam_to_label`` label map ``(N, H, W)``: argmax class + 1 of the label-masked CAM, 0 where
    its max <= ``bkg_thre``; with ``ignore_mid`` 255 where <= ``high`` and 0 where <= ``low``; 255 outside
    ``img_box`` (published, ``ignore_mid`` only acts together with a box; no call uses one without the other).
    ``box_stride``: the box's pixels per map cell. The published code applies pixel coordinates to any map
    (``box_stride=1``), which on the 28x28 token map of L_sc/PTC keeps the wrong cells (a box starting past row
    or column 28 ignores every token); ``box_stride=16`` maps the box to the token grid."""
    valid = cam * labels.to(cam.dtype)[:, :, None, None]
    v, idx = valid.max(dim=1)
    lab = idx + 1
    lab[v <= bkg_thre] = 0
    if ignore_mid:
        lab[v <= high] = IGNORE
        lab[v <= low] = 0
    if img_box is None:
        return lab
    box = torch.as_tensor(img_box, device=cam.device).long().reshape(-1, 4)
    if box_stride != 1:
        box = torch.stack([box[:, 0] // box_stride, -(-box[:, 1] // box_stride),
                           box[:, 2] // box_stride, -(-box[:, 3] // box_stride)], dim=1)
    inside = box_mask(box, lab.shape[-2], lab.shape[-1])
    return torch.where(inside, lab, torch.full_like(lab, IGNORE))


def seg_pseudo_labels(par: PAR, images01: torch.Tensor, cams: torch.Tensor, labels: torch.Tensor,
                      high: float = 0.7, low: float = 0.25, img_box: Optional[torch.Tensor] = None,
                      down_scale: int = 2) -> torch.Tensor:
    """``refine_cams_with_bkg_v2``: for each background level (``high``, ``low``) prepend a constant background
    plane to the label-masked CAMs, resize both (bilinear) to ``1/down_scale``, softmax over background + the
    image's classes, refine with PAR on the ``1/down_scale`` image, resize back, argmax -> class id. Then label =
    the high-background label; where it is background, 255, unless the low-background label is background too
    (0); 255 outside ``img_box``. Vectorised over images: the present classes of every image are packed into the
    first channels (absent slots have probability 0, which PAR keeps at 0), so the result equals the published
    per-image loop."""
    n, c, h, w = cams.shape
    hs, ws = h // down_scale, w // down_scale
    imgs = F.interpolate(images01.float(), size=(hs, ws), mode="bilinear", align_corners=False)
    present = torch.cat([torch.ones(n, 1, device=cams.device, dtype=torch.bool), labels.bool()], dim=1)
    keys = torch.where(present, torch.arange(c + 1, device=cams.device), c + 1 + torch.arange(c + 1,
                                                                                           device=cams.device))
    order = keys.argsort(dim=1)[:, :int(present.sum(1).max())]            # (N, S): present classes first
    slot_ok = torch.gather(present, 1, order)
    planes = []
    for bg in (high, low):
        full = torch.cat([torch.full((n, 1, h, w), bg, device=cams.device, dtype=torch.float32), cams.float()], 1)
        small = F.interpolate(full, size=(hs, ws), mode="bilinear", align_corners=False)
        small = torch.gather(small, 1, order[:, :, None, None].expand(-1, -1, hs, ws))
        small = small.masked_fill(~slot_ok[:, :, None, None], float("-inf"))
        planes.append(small.softmax(dim=1))
    refined = par(imgs.repeat(2, 1, 1, 1), torch.cat(planes))             # (2N, S, hs, ws)
    refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
    lab = torch.gather(order.repeat(2, 1), 1, refined.argmax(dim=1).flatten(1)).view(2 * n, h, w)
    lab_h, lab_l = lab[:n], lab[n:]
    if img_box is not None:
        inside = box_mask(torch.as_tensor(img_box, device=cams.device), h, w)
        lab_h = torch.where(inside, lab_h, torch.full_like(lab_h, IGNORE))
        lab_l = torch.where(inside, lab_l, torch.full_like(lab_l, IGNORE))
    out = torch.where(lab_h == 0, torch.full_like(lab_h, IGNORE), lab_h)
    return torch.where((lab_h + lab_l) == 0, torch.zeros_like(out), out)


def token_aff_mask(cam_aux: torch.Tensor, labels: torch.Tensor, size: Tuple[int, int], img_box=None,
                   bkg_thre: float = 0.5, high: float = 0.7, low: float = 0.25, box_stride: int = 1
                   ) -> torch.Tensor:
    """The PTC / L_sc targets: the aux CAM resized (bilinear) to the token grid, labelled with ``ignore_mid``
    (:func:`cam_to_label`, published ``box_stride=1``), then :func:`~wseg.losses.toco.aff_mask_from_labels`."""
    small = F.interpolate(cam_aux, size=tuple(size), mode="bilinear", align_corners=False)
    lab = cam_to_label(small, labels, bkg_thre, high, low, ignore_mid=True, img_box=img_box, box_stride=box_stride)
    return aff_mask_from_labels(lab)
