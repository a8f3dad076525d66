"""MS COCO 2014 instance json -> palette masks, cls_labels.npy, split lists and classes.txt in a VOC-style (or
RS+EPM) root; or convert an existing root between the 81 / 91 label layouts and to / from RS+EPM's layout
(see wseg/stages/make_coco_masks.py and docs/coco.md).

    python coco14/make_coco_masks.py --coco_root data/coco --out data/coco/voc81
"""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import make_coco_masks as stage

build_parser = stage_parser(stage)
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
