"""Run a whole WSSS pipeline from one config (scripts/pipelines/<method>_<dataset>.py, e.g. demo, ppc_voc, seam_voc).

    python scripts/run_pipeline.py --config scripts/pipelines/demo.py --work_dir runs/demo

Every stage is the standalone script a user can run alone (the exact command is printed and logged); outputs
are cached under --work_dir, so a re-run skips finished stages and images, and a killed run resumes.
``--from STAGE`` re-runs a stage and the stages that need it (earlier outputs of those stages are set aside as
``<path>.stale-<time>``, not deleted); ``--only STAGE ...`` runs just those; ``--set STAGE.KEY=VALUE`` overrides a
stage's value (``dataset.KEY=VALUE`` the dataset's; ``STAGE.threads=N`` its intra-op threads). Ends with the
stage-by-stage mIoU / time table, also written to <work_dir>/report/summary.md with the curve plots and overlay
pictures.
"""
import argparse
import sys

from wseg.cli import OneLineParser, main


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="scripts/pipelines/demo.py",
                   help="pipeline config: a file, or a name under scripts/pipelines (demo, ppc_voc, ...)")
    p.add_argument("--work_dir", default="runs/demo", help="where every stage writes its outputs")
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", default=None,
                   help="use this dataset root instead of the config's (its data-making stage is dropped)")
    p.add_argument("--from", dest="from_stage", default=None,
                   help="re-run this stage and the stages that need it (a stage's needs: by default every stage before "
                        "it)")
    p.add_argument("--only", nargs="+", default=None, help="run only these stages")
    p.add_argument("--list", action="store_true", help="print the stages and their commands, run nothing")
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="STAGE.KEY=VALUE",
                   help="override a stage value, e.g. cam_train.max_epoches=2, aff_infer.logt=6, seg_train.max_iters=3 "
                        "or seg_train.model.head_dim=64; lists as [a, b] or a,b; null drops the value")
    return p


def run(args):
    from wseg.pipeline import run_pipeline

    return run_pipeline(args.config, args.work_dir, args.voc12_root, args.overrides, args.only, args.from_stage,
                        args.list)


if __name__ == "__main__":
    sys.exit(main(build_parser, run))
