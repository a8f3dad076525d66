"""Run the whole WSSS pipeline (PPC CAMs -> AffinityNet random walk -> DeepLab) from one config.

    python scripts/run_pipeline.py --config scripts/pipelines/demo.json --work_dir runs/demo

Every stage is the standalone script a user can run alone (the exact command is printed and logged); outputs
are cached under --work_dir, so a re-run skips finished stages and images, and a killed run resumes.
``--from STAGE`` re-runs from a stage on; ``--only STAGE ...`` runs just those. Ends with the stage-by-stage
mIoU / time table, also written to <work_dir>/report/summary.md with the curve plot and overlay pictures.
"""
import argparse
import json
import os
import sys

from wseg.cli import add_bool_flag, main
from wseg.errors import WsegError
from wseg.pipeline import Runner, apply_overrides, report_markdown, wsss_stages


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="scripts/pipelines/demo.json", help="pipeline config (JSON)")
    p.add_argument("--work_dir", default="runs/demo", help="where every stage writes its outputs")
    p.add_argument("--voc12_root", default=None, help="use this dataset instead of the config's")
    p.add_argument("--from", dest="from_stage", default=None, help="re-run from this stage on")
    p.add_argument("--only", nargs="+", default=None, help="run only these stages")
    p.add_argument("--list", action="store_true", help="print the stages and their commands, run nothing")
    add_bool_flag(p, "--baseline_seam", "also train and evaluate the SEAM baseline with the same flags (overrides "
                                        "the config's baseline_seam)", default=None)
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="SECTION:FLAG=VALUE",
                   help="override one stage flag of the config, e.g. contrast_train:--cls_warmup_epochs=0 or "
                        "aff_infer:--scale=1; space-separated VALUE parts make a list; VALUE null drops the flag")
    return p


def run(args):
    if not os.path.isfile(args.config):
        raise WsegError(f"{args.config}: pipeline config not found; see scripts/pipelines/ for examples")
    try:
        with open(args.config) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as exc:
        raise WsegError(f"{args.config}: not valid JSON ({exc})")
    if not (isinstance(cfg, dict) and all(isinstance(cfg.get(k, {}), dict) for k in ("dataset", "stages"))):
        raise WsegError(f"{args.config}: expected a JSON object with \"dataset\" and \"stages\" objects; see "
                        "scripts/pipelines/demo.json")
    apply_overrides(cfg, args.overrides)
    if args.baseline_seam is not None:
        cfg["baseline_seam"] = bool(args.baseline_seam)
    if args.voc12_root:
        cfg["dataset"] = {"voc12_root": args.voc12_root}
    runner = Runner(args.work_dir, wsss_stages(cfg, args.work_dir))
    names = [st.name for st in runner.stages]
    unknown = [n for n in (args.only or []) if n not in names]
    if unknown:
        raise WsegError(f"--only {' '.join(unknown)}: no such stage; the stages are {', '.join(names)}")
    if args.list:
        for s in runner.stages:
            print(f"{s.name:14s} python {s.script} {' '.join(s.argv)}")
        return {}
    if args.from_stage:
        runner.reset_from(args.from_stage)
    results = runner.run(only=args.only)
    from wseg.report import write_report

    table = report_markdown(results)
    write_report(args.work_dir, cfg, results, table)
    print("\n" + table)
    return results


if __name__ == "__main__":
    sys.exit(main(build_parser, run))
