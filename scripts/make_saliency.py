"""Write synthetic saliency maps (one grayscale PNG per image id) for EPS / EPS+PPC's --saliency_root, from a dataset
root's ground-truth masks (see wseg/stages/make_saliency.py).

Example: python scripts/make_saliency.py --voc12_root data/toy_voc --out data/toy_voc/SALImages --seed 0
"""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import make_saliency as stage

build_parser = stage_parser(stage)
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
