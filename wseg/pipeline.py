"""The pipeline runner: chains the stage scripts through files on disk, after jiwoon-ahn/irn's ``run_sample.py``.

A pipeline is a config (``scripts/pipelines/<method>_<dataset>.py``, composed from ``_base_`` files): a
``dataset`` section and an ordered ``stages`` dict, each stage ``dict(script=..., args=dict(...), report=[...])``.
``args`` are the script's own keys (its flags without ``--``; dict values reach into dict-valued keys, e.g.
a segmentation ``model``); ``report`` rows name what the report table shows of the stage's result
(``dict(label=..., split=..., metric="miou")``); ``outputs`` lists more paths (globs) the stage writes besides its
``--out*`` / ``--session_name`` flags, e.g. the test's prediction folders inside the training stage's folder, so that a
re-run sets them aside too. ``needs=[...]`` names the stages whose outputs a stage reads (default: every stage
before it); a stage with its own ``needs`` starts, in a process of its own, as soon as those have finished, beside
the stages in between (the demo's classifier beside the CAM network's training), and a re-run of a stage re-runs
only the stages that need it, directly or through others. ``threads=N`` sets a stage's intra-op threads
(``torch.set_num_threads``; default: the process's, ``OMP_NUM_THREADS``) while no other stage runs beside it, e.g.
for a stage that has the machine to itself while the others share it; ``--set STAGE.threads=N`` overrides it (two
pipelines at once on one machine: ``threads=1``, or both crawl). A stage set to ``None`` in a derived config is
dropped. Values may use the placeholders ``{work}`` (the work folder), ``{repo}`` (this checkout: shipped weights),
``{root}`` (the dataset root), ``{classes}`` (the dataset's own class list: the config's ``dataset.classes``, else
the root's ``classes.txt``, else ``voc12``), ``{gt}`` (the root's ground-truth folder), and ``{train_list}``,
``{infer_list}``, ``{eval_list}`` (default: the infer list), ``{val_list}`` (split list files).

Each stage is the same standalone script a user runs (``scripts/*.py``, ``segmentation/*.py``): the runner builds its
command line, calls that script's own ``build_parser()`` + ``run(args)`` in-process, times it, and marks it done in
``<work_dir>/stages/<name>.done`` with its command line. Re-running skips finished stages (and stages skip finished
images), except a stage the config now gives another command line: it runs again, and every stage that needs it;
``--from STAGE`` re-runs that stage and every stage that needs it. Re-running a stage clears its mark and theirs and
sets their outputs aside (``<path>.stale-<time>``: nothing is deleted), so they are computed again, not skipped as
finished. A killed run resumes where it stopped, since every artifact is written atomically.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from wseg.config import close_keys, load_config_file, merge, parse_literal, parse_set, set_path
from wseg.errors import WsegError
from wseg.io import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = os.path.join(REPO, "scripts", "pipelines")
SPLIT_DIR = os.path.join("ImageSets", "Segmentation")
STAGE_KEYS = ("script", "args", "args_from", "describe", "report", "creates_root", "outputs", "needs", "threads")
#: stage keys of the runner (not the script's flags) that ``--set STAGE.KEY=VALUE`` may override
RUNNER_KEYS = ("threads",)
TOP_KEYS = ("description", "dataset", "stages")
DATASET_KEYS = ("root", "classes", "train_list", "infer_list", "eval_list", "val_list")
#: What the report may show of a stage's result (quality numbers, never timings).
METRIC_KEYS = ("miou", "miou_crf", "miou_published", "miou_true_labels", "best_threshold", "fp", "fn",
               "precision", "recall", "pixel_acc", "num_classes")


@dataclass
class Stage:
    """One step: a script, its argument list, and the report rows of its result."""

    name: str
    script: str                      # path relative to the repo root, e.g. "scripts/eval.py"
    argv: List[str]
    describe: str = ""
    report: List[Dict[str, Any]] = field(default_factory=list)
    outputs: List[str] = field(default_factory=list)   # more paths (globs) it writes, set aside on a re-run
    needs: Optional[List[str]] = None    # the stages whose outputs it reads; None: every stage before it
    threads: Optional[int] = None        # intra-op threads while it runs; None: the process's


def single_stage_method(network: str, label: str, train_label: str = "pseudo labels") -> Dict[str, Dict[str, Any]]:
    """The stage values a single-stage method's config sets over ``_base_/single_stage.py`` (for configs): its
    ``--network``, its weights ``{work}/models/<network>.pth`` for the inference stages, and its report rows
    "<label> seg (<train_label>)" on train and "<label> seg" on val, each also "+ CRF"."""
    weights = "{work}/models/" + network
    return dict(
        wsss_train=dict(args=dict(network=network, session_name=weights)),
        infer_train=dict(args=dict(weights=weights + ".pth")),
        eval_train=dict(report=[dict(label=f"{label} seg ({train_label})", split="train")]),
        eval_train_crf=dict(report=[dict(label=f"{label} seg + CRF ({train_label})", split="train")]),
        eval_val=dict(report=[dict(label=f"{label} seg", split="val")]),
        eval_val_crf=dict(report=[dict(label=f"{label} seg + CRF", split="val")]),
    )


def single_stage_variant(name: str, label: str, train: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Pipeline stages of one single-stage ablation (for configs): ``<name>_train`` (``wsss_train`` with the config's
    ``wsss_train`` values and ``train`` changed), ``<name>_infer_val`` (its val predictions and their CRF, as
    ``infer_train``), ``<name>_eval_val`` and ``<name>_eval_val_crf`` (as ``eval_val`` / ``eval_val_crf``, reported
    as "<label> seg" and "<label> seg + CRF"). Outputs under ``{work}/<name>_val*`` and ``{work}/models/<name>``."""
    out = "{work}/" + name
    return {
        f"{name}_train": dict(script="scripts/wsss_train.py", describe=f"train {label}", args_from="wsss_train",
                              args=dict(train, session_name="{work}/models/" + name)),
        f"{name}_infer_val": dict(script="scripts/wsss_infer.py", describe=f"{label}: predictions (+ CRF) of val",
                                  args_from="infer_train", args=dict(weights="{work}/models/" + name + ".pth",
                                                                     infer_list="{val_list}", out_pred=out + "_val",
                                                                     out_crf=out + "_val_crf")),
        f"{name}_eval_val": dict(script="scripts/eval.py", args_from="eval_val", args=dict(predict_dir=out + "_val"),
                                 report=[dict(label=f"{label} seg", split="val")]),
        f"{name}_eval_val_crf": dict(script="scripts/eval.py", args_from="eval_val_crf",
                                     args=dict(predict_dir=out + "_val_crf"),
                                     report=[dict(label=f"{label} seg + CRF", split="val")]),
    }


def segmentation_variant(name: str, label: str, train: Mapping[str, Any],
                         ms_scales: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)) -> Dict[str, Dict[str, Any]]:
    """Pipeline stages of one segmentation network (for configs): ``<name>_train`` (``segmentation/train.py`` with
    ``train``, into ``{work}/<name>``), ``<name>_test`` (single scale, no flip, no CRF: mmseg's "mIoU") and
    ``<name>_test_msf`` (``ms_scales`` x flip: mmseg's "mIoU(ms+flip)"), each into its own prediction folder and
    reported as "<label>" and "<label> ms+flip" on val."""
    out = "{work}/" + name
    test = dict(test_list="{val_list}", crf=False)
    return {
        f"{name}_train": dict(script="segmentation/train.py", describe=f"train {label}",
                              args=dict(train, out_dir=out, progress=False)),
        f"{name}_test": dict(script="segmentation/test.py", describe=f"{label}: single-scale test of val",
                             args_from=f"{name}_train",
                             args=dict(test, test_scales=[1.0], test_flip=False, pred_dir=out + "/pred_ss"),
                             report=[dict(label=label, split="val", metric="miou")]),
        f"{name}_test_msf": dict(script="segmentation/test.py", describe=f"{label}: multi-scale + flip test of val",
                                 args_from=f"{name}_train",
                                 args=dict(test, test_scales=[float(s) for s in ms_scales], test_flip=True,
                                           pred_dir=out + "/pred_msf"),
                                 report=[dict(label=f"{label} ms+flip", split="val", metric="miou")]),
    }


def load_script(rel_path: str):
    """Import a file of the repo outside the package (``scripts/x.py``, ``segmentation/test.py``) as a module,
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


# --------------------------------------------------------------------------------------------- configs


def resolve_config_path(path: str) -> str:
    """A pipeline config by path, or by name under ``scripts/pipelines`` (``demo`` -> ``demo.py``)."""
    for cand in (path, os.path.join(PIPELINES, path), os.path.join(PIPELINES, path + ".py")):
        if os.path.isfile(cand):
            return cand
    names = sorted(f[:-3] for f in os.listdir(PIPELINES) if f.endswith(".py"))
    raise WsegError(f"{path}: pipeline config not found; pass a file or one of {', '.join(names)}")


def load_pipeline(path: str, overrides: Sequence[str] = (), root: Optional[str] = None) -> Dict[str, Any]:
    """The composed pipeline config with ``--set STAGE.KEY=VALUE`` overrides (``dataset.KEY=...`` for the dataset
    section) and an optional dataset root that replaces the config's (its data-making stages are dropped)."""
    cfg = load_config_file(resolve_config_path(path))
    unknown = sorted(set(cfg) - set(TOP_KEYS))
    if unknown:
        raise WsegError(f"{path}: unknown pipeline key {unknown[0]!r}{close_keys(unknown[0], TOP_KEYS)}; a pipeline "
                        "config has description, dataset and stages")
    cfg.setdefault("dataset", {})
    stages = {k: v for k, v in (cfg.get("stages") or {}).items() if v is not None}
    for name, st in stages.items():
        if not isinstance(st, dict) or "script" not in st:
            raise WsegError(f"{path}: stage {name} needs dict(script=..., args=dict(...))")
        bad = sorted(set(st) - set(STAGE_KEYS))
        if bad:
            raise WsegError(f"{path}: stage {name}: unknown key {bad[0]!r}{close_keys(bad[0], STAGE_KEYS)}")
    for name, st in stages.items():                     # args_from: another stage's args, then the stage's own
        src = st.get("args_from")
        if src is not None:
            if src not in stages or stages[src].get("args_from"):
                raise WsegError(f"{path}: stage {name}: args_from {src!r} must name a stage without args_from")
    first = [k for k, v in stages.items() if v.get("creates_root")]  # the dataset is made before anything reads it
    stages = {k: stages[k] for k in first + [k for k in stages if k not in first]}
    cfg["stages"] = stages
    _check_needs(path, stages)
    for key, text in parse_set(overrides):
        head, _, rest = key.partition(".")
        if head == "dataset" and rest:
            if rest.split(".")[0] not in DATASET_KEYS:
                raise WsegError(f"--set {key}: the dataset section has {', '.join(DATASET_KEYS)}")
            set_path(cfg["dataset"], rest, parse_literal(text), f"--set {key}")
        elif head in stages and rest in RUNNER_KEYS:
            stages[head] = dict(stages[head], **{rest: parse_literal(text)})
        elif head in stages and rest:
            set_path(stages[head].setdefault("args", {}), rest, parse_literal(text), f"--set {key}")
        else:
            raise WsegError(f"--set {key}={text}: no stage {head!r}{close_keys(head, list(stages))}; the syntax is "
                            "STAGE.KEY=VALUE (e.g. cam_train.max_epoches=2) or dataset.KEY=VALUE")
    bad = sorted(set(cfg["dataset"]) - set(DATASET_KEYS))
    if bad:
        raise WsegError(f"{path}: unknown dataset key {bad[0]!r}{close_keys(bad[0], DATASET_KEYS)}")
    for name, st in stages.items():
        threads = st.get("threads")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise WsegError(f"{path}: stage {name}: threads={threads!r}; give a whole number of at least 1 (or "
                            "leave it out: the process's own)")
    if root:
        cfg["dataset"]["root"] = root
        made = {k for k, v in stages.items() if v.get("creates_root")}
        cfg["stages"] = {k: (v if v.get("needs") is None else dict(v, needs=[n for n in v["needs"] if n not in made]))
                         for k, v in stages.items() if k not in made}
    if not cfg["dataset"].get("root"):
        raise WsegError(f"{path}: dataset.root is not set; pass --voc12_root (or --data_root) ROOT")
    return cfg


def _check_needs(path: str, stages: Mapping[str, Mapping[str, Any]]) -> None:
    """Each ``needs`` entry names a stage before it (the runner starts a stage once those have finished)."""
    names = list(stages)
    for k, (name, st) in enumerate(stages.items()):
        needs = st.get("needs")
        if needs is None:
            continue
        if not isinstance(needs, (list, tuple)) or not all(isinstance(n, str) for n in needs):
            raise WsegError(f"{path}: stage {name}: needs={needs!r}; give a list of stage names, e.g. needs=['data']")
        for n in needs:
            if n not in names[:k]:
                where = "comes after it" if n in names else f"is no stage{close_keys(n, names)}"
                raise WsegError(f"{path}: stage {name}: needs {n!r}, which {where}; a stage needs stages before it "
                                f"(the stages before {name}: {', '.join(names[:k]) or 'none'})")


def _classes(ds: Mapping[str, Any], root: str, made_here: bool) -> str:
    if ds.get("classes"):
        return str(ds["classes"])
    own = os.path.join(root, "classes.txt")
    return own if made_here or os.path.isfile(own) else "voc12"


def _gt_dir(root: str) -> str:
    for folder in ("SegmentationClass", "SegmentationClassAug"):
        if os.path.isdir(os.path.join(root, folder)):
            return os.path.join(root, folder)
    return os.path.join(root, "SegmentationClass")


def _fill(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        try:
            return value.format(**env)
        except KeyError as exc:
            raise WsegError(f"pipeline value {value!r}: unknown placeholder {exc}; use one of "
                            f"{', '.join('{' + k + '}' for k in env)}") from None
    if isinstance(value, dict):
        return {k: _fill(v, env) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fill(v, env) for v in value]
    return value


def argv_of(args: Mapping[str, Any]) -> List[str]:
    """Stage ``args`` -> the command line a user types: ``--key value``, lists as several values, booleans as
    ``True``/``False``, ``None`` dropped, dicts as ``--set key.sub=value`` items."""
    out: List[str] = []
    sets: List[str] = []
    for key, val in args.items():
        if val is None:
            continue
        if isinstance(val, dict):
            sets += [f"{key}.{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in val.items()]
            continue
        out.append("--" + key)
        out += [str(v) for v in val] if isinstance(val, (list, tuple)) else [str(val)]
    return out + (["--set"] + sets if sets else [])


def dataset_root(cfg: Mapping[str, Any], work_dir: str) -> str:
    return _fill(str(cfg["dataset"]["root"]), {"work": os.path.abspath(work_dir)})


def stages_from_config(cfg: Mapping[str, Any], work_dir: str) -> List[Stage]:
    """The runnable stage list of a pipeline config (placeholders filled)."""
    ds = cfg["dataset"]
    work = os.path.abspath(work_dir)
    env = {"work": work, "repo": REPO}
    root = dataset_root(cfg, work_dir)
    made_here = any(st.get("creates_root") for st in cfg["stages"].values())
    env.update(root=root, classes=_classes(ds, root, made_here), gt=_gt_dir(root))
    for key, default in (("train_list", "train"), ("infer_list", "train"), ("eval_list", ds.get("infer_list") or "train"),
                         ("val_list", "val")):
        name = str(ds.get(key) or default)
        env[key] = name if os.sep in name or name.endswith(".txt") else os.path.join(root, SPLIT_DIR, name + ".txt")
    stages = []
    for name, st in cfg["stages"].items():
        args = dict(st.get("args") or {})
        if st.get("args_from"):
            args = merge(cfg["stages"][st["args_from"]].get("args") or {}, args)
        args = _fill(args, env)
        script = st["script"]
        if script.endswith("eval.py") and "comment" not in args:
            args["comment"] = name
        for key in ("config",):             # repo configs resolve from any working folder
            if isinstance(args.get(key), str) and not os.path.isabs(args[key]) and not os.path.isfile(args[key]):
                args[key] = os.path.join(REPO, args[key])
        needs = None if st.get("needs") is None else list(st["needs"])
        stages.append(Stage(name, script, argv_of(args), st.get("describe", ""), list(st.get("report") or []),
                            [_fill(str(p), env) for p in st.get("outputs") or []], needs, st.get("threads")))
    return stages


# --------------------------------------------------------------------------------------------- running


class Runner:
    """Runs a list of :class:`Stage` in order with done-marks, timings and a JSON record of results."""

    def __init__(self, work_dir: str, stages: Sequence[Stage]):
        self.work_dir = work_dir
        self.stages = list(stages)
        self.mark_dir = os.path.join(work_dir, "stages")     # created by the first mark (io.atomic_path)
        self.names = [s.name for s in self.stages]
        if len(set(self.names)) != len(self.names):
            raise ValueError("duplicate stage names")

    def _mark(self, name: str) -> str:
        return os.path.join(self.mark_dir, name + ".done")

    def needs(self, stage: Stage) -> List[str]:
        """The stages whose outputs ``stage`` reads: its ``needs``, else every stage before it."""
        if stage.needs is None:
            return self.names[:self.names.index(stage.name)]
        return [n for n in stage.needs if n in self.names]

    def dependents(self, name: str) -> List[str]:
        """``name`` and every stage that needs it, directly or through others, in order."""
        out = [name]
        for s in self.stages[self.names.index(name) + 1:]:
            if any(n in out for n in self.needs(s)):
                out.append(s.name)
        return out

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

    def reset_from(self, name: str, echo: Callable[[str], None] = print,
                   only: Optional[Sequence[str]] = None) -> None:
        """Clear the marks of ``name`` and every stage that needs it (:meth:`dependents`; of ``only``, if given) and
        set their outputs aside (renamed ``<path>.stale-<time>``, nothing deleted), so that they are computed again
        rather than skipped as finished images or trained weights. Only paths inside the work folder that no other
        stage writes move."""
        if name not in self.names:
            raise WsegError(f"--from {name}: unknown stage; choose one of {', '.join(self.names)}")
        again = [n for n in self.dependents(name) if not only or n in only]
        keep = {os.path.abspath(p) for s in self.stages if s.name not in again for p in _outputs(s)}
        work = os.path.abspath(self.work_dir) + os.sep
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for s in self.stages:
            if s.name not in again:
                continue
            if self.is_done(s.name):
                os.remove(self._mark(s.name))
            declared = [("", p) for pattern in s.outputs for p in sorted(glob.glob(pattern)) if ".stale-" not in p]
            for flag, out in _output_flags(s) + declared:
                out = os.path.abspath(out)
                if out in keep or not out.startswith(work):
                    continue
                for path in _written_paths(out, session=flag == "--session_name"):
                    aside, n = f"{path}.stale-{stamp}", 1
                    while os.path.lexists(aside):
                        n += 1
                        aside = f"{path}.stale-{stamp}-{n}"
                    os.replace(path, aside)
                    echo(f"[aside] {path} -> {aside}")

    def recorded_command(self, name: str) -> Optional[str]:
        """The command line a finished stage ran with (``None``: not finished, or a mark without one)."""
        return self._recorded(name).get("command")

    def _recorded(self, name: str) -> dict:
        if not self.is_done(name):
            return {}
        with open(self._mark(name)) as f:
            return json.load(f)

    def check_flags(self, only: Optional[Sequence[str]] = None) -> None:
        """Parse every stage's command line (and run the script's ``check(args)``, if it has one) before anything
        runs, so that a mistyped key or a bad value of the last stage (``--set seg_train.max_iter=3``) fails at once,
        not after the stages before it have run."""
        for stage in self.stages:
            if only and stage.name not in only:
                continue
            mod = load_script(stage.script)
            try:
                args = mod.build_parser().parse_args(stage.argv)
                if hasattr(mod, "check"):  # the script's own value checks (pure: nothing is read or written)
                    mod.check(args)
            except WsegError as exc:
                raise WsegError(f"stage {stage.name}: {exc}") from None

    def run(self, only: Optional[Sequence[str]] = None, echo: Callable[[str], None] = print) -> Dict[str, dict]:
        """Run the stages in order (every command line parsed first: :meth:`check_flags`); a finished stage is
        skipped unless the config now gives it another command line, in which case it and every stage that needs it
        run again. A stage with its own ``needs`` starts in a process of its own as soon as those have finished and
        runs beside the stages in between (one at a time: the demo's classifier beside the CAM stages, one core
        each); a stage that needs it waits for it."""
        self.check_flags(only)
        todo = [s for s in self.stages if not only or s.name in only]
        pending = [(s, self._command(s, echo, only)) for s in todo]
        pending = [(s, c) for s, c in pending if c is not None]
        side = None                                   # (stage, command, child, the stages run meanwhile)
        try:
            while pending:
                if side is not None and not side[2][0].is_alive():     # finished early: another may start
                    self._finish(*side, echo)
                    side = None
                if side is None:
                    side = self._start_ready(pending, echo)
                    if not pending:
                        break
                stage, cmd = pending[0]
                if side is not None and side[0].name in self.needs(stage):
                    self._finish(*side, echo)
                    side = None
                    continue
                pending.pop(0)
                self._execute(stage, cmd, echo, alone=side is None)
                if side is not None:
                    side[3].append(stage.name)
        except BaseException:
            if side is not None:                      # keep (and mark) what the other process finishes; this error
                try:                                  # is the one to report
                    self._finish(*side, echo)
                except WsegError:
                    pass
            raise
        if side is not None:
            self._finish(*side, echo)
        return self.results()

    def _start_ready(self, pending: List[Tuple[Stage, Tuple[str, Optional[str]]]], echo: Callable[[str], None]):
        """Start (and take from ``pending``) the first stage after the next one that has its own ``needs``, all of
        them finished or not to run now; ``None`` if there is none."""
        waiting = {s.name for s, _ in pending}
        for k, (stage, cmd) in enumerate(pending[1:], 1):
            if stage.needs is not None and not any(n in waiting for n in self.needs(stage)):
                pending.pop(k)
                return stage, cmd, self._start(stage, cmd, echo), []
        return None

    def _command(self, stage: Stage, echo: Callable[[str], None],
                 only: Optional[Sequence[str]] = None) -> Optional[Tuple[str, Optional[str]]]:
        """``(command line, config digest)`` of a stage to run; ``None`` for one finished with the same command (a
        finished stage with another command is re-run, with the stages after it: :meth:`reset_from`)."""
        cmd = "python " + stage.script + " " + " ".join(shlex.quote(a) for a in stage.argv)
        digest = config_digest(stage.argv)
        if self.is_done(stage.name):
            mark = self._recorded(stage.name)
            recorded = mark.get("command")
            if recorded is None or (recorded == cmd and mark.get("config_digest") == digest):
                echo(f"[skip] {stage.name}: done")
                return None
            why = (f"another command ({recorded})" if recorded != cmd else
                   "another --config content (the file or one of its _base_ files was edited)")
            echo(f"[redo] {stage.name}: finished with {why}; running it and the stages after it again")
            self.reset_from(stage.name, echo, only)
        return cmd, digest

    def _execute(self, stage: Stage, command: Tuple[str, Optional[str]], echo: Callable[[str], None],
                 alone: bool = True) -> None:
        """Run one stage in this process and mark it done with its time and result. Its ``threads`` apply only
        ``alone``: beside another stage's process, more threads than cores make both crawl (OpenMP's threads wait
        for each other by spinning)."""
        echo(f"[run ] {stage.name}: {command[0]}")
        if stage.threads and not alone:
            echo(f"[note] {stage.name}: another stage runs beside it, so it keeps the process's threads instead of "
                 f"its threads={stage.threads}")
        t0 = time.time()
        result = run_stage(stage.name, stage.script, stage.argv, stage.threads if alone else None)
        self._record(stage, command, t0, time.time() - t0, result, echo)

    def _start(self, stage: Stage, command: Tuple[str, Optional[str]], echo: Callable[[str], None]):
        """Start one stage in a process of its own (spawned: a fresh interpreter, no inherited threads)."""
        import multiprocessing as mp

        echo(f"[run ] {stage.name} (in its own process, beside the next stages; it needs "
             f"{', '.join(self.needs(stage)) or 'no other stage'}): {command[0]}")
        ctx = mp.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_stage_process, args=(stage.name, stage.script, stage.argv, stage.threads, send),
                           daemon=True)
        proc.start()
        send.close()                        # the child holds the sending end: its exit ends the pipe
        return proc, receive

    def _finish(self, stage: Stage, command: Tuple[str, Optional[str]], child, beside: List[str],
                echo: Callable[[str], None]) -> None:
        """Wait for a stage started by :meth:`_start` (its outcome is read before the join, so a large result cannot
        block the child's exit); mark it done with its own time and the stages it ran ``beside``, or raise its
        error as one line."""
        proc, receive = child
        try:
            outcome = receive.recv()
        except EOFError:                    # it ended without a word: killed (e.g. out of memory)
            outcome = None
        proc.join()
        if outcome is None:
            outcome = ("error", f"stage {stage.name}: its process ended with exit code {proc.exitcode} and no result")
        if outcome[0] == "error":
            raise WsegError(outcome[1])
        self._record(stage, command, outcome[2], outcome[3], outcome[1], echo, beside=beside)   # its own time

    def _record(self, stage: Stage, command: Tuple[str, Optional[str]], started: float, seconds: float, result: Any,
                echo: Callable[[str], None], beside: Sequence[str] = ()) -> None:
        record = {"seconds": round(seconds, 2), "started": round(started, 2), "command": command[0],
                  "config_digest": command[1], "result": _jsonable(result) if isinstance(result, dict) else None}
        if beside:
            record["beside"] = list(beside)  # ran at the same time as those: the time table counts the overlap once
        if isinstance(result, dict):
            record["metrics"] = {k: float(result[k]) for k in METRIC_KEYS if result.get(k) is not None}
        atomic_write_text(self._mark(stage.name), json.dumps(record, indent=1))
        echo(f"[done] {stage.name}: {seconds:.1f}s")


def run_stage(name: str, script: str, argv: Sequence[str], threads: Optional[int] = None) -> Any:
    """Run one stage script's ``run`` on its parsed ``argv`` (with ``threads`` intra-op threads, if given; restored
    after); its errors name the stage."""
    mod = load_script(script)
    parser = mod.build_parser()
    parser.prog = f"{script} (stage {name}; its flags come from the config and --set)"
    before = None
    if threads:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        return mod.run(parser.parse_args(argv))
    except WsegError as exc:
        raise WsegError(f"stage {name}: {exc}") from None
    finally:
        if before is not None:
            torch.set_num_threads(before)


def _stage_process(name: str, script: str, argv: Sequence[str], threads: Optional[int], conn) -> None:
    """A stage in a process of its own (:meth:`Runner._start`): its JSON-able result and time, or its one-line error,
    go back through ``conn`` (a pipe's sending end); anything else keeps its traceback (printed here) and is reported
    as a crash."""
    import traceback

    from wseg.errors import one_line

    try:
        t0 = time.time()
        result = run_stage(name, script, argv, threads)
        conn.send(("ok", _jsonable(result) if isinstance(result, dict) else None, t0, time.time() - t0))
    except WsegError as exc:
        conn.send(("error", one_line(exc)))
    except BaseException as exc:                # a bug: keep its traceback on stderr, and say which stage crashed
        traceback.print_exc()
        conn.send(("error", f"stage {name}: crashed in its own process ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); its traceback is printed above"))


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


def config_digest(argv: Sequence[str]) -> Optional[str]:
    """SHA-1 of the settings a stage's ``--config`` file composes (its ``_base_`` chain included), so an edited
    config re-runs the stage although its command line is the same; ``None`` without a readable config file."""
    import hashlib

    from wseg.config import load_config_file

    paths = [argv[k + 1] for k, a in enumerate(argv[:-1]) if a == "--config"]
    if not paths or not os.path.isfile(paths[-1]):
        return None
    try:
        settings = load_config_file(paths[-1])
    except WsegError:
        return None                              # the stage itself reports the broken config
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()


def _output_flags(stage: Stage) -> List[Tuple[str, str]]:
    """``(flag, path)`` of what a stage writes: its ``--out*`` and ``--session_name`` flags."""
    argv = stage.argv
    return [(a, argv[k + 1]) for k, a in enumerate(argv[:-1]) if a.startswith("--out") or a == "--session_name"]


def _outputs(stage: Stage) -> List[str]:
    """The paths a stage writes (:func:`_output_flags`)."""
    return [path for _, path in _output_flags(stage)]


def _written_paths(out: str, session: bool) -> List[str]:
    """What exists of one output: the folder or file itself, or for a ``--session_name`` prefix the files a
    training session writes (``<prefix>.pth``, ``<prefix>_last.pth``, ``<prefix>.log``, ``<prefix>_scalars.jsonl``)
    and those of its sub-sessions (``label_train``'s held-out folds, ``<prefix>_fold<k>...``): a re-run must not
    resume their checkpoints."""
    if not session:
        return [out] if os.path.lexists(out) else []
    return sorted(p for pattern in (".*", "_last.*", "_scalars.*", "_fold*")
                  for p in glob.glob(glob.escape(out) + pattern) if ".stale-" not in p)


def _fed_by(stages: Sequence[Stage], results: Dict[str, dict], flagged: Callable[[dict], bool]) -> Dict[str, str]:
    """``{stage: the flagged stage it depends on}`` for every stage fed, directly or through files (a path under
    another stage's ``--out*`` / ``--session_name``), by a stage whose result is ``flagged``."""
    tainted: Dict[str, str] = {}                 # path prefix -> the flagged stage
    out: Dict[str, str] = {}
    for st in stages:
        res = (results.get(st.name) or {}).get("result") or {}
        source = next((src for tok in st.argv for path, src in tainted.items()
                       if os.sep in tok and tok.startswith(path) and tok not in _outputs(st)), None)
        if flagged(res):
            source = st.name
        if source:
            out[st.name] = source
            for path in _outputs(st):
                tainted[path] = source
    return out


def unlearned_sources(stages: Sequence[Stage], results: Dict[str, dict]) -> Dict[str, str]:
    """Stages fed by a trainer whose classification loss did not beat the label prior (``learned: False``)."""
    return _fed_by(stages, results, lambda res: res.get("learned") is False)


def val_selected_sources(stages: Sequence[Stage], results: Dict[str, dict]) -> Dict[str, str]:
    """Stages fed by a checkpoint picked by its val mIoU (``selected_by_val: True``, e.g. PMM's
    ``pick_best_pth``): their val rows have seen the val ground truth."""
    return _fed_by(stages, results, lambda res: res.get("selected_by_val") is True)


def report_markdown(stages: Sequence[Stage], results: Dict[str, dict]) -> str:
    """The stage-by-stage quality table (rows from the config's ``report`` entries) and the time table. Rows fed by
    a network that did not learn (see :func:`unlearned_sources`) or by a checkpoint chosen with the val ground
    truth (:func:`val_selected_sources`) are marked, and so are a test's rows with a background scale (its factor)
    and those where its label filter's check kept the unfiltered prediction."""
    bad = unlearned_sources(stages, results)
    by_val = val_selected_sources(stages, results)
    lines = ["| result | split | mIoU (%) | best bg threshold |", "|---|---|---:|---:|"]
    for st in stages:
        m = results.get(st.name, {}).get("metrics", {})
        for row in st.report:
            key = row.get("metric", "miou")
            if key in m:
                thr = f"{m['best_threshold']:.2f}" if "best_threshold" in m and key == "miou" else ""
                mark = f" (fed by {bad[st.name]}, which did not learn)" if st.name in bad else ""
                mark += " (checkpoint chosen with val ground truth)" if st.name in by_val else ""
                res = results.get(st.name, {}).get("result") or {}
                if res.get("bg_scale", 1) != 1 and key in ("miou", "miou_crf", "miou_true_labels"):
                    mark += f" (background x{res['bg_scale']:g})"
                if "label_filter_power" in res and key in ("miou", "miou_crf"):
                    mark += f" (classes weighted by the classifier's scores ^{res['label_filter_power']:g})"
                if res.get("label_filter_used") is False and key in ("miou", "miou_crf"):
                    mark += (f" (not filtered: on the training images the unfiltered test scored "
                             f"{res['train_miou_unfiltered']:.1f} mIoU against the training masks, the filtered "
                             f"{res['train_miou_filtered']:.1f})")
                lines.append(f"| {row['label']}{mark} | {row.get('split', '')} | {m[key]:.2f} | {thr} |")
    for name in sorted(set(bad.values())):
        res = (results.get(name) or {}).get("result") or {}
        lines.append(f"\n**Warning**: {name} did not learn: its classification loss ended at "
                     f"{res.get('cls_loss', float('nan')):.4g}, the label prior's loss is "
                     f"{res.get('prior_loss', float('nan')):.4g}; every row marked above is built on it.")
    for name in sorted(set(by_val.values())):
        lines.append(f"\n**Note**: {name} picked its checkpoint by val mIoU (as the published pick_best_pth); the "
                     "rows marked above are not a clean val measurement.")
    lines += ["", "| stage | wall time (s) |", "|---|---:|"]
    for name, rec in results.items():
        beside = [rec["beside"]] if isinstance(rec.get("beside"), str) else rec.get("beside") or []
        where = "" if not beside else f" (beside {beside[0]})" if len(beside) == 1 else \
            f" (beside {beside[0]} ... {beside[-1]})"
        lines.append(f"| {name}{where} | {rec['seconds']:.1f} |")
    lines.append(f"| **total** | {wall_total(results):.1f} |")
    return "\n".join(lines) + "\n"


def wall_total(results: Mapping[str, dict]) -> float:
    """The stages' wall time with what ran at the same time counted once: the union of their recorded spans
    (``started`` + ``seconds``); a mark of an older version without ``started`` adds its time, less its overlap with
    the one stage it records running ``beside``."""
    total, spans = 0.0, []
    for rec in results.values():
        if "started" in rec:
            spans.append((rec["started"], rec["started"] + rec["seconds"]))
        elif isinstance(rec.get("beside"), str) and rec["beside"] in results:
            total += max(0.0, rec["seconds"] - results[rec["beside"]]["seconds"])
        else:
            total += rec["seconds"]
    end = float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def run_pipeline(config: str, work_dir: str, root: Optional[str] = None, overrides: Sequence[str] = (),
                 only: Optional[Sequence[str]] = None, from_stage: Optional[str] = None,
                 list_only: bool = False) -> Dict[str, dict]:
    """``scripts/run_pipeline.py``: build the stages of ``config``, list or run them, write the report."""
    from wseg.report import write_report

    cfg = load_pipeline(config, overrides, root)
    stages = stages_from_config(cfg, work_dir)
    runner = Runner(work_dir, stages)
    unknown = [n for n in (only or []) if n not in runner.names]
    if unknown:
        raise WsegError(f"--only {' '.join(unknown)}: no such stage; the stages are {', '.join(runner.names)}")
    if list_only:
        for s in stages:
            print(f"{s.name:14s} python {s.script} {' '.join(shlex.quote(a) for a in s.argv)}")
        return {}
    if from_stage:
        runner.reset_from(from_stage, only=only)
    results = runner.run(only=only)
    table = report_markdown(stages, results)
    write_report(work_dir, dataset_root(cfg, work_dir), stages, results, table)
    print("\n" + table)
    return results
