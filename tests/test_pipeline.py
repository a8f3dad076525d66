"""The pipeline runner end to end on a tiny synthetic dataset, and kill -9 in the middle + re-run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = {
    "dataset": {"make_toy_voc": {"--num_train": 8, "--num_val": 4, "--num_classes": 3, "--size": "64x48",
                                 "--seed": 1, "--difficulty": "easy"}},
    "stages": {
        "contrast_train": {"--backbone": "resnet38_tiny", "--batch_size": 4, "--max_epoches": 2, "--crop_size": 48,
                           "--resize_long": [48, 64], "--view2_size": 32, "--optimizer": "adamw", "--lr": 0.001,
                           "--num_workers": 0, "--device": "cpu"},
        "contrast_infer": {"--scales": [0.5, 1.0], "--num_workers": 0, "--device": "cpu"},
        "eval": {"--num_workers": 0},
        "aff_prepare": {"--num_workers": 0},
        "aff_train": {"--backbone": "resnet38_tiny", "--batch_size": 4, "--max_epoches": 2, "--crop_size": 72,
                      "--num_workers": 0, "--device": "cpu"},
        "aff_infer": {"--logt": 2, "--num_workers": 0, "--device": "cpu"},
        "segmentation": {"config": "segmentation/configs/demo_tiny.py",
                         "set": {"max_iters": 4, "ckpt_every": 2, "val_every": 4, "crop_size": 48,
                                 "test_scales": [1.0], "batch_size": 2}},
    },
}
METRIC_STAGES = ["eval_cam", "eval_cam_crf", "eval_rw", "eval_pseudo", "seg_test"]


def run_pipeline(work_dir, config, extra=(), **kw):
    cmd = [sys.executable, os.path.join(REPO, "scripts/run_pipeline.py"), "--config", config, "--work_dir", work_dir,
           *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def metrics(work_dir):
    with open(os.path.join(work_dir, "report", "results.json")) as f:
        res = json.load(f)
    return {s: res[s].get("metrics") for s in METRIC_STAGES}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, config):
    work = str(tmp_path_factory.mktemp("full"))
    proc = run_pipeline(work, config)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    return work


def test_runner_end_to_end_reports_every_stage(finished, config):
    work = finished
    m = metrics(work)
    assert all(m[s] and 0 <= m[s]["miou"] <= 100 for s in METRIC_STAGES), m
    assert 0 <= m["eval_cam"]["best_threshold"] <= 0.59
    summary = open(os.path.join(work, "report", "summary.md")).read()
    for row in ("PPC CAM", "Random walk (RW)", "Pseudo masks (RW + CRF)", "DeepLab", "**total**"):
        assert row in summary
    assert os.path.isfile(os.path.join(work, "report", "overlays_train.png"))
    assert os.path.isfile(os.path.join(work, "report", "cam_curve.png"))
    # a re-run skips everything and reports the same numbers
    proc = run_pipeline(work, config)
    out2, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "[run ]" not in out2 and out2.count("[skip]") >= 12, out2[-2000:]
    assert metrics(work) == m


def test_kill_9_mid_run_then_rerun_gives_same_results(tmp_path, config, finished):
    work = str(tmp_path / "killed")
    proc = run_pipeline(work, config, start_new_session=True)
    # kill -9 inside aff_train, right after its first-epoch resume checkpoint (one epoch and five stages to go)
    marker = os.path.join(work, "models", "aff_last.pth")
    deadline = time.time() + 400
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the pipeline ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(work, "stages", "aff_train.done"))
    again = run_pipeline(work, config)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-4000:]
    assert "[skip] cam_train: done" in out and "[run ] aff_train" in out
    assert metrics(work) == metrics(finished)
    # every artifact a later stage could read is complete (temp files are hidden and never read)
    from wseg import io

    for folder in ("cam", "cam_crf", "rw", "pseudo", os.path.join("aff_labels", "crf_la")):
        files = [f for f in os.listdir(os.path.join(work, folder)) if not f.startswith(".")]
        assert len(files) == 8, folder
        for f in files:
            path = os.path.join(work, folder, f)
            io.load_cam_dict(path) if f.endswith(".npy") else io.load_mask_png(path)


def test_stage_list_connects_cam_weights_to_deeplab_and_seam_baseline(tmp_path):
    """``backbone_from_cam`` hands the trained CAM network to DeepLab as its backbone weights; ``baseline_seam``
    adds the SEAM baseline's train/infer/eval stages with the same flags."""
    from wseg.pipeline import wsss_stages

    cfg = {"dataset": {"make_toy_voc": {"--num_train": 8}}, "baseline_seam": True,
           "stages": {"contrast_train": {"--max_epoches": 1}, "segmentation": {"config": "c.py",
                                                                               "backbone_from_cam": True}}}
    stages = {s.name: s for s in wsss_stages(cfg, str(tmp_path))}
    assert [n for n in stages if "seam" in n] == ["seam_cam_train", "seam_cam_infer", "eval_seam_cam"]
    seam = stages["seam_cam_train"].argv
    assert seam[seam.index("--network") + 1] == "seam" and "--max_epoches" in seam
    cam_pth = os.path.join(str(tmp_path), "models", "cam.pth")
    for name in ("seg_train", "seg_test"):
        assert f"backbone_weights={cam_pth}" in stages[name].argv
    cfg["stages"]["segmentation"]["backbone_from_cam"] = False
    assert not any(a.startswith("backbone_weights=") for s in wsss_stages(cfg, str(tmp_path)) for a in s.argv)


def test_set_overrides_stage_flags():
    from wseg.errors import WsegError
    from wseg.pipeline import apply_overrides

    cfg = {"dataset": {"make_toy_voc": {"--num_train": 8}}, "stages": {"aff_infer": {"--scale": 2, "--logt": 4}}}
    apply_overrides(cfg, ["contrast_train:--cls_warmup_epochs=0", "aff_infer:--scale=null",
                          "contrast_infer:--scales=1.0 2.0", "make_toy_voc:--num_train=20"])
    assert cfg["stages"]["contrast_train"] == {"--cls_warmup_epochs": "0"}
    assert cfg["stages"]["aff_infer"] == {"--logt": 4}
    assert cfg["stages"]["contrast_infer"] == {"--scales": ["1.0", "2.0"]}
    assert cfg["dataset"]["make_toy_voc"] == {"--num_train": "20"}
    for bad in ("contrast_train", "contrast_train:--x", "contrast_train:x=1", ":--x=1", "contrast_train:--x="):
        with pytest.raises(WsegError, match="--set"):
            apply_overrides(cfg, [bad])
