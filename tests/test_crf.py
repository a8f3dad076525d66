"""Dense CRF with the published parameters, CRF with alpha, label CRF and the process pool."""
import numpy as np
import pytest

from wseg.crf import crf_inference, crf_label_refine, crf_with_alpha, crf_with_alpha_dict, crf_with_alpha_scores
from wseg.errors import WsegError
from wseg.parallel import map_pool

H, W = 24, 32


def toy_image():
    """Left half red, right half blue, a green square in the middle of the right half (noise-free edges)."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (220, 30, 30)
    img[:, W // 2:] = (30, 30, 220)
    img[8:16, 20:28] = (30, 200, 30)
    truth = np.zeros((H, W), np.int64)
    truth[:, W // 2:] = 1
    truth[8:16, 20:28] = 2
    return img, truth


def noisy_probs(truth, n_labels, seed, flip=0.2):
    """Weak correct evidence (0.5 vs the rest) with ``flip`` of the pixels voting for a wrong label."""
    rng = np.random.default_rng(seed)
    lab = truth.copy()
    wrong = rng.random(truth.shape) < flip
    lab[wrong] = (truth[wrong] + rng.integers(1, n_labels, wrong.sum())) % n_labels
    probs = np.full((n_labels,) + truth.shape, 0.5 / (n_labels - 1), np.float32)
    np.put_along_axis(probs, lab[None], 0.5, 0)
    return probs, lab


def published_crf(img, probs, t=10, scale_factor=1, labels=21):
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3 / scale_factor, compat=3)
    d.addPairwiseBilateral(sxy=80 / scale_factor, srgb=13, rgbim=np.copy(img), compat=10)
    return np.array(d.inference(t)).reshape((labels, h, w))


def test_crf_inference_shape_normalised_and_published():
    img, truth = toy_image()
    probs, noisy = noisy_probs(truth, 3, 0)
    q = crf_inference(img, probs)
    assert q.shape == (3, H, W) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    np.testing.assert_allclose(q, published_crf(img, probs, labels=3), atol=1e-6)
    assert (noisy != truth).mean() > 0.1
    np.testing.assert_array_equal(q.argmax(0), truth)        # the CRF removes the label noise
    q1 = crf_inference(img, probs, t=1, scale_factor=2, labels=3)
    np.testing.assert_allclose(q1, published_crf(img, probs, t=1, scale_factor=2, labels=3), atol=1e-6)


def test_size_mismatch_names_both_shapes():
    img, truth = toy_image()
    probs, _ = noisy_probs(truth, 3, 1)
    with pytest.raises(WsegError, match=r"\(24, 32, 3\).*\(3, 24, 31\)"):
        crf_inference(img, probs[:, :, :-1])
    with pytest.raises(WsegError, match=r"\(24, 32, 3\).*\(20, 32\)"):
        crf_with_alpha(img, {4: np.zeros((20, 32), np.float32)}, 4)
    with pytest.raises(WsegError, match=r"\(24, 32, 3\).*\(24, 30\)"):
        crf_label_refine(img, truth[:, :30], 3)
    with pytest.raises(WsegError, match="uint8"):
        crf_inference(img.astype(np.float32) / 255, probs)


def test_crf_with_alpha_keeps_present_classes():
    img, truth = toy_image()
    rng = np.random.default_rng(2)
    # CAM of class index 6 (dataset class 7) fires on the blue half, class 11 (-> 12) on the green square
    cams = {6: np.where(truth == 1, 0.8, 0.05).astype(np.float32),
            11: np.where(truth == 2, 0.9, 0.0).astype(np.float32)}
    cams[6] += rng.random((H, W)).astype(np.float32) * 0.1
    keys, probs = crf_with_alpha_scores(img, cams, 4)
    assert keys.tolist() == [0, 7, 12] and probs.shape == (3, H, W)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    # published: bg = (1 - max v)^alpha stacked before the present CAMs, crf_inference(labels=3)
    v = np.stack([cams[6], cams[11]])
    bg = np.power(1 - np.max(v, 0, keepdims=True), 4)
    np.testing.assert_allclose(probs, published_crf(img, np.concatenate([bg, v]), labels=3), atol=1e-6)
    lab = crf_with_alpha(img, cams, 4)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 7, 12}
    np.testing.assert_array_equal(lab, np.array([0, 7, 12])[truth])
    d = crf_with_alpha_dict(img, cams, 32)
    assert sorted(d) == [0, 7, 12] and all(p.shape == (H, W) for p in d.values())
    # high alpha shrinks the background, low alpha grows it
    assert (crf_with_alpha(img, cams, 32) == 0).sum() <= (crf_with_alpha(img, cams, 4) == 0).sum()
    assert (crf_with_alpha(img, {}, 4) == 0).all()


def test_crf_label_refine():
    img, truth = toy_image()
    _, noisy = noisy_probs(truth, 3, 3, flip=0.15)
    labels = noisy.astype(np.uint8)
    labels[::5, ::3] = 255                                    # unsure pixels get filled in
    out = crf_label_refine(img, labels, 21)
    assert out.dtype == np.uint8 and out.shape == (H, W)
    np.testing.assert_array_equal(out, truth)
    with pytest.raises(WsegError, match="outside"):
        crf_label_refine(img, np.full((H, W), 30, np.uint8), 21)


def _square(x):
    if x < 0:
        raise WsegError(f"item {x}: negative")
    return x * x


@pytest.mark.parametrize("workers", [0, 2])
def test_map_pool_order_and_errors(workers):
    assert map_pool(_square, range(7), num_workers=workers, progress=False) == [x * x for x in range(7)]
    with pytest.raises(WsegError, match="item -1: negative"):
        map_pool(_square, [1, 2, -1, 3], num_workers=workers, progress=False)


def _crf_item(seed):
    img, truth = toy_image()
    probs, _ = noisy_probs(truth, 3, seed)
    return crf_inference(img, probs).argmax(0)


def test_map_pool_runs_crf_in_workers():
    outs = map_pool(_crf_item, [0, 1, 2], num_workers=2, progress=False)
    assert all(np.array_equal(o, _crf_item(i)) for i, o in enumerate(outs))


def test_crf_kernels_are_configurable_and_default_to_psa():
    import pydensecrf.densecrf as dcrf

    from wseg.crf import PPC_INFER_KERNELS, PSA_KERNELS

    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    probs = rng.random((3, 20, 24)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    np.testing.assert_allclose(crf_inference(img, probs), crf_inference(img, probs, **PSA_KERNELS))

    d = dcrf.DenseCRF2D(24, 20, 3)
    d.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, 1e-5, 1)).reshape(3, -1)))
    d.addPairwiseGaussian(sxy=1, compat=3)
    d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=np.copy(img), compat=4)
    ref = np.asarray(d.inference(10), np.float32).reshape(3, 20, 24)
    deeplab = dict(pos_w=3, pos_xy_std=1, bi_w=4, bi_xy_std=67, bi_rgb_std=3)
    np.testing.assert_allclose(crf_inference(img, probs, **deeplab), ref, atol=1e-6)
    labels = probs.argmax(0).astype(np.uint8)
    assert crf_label_refine(img, labels, 3, **PPC_INFER_KERNELS).shape == (20, 24)


def test_scale_factor_auto_keeps_the_kernels_share_of_the_image():
    from wseg.crf import CRF_REFERENCE_SIDE, resolve_scale_factor

    assert resolve_scale_factor("1", (96, 128)) == 1.0 and resolve_scale_factor(2.5, (1, 1)) == 2.5
    assert resolve_scale_factor("auto", (96, 128)) == CRF_REFERENCE_SIDE / 128
    assert resolve_scale_factor("AUTO", (375, 500)) == 1.0          # VOC-sized images: the published kernels
    for bad in ("0", "-1", "big", None):
        with pytest.raises(WsegError, match="positive number"):
            resolve_scale_factor(bad, (10, 10), "--crf_scale_factor")
    # 'auto' on a 125-pixel image is the published CRF with every pixel width divided by 4
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (100, 125, 3), dtype=np.uint8)
    probs = rng.random((3, 100, 125)).astype(np.float32)
    np.testing.assert_allclose(crf_inference(img, probs, scale_factor=resolve_scale_factor("auto", img.shape[:2])),
                               crf_inference(img, probs, pos_xy_std=0.75, bi_xy_std=20), atol=1e-6)
