"""Train AffinityNet on the la/ha CRF labels (see wseg/stages/aff_train.py). Multi-GPU: torchrun --nproc_per_node N."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import aff_train as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
