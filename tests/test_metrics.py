import os

import numpy as np
import pytest

from wseg import metrics
from wseg.errors import WsegError
from wseg.io import save_cam_dict, save_mask_png

C = 6  # small class count: background + 5


# ----------------------------------------------------------------------------- independent published-style reference


def published_pred(cams, t, num_classes, shape):
    """The published dense tensor + argmax."""
    tensor = np.zeros((num_classes,) + tuple(shape), np.float32)
    for key in cams:
        tensor[key + 1] = cams[key]
    tensor[0, :, :] = t
    return np.argmax(tensor, axis=0).astype(np.uint8)


def published_counts(preds, gts, num_classes):
    TP, P, T = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for predict, gt in zip(preds, gts):
        cal = gt < 255
        mask = (predict == gt) * cal
        for i in range(num_classes):
            P[i] += np.sum((predict == i) * cal)
            T[i] += np.sum((gt == i) * cal)
            TP[i] += np.sum((gt == i) * mask)
    return T, P, TP


def published_scores(preds, gts, num_classes):
    T, P, TP = published_counts(preds, gts, num_classes)
    iou, fp, fn = [], [], []
    for i in range(num_classes):
        iou.append(TP[i] / (T[i] + P[i] - TP[i] + 1e-10))
        fp.append((P[i] - TP[i]) / (T[i] + P[i] - TP[i] + 1e-10))
        fn.append((T[i] - TP[i]) / (T[i] + P[i] - TP[i] + 1e-10))
    return np.array(iou), np.mean(iou), np.mean(fp), np.mean(fn)


def random_cams(rng, shape, num_classes, quantised=True):
    keys = rng.choice(num_classes - 1, int(rng.integers(0, 4)), replace=False)
    if quantised:  # coarse values create ties between classes and with the thresholds
        return {int(k): (rng.integers(-1, 5, shape) / 8).astype(np.float32) for k in keys}
    return {int(k): rng.random(shape).astype(np.float32) for k in keys}


def random_gt(rng, shape, num_classes):
    gt = rng.integers(0, num_classes, shape).astype(np.uint8)
    gt[rng.random(shape) < 0.15] = 255
    return gt


# ----------------------------------------------------------------------------- unit tests


def test_confusion_matrix_and_scores_match_published_counts():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, C, (13, 11)).astype(np.uint8)
    pred[0, :5] = 255  # predicted ignore: a miss, no P
    gt = random_gt(rng, (13, 11), C)
    conf = metrics.confusion_matrix(pred, gt, C)
    assert conf.shape == (C + 1, C + 1) and conf.dtype == np.int64
    T, P, TP = metrics.counts(conf)
    Tr, Pr, TPr = published_counts([pred], [gt], C)
    assert T.tolist() == Tr and P.tolist() == Pr and TP.tolist() == TPr
    s = metrics.scores(conf)
    iou, miou, fp, fn = published_scores([pred], [gt], C)
    np.testing.assert_allclose(s["iou"], iou, rtol=0, atol=1e-12)
    assert s["miou"] == pytest.approx(miou, abs=1e-12)
    assert s["fp"] == pytest.approx(fp, abs=1e-12) and s["fn"] == pytest.approx(fn, abs=1e-12)
    assert s["pixel_acc"] == pytest.approx(TP.sum() / (gt < 255).sum())
    # a plain (C, C) matrix is accepted too
    plain = metrics.scores(conf[:C, :C], num_classes=C)
    assert plain["iou"].shape == (C,)
    # int labels (not uint8) take the same path
    np.testing.assert_array_equal(metrics.confusion_matrix(pred.astype(np.int32), gt.astype(np.int64), C), conf)


def test_absent_class_counts_as_zero_iou():
    gt = np.zeros((4, 4), np.uint8)
    s = metrics.scores(metrics.confusion_matrix(gt, gt, 3))
    assert s["iou"].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert s["miou"] == pytest.approx(1 / 3)


def test_fg_argmax_equals_published_dense_argmax_with_ties_and_absent_classes():
    rng = np.random.default_rng(1)
    for trial in range(150):
        shape = (4, 5)
        cams = random_cams(rng, shape, C)
        for t in (-0.125, 0.0, 0.125, 0.25, 0.5):
            np.testing.assert_array_equal(metrics.published_cam_label(cams, t, C, shape),
                                          published_pred(cams, t, C, shape), err_msg=f"{trial} {t} {cams}")
    # all classes present (no zero channel), negative values
    cams = {k: np.full((2, 2), -0.5, np.float32) for k in range(C - 1)}
    np.testing.assert_array_equal(metrics.published_cam_label(cams, -1.0, C), published_pred(cams, -1.0, C, (2, 2)))


def test_threshold_histogram_gives_each_thresholds_confusion():
    rng = np.random.default_rng(2)
    thr = np.array([0.0, 0.125, 0.3, 0.5], np.float32)
    cams = random_cams(rng, (9, 8), C)
    cams.setdefault(2, (rng.integers(-1, 5, (9, 8)) / 8).astype(np.float32))
    gt = random_gt(rng, (9, 8), C)
    fg_max, fg_label = metrics.cam_fg_argmax(cams, C)
    confs = metrics.histogram_to_confusions(metrics.threshold_histogram(fg_max, fg_label, gt, thr, C))
    for j, t in enumerate(thr):
        pred = published_pred(cams, t, C, gt.shape)
        np.testing.assert_array_equal(confs[j], metrics.confusion_matrix(pred, gt, C))


def test_curve_thresholds_equal_published_values():
    t = metrics.curve_thresholds()
    assert len(t) == 60
    assert t.tolist() == [i / 100.0 for i in range(60)]
    assert len(metrics.curve_thresholds(0.1, 0.3, 0.05)) == 5
    with pytest.raises(WsegError):
        metrics.curve_thresholds(0.5, 0.1, 0.01)
    with pytest.raises(WsegError):
        metrics.curve_thresholds(0.0, 0.5, 0.0)


# ----------------------------------------------------------------------------- file-level evaluation


def make_set(root, n=10, shape=(11, 13), seed=3, png=False):
    rng = np.random.default_rng(seed)
    pd, gd = root / "pred", root / "gt"
    ids, cams_all, gts = [], [], []
    os.makedirs(pd, exist_ok=True)
    for i in range(n):
        image_id = f"img_{i:03d}"
        cams = random_cams(rng, shape, C, quantised=i % 2 == 0)
        gt = random_gt(rng, shape, C)
        if i % 3 == 0:  # the published np.save spelling of a dict (never empty here)
            cams = cams or {0: np.zeros(shape, np.float32)}
            np.save(str(pd / f"{image_id}.npy"), cams)
        else:  # may be an empty dict: every pixel is background unless t < 0
            save_cam_dict(str(pd / f"{image_id}.npy"), cams)
        save_mask_png(str(gd / f"{image_id}.png"), gt)
        if png:
            pred = rng.integers(0, C, shape).astype(np.uint8)
            pred[rng.random(shape) < 0.1] = 255
            save_mask_png(str(pd / f"{image_id}.png"), pred)
        ids.append(image_id)
        cams_all.append(cams)
        gts.append(gt)
    return ids, str(pd), str(gd), cams_all, gts


def test_evaluate_list_curve_equals_single_evaluations_and_published(tmp_path):
    ids, pd, gd, cams_all, gts = make_set(tmp_path, n=12)
    thr = [0.0, 0.1, 0.125, 0.25, 0.4, 0.5]
    curve = metrics.evaluate_list(ids, pd, gd, C, "npy", thr, num_workers=2, chunk_size=3)
    assert curve.shape == (len(thr), C + 1, C + 1)
    for j, t in enumerate(thr):
        single = metrics.evaluate_list(ids, pd, gd, C, "npy", [t], num_workers=1)[0]
        np.testing.assert_array_equal(curve[j], single)
        preds = [published_pred(c, t, C, g.shape) for c, g in zip(cams_all, gts)]
        iou, miou, fp, fn = published_scores(preds, gts, C)
        s = metrics.scores(single)
        assert abs(s["miou"] - miou) < 1e-12 and abs(s["fp"] - fp) < 1e-12 and abs(s["fn"] - fn) < 1e-12
    # unsorted / duplicate thresholds come back in the order asked
    back = metrics.evaluate_list(ids, pd, gd, C, "npy", [0.25, 0.0, 0.25], num_workers=1)
    np.testing.assert_array_equal(back, curve[[3, 0, 3]])


def test_evaluate_list_png_with_predicted_ignore(tmp_path):
    ids, pd, gd, _, gts = make_set(tmp_path, n=5, png=True)
    conf = metrics.evaluate_list(ids, pd, gd, C, "png", num_workers=2)[0]
    from wseg.io import load_mask_png
    preds = [load_mask_png(os.path.join(pd, i + ".png")) for i in ids]
    T, P, TP = metrics.counts(conf)
    assert (T.tolist(), P.tolist(), TP.tolist()) == published_counts(preds, gts, C)


def test_evaluate_list_errors(tmp_path):
    ids, pd, gd, _, _ = make_set(tmp_path, n=3)
    with pytest.raises(WsegError, match="empty"):
        metrics.evaluate_list([], pd, gd, C, "npy", [0.1])
    with pytest.raises(WsegError, match=r"no prediction for image nope \(nope.npy\)"):
        metrics.evaluate_list(ids + ["nope"], pd, gd, C, "npy", [0.1])
    os.remove(os.path.join(gd, ids[1] + ".png"))
    with pytest.raises(WsegError, match=f"no ground-truth mask for image {ids[1]}"):
        metrics.evaluate_list(ids, pd, gd, C, "npy", [0.1])
    save_mask_png(os.path.join(gd, ids[1] + ".png"), np.zeros((11, 13), np.uint8))
    save_mask_png(os.path.join(gd, ids[0] + ".png"), np.zeros((3, 3), np.uint8))
    with pytest.raises(WsegError, match="differs from the ground truth"):
        metrics.evaluate_list(ids, pd, gd, C, "npy", [0.1], num_workers=2)
    save_mask_png(os.path.join(gd, ids[0] + ".png"), np.zeros((11, 13), np.uint8))
    save_mask_png(os.path.join(gd, ids[1] + ".png"), np.full((11, 13), 9, np.uint8))
    with pytest.raises(WsegError, match=r"labels 9 outside \[0, 6\)"):
        metrics.evaluate_list(ids, pd, gd, C, "npy", [0.1])
    save_mask_png(os.path.join(gd, ids[1] + ".png"), np.zeros((11, 13), np.uint8))
    save_cam_dict(os.path.join(pd, ids[2] + ".npy"), {7: np.zeros((11, 13))})
    with pytest.raises(WsegError, match="outside"):
        metrics.evaluate_list(ids, pd, gd, C, "npy", [0.1])
    np.save(os.path.join(pd, ids[2] + ".npy"), np.zeros((C - 1, 11, 13)))
    with pytest.raises(WsegError, match="expected a CAM dict"):
        metrics.evaluate_list(ids, pd, gd, C, "npy", [0.1])
    save_cam_dict(os.path.join(pd, ids[2] + ".npy"), {1: np.full((11, 13), np.nan)})
    with pytest.raises(WsegError, match="NaN"):
        metrics.evaluate_list(ids, pd, gd, C, "npy", [0.1])
    with pytest.raises(WsegError, match="needs a background threshold"):
        metrics.evaluate_list(ids, pd, gd, C, "npy", None)
