"""RS+EPM seeds as the released infer_rsepm.py writes them (see wseg/stages/rsepm_infer.py)."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import rsepm_infer as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
