"""Evaluate CAMs (--type npy, --curve sweeps the background threshold) or label maps (--type png) against
ground-truth masks, with the published flags (see wseg/stages/eval.py)."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import eval as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
