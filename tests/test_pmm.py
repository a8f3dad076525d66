"""PMM CVS + PPMG (wseg/pmm.py, wseg/stages/ppmg.py) against a step-by-step reference of the published
Eli-YiLi/PMM ``pipeline/refine_cam.py`` (get_CoV, the per-class CRF loop, proportion, argmax, BGR image), plus the
stage on a tiny synthetic VOC: outputs, resume, settings guard, shards, skip-and-list, one-line flag errors."""
import os
import shutil

import cv2
import numpy as np
import pytest

from wseg import io, pmm
from wseg.cli import main, stage_parser
from wseg.data.voc import VOCRoot
from wseg.stages import ppmg as stage


# ----------------------------------------------------------------------------- published computation, re-stated

def ref_get_cov(heat, scale=0.3, t=0.05):
    """get_CoV: numpy std (ddof 0) over v > t, divided by the mean of v + 1e-8 over the same pixels."""
    cov = {}
    for k, v in heat.items():
        sel = v[v > t]
        cov[k] = 0 if sel.size == 0 else sel.std() / (sel + 1e-8).mean() * scale
    return cov


def ref_crf(img, probs, t=10):
    """refine_cam.crf_inference: softmax unary, Gaussian (3, compat 10), bilateral (80, 13, compat 10)."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    n, (h, w) = probs.shape[0], img.shape[:2]
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    crf.addPairwiseGaussian(3, compat=10)
    crf.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.copy(img), compat=10)
    return np.array(crf.inference(t)).reshape((n, h, w))


def ref_ppmg(img, cams, alpha, cam_thresh, cov):
    """refine_cam.ppmg with k_add=True + the PNG write of work(); ``img`` as the CRF gets it (BGR there).
    Returns (labels, cvs per class, CRF foreground prob per class, importance per class)."""
    h, w = img.shape[:2]
    fg_list, imp_list, keys = [np.ones((h, w)).astype(np.uint8)], [None], [0]
    imp_list[0] = fg_list[0]
    cvs_all, q_all = [], []
    for k, v in cams.items():
        v = np.array([v])
        smooth = np.copy(v)
        smooth[smooth < cam_thresh] = 0
        smooth = smooth ** (1 - cov[k])
        bg = np.power(1 - np.max(smooth, axis=0, keepdims=True), alpha)
        q = ref_crf(img, np.concatenate((bg, smooth), axis=0))[1]
        fg = np.zeros_like(q)
        fg[q > 0.5] = 1
        fg_list.append(fg)
        imp_list.append(v[0] / (1 + (v[0] * fg).sum()))
        keys.append(k + 1)
        fg_list[0] = fg_list[0] * (fg == 0)
        imp_list[0] = fg_list[0]
        cvs_all.append(smooth[0])
        q_all.append(q)
    index = np.argmax(np.stack(fg_list, 0) * np.stack(imp_list, 0), 0)
    out = np.zeros((h, w), np.uint8)
    for i, k in enumerate(keys):
        out[index == i] = k
    return out, np.array(cvs_all), np.array(q_all), np.array(imp_list[1:])


def random_case(h, w, seed, n_cls=3, empty=False):
    """An RGB image with coloured blobs where the CAMs are high, and {class: HxW float32 CAM in [0, 1]}."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cams = {}
    for k in rng.choice(20, n_cls, replace=False):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, h / 2)
        c = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) + 0.15 * rng.random((h, w))
        blob = c > 0.5
        img[blob] = (img[blob] // 4 + rng.integers(0, 190, 3)).astype(np.uint8)
        cams[int(k)] = (c / c.max()).astype(np.float32)
    if empty:                                   # a class with nothing above the threshold, one value exactly at it
        z = np.full((h, w), 0.01, np.float32)
        z[0, 0] = 0.05
        cams[19] = z
    return img, cams


# ----------------------------------------------------------------------------- CVS

def test_cov_matches_published_and_is_population_std():
    _, cams = random_case(29, 41, 3, empty=True)
    cams[7] = np.random.default_rng(0).normal(0.2, 0.3, (29, 41)).astype(np.float32)   # negatives, > 1
    stack = np.stack(list(cams.values()))
    ref = np.array(list(ref_get_cov(cams).values()), np.float32)
    cv = pmm.coefficient_of_variation(stack)
    np.testing.assert_allclose(cv, ref, rtol=1e-6, atol=1e-8)
    assert cv[list(cams).index(19)] == 0                       # empty class -> 0
    sel = stack[0][stack[0] > 0.05]
    assert not np.isclose(cv[0], sel.std(ddof=1) / sel.mean() * 0.3, rtol=1e-5)   # ddof 1 would be caught
    for t, s in ((0.2, 0.5), (0.0, 1.0)):
        np.testing.assert_allclose(pmm.coefficient_of_variation(stack, t, s),
                                   np.array(list(ref_get_cov(cams, s, t).values()), np.float32), rtol=1e-6, atol=1e-8)
    batch = np.stack([stack, stack[::-1] * 0.5])                 # (B, K, H, W): vectorised over images too
    cvb = pmm.coefficient_of_variation(batch)
    np.testing.assert_allclose(cvb[0], cv, rtol=1e-6)
    np.testing.assert_allclose(cvb[1], pmm.coefficient_of_variation(stack[::-1] * 0.5), rtol=1e-6)


def test_cvs_matches_published():
    _, cams = random_case(33, 27, 5, empty=True)
    stack = np.stack(list(cams.values()))
    cov = ref_get_cov(cams)
    cvs = pmm.cv_smoothing(stack, cv=np.array(list(cov.values()), np.float32))
    for i, (k, v) in enumerate(cams.items()):
        ref = np.copy(v)
        ref[ref < 0.05] = 0
        ref = ref ** (1 - cov[k])
        np.testing.assert_array_equal(cvs[i], ref)
    assert cvs[-1][0, 0] == np.float32(0.05) and (cvs[-1].ravel()[1:] == 0).all()   # == t kept, < t zeroed
    np.testing.assert_allclose(pmm.cv_smoothing(stack), cvs, rtol=1e-6)              # own cv: same up to rounding
    # intent over breakage: cv >= 1 keeps zeroed pixels at 0 (published 0 ** negative = inf)
    big = pmm.cv_smoothing(stack[:1], cv=np.array([1.5], np.float32))
    assert np.isfinite(big).all() and (big[stack[:1] < 0.05] == 0).all()


# ----------------------------------------------------------------------------- PPMG

@pytest.mark.parametrize("h,w,seed,alpha,rgb", [(37, 53, 0, 11, False), (61, 45, 1, 24.0, False),
                                                (48, 71, 2, 11, True), (45, 39, 4, 11.0, False)])
def test_ppmg_matches_published(h, w, seed, alpha, rgb):
    img, cams = random_case(h, w, seed, empty=seed == 4)
    cov = ref_get_cov(cams)
    ref, ref_cvs, ref_q, ref_imp = ref_ppmg(img if rgb else img[..., ::-1], cams, alpha, 0.05, cov)
    got = pmm.ppmg_details(img, cams, alpha=alpha, rgb=rgb)
    assert list(got.keys) == list(cams)
    np.testing.assert_allclose(got.cvs, ref_cvs, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.q, ref_q, atol=1e-4)
    np.testing.assert_allclose(got.proportion, ref_imp, rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(got.labels, ref)
    assert set(np.unique(ref)) <= {0} | {k + 1 for k in cams} and len(np.unique(ref)) >= 2
    np.testing.assert_array_equal(pmm.ppmg(img, cams, alpha=alpha, rgb=rgb), ref)


def test_bgr_quirk_matters_and_ppmg_edge_cases():
    img, cams = random_case(120, 99, 2)
    bgr = pmm.ppmg(img, cams)
    assert (bgr != pmm.ppmg(img, cams, rgb=True)).any()            # the lattice is not channel-order invariant
    ref, *_ = ref_ppmg(img[..., ::-1], cams, 11, 0.05, ref_get_cov(cams))
    np.testing.assert_array_equal(bgr, ref)
    assert (pmm.ppmg(img, {}) == 0).all()                          # no class -> all background, as published
    # proportion decides overlaps: the class with the smaller mask wins where both are foreground
    fg = np.zeros((2, 4, 5), bool)
    fg[0] = True
    fg[1, :2, :2] = True
    v = np.full((2, 4, 5), 0.8, np.float32)
    lab = pmm.proportional_labels(fg, pmm.proportion(v, fg), [3, 6])
    assert (lab[:2, :2] == 7).all() and (lab[2:] == 4).all()
    v[1, 0, 0] = -0.1                                              # fg with a CAM <= 0 everywhere -> background
    fg[0, 0, 0] = False
    assert pmm.proportional_labels(fg, pmm.proportion(v, fg), [3, 6])[0, 0] == 0


# ----------------------------------------------------------------------------- stage

@pytest.fixture(scope="module")
def toy(toy_root, tmp_path_factory):
    """CAMs made by blurring the toy ground truth (the shared 64x48 toy dataset)."""
    voc = VOCRoot(toy_root)
    cam_dir = str(tmp_path_factory.mktemp("pmm_cams"))
    for i in voc.ids("train") + voc.ids("val"):
        gt = io.load_mask_png(voc.mask_path(i))
        cams = {}
        for c in np.unique(gt):
            if c not in (0, 255):
                cam = cv2.GaussianBlur((gt == c).astype(np.float32), (0, 0), 3)
                cams[int(c) - 1] = cam / cam.max()
        io.save_cam_dict(os.path.join(cam_dir, i + ".npy"), cams)
    return {"root": toy_root, "cams": cam_dir, "voc": voc, "train": voc.split_path("train"),
            "ids": voc.ids("train")}


def call(argv):
    out = {}
    rc = main(stage_parser(stage), lambda a: out.update(r=stage.run(a)), argv)
    return rc, out.get("r")


def argv(toy, out, *extra, cams=None):
    return ["--voc12_root", toy["root"], "--infer_list", toy["train"], "--cam_dir", cams or toy["cams"],
            "--out_dir", out, "--num_workers", "2", *extra]


def test_stage_outputs_resume_and_guard(toy, tmp_path, capsys):
    out = str(tmp_path / "ppmg")
    rc, res = call(argv(toy, out))
    assert rc == 0 and res["processed"] == 12 and res["done"] == 12
    for i in toy["ids"][:3]:
        img = io.load_image(toy["voc"].image_path(i))
        cams = io.load_cam_dict(os.path.join(toy["cams"], i + ".npy"))
        got = io.load_mask_png(os.path.join(out, i + ".png"))
        np.testing.assert_array_equal(got, pmm.ppmg(img, cams))
        bgr = cv2.imread(toy["voc"].image_path(i))                  # the published image path
        np.testing.assert_array_equal(got, ref_ppmg(bgr, cams, 11, 0.05, ref_get_cov(cams))[0])
    # resume: only the missing image is redone, finished ones are not rewritten
    first, last = (os.path.join(out, i + ".png") for i in (toy["ids"][0], toy["ids"][-1]))
    os.utime(last, (1, 1))
    os.remove(first)
    rc, res = call(["--data_root", toy["root"], "--infer_list", toy["train"], "--out_cam", toy["cams"],
                    "--out_crf", out, "--crf_threshs", "11", "--num_workers", "0"])     # published flag names
    assert rc == 0 and res["processed"] == 1 and io.is_done(first) and os.path.getmtime(last) == 1
    # settings guard: other settings into the same folder are refused in one line
    capsys.readouterr()
    for extra in (["--alpha", "24"], ["--rgb"], ["--cv_scale", "0.5"]):
        rc, _ = call(argv(toy, out, *extra))
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and out in err and "other settings" in err
    assert os.path.getmtime(last) == 1


def test_stage_shards_and_bad_images(toy, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "sharded")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc, res = call(argv(toy, out, "--num_workers", "0"))
    assert rc == 0 and res["processed"] == 6
    assert sorted(f[:-4] for f in os.listdir(out) if f.endswith(".png")) == sorted(toy["ids"][1::2])
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    # skip-and-list: a corrupt CAM file is listed at the end, the other images are written
    cams = str(tmp_path / "cams")
    shutil.copytree(toy["cams"], cams)
    bad = toy["ids"][2]
    with open(os.path.join(cams, bad + ".npy"), "wb") as f:
        f.write(b"not a numpy file")
    out2 = str(tmp_path / "skip")
    capsys.readouterr()
    rc, _ = call(argv(toy, out2, cams=cams))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "1 of 12 images skipped" in err and bad in err
    assert len([f for f in os.listdir(out2) if f.endswith(".png")]) == 11
    rc, _ = call(argv(toy, str(tmp_path / "stop"), "--on_error", "stop", "--num_workers", "0", cams=cams))
    assert rc == 2 and bad + ".npy" in capsys.readouterr().err


@pytest.mark.parametrize("extra,needle", [(["--alpha", "0"], "--alpha"), (["--alpha", "nan"], "--alpha"),
                                          (["--cam_thresh", "1.5"], "--cam_thresh"),
                                          (["--cv_scale", "-1"], "--cv_scale"), (["--crf_iters", "0"], "--crf_iters"),
                                          (["--num_workers", "-1"], "--num_workers"), (["--rgb", "maybe"], "--rgb"),
                                          (["--on_error", "ignore"], "--on_error"), ("same", "CAM folder"),
                                          ("nocams", "CAM")])
def test_bad_flags_one_line_nothing_written(toy, tmp_path, capsys, extra, needle):
    out = str(tmp_path / "never")
    if extra == "same":
        args = argv(toy, toy["cams"])
    elif extra == "nocams":
        args = argv(toy, out, cams=str(tmp_path / "missing_cams"))
    else:
        args = argv(toy, out, *extra)
    rc, _ = call(args)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert not os.path.exists(out)
    assert not os.path.exists(os.path.join(toy["cams"], stage.SETTINGS_FILE))
