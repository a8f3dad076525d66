"""The pipeline runner: chains the stage scripts through files on disk, after jiwoon-ahn/irn's ``run_sample.py``.

Each stage is the same standalone script a user runs (``scripts/*.py``): the runner builds its command line from
one config, calls that script's own ``build_parser()`` + ``run(args)`` in-process, times it, and marks it done in
``<work_dir>/stages/<name>.done``. Re-running skips finished stages (and stages skip finished images);
``--from STAGE`` clears the marks from that stage on. A killed run resumes where it stopped, since every
artifact is written atomically.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from wseg.errors import WsegError
from wseg.io import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Stage:
    """One step: a script, its argument list, and what to collect from its ``run`` result for the report."""

    name: str
    script: str                      # path relative to the repo root, e.g. "scripts/eval.py"
    argv: List[str]
    describe: str = ""
    collect: Optional[Callable[[dict], Dict[str, float]]] = None
    needs: List[str] = field(default_factory=list)


def load_script(rel_path: str):
    """Import a file of the repo outside the package (``scripts/x.py``, ``segmentation/config.py``) as a module,
    without running its ``__main__`` block; once per process, kept in ``sys.modules`` (so its functions pickle into
    worker processes and every caller shares one module)."""
    path = os.path.join(REPO, rel_path)
    name = "wseg_script_" + re.sub(r"\W", "_", os.path.splitext(os.path.normpath(rel_path))[0])
    if name in sys.modules:
        return sys.modules[name]
    if not os.path.isfile(path):
        raise WsegError(f"{path}: script not found")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


class Runner:
    """Runs a list of :class:`Stage` in order with done-marks, timings and a JSON record of results."""

    def __init__(self, work_dir: str, stages: Sequence[Stage]):
        self.work_dir = work_dir
        self.stages = list(stages)
        self.mark_dir = os.path.join(work_dir, "stages")     # created by the first mark (io.atomic_path)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError("duplicate stage names")

    def _mark(self, name: str) -> str:
        return os.path.join(self.mark_dir, name + ".done")

    def is_done(self, name: str) -> bool:
        return os.path.isfile(self._mark(name))

    def results(self) -> Dict[str, dict]:
        """Recorded ``{stage: {"seconds": ..., "result": ...}}`` of finished stages."""
        out = {}
        for s in self.stages:
            if self.is_done(s.name):
                with open(self._mark(s.name)) as f:
                    out[s.name] = json.load(f)
        return out

    def reset_from(self, name: str) -> None:
        names = [s.name for s in self.stages]
        if name not in names:
            raise WsegError(f"--from {name}: unknown stage; choose one of {', '.join(names)}")
        for s in self.stages[names.index(name):]:
            if self.is_done(s.name):
                os.remove(self._mark(s.name))

    def run(self, only: Optional[Sequence[str]] = None, echo: Callable[[str], None] = print) -> Dict[str, dict]:
        for stage in self.stages:
            if only and stage.name not in only:
                continue
            if self.is_done(stage.name):
                echo(f"[skip] {stage.name}: done")
                continue
            cmd = "python " + stage.script + " " + " ".join(shlex.quote(a) for a in stage.argv)
            echo(f"[run ] {stage.name}: {cmd}")
            mod = load_script(stage.script)
            parser = mod.build_parser()
            parser.prog = f"{stage.script} (stage {stage.name}; its flags come from the config and --set)"
            args = parser.parse_args(stage.argv)
            t0 = time.time()
            try:
                result = mod.run(args)
            except WsegError as exc:
                raise WsegError(f"stage {stage.name}: {exc}") from None
            seconds = time.time() - t0
            record = {"seconds": round(seconds, 2), "command": cmd,
                      "result": _jsonable(result) if isinstance(result, dict) else None}
            if stage.collect and isinstance(result, dict):
                record["metrics"] = stage.collect(result)
            atomic_write_text(self._mark(stage.name), json.dumps(record, indent=1))
            echo(f"[done] {stage.name}: {seconds:.1f}s")
        return self.results()


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return obj
    return str(obj)


# --------------------------------------------------------------------------------------------- the WSSS recipe


def flags(options: Optional[Dict]) -> List[str]:
    """``{"--lr": 0.1, "--scales": [1, 2], "--amp": True, "--x": None}`` -> ``["--lr", "0.1", "--scales", "1", "2",
    "--amp"]`` (``False``/``None`` drop the flag)."""
    out: List[str] = []
    for key, val in (options or {}).items():
        if val is None or val is False:
            continue
        out.append(key)
        if val is True:
            continue
        out += [str(v) for v in val] if isinstance(val, (list, tuple)) else [str(val)]
    return out


#: The ``cfg["stages"]`` sections :func:`wsss_stages` reads (``eval`` flags go to every evaluation).
STAGE_SECTIONS = ("contrast_train", "contrast_infer", "aff_prepare", "aff_train", "aff_infer", "eval", "segmentation")
#: What the ``segmentation`` section holds (its ``set`` maps DeepLab config keys to values).
SEGMENTATION_KEYS = ("config", "set", "test_flags", "backbone_from_cam")


def apply_overrides(cfg: dict, overrides: Sequence[str]) -> dict:
    """Apply ``SECTION:FLAG=VALUE`` overrides to ``cfg["stages"]`` in place (``make_toy_voc`` reaches the dataset).

    ``VALUE`` is split on spaces (several parts make a list, as for ``--scales 1 2``); ``null`` removes the flag.
    """
    for item in overrides:
        section, sep, rest = item.partition(":")
        flag, eq, value = rest.partition("=")
        if not (sep and eq and section and flag.startswith("--") and value.strip()):
            raise WsegError(f"--set {item!r}: expected SECTION:--flag=VALUE, e.g. contrast_train:--max_epoches=2")
        if section == "make_toy_voc":
            target = cfg.setdefault("dataset", {}).setdefault("make_toy_voc", {})
        elif section == "segmentation":     # DeepLab takes config keys: segmentation:--max_iters=3 -> max_iters=3
            seg = cfg.setdefault("stages", {}).setdefault("segmentation", {}).setdefault("set", {})
            seg[flag[2:]] = value.strip()
            continue
        elif section not in STAGE_SECTIONS:
            raise WsegError(f"--set {item!r}: no section {section!r}; use one of make_toy_voc, "
                            f"{', '.join(STAGE_SECTIONS)}")
        else:
            target = cfg.setdefault("stages", {}).setdefault(section, {})
        parts = value.split()
        if value.strip() == "null":
            target.pop(flag, None)
        else:
            target[flag] = parts[0] if len(parts) == 1 else parts
    return cfg


def _miou(result: dict) -> Dict[str, float]:
    out = {"miou": float(result["miou"])}
    if "best_threshold" in result:
        out["best_threshold"] = float(result["best_threshold"])
    return out


def _seg_miou(result: dict) -> Dict[str, float]:
    return {k: float(v) for k, v in result.items() if k in ("miou", "miou_crf") and v is not None}


def wsss_stages(cfg: dict, work_dir: str) -> List[Stage]:
    """The stage list of the PPC recipe from a pipeline config (see ``scripts/pipelines/*.json``).

    ``cfg["dataset"]`` holds either ``{"voc12_root": ...}`` or ``{"make_toy_voc": {flags}}`` (the synthetic
    dataset is then written to ``<work_dir>/data``). ``cfg["stages"][name]`` holds each script's own flags; the
    runner adds the paths that connect the stages. ``cfg["stages"]["segmentation"]``: ``config``, ``set``
    (config overrides), ``test_flags``, and ``backbone_from_cam`` (DeepLab's backbone starts from the trained CAM
    network, for runs without ImageNet weights). ``cfg["baseline_seam"]`` adds the SEAM baseline's CAMs.
    """
    W = lambda *p: os.path.join(work_dir, *p)  # noqa: E731
    ds = cfg.get("dataset", {})
    st = cfg.get("stages", {})
    unknown = sorted(set(st) - set(STAGE_SECTIONS)) + [
        f"segmentation.{k}" for k in sorted(set(st.get("segmentation", {})) - set(SEGMENTATION_KEYS))]
    if unknown:
        raise WsegError(f"pipeline config: unknown stages entries {', '.join(unknown)}; the stages are "
                        f"{', '.join(STAGE_SECTIONS)}, and segmentation holds {', '.join(SEGMENTATION_KEYS)}")
    stages: List[Stage] = []
    if "make_toy_voc" in ds:
        root = W("data")
        stages.append(Stage("data", "scripts/make_toy_voc.py", ["--out", root] + flags(ds["make_toy_voc"]),
                            "synthetic VOC-format dataset"))
    else:
        root = ds.get("voc12_root")
        if not root:
            raise WsegError("pipeline config: dataset needs voc12_root or make_toy_voc")
    split = lambda name: os.path.join(root, "ImageSets", "Segmentation", name + ".txt")  # noqa: E731
    train_list = split(cfg.get("train_list", "train"))
    infer_list = split(cfg.get("infer_list", "train"))
    gt = os.path.join(root, "SegmentationClass")
    common = ["--voc12_root", root]
    ev = lambda name, pred, typ, extra=(): Stage(  # noqa: E731
        name, "scripts/eval.py",
        ["--list", infer_list, "--predict_dir", pred, "--gt_dir", gt, "--type", typ, "--classes",
         os.path.join(root, "classes.txt") if "make_toy_voc" in ds else cfg.get("classes", "voc12"),
         "--logfile", W("eval_log.txt"), "--comment", name, "--out_dir", W("report"), "--progress", "False",
         *flags(st.get("eval"))] + list(extra), f"evaluate {name}", _miou)

    cam_variants = [("contrast", "")]
    if cfg.get("baseline_seam"):
        cam_variants.insert(0, ("seam", "seam_"))
    for network, tag in cam_variants:
        train_opts = {**st.get("contrast_train", {}), "--network": network}
        stages.append(Stage(f"{tag}cam_train", "scripts/contrast_train.py",
                            common + ["--train_list", train_list, "--session_name", W("models", f"{tag}cam")]
                            + flags(train_opts), f"train the {network} CAM network"))
        outs = ["--out_cam", W(f"{tag}cam")]
        if not tag:
            outs += ["--out_cam_pred", W("cam_png"), "--out_crf", W("cam_crf")]
        stages.append(Stage(f"{tag}cam_infer", "scripts/contrast_infer.py",
                            common + ["--weights", W("models", f"{tag}cam.pth"), "--infer_list", infer_list] + outs
                            + flags(st.get("contrast_infer")), f"{network} multi-scale CAMs"))
        stages.append(ev(f"eval_{tag}cam", W(f"{tag}cam"), "npy", ["--curve"]))
    stages.append(ev("eval_cam_crf", W("cam_crf"), "png"))
    stages.append(Stage("aff_prepare", "scripts/aff_prepare.py",
                        common + ["--infer_list", train_list, "--cam_dir", W("cam"), "--out_crf", W("aff_labels")]
                        + flags(st.get("aff_prepare")), "low/high-alpha CRF labels for AffinityNet"))
    stages.append(Stage("aff_train", "scripts/aff_train.py",
                        common + ["--train_list", train_list, "--la_crf_dir", W("aff_labels", "crf_la"),
                                  "--ha_crf_dir", W("aff_labels", "crf_ha"), "--session_name", W("models", "aff")]
                        + flags(st.get("aff_train")), "train AffinityNet"))
    stages.append(Stage("aff_infer", "scripts/aff_infer.py",
                        common + ["--weights", W("models", "aff.pth"), "--infer_list", infer_list,
                                  "--cam_dir", W("cam"), "--out_rw", W("rw"), "--out_crf", W("pseudo")]
                        + flags(st.get("aff_infer")), "random walk + CRF pseudo masks"))
    stages.append(ev("eval_rw", W("rw"), "png"))
    stages.append(ev("eval_pseudo", W("pseudo"), "png"))
    seg = st.get("segmentation", {})
    seg_config = seg.get("config", "segmentation/configs/deeplabv1_resnet38.py")
    if not os.path.isabs(seg_config) and not os.path.isfile(seg_config):
        seg_config = os.path.join(REPO, seg_config)     # the repo's configs, from any working folder
    seg_common = ["--config", seg_config, "--voc12_root", root,
                  "--set", f"pseudo_mask_dir={W('pseudo')}", f"out_dir={W('seg')}"] + [
        f"{k}={v}" for k, v in seg.get("set", {}).items()]
    if seg.get("backbone_from_cam"):  # no ImageNet weights (synthetic demo): start from the trained CAM backbone
        seg_common.append(f"backbone_weights={W('models', 'cam.pth')}")
    stages.append(Stage("seg_train", "segmentation/train.py", seg_common, "train DeepLab on the pseudo masks"))
    stages.append(Stage("seg_test", "segmentation/test.py", seg_common + flags(seg.get("test_flags")),
                        "DeepLab multi-scale + flip (+ CRF) on val", _seg_miou))
    return stages


STAGE_ROWS = [  # report rows: (label, stage, metric key, split)
    ("SEAM CAM (baseline)", "eval_seam_cam", "miou", "train"),
    ("PPC CAM", "eval_cam", "miou", "train"),
    ("PPC CAM + CRF", "eval_cam_crf", "miou", "train"),
    ("Random walk (RW)", "eval_rw", "miou", "train"),
    ("Pseudo masks (RW + CRF)", "eval_pseudo", "miou", "train"),
    ("DeepLab", "seg_test", "miou", "val"),
    ("DeepLab + CRF", "seg_test", "miou_crf", "val"),
]


def report_markdown(results: Dict[str, dict]) -> str:
    """The stage-by-stage quality and time table."""
    lines = ["| result | split | mIoU (%) | best bg threshold |", "|---|---|---:|---:|"]
    for label, stage, key, split in STAGE_ROWS:
        m = results.get(stage, {}).get("metrics", {})
        if key in m:
            thr = f"{m['best_threshold']:.2f}" if "best_threshold" in m and key == "miou" else ""
            lines.append(f"| {label} | {split} | {m[key]:.2f} | {thr} |")
    lines += ["", "| stage | wall time (s) |", "|---|---:|"]
    total = 0.0
    for name, rec in results.items():
        lines.append(f"| {name} | {rec['seconds']:.1f} |")
        total += rec["seconds"]
    lines.append(f"| **total** | {total:.1f} |")
    return "\n".join(lines) + "\n"
