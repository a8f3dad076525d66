"""PMM pseudo masks: CVS + PPMG of the CAMs, one palette PNG per image (see wseg/stages/ppmg.py)."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import ppmg as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
