"""Train a segmentation network (DeepLab v1 LargeFOV / v2 ASPP, mmseg's DeepLabV3+ / PSPNet, ...) on pseudo masks:
the segmentation stage of weakly-supervised semantic segmentation, after the published usr922/wseg
``segmentation/experiment/*/train.py`` and mmsegmentation / PMM's WSSS_MMSeg (see wseg/segmentation/train.py and
docs/segmentation_zoo.md). Resumable; ``torchrun`` runs it data-parallel.

    python segmentation/train.py --config segmentation/configs/deeplabv1_resnet38.py \\
        --voc12_root VOCdevkit/VOC2012 --pseudo_mask_dir out_rw \\
        --backbone_weights ilsvrc-cls_rna-a1_cls1000_ep-0001.params
    torchrun --nproc_per_node 4 segmentation/train.py --config ... --set batch_size=12
"""
import sys

from wseg.cli import add_bool_flag, main
from wseg.segmentation.config import build_parser as config_parser, config_from_args


def build_parser():
    p = config_parser(__doc__)
    add_bool_flag(p, "--progress", "show a progress bar", default=True)
    return p


def check(args) -> None:
    """One-line errors for the config's values before anything is read (the pipeline calls it before its first
    stage)."""
    from wseg.segmentation.checks import check_train_config

    check_train_config(config_from_args(args))


def run(args) -> dict:
    """Train as configured; returns ``{"weights", "iters", "val_miou", "best_miou", "iters_per_s", ...}``."""
    from wseg.segmentation.train import train

    return train(config_from_args(args), progress=args.progress)


if __name__ == "__main__":
    sys.exit(main(build_parser, run))
