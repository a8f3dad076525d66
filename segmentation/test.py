"""Multi-scale + flip inference of a trained segmentation network, optional dense CRF, palette PNGs and the
evaluation, after the published usr922/wseg ``segmentation/experiment/*/test.py`` (see wseg/segmentation/test.py);
for mmseg's networks mmseg's test (whole / slide, TTA; docs/segmentation_zoo.md), e.g. an mmseg checkpoint:

    python segmentation/test.py --config segmentation/configs/deeplabv3plus_r50-d8_512x512_20k_voc12aug.py \\
        --voc12_root VOC2012 --ckpt mmseg.pth --set test_scales=[1.0] test_flip=False crf=False pred_dir=OUT

    python segmentation/test.py --config segmentation/configs/deeplabv1_resnet38.py --voc12_root VOC2012 \\
        --ckpt runs/segmentation/deeplabv1_resnet38/deeplabv1_resnet38_voc12_itr20000_all.pth
"""
import sys

from wseg.cli import add_bool_flag, main
from wseg.segmentation.config import build_parser as config_parser, config_from_args


def build_parser():
    p = config_parser(__doc__)
    p.add_argument("--ckpt", default=None,
                   help="network weights: our final/best .pth, last.pth, or a published DeepLab .pth "
                        "(default: the config's final weights in out_dir)")
    add_bool_flag(p, "--eval", "evaluate a labelled split against its ground truth", default=True)
    add_bool_flag(p, "--progress", "show progress bars", default=True)
    return p


def check(args) -> None:
    """One-line errors for the config's test values before anything is read (the pipeline calls it before its
    first stage)."""
    from wseg.segmentation.checks import check_test_config

    check_test_config(config_from_args(args))


def run(args) -> dict:
    """Predict (and evaluate); see :func:`wseg.segmentation.test.run_test`."""
    from wseg.segmentation.test import run_test

    return run_test(config_from_args(args), args.ckpt, args.eval, args.progress)


if __name__ == "__main__":
    sys.exit(main(build_parser, run))
