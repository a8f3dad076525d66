"""Build cls_labels.npy and the split lists (train, val, train_aug) from a VOC-format root
(see wseg/stages/make_cls_labels.py).

    python voc12/make_cls_labels.py --voc12_root VOCdevkit/VOC2012
"""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import make_cls_labels as stage

build_parser = stage_parser(stage)
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
