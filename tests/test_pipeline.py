"""The pipeline runner end to end on a tiny synthetic dataset, and kill -9 in the middle + re-run."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = """
_base_ = %r
stages = dict(
    data=dict(args=dict(num_train=8, num_val=4, num_classes=3, size="64x48", seed=1, difficulty="easy")),
    cam_train=dict(args=dict(backbone="resnet38_tiny", weights=None, batch_size=4, max_epoches=2, cls_warmup_epochs=0,
                             crop_size=48, resize_long=[48, 64], resize_scale=None, view2_size=32, num_workers=0)),
    cam_infer=dict(args=dict(scales=[0.5, 1.0], num_workers=0)),
    eval_cam=dict(args=dict(num_workers=0)), eval_cam_crf=dict(args=dict(num_workers=0)),
    eval_rw=dict(args=dict(num_workers=0)), eval_pseudo=dict(args=dict(num_workers=0)),
    aff_prepare=dict(args=dict(num_workers=0)),
    aff_train=dict(args=dict(backbone="resnet38_tiny", batch_size=4, max_epoches=2, crop_size=72, resize_long=None,
                             num_workers=0)),
    aff_infer=dict(args=dict(logt=2, scale=None, num_workers=0)),
    seg_train=dict(args=dict(config="segmentation/configs/demo_tiny.py", backbone_weights=None, max_iters=4,
                             ckpt_every=2, val_every=4, crop_size=48, test_scales=[1.0], batch_size=2)),
)
""" % os.path.join(REPO, "scripts", "pipelines", "demo.py")
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
    path = tmp_path_factory.mktemp("cfg") / "tiny.py"
    path.write_text(TINY)
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
    """The demo hands the trained CAM network to DeepLab as its backbone weights (train and test); demo_cams adds
    the SEAM baseline's train/infer/eval stages with the CAM stages' own values."""
    from wseg.pipeline import load_pipeline, stages_from_config

    cfg = load_pipeline("demo_cams", ["cam_train.max_epoches=1"])
    stages = {s.name: s for s in stages_from_config(cfg, str(tmp_path))}
    assert [n for n in stages if "seam" in n] == ["seam_cam_train", "seam_cam_infer", "eval_seam_cam"]
    assert list(stages)[0] == "data"                                # the dataset is made first
    seam, ppc = stages["seam_cam_train"].argv, stages["cam_train"].argv
    assert seam[seam.index("--network") + 1] == "seam" and seam[seam.index("--max_epoches") + 1] == "1"
    assert [a for a in seam if a.startswith("--")] == [a for a in ppc if a.startswith("--")]
    cam_pth = os.path.join(str(tmp_path), "models", "cam.pth")
    for name in ("seg_train", "seg_test"):
        argv = stages[name].argv
        assert argv[argv.index("--backbone_weights") + 1] == cam_pth


def test_set_overrides_stage_values():
    from wseg.errors import WsegError
    from wseg.pipeline import load_pipeline, stages_from_config

    cfg = load_pipeline("demo", ["cam_train.cls_warmup_epochs=0", "aff_infer.scale=null", "cam_infer.scales=[1.0, 2.0]",
                                 "data.num_train=20", "seg_train.model.head_dim=32", "dataset.val_list=train"])
    st = {s.name: s.argv for s in stages_from_config(cfg, "/tmp/w")}
    assert st["cam_train"][st["cam_train"].index("--cls_warmup_epochs") + 1] == "0"
    assert "--scale" not in st["aff_infer"] and st["aff_infer"][st["aff_infer"].index("--logt") + 1] == "4"
    assert st["cam_infer"][st["cam_infer"].index("--scales") + 1:][:2] == ["1.0", "2.0"]
    assert st["data"][st["data"].index("--num_train") + 1] == "20" and "model.head_dim=32" in st["seg_test"]
    assert st["seg_test"][st["seg_test"].index("--test_list") + 1].endswith("train.txt")
    for bad in ("cam_train", "cam_train.x", ":x=1", "nostage.x=1", "dataset.nokey=1"):
        with pytest.raises(WsegError, match="--set|no stage|dataset section"):
            load_pipeline("demo", [bad])


def test_every_pipeline_config_lists(tmp_path, capsys):
    """``run_pipeline.py --list`` works for every config under scripts/pipelines (the VOC ones given a root)."""
    from wseg.pipeline import PIPELINES, run_pipeline

    names = sorted(f[:-3] for f in os.listdir(PIPELINES) if f.endswith(".py"))
    assert {"demo", "ppc_voc", "seam_voc"} <= set(names)
    for name in names:
        run_pipeline(name, str(tmp_path / name), root=str(tmp_path / "voc"), list_only=True)
        out = capsys.readouterr().out
        assert "scripts/eval.py" in out, name
    assert not any(os.path.exists(tmp_path / n) for n in names)        # --list writes nothing


def test_every_pipeline_config_passes_its_preflight_before_any_input_exists(tmp_path):
    """The checks run before the first stage read nothing: no config fails them for want of a later stage's inputs
    (EPS's saliency maps, made by its own first stage), and they write nothing."""
    from wseg.pipeline import PIPELINES, Runner, load_pipeline, stages_from_config

    for name in sorted(f[:-3] for f in os.listdir(PIPELINES) if f.endswith(".py")):
        work = str(tmp_path / name)
        cfg = load_pipeline(name, root=None if name.startswith("demo") else str(tmp_path / "voc"))
        Runner(work, stages_from_config(cfg, work)).check_flags()
    assert os.listdir(tmp_path) == []


def test_a_root_with_its_own_classes_is_evaluated_with_them(finished, tmp_path):
    """The tiny run's dataset has 3 classes + background (its classes.txt): every evaluation used those 4; the same
    root passed with --voc12_root to a VOC pipeline is evaluated with its own classes too, not VOC's 21."""
    from wseg.pipeline import load_pipeline, stages_from_config

    root = os.path.join(finished, "data")
    for name in ("ppc_voc", "demo"):
        cfg = load_pipeline(name, root=root)
        evals = [s.argv for s in stages_from_config(cfg, str(tmp_path)) if s.script.endswith("eval.py")]
        assert evals and all(a[a.index("--classes") + 1] == os.path.join(root, "classes.txt") for a in evals)
    with open(os.path.join(finished, "report", "results.json")) as f:
        res = json.load(f)
    for stage in ("eval_cam", "eval_cam_crf", "eval_rw", "eval_pseudo"):
        assert res[stage]["result"]["num_classes"] == 4, stage
        assert set(res[stage]["result"]["iou"]) == {"background", "class1", "class2", "class3"} or \
            len(res[stage]["result"]["iou"]) == 4


def test_the_demo_runs_the_published_cam_recipe_from_the_shipped_stand_in():
    """``make demo``'s CAM stage: the shipped stand-in weights through --weights, the published optimiser (SGD,
    default lr and momentum quirk), dropout, jitter and no classification warm-up; the from-scratch recipe is
    ``demo_scratch``."""
    from wseg.pipeline import load_pipeline, stages_from_config

    st = {s.name: s.argv for s in stages_from_config(load_pipeline("demo"), "/tmp/w")}
    cam = st["cam_train"]
    weights = cam[cam.index("--weights") + 1]
    assert os.path.isfile(weights) and weights.endswith("weights/standin/resnet38_small.pth")
    for published_default in ("--optimizer", "--cls_warmup_epochs", "--dropout", "--momentum", "--wt_dec",
                              "--freeze"):
        assert published_default not in cam, published_default
    assert cam[cam.index("--lr") + 1] == "0.01"
    scratch = {s.name: s.argv for s in stages_from_config(load_pipeline("demo_scratch"), "/tmp/w")}["cam_train"]
    assert "--weights" not in scratch and scratch[scratch.index("--optimizer") + 1] == "adamw"


def test_a_preset_set_on_the_demo_config_makes_that_preset(tmp_path):
    """bench_robustness runs ``demo.py --set data.preset=P``: the demo's dataset is named by its preset alone, so P's
    class count, sizes and clutter are not overridden by flags of the demo's own dataset."""
    from wseg.data import synthetic
    from wseg.pipeline import load_pipeline, stages_from_config
    from wseg.stages import make_toy_voc as stage

    for preset in ("demo", "many_classes", "small_part"):
        data = {s.name: s.argv for s in stages_from_config(load_pipeline("demo", [f"data.preset={preset}"]),
                                                           str(tmp_path))}["data"]
        for flag in ("--num_classes", "--size", "--difficulty", "--long_side", "--aspect", "--cue"):
            assert flag not in data, (preset, flag)
        out = str(tmp_path / preset)
        data[data.index("--out") + 1] = out
        parser = argparse.ArgumentParser()
        stage.add_arguments(parser)
        args = parser.parse_args(data[data.index("--out"):] + ["--num_train", "1", "--num_val", "1"])
        stage.run(args)
        with open(os.path.join(out, "toy_voc.json")) as f:
            made = json.load(f)
        want = synthetic.PRESETS[preset]
        assert made["num_classes"] == want["num_classes"]
        assert made["distractors"] == list(synthetic.DIFFICULTY.get(want.get("difficulty", "normal")).get(
            "distractors", synthetic.ToyConfig().distractors))


def test_a_stage_whose_command_changed_runs_again_with_the_stages_after_it(tmp_path, monkeypatch):
    """Skipping is by stage name and command line: editing a stage's value in the config re-runs that stage and
    everything downstream of it, never reports the old result as the new setting's."""
    import argparse
    import types

    from wseg import pipeline as pl

    calls = []

    def run(rel, a):
        calls.append((rel, a.v))
        os.makedirs(a.out_dir, exist_ok=True)
        with open(os.path.join(a.out_dir, "x.txt"), "w") as f:
            f.write(a.v)
        return {"miou": float(a.v)}

    def fake(rel):
        def build_parser():
            p = argparse.ArgumentParser()
            p.add_argument("--v", default="0")
            p.add_argument("--out_dir")
            p.add_argument("--dataset")
            return p
        return types.SimpleNamespace(build_parser=build_parser, run=lambda a: run(rel, a))

    monkeypatch.setattr(pl, "load_script", fake)
    outside = str(tmp_path / "user_data")
    work = str(tmp_path / "work")
    stages = lambda v: [  # noqa: E731
        pl.Stage("a", "a.py", ["--v", "1", "--out_dir", os.path.join(work, "a")]),
        pl.Stage("b", "b.py", ["--v", v, "--out_dir", os.path.join(work, "b")]),
        pl.Stage("c", "c.py", ["--v", "3", "--out_dir", os.path.join(work, "c"), "--dataset", outside]),
        pl.Stage("d", "d.py", ["--v", "4", "--out_dir", outside])]
    echo = []
    pl.Runner(work, stages("2")).run(echo=echo.append)
    assert calls == [("a.py", "1"), ("b.py", "2"), ("c.py", "3"), ("d.py", "4")]
    calls.clear()
    pl.Runner(work, stages("2")).run(echo=echo.append)          # same config: all skipped
    assert calls == []
    res = pl.Runner(work, stages("5")).run(echo=echo.append)    # b changed: b, c and d again, a skipped
    assert calls == [("b.py", "5"), ("c.py", "3"), ("d.py", "4")]
    assert res["b"]["metrics"]["miou"] == 5.0
    assert any(e.startswith("[redo] b: finished with another command") for e in echo)
    # the earlier outputs of b and c were set aside inside the work folder, not deleted; a is untouched and the
    # folder outside the work folder was never moved
    aside = sorted(n for n in os.listdir(work) if ".stale-" in n)
    assert [n.split(".stale-")[0] for n in aside] == ["b", "c"]
    with open(os.path.join(work, aside[0], "x.txt")) as f:
        assert f.read() == "2"
    assert os.path.isdir(outside) and not any(".stale-" in n for n in os.listdir(tmp_path))
    # --from b --only c: c alone again, b's outputs stay
    calls.clear()
    runner = pl.Runner(work, stages("5"))
    runner.reset_from("b", echo.append, only=["c"])
    runner.run(only=["c"], echo=echo.append)
    assert calls == [("c.py", "3")] and os.path.isdir(os.path.join(work, "b"))
    # --from a: every stage again, their outputs set aside the same way
    calls.clear()
    runner = pl.Runner(work, stages("5"))
    runner.reset_from("a", echo.append)
    runner.run(echo=echo.append)
    assert [c[0] for c in calls] == ["a.py", "b.py", "c.py", "d.py"]
    assert sorted(n.split(".stale-")[0] for n in os.listdir(work) if ".stale-" in n) == ["a", "b", "b", "c", "c", "c"]


def test_a_stage_with_its_own_needs_runs_beside_the_stages_in_between_in_its_own_process(tmp_path):
    """``needs``: the stage starts in its own process once what it needs has finished (the demo's label_train,
    ``needs=["data"]``, beside the CAM stages), runs beside the stages in between, is marked done with its result,
    and its one-line error still names it; a stage that needs it waits for it, one that does not, does not."""
    from wseg import pipeline as pl
    from wseg.errors import WsegError

    script = tmp_path / "step.py"
    script.write_text(
        "import argparse, os, time\n"
        "from wseg.errors import WsegError\n"
        "def build_parser():\n"
        "    p = argparse.ArgumentParser()\n"
        "    for k in ('--name', '--wait_for', '--log', '--fail'):\n"
        "        p.add_argument(k, default='')\n"
        "    return p\n"
        "def run(a):\n"
        "    if a.fail:\n"
        "        raise WsegError(a.fail)\n"
        "    t0 = time.time()\n"
        "    while a.wait_for and not os.path.exists(a.wait_for):   # meets the other stage while both run\n"
        "        if time.time() - t0 > 60:\n"
        "            raise WsegError(a.name + ': never met ' + a.wait_for)\n"
        "        time.sleep(0.05)\n"
        "    if a.wait_for:\n"
        "        time.sleep(1.0)\n"
        "    with open(a.log, 'a') as f:\n"
        "        f.write(a.name + '\\n')\n"
        "    open(a.log + '.' + a.name, 'w').close()\n"
        "    return {'miou': float(len(a.name)), 'pad': 'x' * 200000}   # more than a pipe holds\n")
    log, work = str(tmp_path / "log.txt"), str(tmp_path / "work")

    def stage(name, wait="", fail="", needs=None):
        return pl.Stage(name, str(script), ["--name", name, "--wait_for", wait, "--log", log, "--fail", fail],
                        needs=needs)

    # bb can only finish once cccc, listed after it, has run: cccc (needs a) starts when a is done and runs beside bb
    # (a second each after they meet, so cccc's time is its own); d needs every stage before it, not cccc; e waits
    stages = [stage("a"), stage("bb", wait=log + ".cccc"), stage("d"), stage("cccc", wait=log + ".a", needs=["a"]),
              stage("e")]
    res = pl.Runner(work, stages).run(echo=lambda s: None)
    with open(log) as f:
        order = f.read().split()
    assert order[:2] == ["a", "cccc"] and order[-1] == "e" and order.index("bb") < order.index("d")
    assert res["cccc"]["metrics"]["miou"] == 4.0 and res["cccc"]["command"].startswith("python ")
    assert res["bb"]["seconds"] >= res["cccc"]["seconds"] + 1.0 and res["cccc"]["beside"][0] == "bb"
    assert res["e"]["started"] >= res["cccc"]["started"] + res["cccc"]["seconds"] - 0.01
    table = pl.report_markdown(stages, res)           # the time table counts what ran at the same time once
    assert "| cccc (beside bb" in table
    total = float(table.split("| **total** | ")[1].split(" ")[0])
    spans = sorted((r["started"], r["started"] + r["seconds"]) for r in res.values())
    assert total == pytest.approx(spans[-1][1] - spans[0][0], abs=0.3)
    assert total < sum(r["seconds"] for r in res.values()) - 0.8
    assert pl.Runner(work, stages).run(echo=lambda s: None).keys() == res.keys()    # all skipped now
    # a re-run of a stage re-runs the stages that need it, directly or through others, not the ones that do not
    runner = pl.Runner(work, stages)
    assert runner.dependents("cccc") == ["cccc", "e"] and runner.dependents("bb") == ["bb", "d", "e"]
    assert runner.dependents("a") == ["a", "bb", "d", "cccc", "e"]
    open(log, "w").close()
    stages[3].argv += ["--fail", ""]                 # another command: cccc and e again, nothing else
    pl.Runner(work, stages).run(echo=lambda s: None)
    with open(log) as f:
        assert f.read().split() == ["cccc", "e"]
    # an error in the stage's own process is one line naming it; the stage before it is kept
    stages = [stage("x"), stage("y", fail="y.npy: broken; re-make it", needs=["x"])]
    with pytest.raises(WsegError, match=r"^stage y: y.npy: broken; re-make it$"):
        pl.Runner(str(tmp_path / "w2"), stages).run(echo=lambda s: None)
    assert os.path.isfile(os.path.join(str(tmp_path / "w2"), "stages", "x.done"))


def test_needs_and_threads_in_a_pipeline_config(tmp_path):
    """``needs`` names stages before it (a typo or a later stage is one line); ``--voc12_root`` drops the data
    stage from it; ``threads`` is a whole number the runner applies (``--set STAGE.threads=N``), not a flag."""
    from wseg import pipeline as pl
    from wseg.errors import WsegError

    def write(stages):
        path = tmp_path / "p.py"
        path.write_text("dataset = dict(root='{work}/data')\nstages = " + stages + "\n")
        return str(path)

    base = ("dict(data=dict(script='scripts/make_toy_voc.py', creates_root=True, args=dict(out='{work}/data')), "
            "a=dict(script='scripts/eval.py', threads=2), b=dict(script='scripts/eval.py', needs=%s))")
    cfg = pl.load_pipeline(write(base % "['data']"), ["a.threads=1"])
    st = pl.stages_from_config(cfg, str(tmp_path / "w"))
    assert [(s.name, s.needs, s.threads) for s in st] == [("data", None, None), ("a", None, 1), ("b", ["data"], None)]
    assert "--threads" not in st[1].argv
    st = pl.stages_from_config(pl.load_pipeline(write(base % "['data']"), root=str(tmp_path)), str(tmp_path / "w"))
    assert [(s.name, s.needs) for s in st] == [("a", None), ("b", [])]
    with pytest.raises(WsegError, match=r"stage b: needs 'dat', which is no stage; did you mean data"):
        pl.load_pipeline(write(base % "['dat']"))
    with pytest.raises(WsegError, match=r"stage b: needs 'b', which comes after it"):
        pl.load_pipeline(write(base % "['b']"))
    with pytest.raises(WsegError, match=r"stage a: threads=0; give a whole number"):
        pl.load_pipeline(write(base % "None"), ["a.threads=0"])
    import torch

    before = torch.get_num_threads()
    seen = []
    mod = tmp_path / "t.py"
    mod.write_text("import argparse, torch\ndef build_parser():\n    return argparse.ArgumentParser()\n"
                   "def run(a):\n    return {'n': torch.get_num_threads()}\n")
    seen.append(pl.run_stage("t", str(mod), [], threads=1)["n"])
    assert seen == [1] and torch.get_num_threads() == before
    # beside another stage's process a stage keeps the process's threads: more threads than cores make both crawl
    runner = pl.Runner(str(tmp_path / "w3"), [pl.Stage("t", str(mod), [], threads=before + 1)])
    runner._execute(runner.stages[0], ("python t.py", None), seen.append, alone=False)
    assert runner.results()["t"]["result"]["n"] == before and "keeps the process's threads" in seen[-2]
    runner._execute(runner.stages[0], ("python t.py", None), seen.append)
    assert runner.results()["t"]["result"]["n"] == before + 1 and torch.get_num_threads() == before


def test_a_session_prefix_covers_every_file_of_its_training_and_its_folds(tmp_path):
    """``--session_name`` outputs: the session's weights, resume checkpoint, log and scalars, and those of its
    held-out folds (label_train --out_cv), so that a re-run does not resume a fold of another configuration; not
    another session that only shares the start of the name, nor what was already set aside."""
    from wseg.pipeline import _written_paths

    names = ["labels.pth", "labels_last.pth", "labels.log", "labels_scalars.jsonl", "labels_fold0.pth",
             "labels_fold0_last.pth", "labels_fold1_scalars.jsonl", "labelsx.pth", "labels_gt.pth",
             "labels.pth.stale-1"]
    for n in names:
        (tmp_path / n).write_text("")
    got = [os.path.basename(p) for p in _written_paths(str(tmp_path / "labels"), session=True)]
    assert got == sorted(names[:7])


def test_a_stage_sets_aside_its_declared_outputs_inside_an_earlier_stages_folder(tmp_path, monkeypatch):
    """A test stage writes its prediction folders inside the training stage's folder, which a re-run of the test
    alone must keep; its ``outputs`` globs are set aside instead, so that the re-run predicts again."""
    import argparse
    import types

    from wseg import pipeline as pl

    def run(a):
        os.makedirs(a.out_dir, exist_ok=True)
        if a.pred:
            os.makedirs(os.path.join(a.out_dir, "pred_val"), exist_ok=True)
            with open(os.path.join(a.out_dir, "pred_val", "x.png"), "w") as f:
                f.write(a.v)
        return {}

    def fake(rel):
        def build_parser():
            p = argparse.ArgumentParser()
            p.add_argument("--v", default="0")
            p.add_argument("--out_dir")
            p.add_argument("--pred", action="store_true")
            return p
        return types.SimpleNamespace(build_parser=build_parser, run=run)

    monkeypatch.setattr(pl, "load_script", fake)
    work = str(tmp_path / "work")
    seg = os.path.join(work, "seg")
    stages = lambda v: [  # noqa: E731
        pl.Stage("train", "t.py", ["--out_dir", seg]),
        pl.Stage("test", "p.py", ["--v", v, "--out_dir", seg, "--pred"], outputs=[os.path.join(seg, "pred_*")])]
    pl.Runner(work, stages("1")).run(echo=lambda _: None)
    pl.Runner(work, stages("2")).run(echo=lambda _: None)         # the test changed: it alone runs again
    names = sorted(os.listdir(seg))
    assert names[0] == "pred_val" and names[1].startswith("pred_val.stale-") and len(names) == 2
    with open(os.path.join(seg, "pred_val", "x.png")) as f:
        assert f.read() == "2"


def test_a_stage_whose_config_file_was_edited_runs_again(tmp_path, monkeypatch):
    """The same command line with an edited ``--config`` (or an edited ``_base_`` of it) is another setting: the
    stage runs again; an unchanged config is skipped."""
    import argparse
    import types

    from wseg import pipeline as pl

    calls = []

    def fake(rel):
        def build_parser():
            p = argparse.ArgumentParser()
            p.add_argument("--config")
            p.add_argument("--out_dir")
            return p
        return types.SimpleNamespace(build_parser=build_parser, run=lambda a: calls.append(rel) or {})

    monkeypatch.setattr(pl, "load_script", fake)
    base, cfg = tmp_path / "base.py", tmp_path / "cfg.py"
    base.write_text("lr = 0.1\n")
    cfg.write_text('_base_ = "base.py"\ncrop_size = 96\n')
    work = str(tmp_path / "work")
    stages = [pl.Stage("t", "t.py", ["--config", str(cfg), "--out_dir", os.path.join(work, "t")])]
    echo = []
    pl.Runner(work, stages).run(echo=echo.append)
    pl.Runner(work, stages).run(echo=echo.append)
    assert calls == ["t.py"]
    base.write_text("lr = 0.2\n")                                # an edited base: the stage is stale
    pl.Runner(work, stages).run(echo=echo.append)
    assert calls == ["t.py", "t.py"]
    assert any(e.startswith("[redo] t: finished with another --config content") for e in echo)
    cfg.write_text('_base_ = "base.py"\ncrop_size = 96\n# a comment only\n')   # same settings: skipped
    pl.Runner(work, stages).run(echo=echo.append)
    assert calls == ["t.py", "t.py"]
