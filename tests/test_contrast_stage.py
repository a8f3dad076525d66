"""CAM stage end to end on the synthetic dataset: train, resume, DDP, infer, skip-if-done, bad input."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from wseg.models.checkpoint import read_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name):
    from wseg.pipeline import load_script as ls

    return ls(f"scripts/{name}.py")


def train_args(root, prefix, network="contrast", epochs=2, extra=()):
    return ["--voc12_root", root, "--train_list", os.path.join(root, "ImageSets/Segmentation/train.txt"),
            "--session_name", prefix, "--network", network, "--backbone", "resnet38_tiny", "--batch_size", "4",
            "--max_epoches", str(epochs), "--crop_size", "48", "--resize_long", "48", "64", "--view2_size", "32",
            "--num_workers", "0", "--seed", "3", "--log_every", "1", *extra]


def run_train(argv):
    mod = load_script("contrast_train")
    return mod.run(mod.build_parser().parse_args(argv))


@pytest.mark.parametrize("network", ["seam", "contrast"])
def test_train_writes_weights_logs_and_meta(toy_root, tmp_path, network):
    prefix = str(tmp_path / network)
    out = run_train(train_args(toy_root, prefix, network, epochs=1))
    state, meta = read_state_dict(out["weights"])
    assert meta["network"] == network and meta["backbone"] == "resnet38_tiny"
    assert ("fc_proj.weight" in state) == (network == "contrast")
    # the method's own flags travel with the weights: a network rebuilt from the file computes its classification
    # loss (the did-it-learn check) with the trained second-view size, not the published default
    from wseg.methods.base import build_from_weights

    assert meta["options"]["view2_size"] == 32
    assert build_from_weights(out["weights"])[0].option("view2_size", None) == 32
    lines = open(prefix + "_scalars.jsonl").read().splitlines()
    assert len(lines) == out["steps"] == 3
    assert os.path.isfile(prefix + ".log") and os.path.isfile(prefix + "_last.pth")


def test_resume_after_crash_equals_uninterrupted(toy_root, tmp_path, monkeypatch):
    full = str(tmp_path / "full")
    run_train(train_args(toy_root, full, epochs=2))

    crashed = str(tmp_path / "crashed")
    import wseg.models.checkpoint as ck

    real_save = ck.save_checkpoint

    def save_then_crash(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt("simulated crash after the first epoch's checkpoint")

    monkeypatch.setattr(ck, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_train(train_args(toy_root, crashed, epochs=2))
    monkeypatch.setattr(ck, "save_checkpoint", real_save)
    assert not os.path.exists(crashed + ".pth")
    run_train(train_args(toy_root, crashed, epochs=2))  # resumes at epoch 2
    a, _ = read_state_dict(full + ".pth")
    b, _ = read_state_dict(crashed + ".pth")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_on_cpu(toy_root, tmp_path):
    prefix = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), os.path.join(REPO, "scripts/contrast_train.py"),
           *train_args(toy_root, prefix, epochs=1, extra=["--device", "cpu"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    state, _ = read_state_dict(prefix + ".pth")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    # 12 images / (batch 4 x 2 processes) = 1 step per epoch, logged by rank 0 only
    assert len(open(prefix + "_scalars.jsonl").read().splitlines()) == 1


def test_infer_writes_resumes_and_evaluates(toy_root, tmp_path):
    prefix = str(tmp_path / "cam")
    run_train(train_args(toy_root, prefix, epochs=1))
    infer = load_script("contrast_infer")
    lst = os.path.join(toy_root, "ImageSets/Segmentation/train.txt")
    argv = ["--weights", prefix + ".pth", "--voc12_root", toy_root, "--infer_list", lst,
            "--out_cam", str(tmp_path / "npy"), "--out_cam_pred", str(tmp_path / "png"),
            "--out_crf", str(tmp_path / "crf"), "--num_workers", "0", "--scales", "0.5", "1.0",
            "--vis_dir", str(tmp_path / "vis"), "--vis_num", "1"]
    out = infer.run(infer.build_parser().parse_args(argv))
    assert (out["done"], out["inferred"], out["network"]) == (12, 12, "contrast")
    from wseg import io
    from wseg.data.voc import VOCRoot, read_list

    voc = VOCRoot(toy_root)
    labels = voc.cls_labels(read_list(lst))
    for i in read_list(lst):
        cams = io.load_cam_dict(str(tmp_path / "npy" / f"{i}.npy"), num_fg=3, shape=(48, 64))
        assert sorted(cams) == np.flatnonzero(labels[i]).tolist()
        assert io.load_mask_png(str(tmp_path / "crf" / f"{i}.png")).shape == (48, 64)
        assert io.load_mask_png(str(tmp_path / "png" / f"{i}.png")).max() <= 3
    assert len(os.listdir(tmp_path / "vis")) == 1
    # delete one output: only that image is redone
    os.remove(tmp_path / "crf" / f"{read_list(lst)[0]}.png")
    assert infer.run(infer.build_parser().parse_args(argv))["inferred"] == 1
    ev = load_script("eval")
    res = ev.run(ev.build_parser().parse_args([
        "--list", lst, "--predict_dir", str(tmp_path / "npy"), "--gt_dir", os.path.join(toy_root, "SegmentationClass"),
        "--type", "npy", "--curve", "--classes", toy_root + "/classes.txt", "--num_workers", "0",
        "--logfile", str(tmp_path / "eval.txt"), "--progress", "False"]))
    assert 0 <= res["miou"] <= 100 and 0 <= res["best_threshold"] <= 0.59


def test_bad_inputs_are_one_line_errors(toy_root, tmp_path):
    script = os.path.join(REPO, "scripts/contrast_infer.py")
    lst = os.path.join(toy_root, "ImageSets/Segmentation/train.txt")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    cases = [
        (["--weights", str(tmp_path / "none.pth"), "--voc12_root", toy_root, "--infer_list", lst,
          "--out_cam", str(tmp_path / "o")], "none.pth"),
        (["--weights", str(junk), "--voc12_root", toy_root, "--infer_list", lst,
          "--out_cam", str(tmp_path / "o")], "junk.pth"),
        (["--weights", str(junk), "--voc12_root", str(tmp_path / "nowhere"), "--infer_list", lst,
          "--out_cam", str(tmp_path / "o")], "nowhere"),
    ]
    for argv, name in cases:
        res = subprocess.run([sys.executable, script, *argv], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert "Traceback" not in res.stderr, res.stderr
        errors = [line for line in lines if line.startswith("error: ")]
        assert errors == [lines[-1]] and name in lines[-1], res.stderr
    assert not os.path.exists(tmp_path / "o") or os.listdir(tmp_path / "o") == []


@pytest.mark.parametrize("extra, named", [(["--scales", "1", "-0.5"], "--scales 1 -0.5"),
                                          (["--crf_alpha", "-1"], "--crf_alpha -1"),
                                          (["--crf_iters", "0"], "--crf_iters 0")])
def test_bad_inference_flags_fail_before_anything_is_written(toy_root, tmp_path, extra, named):
    from wseg.errors import WsegError

    infer = load_script("contrast_infer")
    argv = ["--weights", str(tmp_path / "none.pth"), "--voc12_root", toy_root, "--infer_list",
            os.path.join(toy_root, "ImageSets/Segmentation/train.txt"), "--out_crf", str(tmp_path / "o"), *extra]
    with pytest.raises(WsegError, match=named):
        infer.run(infer.build_parser().parse_args(argv))
    assert not os.path.exists(tmp_path / "o")


@pytest.mark.parametrize("extra, named", [
    (["--batch_size", "0"], "--batch_size 0"), (["--lr", "-1"], "--lr -1"),
    (["--resize_long", "64", "48"], "--resize_long 64 48"), (["--view2_size", "4"], "--view2_size 4"),
    (["--bg_threshold", "2"], "--bg_threshold 2"), (["--color_jitter", "0", "0", "0", "0.7"], "--color_jitter"),
    (["--num_workers", "-1"], "--num_workers -1")])
def test_bad_training_flags_fail_before_anything_is_written(toy_root, tmp_path, extra, named):
    from wseg.errors import WsegError

    prefix = str(tmp_path / "run" / "x")
    with pytest.raises(WsegError, match=named):
        run_train(train_args(toy_root, prefix, extra=extra))
    assert not os.path.exists(tmp_path / "run")


def test_warmup_jitter_and_dropout_flags(toy_root, tmp_path):
    """``--cls_warmup_epochs 1``: the first epoch optimises classification alone, the second every SEAM+PPC term;
    ``--color_jitter 0 0 0 0 --dropout False --backbone resnet38_small`` reach the network and its metadata."""
    import json

    prefix = str(tmp_path / "warm")
    argv = train_args(toy_root, prefix, "contrast", epochs=2,
                      extra=["--cls_warmup_epochs", "1", "--color_jitter", "0", "0", "0", "0", "--dropout", "False"])
    argv[argv.index("resnet38_tiny")] = "resnet38_small"
    out = run_train(argv)
    rows = [json.loads(line) for line in open(prefix + "_scalars.jsonl")]
    assert len(rows) == out["steps"] == 6
    warm, full = rows[:3], rows[3:]
    assert all("loss_nce" not in r and "loss_er" not in r for r in warm)
    assert all("loss_nce" in r and "loss_er" in r and "loss_ecr" in r for r in full)
    assert all(abs(r["loss"] - r["loss_mlsm"]) < 1e-6 for r in warm)
    _, meta = read_state_dict(out["weights"])
    assert meta["backbone"] == "resnet38_small"


def error_line(capsys) -> str:
    """The one ``error:`` line a failed run prints (the last line of stderr; log lines come before it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]] and not any("Traceback" in line for line in lines), lines[-5:]
    return errors[0]


def test_an_unreadable_image_is_skipped_listed_and_picked_up_once_fixed(toy_root, tmp_path, capsys):
    """One corrupt JPEG among the inference images: the others are written, the run ends in one line listing the
    skipped image (exit 2); ``--on_error stop`` stops at it; a re-run after the fix does only that image."""
    import shutil

    from wseg.cli import main

    prefix = str(tmp_path / "cam")
    run_train(train_args(toy_root, prefix, epochs=1))
    root = str(tmp_path / "root")
    shutil.copytree(toy_root, root)
    lst = os.path.join(root, "ImageSets/Segmentation/train.txt")
    ids = open(lst).read().split()
    bad = os.path.join(root, "JPEGImages", ids[3] + ".jpg")
    good_bytes = open(bad, "rb").read()
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    infer = load_script("contrast_infer")
    out = tmp_path / "npy"
    argv = ["--weights", prefix + ".pth", "--voc12_root", root, "--infer_list", lst, "--out_cam", str(out),
            "--out_crf", str(tmp_path / "crf"), "--num_workers", "1", "--scales", "1.0"]
    assert main(infer.build_parser, infer.run, argv + ["--on_error", "stop"]) == 2
    err = error_line(capsys)
    assert ids[3] + ".jpg" in err and "cannot read image" in err
    assert main(infer.build_parser, infer.run, argv) == 2
    import re

    assert re.search(rf"contrast_infer: 1 of \d+ images skipped \({ids[3]}\)", error_line(capsys))
    assert sorted(os.listdir(out)) == sorted(i + ".npy" for i in ids if i != ids[3])
    assert len(os.listdir(tmp_path / "crf")) == len(ids) - 1
    with open(bad, "wb") as f:
        f.write(good_bytes)
    res = infer.run(infer.build_parser().parse_args(argv))
    assert res["inferred"] == 1 and len(os.listdir(out)) == len(ids)


def test_a_loader_worker_error_ends_in_one_line(toy_root, tmp_path, capsys):
    """A corrupt training image read in a DataLoader worker: one ``error:`` line naming it, not the worker's
    traceback."""
    import shutil

    from wseg.cli import main

    root = str(tmp_path / "root")
    shutil.copytree(toy_root, root)
    ids = open(os.path.join(root, "ImageSets/Segmentation/train.txt")).read().split()
    with open(os.path.join(root, "JPEGImages", ids[0] + ".jpg"), "wb") as f:
        f.write(b"truncated")
    mod = load_script("contrast_train")
    argv = train_args(root, str(tmp_path / "s"), epochs=1)
    argv[argv.index("--num_workers") + 1] = "1"
    assert main(mod.build_parser, mod.run, argv) == 2
    err = error_line(capsys)
    assert ids[0] + ".jpg" in err and "DataLoader worker" not in err


def test_a_network_that_does_not_learn_is_flagged(toy_root, tmp_path):
    """lr 1e-9: the classification loss stays at the label prior's; the run warns in its log and its result says
    so; with a real lr the same run learns."""
    from wseg.engine.trainer import LEARNED_RATIO_FINAL, multilabel_prior_loss

    prefix = str(tmp_path / "flat")
    out = run_train(train_args(toy_root, prefix, epochs=3, extra=["--lr", "1e-9", "--cls_warmup_epochs", "3"]))
    assert out["learned"] is False and out["cls_loss"] > LEARNED_RATIO_FINAL * out["prior_loss"]
    assert "did not learn" in open(prefix + ".log").read()
    labels = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
    p = labels.mean(0)
    assert multilabel_prior_loss(labels) == pytest.approx(float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p)))))


def test_the_report_marks_rows_fed_by_a_network_that_did_not_learn():
    from wseg.pipeline import Stage, report_markdown, unlearned_sources

    stages = [Stage("cam_train", "scripts/contrast_train.py", ["--session_name", "/w/models/cam"]),
              Stage("cam_infer", "scripts/contrast_infer.py", ["--weights", "/w/models/cam.pth", "--out_cam", "/w/cam"]),
              Stage("eval_cam", "scripts/eval.py", ["--predict_dir", "/w/cam"], report=[{"label": "CAM"}]),
              Stage("eval_gt", "scripts/eval.py", ["--predict_dir", "/w/other"], report=[{"label": "other"}])]
    results = {"cam_train": {"seconds": 1, "result": {"learned": False, "cls_loss": 0.6, "prior_loss": 0.6}},
               "cam_infer": {"seconds": 1, "result": {}},
               "eval_cam": {"seconds": 1, "result": {}, "metrics": {"miou": 15.0}},
               "eval_gt": {"seconds": 1, "result": {}, "metrics": {"miou": 50.0}}}
    assert unlearned_sources(stages, results) == {"cam_train": "cam_train", "cam_infer": "cam_train",
                                                  "eval_cam": "cam_train"}
    table = report_markdown(stages, results)
    assert "| CAM (fed by cam_train, which did not learn) |" in table and "| other |" in table
    assert "cam_train did not learn" in table


def test_the_report_marks_rows_fed_by_a_checkpoint_chosen_with_val_ground_truth():
    """PMM's cyclic step picks its checkpoint by val mIoU (pick_best_pth): every row downstream says so."""
    from wseg.pipeline import Stage, report_markdown, val_selected_sources

    stages = [Stage("seg_test_pus", "segmentation/test.py", ["--out_dir", "/w/pus"], report=[{"label": "PUS"}]),
              Stage("cyclic", "scripts/cyclic_pseudo.py", ["--out_dir", "/w/pus", "--out_masks", "/w/cyc"]),
              Stage("seg_train_cyc", "segmentation/train.py", ["--pseudo_mask_dir", "/w/cyc", "--out_dir", "/w/s2"]),
              Stage("seg_test_cyc", "segmentation/test.py", ["--pseudo_mask_dir", "/w/cyc", "--out_dir", "/w/s2"],
                    report=[{"label": "cyclic"}])]
    results = {"seg_test_pus": {"seconds": 1, "result": {}, "metrics": {"miou": 30.0}},
               "cyclic": {"seconds": 1, "result": {"selected_by_val": True}},
               "seg_train_cyc": {"seconds": 1, "result": {}},
               "seg_test_cyc": {"seconds": 1, "result": {}, "metrics": {"miou": 33.0}}}
    assert val_selected_sources(stages, results) == {"cyclic": "cyclic", "seg_train_cyc": "cyclic",
                                                     "seg_test_cyc": "cyclic"}
    table = report_markdown(stages, results)
    assert "| cyclic (checkpoint chosen with val ground truth) |" in table and "| PUS |" in table
    assert "cyclic picked its checkpoint by val mIoU" in table
    results["cyclic"]["result"]["selected_by_val"] = False
    assert "val ground truth" not in report_markdown(stages, results)


def test_max_iters_replaces_epochs_and_may_end_mid_epoch(toy_root, tmp_path):
    """--max_iters (EPS trains 20000 iterations): the poly schedule spans exactly that many steps, the last epoch
    is partial, and the count is a resume setting."""
    from wseg.errors import WsegError

    prefix = str(tmp_path / "it")
    out = run_train(train_args(toy_root, prefix, "seam", epochs=1, extra=["--max_iters", "4"]))
    rows = [__import__("json").loads(line) for line in open(prefix + "_scalars.jsonl")]
    assert out["steps"] == len(rows) == 4
    assert rows[-1]["lr"] == pytest.approx(0.01 * (1 - 3 / 4) ** 0.9)
    with pytest.raises(WsegError, match="max_iters"):
        run_train(train_args(toy_root, prefix, "seam", epochs=1, extra=["--max_iters", "5"]))
