"""Affinity stage end to end on a tiny synthetic VOC: aff_prepare -> aff_train -> aff_infer, resume, DDP, errors."""
import json
import os
import shutil
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from wseg import io
from wseg.cli import main, stage_parser
from wseg.data.synthetic import make_toy_voc
from wseg.data.voc import VOCRoot
from wseg.models.checkpoint import read_state_dict
from wseg.stages import aff_infer, aff_prepare, aff_train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """12 train + 4 val images (96x64, 3 classes) and CAMs made by blurring the ground truth."""
    root = str(tmp_path_factory.mktemp("toy"))
    make_toy_voc(root, num_train=12, num_val=4, num_classes=3, image_size="96x64", seed=0)
    voc = VOCRoot(root)
    cam_dir = os.path.join(root, "cams")
    for i in voc.ids("train") + voc.ids("val"):
        gt = io.load_mask_png(voc.mask_path(i))
        cams = {}
        for c in np.unique(gt):
            if c in (0, 255):
                continue
            cam = cv2.GaussianBlur((gt == c).astype(np.float32), (0, 0), 3)
            cams[int(c) - 1] = cam / cam.max()
        io.save_cam_dict(os.path.join(cam_dir, i + ".npy"), cams)
    return {"root": root, "cams": cam_dir, "train": voc.split_path("train"), "val": voc.split_path("val"),
            "voc": voc}


def call(stage, argv):
    """Run a stage through the CLI entry point: (exit status, result dict or None)."""
    out = {}
    rc = main(stage_parser(stage), lambda a: out.update(r=stage.run(a)), argv)
    return rc, out.get("r")


def prepare(toy, out, extra=()):
    return call(aff_prepare, ["--voc12_root", toy["root"], "--infer_list", toy["train"], "--cam_dir", toy["cams"],
                              "--out_crf", out, "--num_workers", "2", *extra])


def train_argv(toy, crf, session, *extra):
    return ["--voc12_root", toy["root"], "--train_list", toy["train"], "--la_crf_dir", os.path.join(crf, "crf_la"),
            "--ha_crf_dir", os.path.join(crf, "crf_ha"), "--session_name", session, "--backbone", "resnet38_tiny",
            "--crop_size", "96", "--batch_size", "4", "--max_epoches", "2", "--num_workers", "0", "--lr", "0.05",
            "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def prepared(toy, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("crf"))
    rc, res = prepare(toy, out)
    assert rc == 0 and res["processed"] == 12
    return out


@pytest.fixture(scope="module")
def trained(toy, prepared, tmp_path_factory):
    session = str(tmp_path_factory.mktemp("aff") / "aff")
    rc, res = call(aff_train, train_argv(toy, prepared, session))
    assert rc == 0
    return session, res


def test_prepare_writes_compact_label_pngs(toy, prepared):
    voc = toy["voc"]
    la_dir, ha_dir = os.path.join(prepared, "crf_la"), os.path.join(prepared, "crf_ha")
    settings = json.load(open(os.path.join(la_dir, aff_prepare.SETTINGS_FILE)))
    assert settings["alpha"] == 4 and json.load(open(os.path.join(ha_dir, aff_prepare.SETTINGS_FILE)))["alpha"] == 24
    la_bg = ha_bg = 0
    for i in voc.ids(toy["train"]):
        with Image.open(os.path.join(la_dir, i + ".png")) as im:
            assert im.mode == "P"
        la = io.load_mask_png(os.path.join(la_dir, i + ".png"))
        ha = io.load_mask_png(os.path.join(ha_dir, i + ".png"))
        gt = io.load_mask_png(voc.mask_path(i))
        assert la.shape == ha.shape == gt.shape and la.dtype == np.uint8
        present = set(np.unique(gt)) - {255} | {0}
        assert set(np.unique(la)) <= present and set(np.unique(ha)) <= present
        la_bg += (la == 0).sum()
        ha_bg += (ha == 0).sum()
        assert os.path.getsize(os.path.join(la_dir, i + ".png")) < 4000     # vs 21xHxW float32 published
    assert la_bg > ha_bg          # low alpha over-estimates the background
    rc, res = prepare(toy, prepared)                      # skip if done
    assert rc == 0 and res["processed"] == 0 and res["done"] == 12
    # the confident training labels at feature resolution
    from wseg.data.affinity_dataset import feature_label_map

    lab = feature_label_map(la, ha)
    assert lab.shape == (8, 12) and set(np.unique(lab)) <= present | {255}


def test_train_and_infer_end_to_end(toy, trained, tmp_path, capsys):
    session, res = trained
    assert os.path.isfile(session + ".pth") and os.path.isfile(session + "_last.pth")
    assert np.isfinite(res["last_loss"]) and res["steps"] == 6
    state, meta = read_state_dict(session + ".pth")
    assert meta["network"] == "affinity" and meta["backbone"] == "resnet38_tiny" and "f8_5.weight" in state
    out = {k: str(tmp_path / k) for k in ("rw", "crf", "npy", "pub")}
    argv = ["--weights", session + ".pth", "--voc12_root", toy["root"], "--infer_list", toy["val"], "--cam_dir",
            toy["cams"], "--out_rw", out["rw"], "--out_crf", out["crf"], "--crf", "True", "--out_rw_npy", out["npy"],
            "--logt", "4", "--num_workers", "1", "--device", "cpu"]
    rc, r = call(aff_infer, argv)
    assert rc == 0 and r["inferred"] == 4
    voc = toy["voc"]
    for i in voc.ids(toy["val"]):
        gt = io.load_mask_png(voc.mask_path(i))
        cams = io.load_cam_dict(os.path.join(toy["cams"], i + ".npy"))
        allowed = {0} | {k + 1 for k in cams}
        for d in ("rw", "crf"):
            m = io.load_mask_png(os.path.join(out[d], i + ".png"))
            assert m.shape == gt.shape and set(np.unique(m)) <= allowed
        walked = io.load_cam_dict(os.path.join(out["npy"], i + ".npy"), shape=gt.shape)
        assert sorted(walked) == sorted(cams)
        # with a constant background the walked background stays 0.27: label = argmax(0.27, walked CAMs)
        rw = io.load_mask_png(os.path.join(out["rw"], i + ".png"))
        if walked:
            keys, stack = io.cam_dict_to_stack(walked)
            ref = np.where(stack.max(0) > 0.27 + 1e-4, keys[stack.argmax(0)] + 1, 0)
            sure = np.abs(stack.max(0) - 0.27) > 1e-3
            assert (ref[sure] == rw[sure]).all()
    rc, r = call(aff_infer, argv)                                       # skip if done
    assert rc == 0 and r["inferred"] == 0
    pngs = lambda d: [n for n in os.listdir(d) if n.endswith(".png")]  # noqa: E731
    rc, r = call(aff_infer, argv[:10] + ["--out_rw", out["pub"], "--published_pairs", "--alpha", "16",
                                         "--device", "cpu"])
    assert rc == 0 and len(pngs(out["pub"])) == 4
    # published spelling: --crf without --out_crf writes the CRF pseudo masks into --out_rw
    rc, r = call(aff_infer, argv[:10] + ["--out_rw", str(tmp_path / "pseudo"), "--crf", "--device", "cpu"])
    assert rc == 0 and r["out_crf"] == str(tmp_path / "pseudo") and len(pngs(r["out_crf"])) == 4
    # other walk settings into a finished folder: refused, not silently skipped as done
    rc, _ = call(aff_infer, argv[:10] + ["--out_rw", out["pub"], "--published_pairs", "--alpha", "8",
                                         "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "other settings" in err and "alpha 16.0 -> 8.0" in err
    # CRF kernels scaled to the image: other masks than the published kernels', recorded, refused on a bad value
    rc, r = call(aff_infer, argv[:8] + ["--out_crf", str(tmp_path / "auto"), "--crf_scale_factor", "auto",
                                        "--num_workers", "1", "--device", "cpu"])
    assert rc == 0 and len(pngs(r["out_crf"])) == 4
    rc, _ = call(aff_infer, argv[:8] + ["--out_crf", str(tmp_path / "bad"), "--crf_scale_factor", "x",
                                        "--device", "cpu"])
    assert rc == 2 and "--crf_scale_factor 'x'" in capsys.readouterr().err
    rc, _ = call(aff_infer, argv[:8] + ["--out_crf", str(tmp_path / "auto"), "--device", "cpu"])
    assert rc == 2 and "other settings" in capsys.readouterr().err


def test_infer_scale_walks_a_larger_map_at_the_image_size(toy, trained, tmp_path, monkeypatch):
    """``--scale 2``: AffinityNet sees the image resized x2 (a 2x larger 1/8 map), the CAMs are resized to match,
    and the walk comes back at the image size; ``--scale 1`` is the published path."""
    session, _ = trained
    seen = []
    real_walk = aff_infer.walk_image

    def spy(model, x, scores, *a, **kw):
        seen.append((tuple(x.shape[-2:]), tuple(scores.shape[-2:])))
        return real_walk(model, x, scores, *a, **kw)

    monkeypatch.setattr(aff_infer, "walk_image", spy)
    base = ["--weights", session + ".pth", "--voc12_root", toy["root"], "--infer_list", toy["val"], "--cam_dir",
            toy["cams"], "--logt", "4", "--num_workers", "0", "--device", "cpu"]
    rc, _ = call(aff_infer, base + ["--out_rw", str(tmp_path / "s1"), "--out_rw_npy", str(tmp_path / "n1")])
    assert rc == 0 and seen[0] == ((64, 96), (64, 96))
    seen.clear()
    rc, _ = call(aff_infer, base + ["--out_rw", str(tmp_path / "s2"), "--out_rw_npy", str(tmp_path / "n2"),
                                    "--scale", "2"])
    assert rc == 0 and seen[0] == ((128, 192), (128, 192))
    voc = toy["voc"]
    for i in voc.ids(toy["val"]):
        gt = io.load_mask_png(voc.mask_path(i))
        rw = io.load_mask_png(os.path.join(tmp_path, "s2", i + ".png"))
        walked = io.load_cam_dict(os.path.join(tmp_path, "n2", i + ".npy"), shape=gt.shape)
        assert rw.shape == gt.shape
        if walked:  # the label map is the argmax of the written scores (constant background 0.27)
            keys, stack = io.cam_dict_to_stack(walked)
            ref = np.where(stack.max(0) > 0.27, keys[stack.argmax(0)] + 1, 0)
            sure = np.abs(stack.max(0) - 0.27) > 1e-3
            assert (ref[sure] == rw[sure]).all()
    rc, _ = call(aff_infer, base + ["--out_rw", str(tmp_path / "s0"), "--scale", "0"])
    assert rc == 2


def test_resume_equals_uninterrupted(toy, prepared, trained, tmp_path, monkeypatch):
    import wseg.models.checkpoint as ck

    session, _ = trained
    original = ck.save_checkpoint

    def crash_after_first_epoch(*a, **kw):
        original(*a, **kw)
        if kw.get("epoch") == 1:                 # one epoch done
            raise KeyboardInterrupt

    resumed = str(tmp_path / "resumed")
    monkeypatch.setattr(ck, "save_checkpoint", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        aff_train.run(stage_parser(aff_train)().parse_args(train_argv(toy, prepared, resumed)))
    assert os.path.isfile(resumed + "_last.pth") and not os.path.isfile(resumed + ".pth")
    monkeypatch.setattr(ck, "save_checkpoint", original)
    rc, _ = call(aff_train, train_argv(toy, prepared, resumed))
    assert rc == 0
    a, _ = read_state_dict(session + ".pth")
    b, _ = read_state_dict(resumed + ".pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a checkpoint of another configuration is refused
    rc, _ = call(aff_train, train_argv(toy, prepared, resumed, "--max_epoches", "3"))
    assert rc == 2


def test_ddp_two_processes(toy, prepared, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = str(tmp_path / "ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           os.path.join(REPO, "scripts", "aff_train.py"), *train_argv(toy, prepared, session, "--max_epoches", "1",
                                                                      "--batch_size", "2")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert os.path.isfile(session + ".pth")
    log = open(session + ".log").read()
    assert "step 3/3" in log          # 12 images / (2 per process x 2 processes)


def test_bad_inputs_give_one_line_errors(toy, prepared, trained, tmp_path, capsys):
    voc = toy["voc"]
    first = voc.ids(toy["train"])[0]

    def err():
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines and lines[-1].startswith("error: ")
        return lines[-1]

    # missing CAM file: names the file and the stage that writes it
    cams = str(tmp_path / "cams")
    os.makedirs(cams)
    rc, _ = call(aff_prepare, ["--voc12_root", toy["root"], "--infer_list", toy["train"], "--cam_dir", cams,
                               "--out_crf", str(tmp_path / "c1")])
    assert rc == 2 and f"{first}.npy" in (e := err()) and "contrast_infer" in e
    # CAM of the wrong size
    for i in voc.ids(toy["train"]):
        io.save_cam_dict(os.path.join(cams, i + ".npy"), {0: np.ones((10, 10), np.float32)})
    rc, _ = call(aff_prepare, ["--voc12_root", toy["root"], "--infer_list", toy["train"], "--cam_dir", cams,
                               "--out_crf", str(tmp_path / "c2"), "--num_workers", "2"])
    assert rc == 2 and "differs from the image" in err()
    # stale labels of other settings
    rc, _ = prepare(toy, prepared, ["--alphas", "4", "32"])
    assert rc == 2 and "other settings" in err()
    # training without labels / with a bad crop size
    rc, _ = call(aff_train, train_argv(toy, str(tmp_path / "none"), str(tmp_path / "s")))
    assert rc == 2 and "aff_prepare" in err()
    rc, _ = call(aff_train, train_argv(toy, prepared, str(tmp_path / "s"), "--crop_size", "100"))
    assert rc == 2 and "--crop_size 100" in err()
    la, ha = os.path.join(prepared, "crf_la"), os.path.join(prepared, "crf_ha")
    argv = train_argv(toy, prepared, str(tmp_path / "s"))
    partial = str(tmp_path / "partial")                                 # a label missing for one id
    shutil.copytree(prepared, partial)
    os.remove(os.path.join(partial, "crf_ha", first + ".png"))
    rc, _ = call(aff_train, train_argv(toy, partial, str(tmp_path / "s")))
    assert rc == 2 and f"crf_ha/{first}.png: affinity label not found" in err()
    for pair, named in (((la, la), "same folder"), ((ha, la), "swapped")):
        bad = list(argv)
        bad[bad.index("--la_crf_dir") + 1], bad[bad.index("--ha_crf_dir") + 1] = pair
        rc, _ = call(aff_train, bad)
        assert rc == 2 and named in err()
    # inference: checkpoint not fitting the backbone, a CAM checkpoint, two backgrounds, missing CAMs
    session, _ = trained
    base = ["--voc12_root", toy["root"], "--infer_list", toy["val"], "--cam_dir", toy["cams"],
            "--out_rw", str(tmp_path / "rw"), "--device", "cpu", "--num_workers", "0"]
    rc, _ = call(aff_infer, base + ["--weights", session + ".pth", "--backbone", "resnet_tiny"])
    assert rc == 2 and "do not fit" in err()
    from wseg.methods import build_cam_net

    torch.save(build_cam_net("contrast", "resnet38_tiny", 4).state_dict(), tmp_path / "cam.pth")
    rc, _ = call(aff_infer, base + ["--weights", str(tmp_path / "cam.pth")])
    assert rc == 2 and "not an AffinityNet" in err()
    rc, _ = call(aff_infer, base + ["--weights", session + ".pth", "--bg_score", "0.3", "--alpha", "16"])
    assert rc == 2 and "--bg_score" in err()
    base[base.index(toy["cams"])] = cams
    rc, _ = call(aff_infer, base + ["--weights", session + ".pth"])
    assert rc == 2 and "CAM file not found" in (e := err()) and "contrast_infer" in e
