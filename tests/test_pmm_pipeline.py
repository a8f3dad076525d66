"""Issue #21 integration: PMM's multi-crop CAM as the CAM stage's ``--crop_mode grid`` (against a step-by-step
reference of Eli-YiLi/PMM ``infer_multi_crop.py`` + ``VOC12ClsDatasetMultiCrop``), the cyclic pseudo-mask stage on a
tiny trained PSPNet, and the PMM pipeline configs."""
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from wseg.errors import WsegError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_PSP = os.path.join(REPO, "segmentation", "configs", "demo_pspnet_tiny.py")


def _script(rel):
    from wseg.pipeline import load_script

    return load_script(rel)


# ------------------------------------------------------------------ the published multi-crop CAM, step by step


def published_crops(img, scales, crop_size, stride):
    """``VOC12ClsDatasetMultiCrop.__getitem__`` (tool/data.py:531-579) with its ``inter_transform`` (np.asarray,
    ``Normalize``, HWC_to_CHW): ``(views, locations)``, each crop followed by its mirror."""
    width, height = img.size
    ms_img_list, location_list = [], []
    for s in scales:
        w, h = int(width * s), int(height * s)
        w_num = 1 + int(math.ceil(max(0.0, float(w - crop_size)) / stride))
        h_num = 1 + int(math.ceil(max(0.0, float(h - crop_size)) / stride))
        for w_idx in range(w_num):
            for h_idx in range(h_num):
                if w_idx == (w_num - 1):
                    x2 = w
                    x1 = max(0, x2 - crop_size)
                else:
                    x2 = min(w, (w_idx + 1) * stride)
                    x1 = w_idx * stride
                if h_idx == (h_num - 1):
                    y2 = h
                    y1 = max(0, y2 - crop_size)
                else:
                    y2 = min(h, (h_idx + 1) * stride)
                    y1 = h_idx * stride
                x1 = int(float(x1) / s)
                x2 = int(float(x2) / s)
                y1 = int(float(y1) / s)
                y2 = int(float(y2) / s)
                s_img = img.crop((x1, y1, x2, y2))
                s_img = s_img.resize((crop_size, crop_size), resample=PIL.Image.BILINEAR)
                ms_img_list.append(s_img)
                location_list.append([x1, y1, x2 - x1, y2 - y1])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    views, locs = [], []
    for im, loc in zip(ms_img_list, location_list):
        arr = np.asarray(im)
        proc = np.empty_like(arr, np.float32)
        for c in range(3):                                   # network/scalenet.py Normalize
            proc[..., c] = (arr[..., c] / 255. - mean[c]) / std[c]
        chw = np.transpose(proc, (2, 0, 1))
        views += [chw, np.flip(chw, -1).copy()]
        locs += [loc, loc]
    return views, locs


def published_multi_crop_cam(img, label, cam_fn, scales, crop_size, stride, averaged=None):
    """infer_multi_crop.py:42-77: per view the network's CAM (background dropped) resized to its window, masked,
    un-mirrored; summed into the windows, divided by the count, min-max normalised without clipping."""
    views, locs = published_crops(img, scales, crop_size, stride)
    num_fg = label.shape[0]
    cam_list = []
    for i, (view, loc) in enumerate(zip(views, locs)):
        with torch.no_grad():
            cam = cam_fn(torch.from_numpy(view)[None])
            cam = F.interpolate(cam, (loc[3], loc[2]), mode="bilinear", align_corners=False)[0]
            cam = cam.cpu().numpy() * label.reshape(num_fg, 1, 1)
            if i % 2 == 1:
                cam = np.flip(cam, axis=-1)
        cam_list.append([cam, loc])
    sum_cam = np.zeros((num_fg, img.size[1], img.size[0]))
    sum_counter = np.zeros_like(sum_cam)
    for crop, (x, y, w, h) in cam_list:
        sum_cam[:, y:y + h, x:x + w] += crop
        sum_counter[:, y:y + h, x:x + w] += 1
    sum_counter[sum_counter < 1] = 1
    sum_cam = sum_cam / sum_counter
    if averaged is not None:
        averaged.append(sum_cam.copy())
    cam_max = np.max(sum_cam, (1, 2), keepdims=True)
    cam_min = np.min(sum_cam, (1, 2), keepdims=True)
    sum_cam[sum_cam < cam_min + 1e-5] = 0
    return (sum_cam - cam_min) / (cam_max - cam_min + 1e-5)


def _toy_cam_fn(seed=0):
    """A 1x1 "network" with a stride-2 pooling: signed scores (the normalisation must not clip them) at another
    size than the input (the resize to the window is exercised)."""
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))
    return lambda x: F.avg_pool2d(torch.einsum("kc,nchw->nkhw", w, x), 2, ceil_mode=True)[:, 1:]


def test_crop_boxes_follow_the_published_windows():
    from wseg.cam_crops import GRID_CROP, GRID_SCALES, GRID_STRIDE, crop_boxes

    assert (GRID_SCALES, GRID_CROP, GRID_STRIDE) == ((0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0), 448, 300)
    for (h, w), scales, crop, stride in [((375, 500), GRID_SCALES, 448, 300), ((29, 37), (0.5, 1.0, 2.25), 16, 10),
                                         ((333, 500), (0.75, 2.25), 448, 300)]:
        img = PIL.Image.new("RGB", (w, h))
        _, locs = published_crops(img, scales, crop, stride)
        np.testing.assert_array_equal(crop_boxes(h, w, scales, crop, stride), np.array(locs[::2]))
    assert len(crop_boxes(375, 500, GRID_SCALES)) == 87            # ~90 crops of a VOC image
    with pytest.raises(WsegError, match="empty crop window"):
        crop_boxes(3, 3, [0.2], 4, 2)


def test_multicrop_cam_equals_published_step_by_step():
    from wseg.cam_crops import crop_boxes, grid_crops, multicrop_cam

    rng = np.random.default_rng(0)
    img = PIL.Image.fromarray(rng.integers(0, 255, (29, 37, 3), dtype=np.uint8))
    scales, crop, stride = (0.5, 0.75, 1.0, 1.5, 2.25), 16, 10
    label = np.array([1.0, 0.0, 1.0], np.float32)
    cam_fn = _toy_cam_fn()
    averaged = []
    ref = published_multi_crop_cam(img, label, cam_fn, scales, crop, stride, averaged)
    boxes = crop_boxes(29, 37, scales, crop, stride)
    crops = torch.from_numpy(grid_crops(img, boxes, crop))
    assert len(boxes) > 8                                          # several network calls at the default batch
    for batch in (8, 3, 1):                                          # crops per network call: speed only
        out = multicrop_cam(cam_fn, crops, torch.from_numpy(boxes), torch.from_numpy(label), (29, 37),
                            torch.device("cpu"), batch=batch)
        assert out.dtype == torch.float32 and out.shape == (3, 29, 37)
        np.testing.assert_allclose(out.numpy(), ref, atol=2e-5)
    # signed scores: PPC's min-max (clip at 0) would give other maps, so the no-clip normalisation is exercised
    from wseg.cam import minmax_normalize

    assert averaged[0][[0, 2]].min() < 0
    assert not np.allclose(minmax_normalize(torch.from_numpy(averaged[0])).numpy(), ref, atol=1e-3)


def _random_seam(path, num_classes=4):
    from wseg.methods.base import get_method
    from wseg.models.checkpoint import save_state_dict

    torch.manual_seed(0)
    net = get_method("seam")(None).build_network("resnet38_tiny", num_classes)
    save_state_dict(path, net, {"network": "seam", "backbone": "resnet38_tiny", "num_classes": num_classes})


def test_cam_stage_grid_mode_writes_the_published_cams(toy_root, tmp_path):
    from wseg import io
    from wseg.data.datasets import open_rgb
    from wseg.data.voc import VOCRoot
    from wseg.methods.base import build_from_weights

    weights = str(tmp_path / "cam.pth")
    _random_seam(weights)
    voc = VOCRoot(toy_root)
    ids = voc.ids("train")[:3]
    lst = tmp_path / "three.txt"
    lst.write_text("\n".join(ids) + "\n")
    infer = _script("scripts/contrast_infer.py")
    argv = ["--weights", weights, "--voc12_root", toy_root, "--infer_list", str(lst), "--out_cam", str(tmp_path / "mc"),
            "--num_workers", "0", "--crop_mode", "grid", "--crop_size", "32", "--crop_stride", "20", "--scales",
            "0.75", "1.0", "1.5", "--device", "cpu"]
    out = infer.run(infer.build_parser().parse_args(argv))
    assert (out["inferred"], out["crop_mode"], out["norm"]) == (3, "grid", "minmax_noclip")
    method, model, _ = build_from_weights(weights)
    model.eval()
    labels = voc.cls_labels(ids)
    for i in ids:
        ref = published_multi_crop_cam(open_rgb(voc.image_path(i)), labels[i], lambda x: method.cams(model, x),
                                       (0.75, 1.0, 1.5), 32, 20)
        cams = io.load_cam_dict(str(tmp_path / "mc" / f"{i}.npy"), num_fg=3, shape=(48, 64))
        assert sorted(cams) == np.flatnonzero(labels[i]).tolist()
        for k, v in cams.items():
            np.testing.assert_allclose(v, ref[k], atol=1e-4)
    # the grid defaults are the published ones; the whole-image defaults stay PSA/SEAM/PPC's
    from wseg.stages import contrast_infer as stage

    args = infer.build_parser().parse_args(argv[:8] + ["--crop_mode", "grid"])
    stage.resolve_views(args)
    assert (args.scales, args.crop_size, args.crop_stride) == ([0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0],
                                                               448, 300)
    args = infer.build_parser().parse_args(argv[:8])
    stage.resolve_views(args)
    assert (args.scales, args.crop_mode) == ([0.5, 1.0, 1.5, 2.0], "whole")
    with pytest.raises(WsegError, match="--crop_stride 0"):
        infer.run(infer.build_parser().parse_args(argv + ["--crop_stride", "0", "--out_cam", str(tmp_path / "x")]))


# ------------------------------------------------------------------ cyclic pseudo masks


def _seg_argv(root, out, *sets):
    """The tiny PSPNet on the toy set's ground truth: 40 iterations (~4 s) are enough for spatially varied
    predictions, so the CRF changes some pixels."""
    return ["--config", TINY_PSP, "--voc12_root", root, "--out_dir", out, "--progress", "False", "--set",
            "max_iters=40", "val_every=20", "ckpt_every=20", "crop_size=48", "batch_size=4", "lr=0.05",
            "img_scale=[128,48]", "log_every=20", *sets]


# the PMM test at this scale: slide windows, two ratios x flip, the published CRF
CYCLIC_SETS = ("test_mode=slide", "test_crop=40", "test_stride=30", "test_scales=[0.75,1.0]", "test_flip=True",
               "crf=True", "crf_workers=0")


@pytest.fixture(scope="module")
def trained_psp(toy_root, tmp_path_factory):
    tr = _script("segmentation/train.py")
    out = str(tmp_path_factory.mktemp("psp") / "seg")
    res = tr.run(tr.build_parser().parse_args(_seg_argv(toy_root, out)))
    assert res["finished"] and os.path.isfile(os.path.join(out, "best.pth"))
    return out


def _cyclic(root, seg_out, masks, *extra, sets=CYCLIC_SETS):
    cy = _script("scripts/cyclic_pseudo.py")
    argv = _seg_argv(root, seg_out, *sets)
    return cy.run(cy.build_parser().parse_args(argv[:argv.index("--set")] + ["--out_masks", masks, *extra] +
                                               argv[argv.index("--set"):]))


def test_cyclic_stage_writes_resumes_and_records_the_checkpoint_choice(toy_root, trained_psp, tmp_path):
    from wseg import io
    from wseg.data.voc import VOCRoot
    from wseg.segmentation.data import MMSegInferenceImages
    from wseg.segmentation.models import build_model, load_segmentation_weights
    from wseg.segmentation.predict import MMSegTest, crf_refine, mmseg_predict

    masks = str(tmp_path / "cyclic")
    res = _cyclic(toy_root, trained_psp, masks)
    assert (res["predicted"], res["done"], res["ckpt_choice"], res["selected_by_val"]) == (12, 12, "last", False)
    assert res["ckpt"].endswith("_itr40_all.pth") and res["test"]["mode"] == "slide"
    ids = VOCRoot(toy_root).ids("train")
    pngs = sorted(f for f in os.listdir(masks) if f.endswith(".png"))
    assert pngs == sorted(i + ".png" for i in ids) and os.path.isfile(os.path.join(masks, ".cyclic_pseudo.json"))
    # masks by hand: mmseg's slide + ratios x flip (mean softmax), the CRF, arg-max
    voc = VOCRoot(toy_root)
    test = MMSegTest(scales=(0.75, 1.0), flip=True, mode="slide", crop=40, stride=30, resize=(128, 48))
    from wseg.segmentation.config import config_from_args

    cfg = config_from_args(_script("segmentation/train.py").build_parser().parse_args(_seg_argv(toy_root, "x")))
    net = build_model(cfg, 4, weights=False)
    load_segmentation_weights(net, res["ckpt"])
    net.eval()
    crf = dict(iters=10, pos_w=3.0, pos_xy_std=1.0, bi_w=4.0, bi_xy_std=67.0, bi_rgb_std=3.0)
    crf_changed = 0
    for i in ids[:4]:
        img, views = MMSegInferenceImages(voc, [i], test, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])[0]
        probs, plain = mmseg_predict(net, views, img.shape[:2], test, torch.device("cpu"))
        expect = np.argmax(crf_refine(img, probs.numpy(), crf), 0)
        got = io.load_mask_png(os.path.join(masks, i + ".png"))
        np.testing.assert_array_equal(got, expect)
        crf_changed += int((expect != plain.numpy()).sum())
    assert crf_changed > 0 and len(np.unique(got)) > 1          # the CRF (and the network) matter here
    # resume: nothing to do; one deleted mask is redone
    assert _cyclic(toy_root, trained_psp, masks)["predicted"] == 0
    os.remove(os.path.join(masks, ids[3] + ".png"))
    assert _cyclic(toy_root, trained_psp, masks)["predicted"] == 1
    # the published choice (best val checkpoint) is recorded; the same folder refuses the other weights
    with pytest.raises(WsegError, match="other settings.*ckpt"):
        _cyclic(toy_root, trained_psp, masks, "--ckpt_choice", "best_val")
    best = _cyclic(toy_root, trained_psp, str(tmp_path / "cyclic_best"), "--ckpt_choice", "best_val")
    assert best["selected_by_val"] is True and best["ckpt"].endswith("best.pth") and best["ckpt_val_miou"] is not None
    given = _cyclic(toy_root, trained_psp, str(tmp_path / "cyclic_given"), "--ckpt",
                    os.path.join(trained_psp, "best.pth"))
    assert (given["ckpt_choice"], given["selected_by_val"]) == ("given", True)   # read from the weights' metadata
    # the masks train the segmenter with plain cross-entropy
    tr = _script("segmentation/train.py")
    again = tr.run(tr.build_parser().parse_args(_seg_argv(toy_root, str(tmp_path / "retrain"), "max_iters=2",
                                                          "val_every=0", "ckpt_every=2", f"pseudo_mask_dir={masks}")))
    assert again["finished"]


def test_cyclic_stage_bad_inputs(toy_root, trained_psp, tmp_path):
    masks = str(tmp_path / "m")
    os.makedirs(masks)
    with pytest.raises(WsegError, match="pseudo_mask_dir"):
        _cyclic(toy_root, trained_psp, masks, sets=CYCLIC_SETS + (f"pseudo_mask_dir={masks}",))
    with pytest.raises(WsegError, match="final weights are missing"):
        _cyclic(toy_root, trained_psp, masks, sets=CYCLIC_SETS + ("max_iters=8",))
    with pytest.raises(WsegError, match="best.pth: not found"):
        _cyclic(toy_root, str(tmp_path / "nothing"), masks, "--ckpt_choice", "best_val")
    cy = _script("scripts/cyclic_pseudo.py")
    with pytest.raises(WsegError, match="ckpt_choice"):
        cy.build_parser().parse_args(["--config", TINY_PSP, "--out_masks", masks, "--ckpt_choice", "best"])
    assert not [f for f in os.listdir(masks) if f.endswith(".png")]


# ------------------------------------------------------------------ pipeline configs


@pytest.mark.parametrize("name", ["pmm_voc", "demo_pmm"])
def test_pmm_pipelines_list_and_connect(name, tmp_path, capsys):
    from wseg.pipeline import load_pipeline, run_pipeline, stages_from_config

    root = str(tmp_path / "voc")
    run_pipeline(name, str(tmp_path / "w"), root=root, list_only=True)
    assert "scripts/cyclic_pseudo.py" in capsys.readouterr().out and not os.path.exists(tmp_path / "w")
    st = {s.name: s for s in stages_from_config(load_pipeline(name, root=root), str(tmp_path / "w"))}

    def arg(stage, key):
        argv = st[stage].argv
        return argv[argv.index("--" + key) + 1] if "--" + key in argv else None

    mc = "cam_infer" if name == "pmm_voc" else "cam_infer_mc"
    assert arg(mc, "crop_mode") == "grid"
    argv = st[mc].argv
    assert argv[argv.index("--scales") + 1:][:10] == ["0.75", "1.0", "1.25", "1.5", "1.75", "2.0", "2.25", "2.5",
                                                      "2.75", "3.0"]
    assert (arg(mc, "crop_size"), arg(mc, "crop_stride")) == (("448", "300") if name == "pmm_voc" else ("96", "64"))
    assert arg("ppmg", "cam_dir") == arg(mc, "out_cam") and arg("ppmg", "alpha") == "11"
    for s in ("seg_train_ce", "seg_train_pus"):
        assert arg(s, "pseudo_mask_dir") == arg("ppmg", "out_dir")
    assert arg("cyclic", "out_dir") == arg("seg_train_pus", "out_dir") and arg("cyclic", "ckpt_choice") == "last"
    assert arg("seg_train_cyclic", "pseudo_mask_dir") == arg("cyclic", "out_masks") == arg("eval_cyclic", "predict_dir")
    pus = {s: arg(s, "pus_type") for s in ("seg_train_ce", "seg_train_pus", "seg_train_cyclic")}
    assert pus == ({"seg_train_ce": "", "seg_train_pus": None, "seg_train_cyclic": ""} if name == "pmm_voc" else
                   {"seg_train_ce": None, "seg_train_pus": "clamp", "seg_train_cyclic": None})
    assert ("aff_train" in st) == (name == "demo_pmm") and "seg_train" not in st
    labels = [r["label"] for s in st.values() for r in s.report]
    for want in ("CVS + PPMG pseudo masks", "PSPNet CE on PPMG masks", "PSPNet PUS on PPMG masks",
                 "Cyclic pseudo masks (one round)", "PSPNet CE on cyclic masks"):
        assert want in labels
    # every stage's command line parses with its script's own flags (no unknown key, valid values)
    for s in st.values():
        if s.script != "scripts/make_toy_voc.py":
            _script(s.script).build_parser().parse_args(s.argv)
    if name == "pmm_voc":       # the PUS config carries the published cyclic test
        from wseg.config import load_config_file

        cfg = load_config_file(os.path.join(REPO, arg("cyclic", "config")))
        assert (cfg["test_mode"], cfg["test_crop"], cfg["test_stride"], cfg["test_scales"], cfg["test_flip"]) == (
            "slide", 512, 480, [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], True)
        assert [cfg[k] for k in ("crf", "crf_iters", "crf_pos_w", "crf_pos_xy_std", "crf_bi_w", "crf_bi_xy_std",
                                 "crf_bi_rgb_std")] == [True, 10, 3, 1, 4, 67, 3]
