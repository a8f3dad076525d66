"""Prepare AffinityNet labels: low/high-alpha dense-CRF label PNGs of the CAMs (see wseg/stages/aff_prepare.py)."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import aff_prepare as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
