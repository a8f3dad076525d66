"""DeepLab v1 (LargeFOV) on ResNet-38, trained on SEAM/PPC pseudo masks.

Published experiment: usr922/wseg segmentation/experiment/SEAM_deeplabv1_resnet38 (config.py, train.py, test.py).
Every value below is the published one unless a comment says otherwise.
"""
exp_name = "deeplabv1_resnet38"

# data (published DATA_*): VOC 2012 train_aug ("trainaug") with random-walk pseudo masks, 255 = ignore
train_list = "train_aug"
pseudo_mask_dir = "rw_train_aug"   # published <SEAM>/store/AffinityNet/rw_train_aug: scripts/aff_infer.py --out_rw
val_list = "val"
num_workers = 4
crop_size = 448
scale_range = [0.5, 1.5]
flip_prob = 0.5
hsv_jitter = [10, 10, 10]          # DATA_RANDOM_H / _S / _V

# network (published MODEL_*)
model = dict(
    type="deeplabv1",
    backbone="resnet38",
    head_dim=512,
    bn_momentum=0.0003,            # TRAIN_BN_MOM (head BatchNorm)
    freeze_backbone_bn=True,       # resnet38d Net.train(): backbone BN in eval mode, fixed
    frozen_layers=["conv1a"],      # resnet38d Net.not_training
)
backbone_weights = None            # ilsvrc-cls_rna-a1_cls1000_ep-0001.params (MXNet ImageNet ResNet-38)

# optimisation (published TRAIN_*): SGD, groups lr x1 / x2 / x10 / x20, poly 0.9
lr = 0.001
momentum = 0.9
weight_decay = 0.0005
power = 0.9
batch_size = 10
max_iters = 20000
seed = 1

# wseg additions: checkpoints and validation during training
ckpt_every = 1000
val_every = 2000

# test (published TEST_*): multi-scale + flip, dense CRF
test_list = "val"
test_scales = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
test_flip = True
crf = True
# The published test.py calls DenseCRF.dense_crf_from_deeplabv2, which its DenseCRF.py does not contain; the
# name points at the DeepLab v2 (ResNet-101, VOC) CRF of deeplab-pytorch, whose parameters these are.
crf_iters = 10
crf_pos_w = 3
crf_pos_xy_std = 1
crf_bi_w = 4
crf_bi_xy_std = 67
crf_bi_rgb_std = 3
