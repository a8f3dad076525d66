"""Segmentation stage: configs + overrides, joint transforms, training with resume after a crash, MS+flip inference,
segmentation/test.py (evaluation, skip-if-done, server layout), bad-input errors, a 2-process DDP run on CPU."""
import importlib.util
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wseg.cli import main
from wseg.data.seg_transforms import SegTrainTransform, multiscale_inputs
from wseg.data.transforms import normalize
from wseg.errors import WsegError
from wseg.io import load_mask_png, save_mask_png
from wseg.models.deeplab import build_deeplab
from wseg.segmentation import ms_flip_logits, ms_flip_probs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "segmentation", "configs")
DEMO = os.path.join(CONFIGS, "demo_tiny.py")


def _script(name):
    mod_name = f"wseg_test_segmentation_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, os.path.join(REPO, "segmentation", name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[mod_name]


TRAIN, TEST = _script("train"), _script("test")


def load_config(path, *argv):
    from wseg.segmentation.config import config_from_args

    return config_from_args(TRAIN.build_parser().parse_args(["--config", path, *argv]))


@pytest.fixture(scope="module")
def pseudo(toy_root, tmp_path_factory):
    """Pseudo masks for the train list: the ground truth with an extra ignore stripe."""
    out = str(tmp_path_factory.mktemp("pseudo"))
    for line in open(os.path.join(toy_root, "ImageSets", "Segmentation", "train.txt")):
        i = line.strip()
        m = load_mask_png(os.path.join(toy_root, "SegmentationClass", i + ".png")).copy()
        m[:, :3] = 255
        save_mask_png(os.path.join(out, i + ".png"), m)
    return out


def _train_args(toy_root, pseudo, out_dir, *extra):
    return ["--config", DEMO, "--voc12_root", toy_root, "--pseudo_mask_dir", pseudo, "--out_dir", out_dir,
            "--progress", "False", "--set", "model.backbone=resnet38_tiny", "model.frozen_layers=[conv1a]", "max_iters=4",
            "ckpt_every=2", "val_every=0", "crop_size=48", "batch_size=4", "log_every=2", *extra]


def _train(argv, on_step=None):
    from wseg.segmentation import train

    from wseg.segmentation.config import config_from_args

    args = TRAIN.build_parser().parse_args(argv)
    return train(config_from_args(args), progress=False, on_step=on_step)


def _state(path):
    from wseg.models.checkpoint import read_state_dict

    return read_state_dict(path)[0]


@pytest.fixture(scope="module")
def trained(toy_root, pseudo, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run_full"))
    res = TRAIN.run(TRAIN.build_parser().parse_args(_train_args(toy_root, pseudo, out)))
    return out, res


# ------------------------------------------------------------------ configs


def test_published_configs():
    v1_38 = load_config(os.path.join(CONFIGS, "deeplabv1_resnet38.py"))
    v1_101 = load_config(os.path.join(CONFIGS, "deeplabv1_resnet101.py"))
    v2_101 = load_config(os.path.join(CONFIGS, "deeplabv2_resnet101.py"))
    for cfg in (v1_38, v1_101, v2_101):
        assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.power) == (0.001, 0.9, 0.0005, 0.9)
        assert (cfg.batch_size, cfg.max_iters, cfg.crop_size, cfg.seed) == (10, 20000, 448, 1)
        assert cfg.scale_range == [0.5, 1.5] and cfg.flip_prob == 0.5 and cfg.hsv_jitter == [10, 10, 10]
        assert cfg.test_scales == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and cfg.test_flip and cfg.crf
        assert cfg.model["bn_momentum"] == 0.0003 and cfg.train_list == "train_aug"
    m = v1_38.model
    assert (m["type"], m["backbone"], m["frozen_layers"], m["freeze_backbone_bn"]) == \
        ("deeplabv1", "resnet38", ["conv1a"], True)
    m = v1_101.model
    assert (m["type"], m["backbone"], m["freeze_backbone_bn"], m["stem"]) == ("deeplabv1", "resnet101", False,
                                                                              "torchvision")
    m = v2_101.model
    assert (m["type"], m["backbone"], m["head_dim"], m["aspp_rates"]) == ("deeplabv2", "resnet101", 256,
                                                                          [6, 12, 18, 24])
    assert v2_101.pseudo_mask_dir == v1_101.pseudo_mask_dir == "crf_5_8_png"  # inherited through _base_
    demo = load_config(DEMO)
    assert (demo.model["type"], demo.model["backbone"], demo.model["frozen_layers"], demo.amp) == \
        ("deeplabv1", "resnet_tiny", [], False)
    r38 = load_config(os.path.join(CONFIGS, "demo_resnet38.py"))  # the v1 recipe, via demo_tiny
    assert (r38.model["type"], r38.model["backbone"], r38.model["freeze_backbone_bn"], r38.lr, r38.momentum) == \
        ("deeplabv1", "resnet38_small", False, 0.001, 0.9)
    assert r38.test_flip and r38.crf and r38.crf_bi_xy_std == v1_38.crf_bi_xy_std


def test_overrides_and_unknown_keys(tmp_path, capsys):
    cfg = load_config(DEMO, "--lr", "0.05", "--test_scales", "0.5", "1", "--amp",
                      "--set", "batch_size=2", "crf=False", "scale_range=0.8,1.2", "stop_iter=none",
                      "model.head_dim=8", "model.frozen_layers=[conv1a, b2]")
    assert (cfg.lr, cfg.batch_size, cfg.crf, cfg.amp, cfg.model["head_dim"]) == (0.05, 2, False, True, 8)
    assert cfg.test_scales == [0.5, 1.0] and cfg.scale_range == [0.8, 1.2] and cfg.stop_iter is None
    assert cfg.model["frozen_layers"] == ["conv1a", "b2"] and cfg.model["backbone"] == "resnet_tiny"  # merged
    with pytest.raises(WsegError, match=r"unknown key 'max_iter'.*max_iters"):
        load_config(DEMO, "--max_iter", "3")
    with pytest.raises(WsegError, match=r"unknown key 'learning_rate'"):
        load_config(DEMO, "--set", "learning_rate=0.1")
    with pytest.raises(WsegError, match="invalid int value: 'ten'"):
        load_config(DEMO, "--batch_size", "ten")
    with pytest.raises(WsegError, match=r"unknown model key 'head_dims'.*head_dim"):
        load_config(DEMO, "--set", "model.head_dims=8")
    bad = tmp_path / "bad.py"
    bad.write_text("_base_ = %r\ncrop_sise = 321\n" % DEMO)
    with pytest.raises(WsegError, match=r"bad.py: unknown key 'crop_sise'.*crop_size"):
        load_config(str(bad))
    # through the CLI entry point: one line, exit status 2
    assert main(TRAIN.build_parser, TRAIN.run, ["--config", DEMO, "--max_iter", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "max_iters" in err and "\n" not in err


# ------------------------------------------------------------------ transforms and MS+flip inference


def test_train_transform():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 10:20] = 2
    t = SegTrainTransform(crop=40, scale_range=(0.5, 1.5), flip=0.5, hsv=(10, 10, 10))
    t.reseed(3)
    x, y = t(Image.fromarray(img), mask)
    t.reseed(3)
    x2, y2 = t(Image.fromarray(img), mask)
    assert torch.equal(x, x2) and torch.equal(y, y2)                     # a function of the seed
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32 and y.shape == (40, 40) and y.dtype == torch.int64
    pad = y == 255                                                        # image smaller than the crop
    assert pad.any() and (x[:, pad] == 0).all()                          # padding: 0 image, 255 labels
    assert set(torch.unique(y).tolist()) <= {0, 2, 255}                  # nearest-neighbour labels
    t0 = SegTrainTransform(crop=0, scale_range=None, flip=0.0, hsv=(0, 0, 0))
    x, y = t0(img, mask)
    assert torch.allclose(x, torch.from_numpy(normalize(img)).permute(2, 0, 1))
    assert torch.equal(y, torch.from_numpy(mask).long())
    with pytest.raises(WsegError, match="scale_range"):
        SegTrainTransform(scale_range=(1.5, 0.5))


def test_long_side_scales_a_common_size():
    """``long_side``: training and test scales multiply the size that brings each image to that long side."""
    from wseg.data.seg_transforms import multiscale_inputs
    from wseg.segmentation.checks import check_mmseg_config

    rng = np.random.default_rng(1)
    for h, w in ((20, 40), (60, 30)):                                    # both to a long side of 80
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        t = SegTrainTransform(crop=0, scale_range=(1.0, 1.0), flip=0.0, hsv=(0, 0, 0), long_side=80)
        x, y = t(img, np.zeros((h, w), np.uint8))
        assert max(x.shape[1:]) == 80 and tuple(y.shape) == tuple(x.shape[1:])
        sizes = [tuple(v.shape[1:]) for v in multiscale_inputs(img, [1.0, 0.5], long_side=80)]
        assert [max(s) for s in sizes] == [80, 40]
        own = [tuple(v.shape[1:]) for v in multiscale_inputs(img, [1.0, 0.5])]   # published: the image's own size
        assert own[0] == (h, w)
        t2 = SegTrainTransform(crop=0, scale_range=(0.5, 0.5), flip=0.0, hsv=(0, 0, 0), long_side=80)
        assert max(t2(img, np.zeros((h, w), np.uint8))[0].shape[1:]) == 40
    same = rng.integers(0, 256, (30, 80, 3), dtype=np.uint8)           # already at the long side: unchanged
    assert torch.equal(multiscale_inputs(same, [1.0], long_side=80)[0], multiscale_inputs(same, [1.0])[0])
    with pytest.raises(WsegError, match="long_side"):
        SegTrainTransform(long_side=2)
    with pytest.raises(WsegError, match="long_side 64: the mmseg pipeline"):
        check_mmseg_config({"data_pipeline": "mmseg", "model": {"type": "pspnet"}, "long_side": 64})


def test_ms_flip_equals_hand_average():
    torch.manual_seed(0)
    net = build_deeplab("deeplabv1", "resnet_tiny", 4, head_dim=8).eval()
    img = np.random.default_rng(1).integers(0, 256, (21, 29, 3), dtype=np.uint8)
    scales = [0.5, 1.0, 1.5]
    inputs = multiscale_inputs(img, scales)
    assert [tuple(x.shape) for x in inputs] == [(3, 10, 14), (3, 21, 29), (3, 32, 44)]
    assert torch.allclose(inputs[1], torch.from_numpy(normalize(img)).permute(2, 0, 1))
    hand = []
    with torch.no_grad():
        for x in inputs:
            for flip in (False, True):
                xi = x.flip(-1) if flip else x
                out = F.interpolate(net(xi[None])["out"], (21, 29), mode="bilinear", align_corners=True)[0]
                hand.append(out.flip(-1) if flip else out)
    expected = sum(hand) / len(hand)
    got = ms_flip_logits(net, inputs, (21, 29), flip=True)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(ms_flip_probs(net, inputs, (21, 29)), torch.softmax(expected, 0), atol=1e-6)
    no_flip = ms_flip_logits(net, inputs, (21, 29), flip=False)
    assert torch.allclose(no_flip, sum(hand[::2]) / 3, atol=1e-5)


# ------------------------------------------------------------------ training, resume


def test_true_label_argmax_keeps_background_and_the_images_classes():
    from wseg.segmentation.predict import true_label_argmax

    probs = torch.tensor([[[0.1, 0.2]], [[0.6, 0.1]], [[0.3, 0.7]]])      # (3 classes, 1, 2): classes 1 and 2 win
    gt = np.array([[2, 255]], np.uint8)                                    # only class 2 (and ignore) present
    assert true_label_argmax(probs, gt).tolist() == [[2, 2]]
    assert true_label_argmax(probs, np.zeros((1, 2), np.uint8)).tolist() == [[0, 0]]   # background only
    assert true_label_argmax(probs, np.array([[1, 2]], np.uint8)).tolist() == probs.argmax(0).tolist()


def test_present_classes_are_the_foreground_classes_a_mask_holds():
    from wseg.data.classes import present_classes

    mask = np.array([[0, 3, 255], [3, 1, 7]], np.uint8)                # 7: beyond the 4 foreground classes
    assert present_classes(mask, 4).tolist() == [1, 0, 1, 0]
    assert present_classes(np.zeros((2, 2), np.uint8), 4).tolist() == [0, 0, 0, 0]
    assert present_classes(mask, 4).dtype == np.float32


def test_train_outputs(trained):
    out, res = trained
    assert res["iters"] == 4 and os.path.isfile(res["weights"]) and res["weights"].endswith("_itr4_all.pth")
    assert os.path.isfile(os.path.join(out, "last.pth")) and os.path.isfile(os.path.join(out, "train.log"))
    assert len(open(os.path.join(out, "scalars.jsonl")).read().splitlines()) == 2   # itr 2 and 4
    assert set(_state(res["weights"])) == set(build_deeplab("deeplabv1", "resnet38_tiny", 4, head_dim=64).state_dict())


def test_resume_equals_uninterrupted(trained, toy_root, pseudo, tmp_path):
    ref = _state(trained[1]["weights"])
    # stopped (stop_iter, as at a job time limit) and continued
    a = str(tmp_path / "a")
    assert _train(_train_args(toy_root, pseudo, a, "stop_iter=1"))["weights"] is None
    res = _train(_train_args(toy_root, pseudo, a))
    assert res["trained_iters"] == 3
    assert all(torch.equal(ref[k], v) for k, v in _state(res["weights"]).items())
    # a crash after iteration 3 (batches 1-3 of epoch 0 then 0 of epoch 1): the last checkpoint is iteration 2,
    # re-running the same command resumes there

    def crash(itr, loss):
        if itr == 3:
            raise RuntimeError("simulated crash")

    b = str(tmp_path / "b")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(_train_args(toy_root, pseudo, b), on_step=crash)
    res = _train(_train_args(toy_root, pseudo, b))
    assert res["trained_iters"] == 2
    assert all(torch.equal(ref[k], v) for k, v in _state(res["weights"]).items())
    assert _train(_train_args(toy_root, pseudo, b))["trained_iters"] == 0       # finished: nothing to do
    with pytest.raises(WsegError, match="another configuration.*max_iters"):
        _train(_train_args(toy_root, pseudo, b, "max_iters=8"))
    # a finished run of other settings is refused too, not reported as "already trained" (same weights file name)
    with pytest.raises(WsegError, match="another configuration.*head_lr_mult"):
        _train(_train_args(toy_root, pseudo, b, "head_lr_mult=80"))
    with pytest.raises(WsegError, match="another configuration.*model"):
        _train(_train_args(toy_root, pseudo, b, "model.freeze_backbone_bn=True"))


def test_bad_training_inputs(toy_root, pseudo, tmp_path):
    partial = str(tmp_path / "partial")
    shutil.copytree(pseudo, partial)
    os.remove(os.path.join(partial, "toy_000002.png"))
    os.remove(os.path.join(partial, "toy_000005.png"))
    with pytest.raises(WsegError, match=r"partial: 2 of 12 masks missing.*toy_000002"):
        _train(_train_args(toy_root, partial, str(tmp_path / "o1")))
    wrong = str(tmp_path / "wrong")
    shutil.copytree(pseudo, wrong)
    save_mask_png(os.path.join(wrong, "toy_000007.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(WsegError, match=r"toy_000007.png: mask size 10x10 differs from the image size 48x64"):
        _train(_train_args(toy_root, wrong, str(tmp_path / "o2")))
    broken = str(tmp_path / "broken")                       # the file that is corrupt is the one named
    shutil.copytree(toy_root, broken)
    with open(os.path.join(broken, "JPEGImages", "toy_000004.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(WsegError, match=r"JPEGImages/toy_000004.jpg: cannot read the image header of toy_000004"):
        _train(_train_args(broken, pseudo, str(tmp_path / "o2b")))
    with open(os.path.join(wrong, "toy_000007.png"), "wb") as f:
        f.write(b"not a png")
    with pytest.raises(WsegError, match=r"wrong/toy_000007.png: cannot read the mask header of toy_000007"):
        _train(_train_args(toy_root, wrong, str(tmp_path / "o2c")))
    with pytest.raises(WsegError, match="voc12_root"):
        _train(["--config", DEMO, "--out_dir", str(tmp_path / "o3")])
    with pytest.raises(WsegError, match="pseudo-mask folder not found"):
        _train(_train_args(toy_root, str(tmp_path / "nowhere"), str(tmp_path / "o4")))
    with pytest.raises(WsegError, match=r"JPEGImages: 12 of 12 masks missing .*holds toy_000001.jpg instead: not a "
                                        r"folder of label PNGs"):
        _train(_train_args(toy_root, os.path.join(toy_root, "JPEGImages"), str(tmp_path / "o4")))
    with pytest.raises(WsegError, match="image-pooling BatchNorm of deeplabv2 needs at least 2"):
        _train(_train_args(toy_root, pseudo, str(tmp_path / "o5"), "model.type=deeplabv2", "model.backbone=resnet_tiny",
                           "model.frozen_layers=[]", "batch_size=1", "model.head_dim=8"))
    # values that failed deep inside torch/numpy, or trained silently on nonsense
    for bad, named in (("crop_size=0", "crop_size 0"), ("crop_size=4", "crop_size 4"), ("model.head_dim=-4", "head_dim"),
                       ("model.aspp_rates=[-6,12,18,24]", "aspp_rates"), ("mean=[0.5,0.5]", "mean"), ("std=[0,0,0]", "std"),
                       ("momentum=-1", "momentum -1"), ("power=nan", "power nan"), ("seed=-1", "seed -1"),
                       ("num_workers=-1", "num_workers -1")):
        with pytest.raises(WsegError, match=named):
            _train(_train_args(toy_root, pseudo, str(tmp_path / "o6"), bad))


# ------------------------------------------------------------------ test.py


def test_test_script(trained, toy_root, tmp_path):
    out, res = trained
    argv = ["--config", DEMO, "--voc12_root", toy_root, "--out_dir", out, "--ckpt", res["weights"],
            "--progress", "False", "--set", "model.backbone=resnet38_tiny", "crf_workers=2"]
    r = TEST.run(TEST.build_parser().parse_args(argv))
    assert r["labelled"] and r["predicted"] == 4 and 0 <= r["miou"] <= 100 and 0 <= r["miou_crf"] <= 100
    assert r["pred_dir"].endswith("pred_val_crf") and r["pred_dir_nocrf"].endswith("pred_val")
    assert sorted(os.listdir(r["pred_dir_nocrf"])) == sorted(os.listdir(r["pred_dir"]))
    with Image.open(os.path.join(r["pred_dir"], "toy_000013.png")) as im:
        assert im.mode == "P" and im.size == (64, 48)
    assert "mIoU" in open(os.path.join(out, "eval_log.txt")).read()
    again = TEST.run(TEST.build_parser().parse_args(argv))
    assert again["predicted"] == 0 and again["miou"] == pytest.approx(r["miou"])   # finished images skipped
    with pytest.raises(WsegError, match="other settings"):
        TEST.run(TEST.build_parser().parse_args(argv + ["test_scales=1.0"]))
    # settings pydensecrf would crash on, a negative worker count, the GT folder as pred_dir: one-line errors
    for bad, named in (("crf_pos_xy_std=0", "pos_xy_std=0"), ("crf_bi_rgb_std=nan", "bi_rgb_std=nan"),
                       ("crf_iters=0", "0 mean-field"), ("num_workers=-1", "num_workers -1"),
                       ("test_scales=nan", "test_scales"), ("test_scales=1000", "test_scales"),
                       (f"pred_dir={os.path.join(toy_root, 'SegmentationClass')}", "ground-truth folder")):
        with pytest.raises(WsegError, match=named):
            TEST.run(TEST.build_parser().parse_args(argv + [bad]))
    # without CRF: the arg-max of the MS+flip average, already written (and evaluated) by the CRF run
    r2 = TEST.run(TEST.build_parser().parse_args(argv + ["crf=False"]))
    assert r2["pred_dir"] == r["pred_dir_nocrf"] and r2["predicted"] == 0 and r2["miou"] == pytest.approx(r["miou"])
    assert "miou_crf" not in r2
    # given the true labels: the same probabilities arg-maxed over each image's own classes, never below as tested
    r4 = TEST.run(TEST.build_parser().parse_args(argv + ["crf=False", "test_true_labels=True"]))
    assert r4["predicted"] == 4 and r4["miou"] == pytest.approx(r["miou"])     # new folder: all four predicted
    assert os.path.isdir(r["pred_dir_nocrf"] + "_true_labels") and r4["miou_true_labels"] >= r4["miou"] - 1e-6
    # an unlabelled split (VOC test): server layout, no evaluation
    root2 = str(tmp_path / "unlabelled")
    shutil.copytree(os.path.join(toy_root, "JPEGImages"), os.path.join(root2, "JPEGImages"))
    shutil.copy(os.path.join(toy_root, "classes.txt"), root2)
    with open(os.path.join(root2, "test.txt"), "w") as f:
        f.write("toy_000013\ntoy_000014\n")
    r3 = TEST.run(TEST.build_parser().parse_args(
        ["--config", DEMO, "--voc12_root", root2, "--out_dir", str(tmp_path / "t"), "--ckpt", res["weights"],
         "--test_list", os.path.join(root2, "test.txt"), "--progress", "False", "--crf", "False",
         "--set", "model.backbone=resnet38_tiny"]))
    assert not r3["labelled"] and "miou" not in r3
    server = tmp_path / "t" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert sorted(os.listdir(server)) == ["toy_000013.png", "toy_000014.png"]
    with pytest.raises(WsegError, match="model='deeplabv1' network, but the config builds model='deeplabv2'"):
        TEST.run(TEST.build_parser().parse_args(argv + ["model.type=deeplabv2", "model.backbone=resnet38_tiny"]))


# ------------------------------------------------------------------ DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def ddp_run(request, toy_root, pseudo, tmp_path_factory):
    """``torchrun --nproc_per_node 2 segmentation/train.py`` (gloo on CPU), started before the other tests of this
    file so that its start-up (three interpreters importing torch) overlaps with them."""
    if not any(item.name == "test_ddp_two_processes_cpu" for item in request.session.items):
        yield None  # not selected (-k): start nothing
        return
    out = str(tmp_path_factory.mktemp("ddp") / "run")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), os.path.join(REPO, "segmentation", "train.py"),
           *_train_args(toy_root, pseudo, out, "max_iters=2", "val_every=2", "batch_size=4")]
    log = open(os.path.join(os.path.dirname(out), "torchrun.log"), "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=os.path.dirname(out))
    yield proc, out, log
    if proc.poll() is None:  # SIGTERM first: torchrun then stops its workers
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()


def test_ddp_two_processes_cpu(ddp_run):
    proc, out, log = ddp_run
    try:
        rc = proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        rc = "timeout (the fixture stops it)"
    log.seek(0)
    assert rc == 0, log.read()[-3000:]
    assert os.path.isfile(os.path.join(out, "deeplabv1_resnet38_tiny_toy_voc_itr2_all.pth"))
    text = open(os.path.join(out, "train.log")).read()
    assert "val mIoU" in text and "step 2/2" in text


def test_adamw_option_trains_and_a_resume_under_sgd_is_refused(toy_root, pseudo, tmp_path):
    out = str(tmp_path / "adamw")
    _train(_train_args(toy_root, pseudo, out, "optimizer=adamw", "lr=0.0001", "max_iters=2"))
    state = torch.load(os.path.join(out, "last.pth"), map_location="cpu", weights_only=False)["optimizer"]
    assert "exp_avg" in next(iter(state["state"].values()))           # Adam's moments, not SGD's momentum buffer
    with pytest.raises(WsegError, match="optimizer 'adamw' -> 'sgd'"):
        _train(_train_args(toy_root, pseudo, out, "max_iters=2"))
    with pytest.raises(WsegError, match="optimizer 'adam': choose sgd"):
        _train(_train_args(toy_root, pseudo, str(tmp_path / "bad"), "optimizer=adam"))


def test_warmup_iters_ramps_the_lr_then_follows_poly(toy_root, pseudo, tmp_path):
    import json

    out = str(tmp_path / "warmup")
    _train(_train_args(toy_root, pseudo, out, "warmup_iters=4", "max_iters=6", "log_every=1", "lr=0.001"))
    lr = {r["step"]: r["lr"] for r in map(json.loads, open(os.path.join(out, "scalars.jsonl")))}
    # the lr logged after step k was the one of optimiser step k - 1: linear from ~0 over 4 steps, then poly
    assert lr[1] == pytest.approx(0.001 * 1e-6, rel=1e-3)
    assert lr[2] == pytest.approx(0.001 * (1 - 0.75 * (1 - 1e-6)), rel=1e-6)
    assert lr[5] == pytest.approx(0.001 * (1 - 4 / 7) ** 0.9, rel=1e-6)
