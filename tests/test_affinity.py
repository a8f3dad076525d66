"""AffinityNet pairs / affinity labels / la-ha label construction against brute-force loops over the published rules."""
import numpy as np
import pytest
import torch

from wseg.affinity import (AffinityLabelExtractor, confident_labels, extract_affinity_labels, get_indices_in_radius,
                           get_indices_of_pairs, num_pairs, pair_indices, pool_scores, search_offsets)
from wseg.errors import WsegError


def published_offsets(radius):
    """The published search_dist loops, verbatim in structure."""
    out = [(0, x) for x in range(1, radius)]
    for y in range(1, radius):
        for x in range(-radius + 1, radius):
            if x * x + y * y < radius * radius:
                out.append((y, x))
    return out


def brute_pairs(radius, h, w):
    """Double loop over offsets and pixels: a source is any pixel whose whole half disc lies inside the map."""
    rf = radius - 1
    src = [y * w + x for y in range(h) for x in range(w) if y < h - rf and rf <= x < w - rf]
    to = []
    for dy, dx in published_offsets(radius):
        for y in range(h - rf):
            for x in range(rf, w - rf):
                assert 0 <= y + dy < h and 0 <= x + dx < w
                to.append((y + dy) * w + (x + dx))
    return np.array(src), np.array(to)


def test_offsets_published_half_disc():
    offs = search_offsets(5)
    assert [tuple(o) for o in offs] == published_offsets(5)
    assert len(offs) == 34
    # each unordered neighbour pair within the radius appears exactly once (half disc + its mirror = full disc)
    full = {tuple(o) for o in offs} | {(-a, -b) for a, b in offs}
    disc = {(a, b) for a in range(-4, 5) for b in range(-4, 5) if 0 < a * a + b * b < 25}
    assert full == disc and len(full) == 2 * len(offs)
    assert [tuple(o) for o in search_offsets(3)] == published_offsets(3)


@pytest.mark.parametrize("radius,h,w", [(5, 9, 12), (5, 14, 9), (3, 6, 7), (2, 4, 4), (5, 5, 9)])
def test_pairs_match_brute_force(radius, h, w):
    ind_from, ind_to = get_indices_of_pairs(radius, (h, w))
    src, to = brute_pairs(radius, h, w)
    np.testing.assert_array_equal(ind_from, src)
    np.testing.assert_array_equal(ind_to, to)
    assert ind_from.dtype == np.int64 and ind_to.dtype == np.int64
    k, m = num_pairs(h, w, radius)
    assert (k, m) == (len(published_offsets(radius)), len(src)) and len(ind_to) == k * m
    pairs = get_indices_in_radius(h, w, radius)
    np.testing.assert_array_equal(pairs[:, 0], np.tile(src, k))
    np.testing.assert_array_equal(pairs[:, 1], to)
    tf, tt = pair_indices(h, w, radius)
    assert torch.equal(tf, torch.from_numpy(src)) and torch.equal(tt, torch.from_numpy(to))


def test_pairs_too_small_is_an_error():
    with pytest.raises(WsegError, match="too small"):
        get_indices_of_pairs(5, (4, 20))
    with pytest.raises(WsegError, match="too small"):
        get_indices_of_pairs(5, (20, 8))
    with pytest.raises(WsegError, match="radius"):
        search_offsets(1)


def brute_labels(label, radius):
    """Per pair, the published rules: bg+ = both 0; fg+ = same non-zero class, no 255; neg = different, no 255."""
    h, w = label.shape
    rf = radius - 1
    offs = published_offsets(radius)
    m = (h - rf) * (w - 2 * rf)
    bg, fg, neg = (np.zeros((len(offs), m), np.float32) for _ in range(3))
    for k, (dy, dx) in enumerate(offs):
        j = 0
        for y in range(h - rf):
            for x in range(rf, w - rf):
                a, b = int(label[y, x]), int(label[y + dy, x + dx])
                if a != 255 and b != 255:
                    bg[k, j] = a == b == 0
                    fg[k, j] = a == b != 0
                    neg[k, j] = a != b
                j += 1
    return bg, fg, neg


@pytest.mark.parametrize("seed,radius,h,w", [(0, 5, 10, 12), (1, 5, 13, 9), (2, 3, 7, 8)])
def test_affinity_labels_match_brute_force(seed, radius, h, w):
    rng = np.random.default_rng(seed)
    label = rng.choice(np.array([0, 0, 1, 3, 3, 7, 255], np.uint8), size=(h, w))
    got = extract_affinity_labels(label, radius)
    for g, e in zip(got, brute_labels(label, radius)):
        assert g.dtype == torch.float32 and tuple(g.shape) == e.shape
        np.testing.assert_array_equal(g.numpy(), e)
    # the three sets are disjoint, and a pair is in none of them iff it touches 255
    total = sum(g.numpy() for g in got)
    assert total.max() <= 1
    # torch input, batch input and the callable form agree
    t = extract_affinity_labels(torch.from_numpy(label), radius)
    b = extract_affinity_labels(np.stack([label, label[::-1, ::-1].copy()]), radius)
    c = AffinityLabelExtractor((h, w), radius)(label)
    for g, gt, gb, gc, e2 in zip(got, t, b, c, brute_labels(label[::-1, ::-1], radius)):
        assert torch.equal(g, gt) and torch.equal(g, gb[0]) and torch.equal(g, gc)
        np.testing.assert_array_equal(gb[1].numpy(), e2)


def test_affinity_label_extractor_checks_size():
    with pytest.raises(WsegError, match="crop size"):
        AffinityLabelExtractor(12)(np.zeros((10, 12), np.uint8))


def published_combine(la_scores, ha_scores):
    """VOC12AffDataset.__getitem__ after the transforms, on channel-first stacks."""
    label = np.concatenate([la_scores, ha_scores], 0)
    no_score_region = np.max(label, 0) < 1e-5
    label_la, label_ha = np.array_split(label, 2, axis=0)
    label_la = np.argmax(label_la, axis=0).astype(np.uint8)
    label_ha = np.argmax(label_ha, axis=0).astype(np.uint8)
    label = label_la.copy()
    label[label_la == 0] = 255
    label[label_ha == 0] = 0
    label[no_score_region] = 255
    return label


def test_confident_labels_from_scores_match_published():
    rng = np.random.default_rng(3)
    la = rng.random((3, 9, 11)).astype(np.float32)
    ha = rng.random((3, 9, 11)).astype(np.float32)
    la[:, -2:] = 0
    ha[:, -2:] = 0  # last two rows: zero padding of the random crop -> no score
    expected = published_combine(la, ha)
    np.testing.assert_array_equal(confident_labels(la, ha), expected)
    # keys map channel positions (published dict order) to dataset class indices
    keys = np.array([0, 4, 12])
    mapped = confident_labels(la, ha, keys=keys)
    np.testing.assert_array_equal(mapped, np.where(expected == 255, 255, keys[np.minimum(expected, 2)]))
    assert set(np.unique(expected)) <= {0, 1, 2, 255} and (expected[-2:] == 255).all()


def test_confident_labels_from_label_maps():
    la = np.array([[0, 3, 3, 0, 255]], np.uint8)
    ha = np.array([[0, 3, 0, 3, 0]], np.uint8)
    # la fg -> fg; la bg & ha bg -> 0; ha bg wins over la fg; la bg & ha fg -> 255; 255 anywhere -> 255
    np.testing.assert_array_equal(confident_labels(la, ha), [[0, 3, 0, 255, 255]])
    with pytest.raises(WsegError):
        confident_labels(la, ha[:, :3])
    with pytest.raises(WsegError, match="background"):
        confident_labels(np.ones((2, 3, 3)), np.ones((2, 3, 3)), keys=[1, 2])


def test_pool_scores_is_block_mean_with_zero_padding():
    rng = np.random.default_rng(4)
    s = rng.random((2, 16, 24)).astype(np.float32)
    p = pool_scores(s, 8)
    assert p.shape == (2, 2, 3)
    np.testing.assert_allclose(p[1, 1, 2], s[1, 8:16, 16:24].mean(), rtol=1e-6)
    q = pool_scores(s[:, :13, :21], 8)   # partial blocks averaged with zeros (skimage block_reduce)
    assert q.shape == (2, 2, 3)
    np.testing.assert_allclose(q[0, 1, 2], s[0, 8:13, 16:21].sum() / 64, rtol=1e-6)


def test_confident_labels_from_published_dicts():
    rng = np.random.default_rng(6)
    la = {0: rng.random((5, 6)), 3: rng.random((5, 6)), 12: rng.random((5, 6))}
    ha = {k: rng.random((5, 6)) for k in (0, 3, 12)}
    stack = lambda d: np.stack([d[k] for k in (0, 3, 12)])  # noqa: E731
    np.testing.assert_array_equal(confident_labels(la, ha), confident_labels(stack(la), stack(ha), keys=[0, 3, 12]))
    with pytest.raises(WsegError, match="same keys"):
        confident_labels(la, {0: ha[0], 3: ha[3]})
    # non-contiguous numpy views are fine for the label extractor
    lab = rng.choice(np.array([0, 2, 255], np.uint8), size=(9, 10))
    for g, e in zip(extract_affinity_labels(lab[::-1]), extract_affinity_labels(lab[::-1].copy())):
        assert torch.equal(g, e)
