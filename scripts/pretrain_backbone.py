"""Pretrain a reduced backbone on the ImageNet stand-in corpus (see wseg/stages/pretrain_backbone.py).

    python scripts/pretrain_backbone.py --backbone resnet38_small --out weights/standin/resnet38_small.pth
"""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import pretrain_backbone as stage

build_parser = stage_parser(stage)
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
