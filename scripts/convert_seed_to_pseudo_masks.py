"""RS+EPM seeds -> CRF pseudo masks as the released convert_seed_to_pseudo_masks.py (wseg/stages/rsepm_pseudo.py)."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import rsepm_pseudo as stage

build_parser = stage_parser(stage)
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
