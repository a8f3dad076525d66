import csv
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from wseg.cli import main
from wseg.evaluation import resolve_class_names
from wseg.io import save_cam_dict, save_mask_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "eval.py")
NAMES = ["background", "cat", "dog", "tree"]
C = len(NAMES)


def load_eval():
    spec = importlib.util.spec_from_file_location("wseg_script_eval_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


EVAL = load_eval()


# ----------------------------------------------------------------------------- independent reference (published style)


def reference_miou(cams_list, gts, t, num_classes, preds=None):
    T, P, TP = [0] * num_classes, [0] * num_classes, [0] * num_classes
    for n, gt in enumerate(gts):
        if preds is None:
            tensor = np.zeros((num_classes,) + gt.shape, np.float32)
            for key in cams_list[n]:
                tensor[key + 1] = cams_list[n][key]
            tensor[0, :, :] = t
            predict = np.argmax(tensor, axis=0)
        else:
            predict = preds[n]
        cal = gt < 255
        mask = (predict == gt) * cal
        for i in range(num_classes):
            P[i] += np.sum((predict == i) * cal)
            T[i] += np.sum((gt == i) * cal)
            TP[i] += np.sum((gt == i) * mask)
    iou = [TP[i] / (T[i] + P[i] - TP[i] + 1e-10) for i in range(num_classes)]
    return float(np.mean(iou)), iou


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(7)
    root = tmp_path / "data"
    pd, pngd, gd = root / "cams", root / "labels", root / "gt"
    for d in (pd, pngd, gd):
        d.mkdir(parents=True)
    ids, cams_list, gts, preds = [], [], [], []
    for i in range(8):
        h, w = 9 + i % 3, 12
        keys = rng.choice(C - 1, 1 + i % 2, replace=False)  # 1-2 of 3 classes: others absent (zero channels)
        cams = {int(k): (rng.integers(-1, 6, (h, w)) / 10).astype(np.float32) for k in keys}  # ties with t
        gt = rng.integers(0, C, (h, w)).astype(np.uint8)
        gt[rng.random((h, w)) < 0.2] = 255
        pred = rng.integers(0, C, (h, w)).astype(np.uint8)
        pred[rng.random((h, w)) < 0.1] = 255
        image_id = f"2007_{i:06d}"
        save_cam_dict(str(pd / f"{image_id}.npy"), cams)
        save_mask_png(str(gd / f"{image_id}.png"), gt)
        save_mask_png(str(pngd / f"{image_id}.png"), pred)
        ids.append(image_id)
        cams_list.append(cams)
        gts.append(gt)
        preds.append(pred)
    lst = root / "list.txt"
    lst.write_text("".join(f"JPEGImages/{i}.jpg SegmentationClass/{i}.png\n" for i in ids))
    classes = root / "classes.txt"
    classes.write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    return dict(root=root, pd=str(pd), pngd=str(pngd), gd=str(gd), list=str(lst), classes=str(classes),
                cams=cams_list, gts=gts, preds=preds, out=out, log=str(out / "evallog.txt"))


def argv(d, *extra, type_="npy"):
    return ["--list", d["list"], "--predict_dir", d["pd"] if type_ == "npy" else d["pngd"], "--gt_dir", d["gd"],
            "--type", type_, "--classes", d["classes"], "--logfile", d["log"], "--comment", "unit test",
            "--num_workers", "2", "--progress", "False", *extra]


def run_cli(a):
    return EVAL.run(EVAL.build_parser().parse_args(a))


def listing(folder):
    return sorted(os.listdir(folder))


# ----------------------------------------------------------------------------- agreement with the reference


@pytest.mark.parametrize("t", [0.0, 0.1, 0.2, 0.35])
def test_npy_matches_independent_reference(data, t, capsys):
    res = run_cli(argv(data, "--t", str(t)))
    ref, ref_iou = reference_miou(data["cams"], data["gts"], t, C)
    assert abs(res["miou"] / 100 - ref) < 1e-6
    assert all(abs(res["iou"][n] / 100 - v) < 1e-6 for n, v in zip(NAMES, ref_iou))
    assert res["threshold"] == t and res["num_images"] == 8
    out = capsys.readouterr().out
    assert "mIoU" in out and "dog" in out and "FP =" in out


def test_png_matches_independent_reference_with_predicted_ignore(data):
    res = run_cli(argv(data, type_="png"))
    ref, _ = reference_miou(None, data["gts"], None, C, preds=data["preds"])
    assert abs(res["miou"] / 100 - ref) < 1e-6
    assert res["threshold"] is None


def test_curve_equals_single_runs_and_writes_csv_png(data, capsys):
    res = run_cli(argv(data, "--curve", "--start", "0.0", "--end", "0.3", "--step", "0.05"))
    ts = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert [c["t"] for c in res["curve"]] == ts
    for c in res["curve"]:
        single = run_cli(argv(data, "--t", str(c["t"]), "--logfile", ""))
        assert c["miou"] == single["miou"] and c["fp"] == single["fp"] and c["fn"] == single["fn"]
        assert abs(c["miou"] / 100 - reference_miou(data["cams"], data["gts"], c["t"], C)[0]) < 1e-6
    best = max(res["curve"], key=lambda c: c["miou"])
    assert res["best_threshold"] == best["t"] and res["miou"] == best["miou"]
    assert "best background threshold" in capsys.readouterr().out
    # defaults: next to the prediction folder, named after it
    assert res["curve_csv"] == os.path.join(os.path.dirname(data["pd"]), "cams_curve.csv")
    with open(res["curve_csv"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["threshold", "mIoU", "FP", "FN"] and len(rows) == 1 + len(ts)
    with open(res["curve_png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not [f for f in listing(os.path.dirname(data["pd"])) if f.startswith(".")]  # no temp files left
    assert listing(data["out"]) == ["evallog.txt"]                   # the logfile's folder gets the log alone
    log = open(data["log"]).read()
    assert "\tunit test\n" in log and "mIoU:[" in log and "best_t:" in log


def test_curve_flag_spellings(data):
    a = run_cli(argv(data, "--curve", "--out_dir", str(data["out"] / "a")))
    b = run_cli(argv(data, "--curve", "True", "--out_dir", str(data["out"] / "b")))
    assert len(a["curve"]) == 60 and a["curve"] == b["curve"]  # default 0.00..0.59 by 0.01
    assert listing(data["out"] / "a") == ["cams_curve.csv", "cams_curve.png"]
    c = run_cli(argv(data, "--curve", "False", "--t", "0.2", "--out_dir", str(data["out"] / "c")))
    assert "curve" not in c and not os.path.exists(data["out"] / "c")
    assert c["miou"] == a["curve"][20]["miou"]


def test_logfile_appends_published_format(data):
    run_cli(argv(data, "--t", "0.1", "--comment", "first"))
    run_cli(argv(data, "--t", "0.2", "--comment", "second"))
    lines = open(data["log"]).read().splitlines()
    assert len(lines) == 6 and lines[0].endswith("\tfirst") and lines[3].endswith("\tsecond")
    assert lines[1].startswith("background:") and "mIoU:" in lines[1] and "FP:" in lines[1]
    assert lines[2] == "=" * 37


def test_num_classes_and_builtin_classes(data):
    a = run_cli(argv(data, "--t", "0.1"))
    b = EVAL.run(EVAL.build_parser().parse_args(
        [x for x in argv(data, "--t", "0.1") if x not in ("--classes", data["classes"])] + ["--num_classes", "4"]))
    assert a["miou"] == b["miou"] and list(b["iou"]) == ["background", "class1", "class2", "class3"]
    assert list(resolve_class_names("voc12", None))[20] == "tvmonitor"
    assert len(resolve_class_names(None, 21)) == 21


# ----------------------------------------------------------------------------- bad input: one line, exit 2, no files


@pytest.mark.parametrize("case", ["missing_gt_file", "missing_pred_dir", "no_t", "curve_png", "bad_label",
                                  "bad_key", "shape", "classes_mismatch", "gt_dir_output", "missing_list"])
def test_bad_input_one_line_exit_2_no_files(data, case, capsys):
    extra = ["--curve"]
    type_ = "npy"
    if case == "missing_gt_file":
        os.remove(os.path.join(data["gd"], "2007_000003.png"))
    elif case == "missing_pred_dir":
        data["pd"] = str(data["root"] / "nope")
    elif case == "no_t":
        extra = []
    elif case == "curve_png":
        type_ = "png"
    elif case == "bad_label":
        save_mask_png(os.path.join(data["gd"], "2007_000005.png"), np.full((11, 12), 17, np.uint8))
    elif case == "bad_key":
        save_cam_dict(os.path.join(data["pd"], "2007_000004.npy"), {3: np.zeros((10, 12))})
    elif case == "shape":
        save_cam_dict(os.path.join(data["pd"], "2007_000004.npy"), {1: np.zeros((5, 12))})
    elif case == "classes_mismatch":
        extra += ["--num_classes", "21"]
    elif case == "gt_dir_output":
        extra += ["--out_dir", data["gd"]]
    elif case == "missing_list":
        data["list"] = str(data["root"] / "nolist.txt")
    before = listing(data["gd"]), listing(data["pd"]) if os.path.isdir(data["pd"]) else []
    rc = main(EVAL.build_parser, EVAL.run, argv(data, *extra, type_=type_))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert listing(data["out"]) == []  # no log, no csv, no png, no temp files
    assert (listing(data["gd"]), listing(data["pd"]) if os.path.isdir(data["pd"]) else []) == before
    if case == "missing_gt_file":
        assert "2007_000003" in err[0] and data["gd"] in err[0]
    if case == "bad_label":
        assert "labels 17" in err[0]


def test_script_entry_point(data):
    base = [sys.executable, SCRIPT]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    ok = subprocess.run(base + argv(data, "--t", "0.2"), capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "mIoU" in ok.stdout
    bad = subprocess.run(base + argv(data), capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1
