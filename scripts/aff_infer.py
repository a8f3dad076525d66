"""AffinityNet random walk of the CAMs (+ dense-CRF pseudo masks with --crf) (see wseg/stages/aff_infer.py)."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import aff_infer as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
