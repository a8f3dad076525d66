"""DeepLab v1 (LargeFOV) on ResNet-101, trained on EPS pseudo masks.

Published experiment: usr922/wseg segmentation/experiment/EPS_deeplabv1_resnet101 (config.py, train.py, test.py).
Every value below is the published one unless a comment says otherwise.
"""
exp_name = "deeplabv1_resnet101"

# data (published DATA_*)
train_list = "train_aug"
pseudo_mask_dir = "crf_5_8_png"    # published <EPS>/store/CRF_pseudo_label/crf_5_8_png
val_list = "val"
num_workers = 4
crop_size = 448
scale_range = [0.5, 1.5]
flip_prob = 0.5
hsv_jitter = [10, 10, 10]

# network (published MODEL_*)
# The published ResNet-101 is PyTorch-Encoding's "deep base" resnet101s (3x3 stem, resnet101s-03a0f310.pth).
# wseg defaults to torchvision's layout (resnet101-5d3b4d8f.pth); set model.stem = "resnet101s" for resnet101s
# weights or to load the published DeepLab checkpoints.
model = dict(
    type="deeplabv1",
    backbone="resnet101",
    stem="torchvision",
    head_dim=512,
    bn_momentum=0.0003,
    freeze_backbone_bn=False,      # the published ResNet has no BN freezing (statistics update, momentum 0.1)
    frozen_layers=[],
)
backbone_weights = None            # resnet101-5d3b4d8f.pth (torchvision) or resnet101s-03a0f310.pth (resnet101s)

# optimisation (published TRAIN_*)
lr = 0.001
momentum = 0.9
weight_decay = 0.0005
power = 0.9
batch_size = 10
max_iters = 20000
seed = 1

ckpt_every = 1000
val_every = 2000

# test (published TEST_*)
test_list = "val"
test_scales = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
test_flip = True
crf = True
# dense_crf_from_deeplabv2 (not in the published DenseCRF.py): deeplab-pytorch's DeepLab v2 VOC parameters
crf_iters = 10
crf_pos_w = 3
crf_pos_xy_std = 1
crf_bi_w = 4
crf_bi_xy_std = 67
crf_bi_rgb_std = 3
