"""What the from-scratch demo's choices are worth (``demo_scratch.py``: the demo before the stand-in weights): re-run
parts of a finished run with one flag changed.

Each ablation copies the finished stages it does not change from ``--demo_dir`` (default ``runs/demo_scratch``, made
by ``python scripts/run_pipeline.py --config demo_scratch --work_dir runs/demo_scratch``) into
``runs/ablate_<name>``, then runs ``scripts/run_pipeline.py --set ...`` for the stages it changes, and prints one
Markdown row per ablation next to the run's own numbers:

- ``no_warmup``: SEAM+PPC terms from the first step (``cam_train.cls_warmup_epochs=0``); retrains the CAM
  network (about 6 minutes on 2 CPU cores);
- ``aff_x1``: AffinityNet trained and walked at the image size (no ``--resize_long``, crop 128, ``--scale 1``);
- ``walk_published``: the walk with the published background score 0.27 and 2^6 steps (beta stays 16), then
  DeepLab retrained on its pseudo masks (about 4 minutes).

    python benchmarks/bench_demo_ablations.py [--only aff_x1 walk_published] [--demo_dir runs/demo_scratch]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: name -> (stages copied from the demo, overrides, stages run, (stage, metric) reported)
ABLATIONS = {
    "no_warmup": (["data"], ["cam_train.cls_warmup_epochs=0"],
                  ["cam_train", "cam_infer", "eval_cam"], [("eval_cam", "miou")]),
    "aff_x1": (["data", "cam_train", "cam_infer", "eval_cam", "eval_cam_crf", "aff_prepare"],
               ["aff_train.crop_size=128", "aff_train.resize_long=null", "aff_infer.scale=null"],
               ["aff_train", "aff_infer", "eval_rw", "eval_pseudo"], [("eval_rw", "miou"), ("eval_pseudo", "miou")]),
    "walk_published": (["data", "cam_train", "cam_infer", "eval_cam", "eval_cam_crf", "aff_prepare", "aff_train"],
                       ["aff_infer.bg_score=null", "aff_infer.logt=null"],
                       ["aff_infer", "eval_rw", "eval_pseudo", "seg_train", "seg_test"],
                       [("eval_rw", "miou"), ("eval_pseudo", "miou"), ("seg_test", "miou"),
                        ("seg_test", "miou_crf")]),
}
#: stage -> folders (under the work dir) holding its outputs
OUTPUTS = {"data": ["data"], "cam_train": ["models/cam.pth"], "cam_infer": ["cam", "cam_png", "cam_crf"],
           "aff_prepare": ["aff_labels"], "aff_train": ["models/aff.pth"]}


NAMES = {("eval_cam", "miou"): "CAM", ("eval_rw", "miou"): "RW", ("eval_pseudo", "miou"): "pseudo masks",
         ("seg_test", "miou"): "DeepLab val", ("seg_test", "miou_crf"): "DeepLab+CRF val"}


def metric(work_dir: str, stage: str, key: str) -> str:
    with open(os.path.join(work_dir, "stages", stage + ".done")) as f:
        m = json.load(f).get("metrics", {})
    thr = f" (bg {m['best_threshold']:.2f})" if "best_threshold" in m and key == "miou" else ""
    return f"{NAMES[stage, key]} {m[key]:.2f}{thr}"  # percent, as eval.py reports


def seed_work_dir(demo: str, work: str, stages) -> None:
    """A fresh work dir holding the demo's outputs and done-marks of ``stages`` (so the runner skips them)."""
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(work, "stages"))
    for stage in stages:
        mark = os.path.join(demo, "stages", stage + ".done")
        if not os.path.isfile(mark):
            sys.exit(f"error: {mark} missing; run the demo_scratch pipeline into --demo_dir first")
        shutil.copy(mark, os.path.join(work, "stages"))
        for rel in OUTPUTS.get(stage, []):
            src, dst = os.path.join(demo, rel), os.path.join(work, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, dst)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo_dir", default="runs/demo_scratch")
    p.add_argument("--config", default="scripts/pipelines/demo_scratch.py")
    p.add_argument("--only", nargs="+", choices=sorted(ABLATIONS), default=None)
    args = p.parse_args()
    rows = ["| ablation | flags changed | result (mIoU %, train unless val) | the demo |", "|---|---|---|---|"]
    for name, (copied, overrides, run, report) in ABLATIONS.items():
        if args.only and name not in args.only:
            continue
        work = os.path.join(os.path.dirname(args.demo_dir.rstrip("/")) or ".", "ablate_" + name)
        seed_work_dir(args.demo_dir, work, copied)
        cmd = [sys.executable, os.path.join(REPO, "scripts/run_pipeline.py"), "--config", args.config,
               "--work_dir", work, "--set", *overrides, "--only", *run]
        print("+", " ".join(cmd[1:]), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        got = ", ".join(metric(work, *r) for r in report)
        ref = ", ".join(metric(args.demo_dir, *r) for r in report)
        rows.append(f"| {name} | `--set {' '.join(overrides)}` | {got} | {ref} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
