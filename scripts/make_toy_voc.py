"""Write the synthetic VOC-format dataset used by the demo and the tests (see wseg/stages/make_toy_voc.py).

Example: python scripts/make_toy_voc.py --out data/toy_voc --num_train 240 --num_val 60 --size 128x96
"""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import make_toy_voc as stage

build_parser = stage_parser(stage)
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
