"""Train a DeepLab (v1 LargeFOV / v2 ASPP) on pseudo masks: the segmentation stage of weakly-supervised
semantic segmentation, after the published usr922/wseg ``segmentation/experiment/*/train.py``.

Cross-entropy over the pseudo masks (255 ignored), SGD with lr groups x1/x2/x10/x20 and the poly schedule,
fp16 AMP on GPU, data-parallel under ``torchrun`` (NCCL on GPU, gloo on CPU). A resume checkpoint
``<out_dir>/last.pth`` is written atomically every ``ckpt_every`` iterations; re-running the same command continues
from it after a crash. Validation mIoU every ``val_every`` iterations; ``train.log`` and ``scalars.jsonl``.

    python segmentation/train.py --config segmentation/configs/deeplabv1_resnet38.py \\
        --voc12_root VOCdevkit/VOC2012 --pseudo_mask_dir out_rw \\
        --backbone_weights ilsvrc-cls_rna-a1_cls1000_ep-0001.params
    torchrun --nproc_per_node 4 segmentation/train.py --config ... --set batch_size=12
"""
import sys

from wseg.cli import add_bool_flag, main
from wseg.pipeline import load_script


def config_module():
    """``segmentation/config.py``, imported by path (this folder is not a package)."""
    return load_script("segmentation/config.py")


def build_parser():
    p = config_module().ConfigArgumentParser(description=__doc__)
    add_bool_flag(p, "--progress", "show a progress bar", default=True)
    return p


def run(args) -> dict:
    """Train as configured; returns ``{"weights", "iters", "val_miou", "best_miou", "iters_per_s", ...}``."""
    from wseg.segmentation import train

    cfg = config_module().config_from_args(args)
    return train(cfg, progress=args.progress)


if __name__ == "__main__":
    sys.exit(main(build_parser, run))
