"""Infer multi-scale + flip CAMs with a trained SEAM/PPC network (see wseg/stages/contrast_infer.py)."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import contrast_infer as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
