"""One-line errors for inputs that used to end in a traceback deep inside a library or in a crash."""
import os

import numpy as np
import pytest

from wseg.errors import WsegError


def test_crf_settings_that_would_crash_pydensecrf_are_refused():
    from wseg.crf import MAX_CRF_ITERS, check_crf_params, crf_inference

    check_crf_params(10, pos_w=3, pos_xy_std=3, bi_w=0, bi_xy_std=80, bi_rgb_std=13)   # a zero weight is fine
    for t, kernels, named in ((0, {}, "0 mean-field"), (MAX_CRF_ITERS + 1, {}, "mean-field"),
                              (10, {"pos_xy_std": 0.0}, "pos_xy_std=0.0"), (10, {"bi_rgb_std": float("nan")}, "nan"),
                              (10, {"bi_w": -1.0}, "bi_w=-1.0"), (10, {"bi_xy_std": float("inf")}, "inf")):
        with pytest.raises(WsegError, match=named):
            check_crf_params(t, **kernels)
    img = np.zeros((8, 8, 3), np.uint8)
    probs = np.full((2, 8, 8), 0.5, np.float32)
    with pytest.raises(WsegError, match="pos_xy_std=0"):     # before pydensecrf, which segfaults on it
        crf_inference(img, probs, pos_xy_std=0)


def test_cli_turns_path_errors_into_one_line(tmp_path, capsys):
    from wseg.cli import main

    afile = tmp_path / "afile"
    afile.write_text("x")

    def run(args):
        os.makedirs(os.path.join(str(afile), "out"))          # an output folder under a file

    import argparse
    assert main(lambda: argparse.ArgumentParser(), run, []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(afile) in err[0]

    def fails_mid_loop(args):
        from tqdm import tqdm

        bar = tqdm(total=3, desc="train")
        bar.update(1)
        raise WsegError("x.jpg: cannot read image (OSError); the file is corrupt")

    assert main(lambda: argparse.ArgumentParser(), fails_mid_loop, []) == 2
    err = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert err[-1] == "error: x.jpg: cannot read image (OSError); the file is corrupt"   # a line of its own
    assert "train" in err[-2]

    def bug(args):
        raise OSError("no path: a bug keeps its traceback")

    with pytest.raises(OSError):
        main(lambda: argparse.ArgumentParser(), bug, [])


def test_benchmarks_give_one_line_errors_and_their_exit_status(tmp_path):
    """A benchmark's own ``main`` runs under ``wseg.cli.guarded``: a missing work folder is one line, status 2."""
    import subprocess
    import sys

    from wseg.cli import guarded

    assert guarded(lambda: 3) == 3 and guarded(lambda: None) == 0
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(repo, "benchmarks", "bench_bg_scale.py"), "--work_dirs",
                          str(tmp_path / "none")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("error: ") and str(tmp_path / "none") in out.stderr


def test_garbage_weights_and_device_names(tmp_path):
    from wseg.engine import resolve_device
    from wseg.models.checkpoint import read_state_dict

    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(WsegError, match="notes.pth"):
        read_state_dict(str(text))
    with pytest.raises(WsegError, match="--device gpu0: not a device"):
        resolve_device("gpu0")


def test_cam_stages_refuse_another_networks_weights_by_name(tmp_path):
    import torch

    from wseg.methods.base import build_from_weights
    from wseg.models.checkpoint import save_state_dict

    path = str(tmp_path / "aff.pth")
    save_state_dict(path, torch.nn.Conv2d(3, 4, 1), {"network": "affinity", "backbone": "resnet38_tiny"})
    with pytest.raises(WsegError, match="aff.pth: holds a 'affinity' network, not a CAM method .*models/cam.pth"):
        build_from_weights(path)
    from wseg.models.backbones import build_backbone

    trunk = str(tmp_path / "imagenet.pth")
    torch.save(build_backbone("resnet38_tiny").state_dict(), trunk)
    with pytest.raises(WsegError, match=r"imagenet.pth: backbone weights without the CAM layers \(.*fc8.*\), e.g. "
                                        "ImageNet or stand-in"):
        build_from_weights(trunk, backbone="resnet38_tiny", num_classes=4)


def test_eval_refuses_the_ground_truth_folder_as_predictions(tmp_path):
    from wseg.metrics import check_files

    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "a.png").write_bytes(b"x")
    with pytest.raises(WsegError, match="is the ground-truth folder"):
        check_files(["a"], str(gt), str(gt), "png")


def test_folder_settings_refuse_stale_outputs_only(tmp_path):
    from wseg.io import record_folder_settings

    d = str(tmp_path / "out")
    record_folder_settings(d, {"beta": 8}, ".s.json", "--out_rw")              # new folder: recorded
    record_folder_settings(d, {"beta": 4}, ".s.json", "--out_rw")              # no outputs yet: replaced
    open(os.path.join(d, "x.png"), "wb").close()
    record_folder_settings(d, {"beta": 4}, ".s.json", "--out_rw")              # same settings: fine
    with pytest.raises(WsegError, match="beta 4 -> 8.*--out_rw"):
        record_folder_settings(d, {"beta": 8}, ".s.json", "--out_rw")
    os.remove(os.path.join(d, ".s.json"))
    with pytest.raises(WsegError, match="unknown settings"):
        record_folder_settings(d, {"beta": 8}, ".s.json", "--out_rw")


def test_eval_defaults_to_the_dataset_roots_classes(toy_root, tmp_path):
    """Without --classes, eval.py takes the classes.txt of --gt_dir's root (4 classes here), not VOC's 21: the
    toy masks copied as predictions score 100%, not 4/21."""
    import shutil

    from wseg.pipeline import load_script

    gt = os.path.join(toy_root, "SegmentationClass")
    pred = str(tmp_path / "pred")
    shutil.copytree(gt, pred)
    ev = load_script("scripts/eval.py")
    argv = ["--list", os.path.join(toy_root, "ImageSets/Segmentation/val.txt"), "--predict_dir", pred, "--gt_dir", gt,
            "--type", "png", "--num_workers", "0", "--logfile", str(tmp_path / "e.txt"), "--progress", "False"]
    res = ev.run(ev.build_parser().parse_args(argv))
    assert res["miou"] == pytest.approx(100.0) and len(res["iou"]) == 4
    res = ev.run(ev.build_parser().parse_args(argv + ["--classes", "voc12"]))
    assert res["miou"] == pytest.approx(100.0 * 4 / 21)


def test_voc_root_checks_classes_lists_and_cams(toy_root, tmp_path):
    from wseg import io
    from wseg.data.voc import VOCRoot

    with pytest.raises(WsegError, match="--classes voc12: 21 classes, but .*classes.txt lists 4 others"):
        VOCRoot(toy_root, "voc12")
    for inside in ("JPEGImages", "SegmentationClass"):        # a folder of the root instead of the root
        with pytest.raises(WsegError, match=f"{inside}: a folder inside the dataset root .*; pass --voc12_root "
                                            f"\\(or --data_root\\) {os.path.abspath(toy_root)}$"):
            VOCRoot(os.path.join(toy_root, inside))
    with pytest.raises(WsegError, match="is not a dataset root"):
        VOCRoot(str(tmp_path))
    assert VOCRoot(toy_root).spec.num_classes == 4
    missing = str(tmp_path / "nolist.txt")
    with pytest.raises(WsegError, match=f"{missing}: list file not found"):    # named as given, no extra .txt
        VOCRoot(toy_root).ids(missing)
    path = str(tmp_path / "cam.npy")
    io.save_cam_dict(path, {0: np.array([[0.5, np.nan]], np.float32)})
    with pytest.raises(WsegError, match="NaN or inf"):
        io.load_cam_dict(path)


@pytest.mark.parametrize("extra, named", [(["--momentum", "5"], "--momentum 5"), (["--lr", "inf"], "--lr inf"),
                                          (["--seed", "-1"], "--seed -1")])
def test_training_schedule_flags(toy_root, tmp_path, extra, named):
    from wseg.pipeline import load_script

    mod = load_script("scripts/contrast_train.py")
    argv = ["--voc12_root", toy_root, "--train_list", os.path.join(toy_root, "ImageSets/Segmentation/train.txt"),
            "--backbone", "resnet38_tiny", "--session_name"]
    with pytest.raises(WsegError, match=named):
        mod.run(mod.build_parser().parse_args(argv + [str(tmp_path / "s" / "x"), *extra]))
    with pytest.raises(WsegError, match="--session_name"):                  # a folder, no file name prefix
        mod.run(mod.build_parser().parse_args(argv + [str(tmp_path) + os.sep]))
    assert not os.path.exists(tmp_path / "s")


def test_pipeline_overrides_reach_every_stage_and_unknown_names_fail(tmp_path):
    from wseg.pipeline import load_pipeline, stages_from_config

    cfg = load_pipeline("ppc_voc", ["seg_train.max_iters=3", "aff_infer.logt=4", "seg_train.model.head_dim=64"],
                        root="/data/voc")
    stages = {s.name: s for s in stages_from_config(cfg, "/tmp/w")}
    train, test = stages["seg_train"].argv, stages["seg_test"].argv
    assert train[train.index("--max_iters") + 1] == "3" and "model.head_dim=64" in train
    assert test[test.index("--max_iters") + 1] == "3"                     # seg_test takes seg_train's values
    assert stages["aff_infer"].argv[-2:] == ["--logt", "4"]
    assert os.path.isfile(train[train.index("--config") + 1])            # the repo config, found from any folder
    with pytest.raises(WsegError, match="no stage 'aff_infr'.*aff_infer"):
        load_pipeline("ppc_voc", ["aff_infr.logt=4"], root="/data/voc")
    from wseg.pipeline import Runner

    # a mistyped key of the last stage fails before the first stage runs (which would fail on the missing root)
    typo = stages_from_config(load_pipeline("ppc_voc", ["seg_train.max_iter=3"], root="/data/voc"), "/tmp/w")
    with pytest.raises(WsegError, match="stage seg_train: .*unknown key 'max_iter'.*max_iters"):
        Runner(str(tmp_path / "w"), typo).run(echo=lambda line: None)
    for bad, named in (("aff_infer.logt=-1", "stage aff_infer: --logt -1"),                # the scripts' own checks
                       ("seg_train.optimizer=adam", "stage seg_train: optimizer 'adam'"),
                       ("seg_test.test_scales=[0]", "stage seg_test: test_scales")):
        with pytest.raises(WsegError, match=named):
            Runner(str(tmp_path / "w"), stages_from_config(load_pipeline("ppc_voc", [bad], root="/data/voc"),
                                                           "/tmp/w")).run(echo=lambda line: None)
    assert not os.path.exists(str(tmp_path / "w" / "stages"))
    with pytest.raises(WsegError, match="SECTION:--flag=VALUE is gone"):
        load_pipeline("ppc_voc", ["aff_infer:--logt=4"], root="/data/voc")
    with pytest.raises(WsegError, match="dataset.root is not set"):
        load_pipeline("ppc_voc")


def test_toy_dataset_and_cam_overflow_guards(tmp_path):
    import warnings

    from wseg.cam import background_power
    from wseg.data.synthetic import make_toy_voc

    with pytest.raises(WsegError, match="--ignore_width 1000: need 0..3 pixels for 64x48"):
        make_toy_voc(str(tmp_path / "t"), num_train=1, num_val=0, image_size="64x48", ignore_width=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # a min-max CAM far below 0: inf background, no warning
        assert np.isinf(background_power({0: np.full((2, 2), -41, np.float32)}, 24)).all()


def test_pipeline_list_writes_nothing_and_names_stages_in_errors(tmp_path, capsys):
    from wseg.pipeline import REPO, load_script

    rp = load_script("scripts/run_pipeline.py")
    demo = os.path.join(REPO, "scripts/pipelines/demo.py")
    work = str(tmp_path / "w")
    rp.run(rp.build_parser().parse_args(["--config", demo, "--work_dir", work, "--list"]))
    assert "seg_test" in capsys.readouterr().out and not os.path.exists(work)
    with pytest.raises(WsegError, match=r"stage data: .*unknown key 'nosuch'"):
        rp.run(rp.build_parser().parse_args(["--config", demo, "--work_dir", work, "--only", "data",
                                             "--set", "data.nosuch=1"]))


def test_deeplab_key_given_twice_with_different_values():
    from wseg.pipeline import REPO, load_script

    train = load_script("segmentation/train.py")
    demo = os.path.join(REPO, "segmentation/configs/demo_tiny.py")
    args = train.build_parser().parse_args(["--config", demo, "--max_iters", "4", "--set", "max_iters=4"])
    assert args.max_iters == 4                                                              # agreeing: fine
    with pytest.raises(WsegError, match="max_iters: given as --max_iters 0 and as --set max_iters=4"):
        train.build_parser().parse_args(["--config", demo, "--max_iters", "0", "--set", "max_iters=4"])


def test_split_lists_refuse_ids_without_images(toy_root, tmp_path):
    import shutil

    from wseg.data.voc import make_split_lists

    root = str(tmp_path / "root")
    shutil.copytree(toy_root, root)
    os.remove(os.path.join(root, "JPEGImages", "toy_000002.jpg"))
    with pytest.raises(WsegError, match=r"toy_000002.jpg: image of split train not found \(1 of 12"):
        make_split_lists(root)


def test_cli_turns_running_out_of_memory_into_one_line(capsys):
    import argparse

    from wseg.cli import main

    def fails(exc):
        def run(args):
            raise exc
        return run

    for exc in (MemoryError("Unable to allocate 64.0 GiB for an array with shape (4096, 4096, 1024)"),
                RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                             "you tried to allocate 68719476736 bytes.\nmore lines"),
                RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                RuntimeError("Caught MemoryError in DataLoader worker process 0.\nOriginal Traceback ...")):
        assert main(lambda: argparse.ArgumentParser(), fails(exc), []) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: out of memory (") and "--batch_size" in err[0], err
    with pytest.raises(RuntimeError, match="shape mismatch"):                  # other runtime errors: a bug
        main(lambda: argparse.ArgumentParser(), fails(RuntimeError("shape mismatch")), [])


def test_a_non_finite_loss_stops_before_the_optimiser_step():
    import torch

    from wseg.engine import grad_scaler, optimizer_step

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = grad_scaler(torch.device("cpu"), False)
    optimizer_step((w * 2).sum(), opt, scaler, "step 0")
    assert torch.allclose(w.detach(), torch.full((3,), 0.8))                    # a finite loss steps
    bad = (w * float("nan")).sum()
    with pytest.raises(WsegError, match=r"non-finite loss at step 7 \(loss_cls 1, loss_er nan\); lower --lr"):
        optimizer_step(bad, opt, scaler, "step 7", {"loss_cls": torch.tensor(1.0), "loss_er": bad})
    assert torch.allclose(w.detach(), torch.full((3,), 0.8))                    # and the weights stay finite
