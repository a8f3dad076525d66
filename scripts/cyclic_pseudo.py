"""Cyclic pseudo masks (PMM): a trained segmentation network relabels its training list with the published test
(multi-scale + flip, slide, dense CRF) for retraining with plain cross-entropy (see wseg/stages/cyclic_pseudo.py).

    python scripts/cyclic_pseudo.py --config segmentation/configs/pspnet_r101-d8_512x512_20k_voc12aug_pus.py \\
        --voc12_root VOC2012 --out_dir runs/pspnet_pus --out_masks runs/cyclic [--ckpt_choice best_val]
"""
import sys

from wseg.cli import main, stage_parser
from wseg.stages import cyclic_pseudo as stage

build_parser = stage_parser(stage)
run = stage.run

if __name__ == "__main__":
    sys.exit(main(build_parser, run))
