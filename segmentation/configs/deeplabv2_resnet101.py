"""DeepLab v2 (ASPP, rates 6/12/18/24) on ResNet-101, trained on EPS pseudo masks.

Published experiment: usr922/wseg segmentation/experiment/EPS_deeplabv2_resnet101 (config.py, test.py; it trains
with the train.py of the DeepLab v1 experiments). The published "deeplabv2" head is lib/net/operators/ASPP.py:
four atrous 3x3 branches + an image-pooling branch (MODEL_ASPP_HASGLOBAL), 1x1 fusion to 256 channels
(MODEL_ASPP_OUTDIM), dropout, classifier.
"""
_base_ = "deeplabv1_resnet101.py"
exp_name = "deeplabv2_resnet101"

model = dict(
    type="deeplabv2",
    head_dim=256,                  # MODEL_ASPP_OUTDIM
    aspp_rates=[6, 12, 18, 24],
    aspp_global=True,              # MODEL_ASPP_HASGLOBAL
)
# MODEL_BACKBONE_DEEPBASE = True in the published config: see model.stem in deeplabv1_resnet101.py
