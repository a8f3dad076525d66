"""Sparse AffinityNet random walk == the published dense matrix-power algorithm; O(N*K) memory."""
import resource

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wseg.affinity import get_indices_of_pairs, num_pairs
from wseg.errors import WsegError
from wseg.randomwalk import (build_transition, dense_affinity_matrix, downsample_cams, random_walk,
                             random_walk_dense, random_walk_labels, upsample_argmax, with_background)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def published_dense_rw(cam_vec, aff, h, w, beta, logt, radius=5):
    """infer_aff.py + resnet38_aff.to_dense transcribed in numpy (float64): the reference of the reference."""
    ind_from, ind_to = get_indices_of_pairs(radius, (h, w))
    n = h * w
    src = np.tile(ind_from, len(ind_to) // len(ind_from))
    aff_mat = np.zeros((n, n))
    np.add.at(aff_mat, (src, ind_to), aff)
    np.add.at(aff_mat, (np.arange(n), np.arange(n)), 1.0)
    np.add.at(aff_mat, (ind_to, src), aff)
    aff_mat = aff_mat ** beta
    trans_mat = aff_mat / np.sum(aff_mat, axis=0, keepdims=True)
    for _ in range(logt):
        trans_mat = trans_mat @ trans_mat
    return cam_vec @ trans_mat


def random_case(seed, h, w, c=4, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    k, m = num_pairs(h, w)
    aff = torch.rand(k, m, generator=g, dtype=dtype) * 0.9 + 0.05
    cams = torch.rand(c, h, w, generator=g, dtype=dtype)
    return aff, cams


def test_dense_reference_is_the_published_algorithm():
    aff, cams = random_case(0, 9, 11)
    ref = published_dense_rw(cams.reshape(4, -1).numpy(), aff.reshape(-1).numpy(), 9, 11, beta=8, logt=3)
    got = random_walk_dense(cams, aff, beta=8, logt=3)
    np.testing.assert_allclose(got.reshape(4, -1).numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("logt,beta", [(0, 8), (1, 1), (3, 8), (5, 2), (6, 8), (8, 8)])
def test_sparse_equals_dense_float64(device, logt, beta):
    aff, cams = random_case(logt * 10 + beta, 10, 13)
    trans = build_transition(aff, 10, 13, beta=beta, device=device)
    got = random_walk(cams, trans, logt)
    ref = random_walk_dense(cams, aff, beta=beta, logt=logt)
    assert got.shape == cams.shape and got.dtype == cams.dtype and got.device == cams.device
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("bg", [dict(bg_score=0.27), dict(bg_alpha=16), dict(bg_alpha=4)])
@pytest.mark.parametrize("logt", [2, 6, 8])
def test_sparse_equals_dense_float32_with_background(bg, logt):
    h, w = 12, 16
    aff, _ = random_case(logt, h, w, dtype=torch.float32)
    fg = torch.zeros(6, h, w)
    fg[1, 2:8, 3:9] = torch.linspace(0.2, 1.0, 36).reshape(6, 6)   # absent classes stay all-zero channels
    fg[4, 6:, 8:] = 0.7
    cams = with_background(fg, **bg)
    got = random_walk(cams, build_transition(aff, h, w), logt)
    ref = random_walk_dense(cams, aff, logt=logt)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    assert (got[[1, 3, 4, 6]] == 0).all()   # absent classes (zero channels) stay exactly zero


def test_with_background_variants():
    fg = torch.tensor([[[0.2, 0.9]], [[0.5, 0.1]]])
    assert torch.equal(with_background(fg, bg_score=0.27)[0], torch.full((1, 2), 0.27))
    torch.testing.assert_close(with_background(fg, bg_alpha=16)[0], torch.tensor([[0.5 ** 16, 0.1 ** 16]]))
    assert torch.equal(with_background(fg, bg_alpha=2)[1:], fg)
    assert torch.equal(with_background(torch.zeros(0, 1, 2), bg_alpha=3), torch.ones(1, 1, 2))
    with pytest.raises(WsegError):
        with_background(fg)
    with pytest.raises(WsegError):
        with_background(fg, bg_score=0.27, bg_alpha=16)


def test_transition_is_sparse_row_stochastic_and_symmetric_support():
    h, w = 9, 12
    aff, _ = random_case(1, h, w)
    k, m = num_pairs(h, w)
    trans = build_transition(aff, h, w, beta=8)
    n = h * w
    assert trans.nnz == n + 2 * k * m and trans.matrix.layout == torch.sparse_csr
    dense = trans.matrix.to_dense()
    torch.testing.assert_close(dense.sum(1), torch.ones(n, dtype=torch.float64))
    # S = trans_mat^T of the published column-normalised matrix
    a = dense_affinity_matrix(aff, h, w).pow(8)
    torch.testing.assert_close(dense, (a / a.sum(0, keepdim=True)).t())


def test_memory_is_linear_in_nodes():
    """192x192 nodes: a dense N x N float32 matrix would take 5.4 GB; the sparse walk stays far below 1 GB."""
    h = w = 192
    k, m = num_pairs(h, w)
    aff = torch.rand(k, m)
    cams = torch.zeros(21, h, w)
    cams[0] = 0.27
    cams[5] = torch.rand(h, w)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux, high-water mark
    trans = build_transition(aff, h, w)
    out = random_walk(cams, trans, logt=2)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert trans.nnz == h * w + 2 * k * m
    assert grown_mib < 1024, f"random walk grew the peak RSS by {grown_mib:.0f} MiB"
    assert torch.isfinite(out).all() and (out[1:5] == 0).all()


def test_pipeline_matches_published_infer_aff():
    """Pad to x8, avg-pool 8, walk, bilinear upsample to the padded size, argmax, crop (infer_aff.py)."""
    rng = np.random.default_rng(5)
    H, W = 45, 70                        # not multiples of 8
    h, w = -(-H // 8), -(-W // 8)
    k, m = num_pairs(h, w)
    aff = torch.from_numpy(rng.random((k, m)).astype(np.float32))
    cam_full = np.zeros((21, H, W), np.float32)
    cam_full[3] = rng.random((H, W))
    cam_full[9, 10:30, 20:50] = 0.9
    cam_full[0] = (1 - np.max(cam_full[1:], 0)) ** 16
    # published, written out
    arr = np.pad(cam_full, ((0, 0), (0, h * 8 - H), (0, w * 8 - W)), mode="constant")
    small = F.avg_pool2d(torch.from_numpy(arr), 8, 8)
    ref = published_dense_rw(small.reshape(21, -1).double().numpy(), aff.reshape(-1).double().numpy(), h, w, 8, 6)
    ref = F.interpolate(torch.from_numpy(ref).float().view(1, 21, h, w), (h * 8, w * 8), mode="bilinear",
                        align_corners=False)
    ref = np.uint8(torch.max(ref, 1)[1][0])[:H, :W]
    torch.testing.assert_close(downsample_cams(torch.from_numpy(cam_full)), small)
    got = random_walk_labels(torch.from_numpy(cam_full), aff, logt=6)
    assert got.dtype == np.uint8 and got.shape == (H, W)
    assert (got == ref).mean() > 0.999   # float32 vs float64 ties aside
    two = torch.stack([torch.zeros(h, w), torch.ones(h, w)])
    np.testing.assert_array_equal(upsample_argmax(two, (H, W), keys=[0, 7]), np.full((H, W), 7, np.uint8))


def test_bad_inputs_are_one_line_errors():
    aff, cams = random_case(2, 9, 11)
    with pytest.raises(WsegError, match="pair affinities"):
        build_transition(aff[:, :-1], 9, 11)
    trans = build_transition(aff, 9, 11)
    with pytest.raises(WsegError, match="feature resolution"):
        random_walk(cams[:, :-1], trans, 2)
    with pytest.raises(WsegError, match="negative"):
        build_transition(-aff, 9, 11)
