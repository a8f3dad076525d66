"""Random walk with AffinityNet affinities (Ahn & Kwak, CVPR 2018, Sec. 3.3; published ``infer_aff.py``).

The semantic affinity matrix ``W`` holds the predicted affinities ``a_ij`` of all pairs within the radius in both
directions (published ``to_dense``: pairs, transposed pairs, and self-loops of 1). The transition matrix is
``T = D^-1 W^{o beta}`` (Hadamard power ``beta``, published 8, then normalised by the degrees ``D``); the CAMs are
propagated by ``t = 2^logt`` steps of the walk (published ``logt`` 8 in PSA, 6 in PPC).

Published orientation: ``trans_mat = aff_mat / aff_mat.sum(0)`` (each column sums to 1), squared ``logt`` times, and
``cam_rw = cam_vec @ trans_mat`` with ``cam_vec`` of shape ``(C, N)``. Since ``W`` is symmetric this equals
applying ``S = D^-1 W`` (row-stochastic, ``S = trans_mat^T``) ``2^logt`` times to ``cam_vec^T``:
each step replaces a node's scores by the affinity-weighted mean of its neighbours' scores and its own.

The published code builds the dense ``N x N`` matrix and squares it (``O(N^3)`` time, ``O(N^2)`` memory;
:func:`random_walk_dense`, kept as the reference for tests and benchmarks). :func:`random_walk` instead applies the
sparse ``S`` (``N * (2K + 1)`` non-zeros, ``K`` offsets) ``2^logt`` times: ``O(2^logt * N * K * C)`` time and
``O(N * K + N * C)`` memory, on any device. Channels that are zero everywhere (absent classes) stay zero under the
linear walk and are skipped.

Background: the published variants put a constant score (PPC ``aff_infer.py``: 0.27) or PSA's
``(1 - max_k cam_k)^alpha`` (``infer_aff.py``: alpha 16) into channel 0 at image resolution, pad the image to a
multiple of 8 with zeros, average-pool by 8, walk, upsample bilinearly to the padded size, take the argmax and crop.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from wseg.affinity import DEFAULT_RADIUS, num_pairs, pair_indices
from wseg.errors import WsegError

DEFAULT_BETA = 8
PSA_LOGT = 8                # PSA infer_aff.py
PPC_LOGT = 6                # PPC / SEAM aff_infer.py
DEFAULT_BG_SCORE = 0.27     # PPC aff_infer.py constant background
DEFAULT_BG_ALPHA = 16       # PSA infer_aff.py (1 - max cam)^alpha
STRIDE = 8                  # feature stride of AffinityNet

Device = Optional[Union[str, torch.device]]

WORK_PER_THREAD = 5_000_000  # CPU: multiply-adds per walk step that make one more intra-op thread worth its cost


@contextlib.contextmanager
def _cpu_threads(device: torch.device, work: int, num_threads: Optional[int] = None):
    """On CPU, use ``num_threads`` intra-op threads, by default one per ``WORK_PER_THREAD`` multiply-adds.

    A walk is hundreds of small sparse products, each a fork/join of the intra-op pool. For a VOC-sized image
    (3k nodes) extra threads save little when the cores are idle, and when another process keeps a core busy every
    product waits for the descheduled thread: 2 threads on 2 busy cores measured 30x slower than 1. Parallelise over
    images (processes) instead. The setting is restored on exit.
    """
    before = torch.get_num_threads()
    want = num_threads if num_threads else max(1, min(before, int(work) // WORK_PER_THREAD))
    if device.type != "cpu" or want >= before:
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _edges_as_vector(aff_edges: torch.Tensor, height: int, width: int, radius: int) -> torch.Tensor:
    """Flatten the network output ``(K, M)``, ``(1, K, M)`` or ``(K * M,)`` to ``(K * M,)`` (offset-major)."""
    k, m = num_pairs(height, width, radius)
    if aff_edges.numel() != k * m or (aff_edges.ndim == 3 and aff_edges.shape[0] != 1):
        raise WsegError(f"affinities of shape {tuple(aff_edges.shape)}: expected {k}x{m} pair affinities for a "
                        f"{height}x{width} feature map at radius {radius} (one image); check the radius and the "
                        "feature size (image size / 8)")
    return aff_edges.reshape(-1)


@dataclass
class SparseTransition:
    """Sparse row-stochastic transition ``S = D^-1 W^{o beta}`` (``S = trans_mat^T`` of the published code).

    ``matrix`` is an ``(N, N)`` sparse CSR tensor (``N = height * width`` nodes, row-major); one random-walk step
    is ``x <- matrix @ x`` for node scores ``x`` of shape ``(N, C)``.
    """

    matrix: torch.Tensor
    height: int
    width: int
    radius: int
    beta: float

    @property
    def num_nodes(self) -> int:
        return self.height * self.width

    @property
    def nnz(self) -> int:
        return int(self.matrix.values().numel())

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """One walk step on ``(N, C)`` node scores."""
        return self.matrix @ x


def build_transition(aff_edges: torch.Tensor, height: int, width: int, radius: int = DEFAULT_RADIUS,
                     beta: float = DEFAULT_BETA, device: Device = None,
                     dtype: Optional[torch.dtype] = None) -> SparseTransition:
    """Sparse transition matrix from AffinityNet's pair affinities.

    ``aff_edges``: ``(K, M)`` (or ``(1, K, M)`` / flat) non-negative affinities ``exp(-mean|f_i - f_j|)`` of the
    pairs of :func:`wseg.affinity.get_indices_of_pairs` ``(radius, (height, width))``, offset-major as the network
    returns them. ``W`` gets each pair in both directions plus self-loops 1; ``beta`` is the published Hadamard
    power (8); rows are normalised by the degrees ``d_i = sum_j W_ij^beta``. Duplicate pairs (none for the published
    pairs) add up, as in the published ``sparse -> to_dense``. ``dtype`` defaults to the affinities' float dtype.
    """
    aff = torch.as_tensor(aff_edges)
    device = torch.device(device) if device is not None else aff.device
    dtype = dtype or (aff.dtype if aff.is_floating_point() else torch.float32)
    aff = _edges_as_vector(aff, height, width, radius).to(device=device, dtype=dtype)
    if aff.numel() and float(aff.min()) < 0:
        raise WsegError("affinities: negative values; AffinityNet affinities exp(-distance) lie in (0, 1]")
    with _cpu_threads(device, aff.numel() * 2):
        return _build_transition(aff, height, width, radius, beta, device, dtype)


def _build_transition(aff: torch.Tensor, height: int, width: int, radius: int, beta: float, device: torch.device,
                      dtype: torch.dtype) -> SparseTransition:
    n = height * width
    ind_from, ind_to = pair_indices(height, width, radius, device=device)
    k = ind_to.numel() // ind_from.numel()
    src = ind_from.repeat(k)
    w = aff.pow(beta)
    ones = torch.ones(n, device=device, dtype=dtype)
    node = torch.arange(n, device=device)
    rows = torch.cat([src, ind_to, node])
    cols = torch.cat([ind_to, src, node])
    vals = torch.cat([w, w, ones])
    deg = torch.zeros(n, device=device, dtype=dtype).index_add_(0, rows, vals)
    vals = vals / deg[rows]
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        csr = coo.to_sparse_csr()
    return SparseTransition(csr, int(height), int(width), int(radius), float(beta))


def _check_cams(cams: torch.Tensor, height: int, width: int) -> None:
    if cams.ndim != 3 or tuple(cams.shape[1:]) != (height, width):
        raise WsegError(f"CAMs of shape {tuple(cams.shape)}: expected (C, {height}, {width}) at the affinity "
                        "feature resolution; downsample them with wseg.randomwalk.downsample_cams")


#: Largest ``logt`` accepted (2^12 = 4096 walk steps; published 6 or 8): more only burns time on a converged walk.
MAX_LOGT = 12


@torch.no_grad()
def random_walk(cams: torch.Tensor, transition: SparseTransition, logt: int = PSA_LOGT,
                num_threads: Optional[int] = None) -> torch.Tensor:
    """Propagate ``(C, h, w)`` scores with ``2^logt`` sparse random-walk steps; returns ``(C, h, w)``.

    Equal (up to float rounding) to the published ``cam_vec @ trans_mat^(2^logt)``; never forms an ``N x N``
    matrix. Runs on ``transition.device``; the result is returned on the input's device and dtype. On CPU,
    ``num_threads`` intra-op threads are used for the walk (default: 1 for VOC-sized images, see ``_cpu_threads``).
    """
    if not 0 <= int(logt) <= MAX_LOGT:
        raise WsegError(f"logt {logt}: the number of random-walk steps is 2^logt, logt must lie in [0, {MAX_LOGT}] "
                        "(published 6 or 8)")
    cams = torch.as_tensor(cams)
    _check_cams(cams, transition.height, transition.width)
    c = cams.shape[0]
    mat = transition.matrix
    x = cams.reshape(c, -1).to(device=mat.device, dtype=mat.dtype)
    live = torch.nonzero((x != 0).any(1)).reshape(-1)      # absent classes stay exactly 0
    out = torch.zeros_like(x)
    if live.numel():
        y = x[live].t().contiguous()                             # (N, C_live)
        with _cpu_threads(mat.device, transition.nnz * live.numel(), num_threads):
            for _ in range(2 ** int(logt)):
                y = mat @ y
        out[live] = y.t()
    return out.reshape(cams.shape).to(device=cams.device, dtype=cams.dtype)


@torch.no_grad()
def dense_affinity_matrix(aff_edges: torch.Tensor, height: int, width: int, radius: int = DEFAULT_RADIUS,
                          device: Device = None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The published dense ``N x N`` affinity matrix (``to_dense=True``): pairs, transposed pairs, self-loops 1."""
    aff = torch.as_tensor(aff_edges)
    device = torch.device(device) if device is not None else aff.device
    dtype = dtype or (aff.dtype if aff.is_floating_point() else torch.float32)
    aff = _edges_as_vector(aff, height, width, radius).to(device=device, dtype=dtype)
    n = height * width
    ind_from, ind_to = pair_indices(height, width, radius, device=device)
    src = ind_from.repeat(ind_to.numel() // ind_from.numel())
    node = torch.arange(n, device=device)
    idx = torch.stack([torch.cat([src, node, ind_to]), torch.cat([ind_to, node, src])])
    vals = torch.cat([aff, torch.ones(n, device=device, dtype=dtype), aff])
    return torch.sparse_coo_tensor(idx, vals, (n, n), check_invariants=False).to_dense()


@torch.no_grad()
def random_walk_dense(cams: torch.Tensor, aff_edges: torch.Tensor, radius: int = DEFAULT_RADIUS,
                      beta: float = DEFAULT_BETA, logt: int = PSA_LOGT, device: Device = None,
                      dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Reference: the published dense algorithm, ``O(N^3)`` time and ``O(N^2)`` memory (tests/benchmarks only).

    ``aff_mat = W^beta``; ``trans_mat = aff_mat / aff_mat.sum(0)``; ``logt`` squarings; ``cam_vec @ trans_mat``.
    ``cams`` is ``(C, h, w)`` at feature resolution; returns ``(C, h, w)``.
    """
    cams = torch.as_tensor(cams)
    c, height, width = cams.shape
    aff_mat = dense_affinity_matrix(aff_edges, height, width, radius, device=device, dtype=dtype).pow(beta)
    trans_mat = aff_mat / aff_mat.sum(0, keepdim=True)
    del aff_mat
    for _ in range(int(logt)):
        trans_mat = trans_mat @ trans_mat
    cam_vec = cams.reshape(c, -1).to(device=trans_mat.device, dtype=trans_mat.dtype)
    return (cam_vec @ trans_mat).reshape(cams.shape).to(device=cams.device, dtype=cams.dtype)


# --------------------------------------------------------------------------------------------- CAM plumbing


def with_background(fg_cams: torch.Tensor, bg_score: Optional[float] = None,
                    bg_alpha: Optional[float] = None) -> torch.Tensor:
    """Prepend the published background channel to ``(C_fg, H, W)`` foreground CAMs -> ``(C_fg + 1, H, W)``.

    Exactly one of ``bg_score`` (a constant, PPC's 0.27) or ``bg_alpha`` (PSA's ``(1 - max_k cam_k)^alpha``, 16)
    is given. With no foreground channel, ``(1 - 0)^alpha = 1``.
    """
    if (bg_score is None) == (bg_alpha is None):
        raise WsegError("random walk background: give exactly one of a constant score (--bg_score, published "
                        "0.27) or a power (--bg_alpha, published 16)")
    fg = torch.as_tensor(fg_cams)
    if fg.ndim != 3:
        raise WsegError(f"foreground CAMs of shape {tuple(fg.shape)}: expected (C, H, W)")
    if bg_score is not None:
        bg = torch.full((1,) + tuple(fg.shape[1:]), float(bg_score), dtype=fg.dtype, device=fg.device)
    else:
        fg_max = fg.amax(0, keepdim=True) if fg.shape[0] else torch.zeros((1,) + tuple(fg.shape[1:]),
                                                                          dtype=fg.dtype, device=fg.device)
        bg = (1 - fg_max).pow(bg_alpha)
    return torch.cat([bg, fg], 0)


def feature_size(height: int, width: int, stride: int = STRIDE) -> Tuple[int, int]:
    """AffinityNet feature size of an image: ``(ceil(H / 8), ceil(W / 8))`` (published padding to a multiple of 8)."""
    return -(-int(height) // stride), -(-int(width) // stride)


def downsample_cams(cams: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Published: zero-pad ``(C, H, W)`` bottom/right to a multiple of ``stride``, then ``avg_pool2d(stride)``."""
    cams = torch.as_tensor(cams)
    h, w = cams.shape[-2:]
    ph, pw = feature_size(h, w, stride)
    x = F.pad(cams.unsqueeze(0), (0, pw * stride - w, 0, ph * stride - h))
    return F.avg_pool2d(x, stride, stride)[0]


def upsample_scores(cam_rw: torch.Tensor, size: Tuple[int, int], stride: int = STRIDE) -> torch.Tensor:
    """Published output resampling: bilinear upsampling of ``(C, h, w)`` to the padded size ``(h * 8, w * 8)``,
    then crop to ``size = (H, W)``. Returns float ``(C, H, W)``."""
    cam_rw = torch.as_tensor(cam_rw)
    h, w = cam_rw.shape[-2:]
    up = F.interpolate(cam_rw.unsqueeze(0).float(), size=(h * stride, w * stride), mode="bilinear",
                       align_corners=False)[0]
    return up[:, : int(size[0]), : int(size[1])]


def argmax_labels(scores: torch.Tensor, keys: Optional[Sequence[int]] = None) -> np.ndarray:
    """uint8 ``(H, W)`` argmax over the channels of ``(C, H, W)`` scores; ``keys`` maps channels to dataset class
    indices (default identity)."""
    pred = torch.as_tensor(scores).argmax(0).cpu().numpy()
    if keys is not None:
        pred = np.asarray(keys, dtype=np.int64)[pred]
    return pred.astype(np.uint8)


def upsample_argmax(cam_rw: torch.Tensor, size: Tuple[int, int], stride: int = STRIDE,
                    keys: Optional[Sequence[int]] = None) -> np.ndarray:
    """Published output step: :func:`upsample_scores` then :func:`argmax_labels`. Returns a uint8 ``(H, W)``
    label map."""
    return argmax_labels(upsample_scores(cam_rw, size, stride), keys)


@torch.no_grad()
def random_walk_labels(cams: torch.Tensor, aff_edges: torch.Tensor, radius: int = DEFAULT_RADIUS,
                       beta: float = DEFAULT_BETA, logt: int = PSA_LOGT, keys: Optional[Sequence[int]] = None,
                       device: Device = None) -> np.ndarray:
    """The whole published ``infer_aff.py`` step for one image: ``cams`` is ``(C, H, W)`` at image resolution with
    the background in channel 0 (see :func:`with_background`), ``aff_edges`` the AffinityNet output for the image
    padded to a multiple of 8. Returns the uint8 ``(H, W)`` random-walk label map (channel -> ``keys``)."""
    cams = torch.as_tensor(cams)
    small = downsample_cams(cams).to(device or torch.as_tensor(aff_edges).device)
    trans = build_transition(aff_edges, small.shape[1], small.shape[2], radius, beta, device=device)
    return upsample_argmax(random_walk(small, trans, logt), cams.shape[1:], keys=keys)
