"""Issue #19, the COCO pipelines: demo_coco (synthetic COCO json -> make_coco_masks -> every stage of the
multi-stage recipe) and ppc_coco list, connect and parse with each stage script's own flags; the COCO segmentation
zoo configs (PMM PSPNet 40k, DeepLabV3+ 80k) compose with the published values; a tiny demo_coco runs end to end."""
import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEG = os.path.join(REPO, "segmentation", "configs")


def _script(rel):
    from wseg.pipeline import load_script

    return load_script(rel)


def _arg(argv, key):
    flag = "--" + key
    return argv[argv.index(flag) + 1] if flag in argv else None


def _values(argv, key):
    """All values of a list-valued flag."""
    i = argv.index("--" + key) + 1
    out = []
    while i < len(argv) and not argv[i].startswith("--"):
        out.append(argv[i])
        i += 1
    return out


@pytest.mark.parametrize("name", ["demo_coco", "ppc_coco"])
def test_coco_pipelines_list_connect_and_parse(name, tmp_path, capsys):
    from wseg.pipeline import load_pipeline, run_pipeline, stages_from_config

    work = str(tmp_path / "w")
    root = None if name == "demo_coco" else str(tmp_path / "coco" / "voc81")
    run_pipeline(name, work, root=root, list_only=True)
    out = capsys.readouterr().out
    assert "scripts/eval.py" in out and "segmentation/train.py" in out and not os.path.exists(work)
    stages = stages_from_config(load_pipeline(name, root=root), work)
    st = {s.name: s for s in stages}
    kinds = ("cam_train", "cam_infer", "eval_cam", "eval_cam_crf", "aff_prepare", "aff_train", "aff_infer", "eval_rw",
             "eval_pseudo", "seg_train", "seg_test")
    assert set(kinds) <= set(st)
    if name == "demo_coco":
        assert stages[0].name == "data" and stages[0].script == "scripts/make_toy_coco.py"
        root = os.path.join(os.path.abspath(work), "toy_coco", "voc81")
        assert _arg(st["data"].argv, "out") == os.path.join(os.path.abspath(work), "toy_coco")
        assert _arg(st["data"].argv, "classes") == "coco14"
    else:
        assert "data" not in st
        cam = st["cam_train"].argv                       # EPS's COCO schedule with PPC's loss (docs/coco.md)
        assert (_arg(cam, "network"), _arg(cam, "batch_size"), _arg(cam, "max_iters"), _arg(cam, "crop_size"),
                _arg(cam, "lr"), _arg(cam, "wt_dec")) == ("contrast", "16", "256500", "321", "0.01", "0.0005")
        assert _values(cam, "resize_long") == ["256", "448"]
    for s in ("cam_train", "cam_infer", "aff_prepare", "aff_train", "aff_infer", "seg_train"):
        assert _arg(st[s].argv, "voc12_root") == root, s
    # every evaluation: the 81-class COCO list, absent classes skipped; CAMs / masks on train, DeepLab on val
    evals = [s for s in stages if s.script == "scripts/eval.py"]
    assert len(evals) == 4
    for s in evals:
        assert (_arg(s.argv, "classes"), _arg(s.argv, "absent")) == ("coco14", "skip"), s.name
        assert _arg(s.argv, "list") == os.path.join(root, "ImageSets", "Segmentation", "train.txt")
    assert _arg(st["seg_test"].argv, "test_list") == os.path.join(root, "ImageSets", "Segmentation", "val.txt")
    # files connect: CAMs -> affinity labels / walk, walk + CRF -> DeepLab
    assert _arg(st["aff_prepare"].argv, "cam_dir") == _arg(st["cam_infer"].argv, "out_cam") == \
        _arg(st["aff_infer"].argv, "cam_dir")
    assert _arg(st["seg_train"].argv, "pseudo_mask_dir") == _arg(st["aff_infer"].argv, "out_crf") == \
        _arg(st["eval_pseudo"].argv, "predict_dir")
    # every stage's command line parses with its script's own flags (no unknown key, valid values)
    for s in stages:
        _script(s.script).build_parser().parse_args(s.argv)


def _seg_cfg(name):
    from wseg.segmentation.config import config_from_args

    return config_from_args(_script("segmentation/train.py").build_parser().parse_args(
        ["--config", os.path.join(SEG, name), "--voc12_root", "data/coco/voc81"]))


@pytest.mark.parametrize("depth", [50, 101])
def test_coco_segmentation_zoo_configs(depth):
    from wseg.segmentation.checks import check_train_config

    psp = _seg_cfg(f"pspnet_r{depth}-d8_512x512_40k_coco_pus.py")      # WSSS_MMSeg *_40kx32_coco.py
    assert psp["model"]["type"] == "pspnet" and psp["model"]["backbone"] == f"resnet{depth}_v1c"
    assert (psp["classes"], psp["train_list"], psp["val_list"], psp["test_list"]) == ("coco14_91", "train", "val",
                                                                                        "val")
    assert (psp["max_iters"], psp["lr"], psp["min_lr"], psp["momentum"], psp["weight_decay"], psp["power"]) == (
        40000, 0.01, 5e-5, 0.9, 0.0005, 0.9)
    assert (psp["batch_size"], psp["crop_size"], psp["ckpt_every"], psp["val_every"]) == (32, 512, 4000, 4000)
    assert (psp["pus_type"], psp["pus_beta"], psp["pus_k"], psp["pus_group"]) == ("clamp", 0.8, 0.8, 2)
    assert (psp["test_mode"], psp["test_crop"], psp["test_stride"], psp["test_flip"], psp["crf"]) == (
        "slide", 512, 480, True, True)
    assert psp["test_scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and psp["pad_before_normalize"] is False
    dl = _seg_cfg(f"deeplabv3plus_r{depth}-d8_512x512_80k_coco.py")
    assert dl["model"]["type"] == "deeplabv3plus" and dl["model"]["backbone"] == f"resnet{depth}_v1c"
    assert (dl["classes"], dl["train_list"], dl["val_list"], dl["test_list"]) == ("coco14", "train", "val", "val")
    assert (dl["max_iters"], dl["lr"], dl["min_lr"], dl["ckpt_every"], dl["val_every"]) == (80000, 0.01, 1e-4, 8000,
                                                                                            8000)
    assert (dl["data_pipeline"], dl["img_scale"], dl["scale_range"], dl["crop_size"], dl["cat_max_ratio"]) == (
        "mmseg", [2048, 512], [0.5, 2.0], 512, 0.75)
    assert dl["pus_type"] == "" and dl["tta_ratio_of"] == "original"
    for cfg in (psp, dl):
        check_train_config(cfg)


# --------------------------------------------------------------------------------- tiny demo_coco end to end

TINY = ["data.num_train=12", "data.num_val=4", "data.size=64x48", "cam_train.backbone=resnet38_tiny",
        "cam_train.weights=null", "cam_train.max_epoches=1", "cam_train.cls_warmup_epochs=0", "cam_train.batch_size=4",
        "cam_train.crop_size=48",
        "cam_train.resize_long=[48,64]", "cam_train.view2_size=32", "cam_infer.scales=[1.0]",
        "aff_train.max_epoches=1", "aff_train.batch_size=4", "aff_train.crop_size=72", "aff_train.resize_long=null",
        "aff_infer.logt=2", "aff_infer.scale=null", "seg_train.config=segmentation/configs/demo_tiny.py",
        "seg_train.backbone_weights=null", "seg_train.max_iters=4", "seg_train.ckpt_every=2", "seg_train.crop_size=48",
        "seg_train.test_scales=[1.0]", "seg_train.batch_size=2"]


def test_demo_coco_tiny_end_to_end(tmp_path):
    """demo_coco with a tiny budget: toy COCO json -> voc81 root -> every stage -> the report (81 classes)."""
    work = str(tmp_path / "w")
    cmd = [sys.executable, os.path.join(REPO, "scripts", "run_pipeline.py"), "--config", "demo_coco", "--work_dir",
           work, "--set", *TINY]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300)
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert seconds < 60, seconds                    # ~8 s here; the bound leaves room for a busy machine
    root = os.path.join(work, "toy_coco", "voc81")
    assert os.path.isfile(os.path.join(work, "toy_coco", "annotations", "instances_train2014.json"))
    with open(os.path.join(root, "classes.txt")) as f:
        assert len(f.read().split("\n")) >= 81
    with open(os.path.join(work, "report", "results.json")) as f:
        res = json.load(f)
    assert list(res) == ["data", "cam_train", "cam_infer", "eval_cam", "eval_cam_crf", "aff_prepare", "aff_train",
                         "aff_infer", "eval_rw", "eval_pseudo", "seg_train", "seg_test"]
    for stage in ("eval_cam", "eval_cam_crf", "eval_rw", "eval_pseudo"):
        r = res[stage]["result"]
        assert (r["num_classes"], r["absent"]) == (81, "skip"), stage
        assert 1 < r["num_present"] <= 7 and r["num_present"] + len(r["left_out"]) == 81      # bg + 6 toy classes
    assert "miou" in res["seg_test"]["metrics"] and "miou_crf" in res["seg_test"]["metrics"]
    with open(os.path.join(work, "report", "summary.md")) as f:
        summary = f.read()
    assert "| PPC CAM" in summary and "| DeepLab + CRF" in summary and "| seg_test |" in summary
