"""Train a single-stage WSSS network (any --network of wseg/methods/single_stage.py; see wseg/stages/wsss_train.py).
Multi-GPU: torchrun --nproc_per_node N scripts/wsss_train.py ..."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import wsss_train as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
