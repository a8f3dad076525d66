"""DeepLab v1 (LargeFOV) on ResNet-101, trained on EPS pseudo masks.

Published experiment: usr922/wseg segmentation/experiment/EPS_deeplabv1_resnet101 (config.py, train.py, test.py);
what it shares with the other DeepLab experiments (data, SGD schedule, test, CRF) is ``_base_/usr922_deeplab_voc.py``.
Every value is the published one unless a comment says otherwise.
"""
_base_ = "_base_/usr922_deeplab_voc.py"
exp_name = "deeplabv1_resnet101"

pseudo_mask_dir = "crf_5_8_png"    # published <EPS>/store/CRF_pseudo_label/crf_5_8_png

# network (published MODEL_*)
# The published ResNet-101 is PyTorch-Encoding's "deep base" resnet101s (3x3 stem, resnet101s-03a0f310.pth).
# wseg defaults to torchvision's layout (resnet101-5d3b4d8f.pth); set model.stem = "resnet101s" for resnet101s
# weights or to load the published DeepLab checkpoints.
model = dict(
    backbone="resnet101",
    stem="torchvision",
    freeze_backbone_bn=False,      # the published ResNet has no BN freezing (statistics update, momentum 0.1)
    frozen_layers=[],
)
backbone_weights = None            # resnet101-5d3b4d8f.pth (torchvision) or resnet101s-03a0f310.pth (resnet101s)
