"""The regularised loss (dense CRF energy; Tang et al.'s "rloss", as gated by AFA/ToCo/LOC-BE) in pure PyTorch.

The published ``DenseEnergyLoss`` (T:model/losses.py:102-165, L:model/losses.py:102-165) calls a C++ permutohedral
filter (SWIG extension, shipped prebuilt only for CPython 3.8: ModuleNotFoundError or ``undefined symbol:
omp_get_thread_num`` elsewhere). Its computation, written here with a PyTorch filter:

1. inputs at half size (``scale_factor=0.5``): image (0-255 RGB) and ROI (the ``img_box`` mask) with *nearest*
   interpolation, class probabilities S with bilinear, the pseudo label with nearest; U = pixels labelled 255;
2. gate ``G = ROI - max_k S``, ``G[U] = 1``, ``G[G < 0] = 0``; ``S' = S * ROI``;
3. ``AS = G * (W S')`` with the bilateral kernel ``W_ij ~ exp(-|p_i - p_j|^2 / 2 sxy^2 - |I_i - I_j|^2 / 2 srgb^2)``,
   ``sxy = sigma_xy * scale_factor`` (100 * 0.5 = 50 px), ``srgb = 15``;
4. ``E = -sum(S' * AS) / N``; the loss is ``weight * E`` (1e-7; ToCo/LOC-BE give it 0.05 in the total);
5. custom backward: ``dE/dS = -2 * AS * ROI / N`` (the gate is held constant and the kernel taken as symmetric:
   this is the published gradient, not the exact one; ``backward="autograd"`` differentiates the energy instead).

Filters (``method``): ``exact`` computes ``W`` densely in row chunks (``O(P^2)``: tests, small inputs, and fast
enough on a GPU at 224x224); ``grid`` is a 5-D bilateral grid (splat with multilinear weights, separable Gaussian
blur, slice), ``O(P)``, for full size on CPU; ``auto`` picks ``exact`` on CUDA or for small inputs, else
``grid``. The published permutohedral lattice is itself an approximation whose output is about
:data:`LATTICE_GAIN` times the exact Gaussian (measured against the published C++ code compiled locally, see
``docs/locbe.md``); ``gain`` (default :data:`LATTICE_GAIN`) scales our filters to the published magnitude, so the
published weights (1e-7, 0.05) keep their meaning. ``gain=1`` gives the textbook kernel with ``W_ii = 1``.
"""
from __future__ import annotations

import itertools
import math
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wseg.data.classes import IGNORE
from wseg.errors import WsegError

#: ImageNet mean / std in 0-255 units (the published ``get_energy_loss`` de-normalisation)
MEAN_255 = (123.675, 116.28, 103.53)
STD_255 = (58.395, 57.12, 57.375)
#: published permutohedral output / exact Gaussian energy at the published setting (see the module docstring)
LATTICE_GAIN = 0.61
METHODS = ("auto", "exact", "grid")
EXACT_MAX_PIXELS = 4096   # "auto" uses the exact filter up to this many pixels per image off CUDA


def bilateral_features(images: torch.Tensor, sigma_rgb: float, sigma_xy: float) -> torch.Tensor:
    """``(N, P, 5)`` features ``(x / sigma_xy, y / sigma_xy, R / sigma_rgb, G / sigma_rgb, B / sigma_rgb)`` of
    ``images`` ``(N, 3, H, W)`` in 0-255 (the published ``initializePermutohedral`` order)."""
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=images.device, dtype=torch.float32),
                            torch.arange(w, device=images.device, dtype=torch.float32), indexing="ij")
    pos = torch.stack([xs, ys]).reshape(1, 2, -1).expand(n, -1, -1) / sigma_xy
    rgb = images.float().reshape(n, 3, -1) / sigma_rgb
    return torch.cat([pos, rgb], dim=1).transpose(1, 2).contiguous()


def exact_gaussian_filter(features: torch.Tensor, values: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
    """``out[n, k, i] = sum_j exp(-|f_i - f_j|^2 / 2) values[n, k, j]`` computed densely, ``chunk`` rows at a time.

    ``features`` ``(N, P, d)``, ``values`` ``(N, K, P)``."""
    n, p, _ = features.shape
    f = features.float() - features.float().mean(dim=1, keepdim=True)      # centred: smaller cancellation error
    sq = (f * f).sum(-1)                                                    # (N, P)
    if chunk is None:
        chunk = max(1, min(p, (1 << 25) // max(1, n * p)))
    values = values.float()
    out = []
    for start in range(0, p, chunk):                                        # row blocks, not pixels
        fi = f[:, start:start + chunk]
        d2 = sq[:, start:start + chunk, None] + sq[:, None, :] - 2 * torch.matmul(fi, f.transpose(1, 2))
        out.append(torch.matmul(values, torch.exp(-0.5 * d2.clamp_min(0)).transpose(1, 2)))
    return torch.cat(out, dim=2)


def _blur_axis(grid: torch.Tensor, axis: int, kernel: Sequence[float]) -> torch.Tensor:
    """1-D convolution of ``grid`` along ``axis`` with a symmetric ``kernel``, zero padded, same size (a weighted
    sum of shifted slices: much faster than ``conv1d`` on millions of short rows)."""
    r = (len(kernel) - 1) // 2
    length = grid.shape[axis]
    out = grid * kernel[r]
    for t in range(1, min(r, length - 1) + 1):
        out.narrow(axis, t, length - t).add_(grid.narrow(axis, 0, length - t), alpha=kernel[r + t])
        out.narrow(axis, 0, length - t).add_(grid.narrow(axis, t, length - t), alpha=kernel[r - t])
    return out


def grid_gaussian_filter(features: torch.Tensor, values: torch.Tensor, cell: float = 1.0,
                         radius: int = 2) -> torch.Tensor:
    """A bilateral-grid approximation of :func:`exact_gaussian_filter` (same arguments), ``O(P * 2^d)``.

    Cells are ``cell`` feature units wide; values are splatted to and sliced from the ``2^d`` surrounding cells
    with multilinear weights (one sparse ``(P, cells)`` matrix, used transposed to splat), and the grid is blurred
    per axis by a sampled Gaussian of ``b`` cells with ``cell^2 (b^2 + 1/3) = 1`` (each linear interpolation adds a
    variance of 1/6 cell^2), so the kernel has unit variance per feature; the result is scaled from the normalised
    to the ``exp(-|f|^2 / 2)`` kernel."""
    n, p, d = features.shape
    k = values.shape[1]
    dev = features.device
    if not 0 < cell < math.sqrt(3):
        raise WsegError(f"grid cell {cell}: need 0 < cell < sqrt(3) feature units")
    b = math.sqrt(1.0 / cell ** 2 - 1.0 / 3.0)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / b) ** 2)
    kernel = (kernel / kernel.sum()).tolist()
    g = features.detach().float() / cell
    g = g - g.amin(dim=1, keepdim=True)                                     # per image, from 0
    base = g.floor()
    frac = g - base
    base = base.long() + radius
    sizes = (base.amax(dim=(0, 1)) + 2 + radius).tolist()
    strides = [1] * d
    for a in range(d - 2, -1, -1):
        strides[a] = strides[a + 1] * sizes[a + 1]
    cells = strides[0] * sizes[0]
    corners = torch.tensor(list(itertools.product((0, 1), repeat=d)), device=dev)          # (2^d, d)
    idx = ((base.unsqueeze(2) + corners) * torch.tensor(strides, device=dev)).sum(-1)       # (N, P, 2^d)
    idx = idx + (torch.arange(n, device=dev) * cells).view(n, 1, 1)
    wgt = torch.where(corners.bool(), frac.unsqueeze(2), 1 - frac.unsqueeze(2)).prod(-1)    # (N, P, 2^d)
    m = corners.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # sparse CSR "beta" notices
        interp = torch.sparse_csr_tensor(torch.arange(0, m * n * p + 1, m, device=dev), idx.reshape(-1),
                                         wgt.reshape(-1), (n * p, n * cells))
        vals = values.float().transpose(1, 2).reshape(n * p, k)
        grid = (interp.t() @ vals).reshape(n, *sizes, k)
        for a in range(d):
            grid = _blur_axis(grid, a + 1, kernel)
        out = interp @ grid.reshape(n * cells, k)
    scale = (2 * math.pi) ** (d / 2) / cell ** d
    return (out * scale).reshape(n, p, k).transpose(1, 2)


def gaussian_filter(features: torch.Tensor, values: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """The bilateral Gaussian ``W values`` with the chosen ``method`` (``auto``, ``exact`` or ``grid``)."""
    if method not in METHODS:
        raise WsegError(f"dense energy filter {method!r}: choose one of {', '.join(METHODS)}")
    if method == "auto":
        method = "exact" if features.is_cuda or features.shape[1] <= EXACT_MAX_PIXELS else "grid"
    with torch.autocast(features.device.type, enabled=False):         # fp32 even inside an AMP context
        if method == "exact":
            return exact_gaussian_filter(features, values)
        return grid_gaussian_filter(features, values)


def energy_gate(segs: torch.Tensor, rois: torch.Tensor, unlabeled: torch.Tensor) -> torch.Tensor:
    """The published gate ``G = ROI - max_k S`` with ``G[U] = 1`` and ``G[G < 0] = 0`` (``(N, H, W)``)."""
    gate = rois - segs.max(dim=1)[0]
    gate = torch.where(unlabeled, torch.ones_like(gate), gate)
    return gate.clamp_min(0)


class DenseEnergyLossFunction(torch.autograd.Function):
    """``E = -sum(S' * G * (W S')) / N`` with the published backward ``dE/dS = -2 G (W S') ROI / N``."""

    @staticmethod
    def forward(ctx, segs, features, rois, unlabeled, method, gain):
        with torch.no_grad():
            n, k, h, w = segs.shape
            gate = energy_gate(segs.float(), rois.float(), unlabeled)
            s = segs.float() * rois.float().unsqueeze(1)
            ws = gaussian_filter(features, s.reshape(n, k, h * w), method).reshape(n, k, h, w) * gain
            a_s = ws * gate.unsqueeze(1)
            ctx.save_for_backward(a_s, rois)
            ctx.n = n
            return -(s * a_s).sum() / n

    @staticmethod
    def backward(ctx, grad_output):
        a_s, rois = ctx.saved_tensors
        grad = -2.0 * grad_output * a_s * rois.float().unsqueeze(1) / ctx.n
        return grad, None, None, None, None, None


def dense_energy_autograd(segs, features, rois, unlabeled, method: str = "exact", gain: float = LATTICE_GAIN):
    """The same energy differentiated by autograd (gate included): the exact gradient of the forward value."""
    n, k, h, w = segs.shape
    gate = energy_gate(segs, rois.to(segs.dtype), unlabeled)
    s = segs * rois.to(segs.dtype).unsqueeze(1)
    ws = gaussian_filter(features, s.reshape(n, k, h * w), method).reshape(n, k, h, w) * gain
    return -(s * ws * gate.unsqueeze(1)).sum() / n


class DenseEnergyLoss(nn.Module):
    """The published ``DenseEnergyLoss(weight, sigma_rgb, sigma_xy, scale_factor)`` (ToCo/LOC-BE: 1e-7, 15, 100,
    0.5); ``forward(images 0-255 (N,3,H,W), probs (N,K,H,W), rois (N,H,W), labels (N,1,H,W) or (N,H,W))``.

    ``method``: the filter (see the module docstring); ``gain``: scale of the filter (default: the published
    lattice's); ``backward``: ``published`` (the custom gradient) or ``autograd`` (the exact gradient)."""

    def __init__(self, weight: float = 1e-7, sigma_rgb: float = 15.0, sigma_xy: float = 100.0,
                 scale_factor: float = 0.5, method: str = "auto", gain: float = LATTICE_GAIN,
                 backward: str = "published"):
        super().__init__()
        if method not in METHODS:
            raise WsegError(f"dense energy filter {method!r}: choose one of {', '.join(METHODS)}")
        if backward not in ("published", "autograd"):
            raise WsegError(f"dense energy backward {backward!r}: choose published or autograd")
        self.weight, self.sigma_rgb, self.sigma_xy, self.scale_factor = weight, sigma_rgb, sigma_xy, scale_factor
        self.method, self.gain, self.backward = method, gain, backward

    def forward(self, images: torch.Tensor, probs: torch.Tensor, rois: torch.Tensor, labels: torch.Tensor
                ) -> torch.Tensor:
        sf = self.scale_factor
        if labels.dim() == 3:
            labels = labels.unsqueeze(1)
        imgs = F.interpolate(images.float(), scale_factor=sf, recompute_scale_factor=True)
        segs = F.interpolate(probs.float(), scale_factor=sf, mode="bilinear", align_corners=False,
                             recompute_scale_factor=True)
        rois = F.interpolate(rois.float().unsqueeze(1), scale_factor=sf, recompute_scale_factor=True).squeeze(1)
        labels = F.interpolate(labels.float(), scale_factor=sf, mode="nearest", recompute_scale_factor=True)
        unlabeled = (labels.long() == IGNORE).squeeze(1)
        feats = bilateral_features(imgs, self.sigma_rgb, self.sigma_xy * sf)
        if self.backward == "autograd":
            energy = dense_energy_autograd(segs, feats, rois, unlabeled, self.method, self.gain)
        else:
            energy = DenseEnergyLossFunction.apply(segs, feats, rois, unlabeled, self.method, self.gain)
        return self.weight * energy

    def extra_repr(self) -> str:
        return (f"sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, weight={self.weight}, "
                f"scale_factor={self.scale_factor}, method={self.method}, gain={self.gain}, backward={self.backward}")


def box_mask(img_box: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, H, W)`` bool: inside each image's ``img_box`` ``[h0, h1, w0, w1]`` (the valid, un-padded region)."""
    box = torch.as_tensor(img_box).long().reshape(-1, 4)
    rows = torch.arange(height, device=box.device).view(1, -1, 1)
    cols = torch.arange(width, device=box.device).view(1, 1, -1)
    b = box.view(-1, 4, 1, 1)
    return (rows >= b[:, 0]) & (rows < b[:, 1]) & (cols >= b[:, 2]) & (cols < b[:, 3])


def energy_loss(images: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, img_box: Optional[torch.Tensor],
                loss_layer: DenseEnergyLoss, mean: Sequence[float] = MEAN_255, std: Sequence[float] = STD_255
                ) -> torch.Tensor:
    """The published ``get_energy_loss``: softmax of the segmentation logits (already at the label size), the
    ImageNet-normalised ``images`` back to 0-255, the ``img_box`` mask as ROI (whole image when ``None``)."""
    n, _, h, w = logits.shape
    probs = F.softmax(logits.float(), dim=1)
    if img_box is None:
        rois = torch.ones(n, h, w, device=logits.device)
    else:
        rois = box_mask(img_box.to(logits.device), h, w).float()
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return loss_layer(images.float() * s + m, probs, rois, labels)
