"""Write the synthetic MS COCO-format dataset (toy COCO) and its converted VOC-style root, for the COCO demo and
the tests (see wseg/stages/make_toy_coco.py).

Example: python scripts/make_toy_coco.py --out data/toy_coco --num_train 40 --num_val 10
"""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import make_toy_coco as stage

build_parser = stage_parser(stage)
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
