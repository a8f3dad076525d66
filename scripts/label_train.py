"""Train the image-label classifier of the segmentation test's class filter and write the predicted labels of
--infer_list (see wseg/stages/label_train.py)."""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import label_train as stage

build_parser = stage_parser(stage)
check = stage.check
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
