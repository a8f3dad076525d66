"""What usr922/wseg's DeepLab experiments share (``segmentation/experiment/*_deeplabv{1,2}_*/config.py``,
``train.py``, ``test.py``): VOC 2012 train_aug with pseudo masks (255 = ignore), SGD with the parameter groups lr x1
/ x2 / x10 / x20 and poly 0.9 over 20k iterations, multi-scale + flip test with the dense CRF. Every value is the
published one; an experiment sets its network (``model``), its pseudo masks and its ImageNet weights."""
_base_ = "dense_crf_deeplabv2.py"

# data (published DATA_*): VOC 2012 train_aug ("trainaug"), 255 = ignore
train_list = "train_aug"
val_list = "val"
num_workers = 4
crop_size = 448
scale_range = [0.5, 1.5]
flip_prob = 0.5
hsv_jitter = [10, 10, 10]          # DATA_RANDOM_H / _S / _V

# network (published MODEL_*): the LargeFOV head at its published width
model = dict(type="deeplabv1", head_dim=512, bn_momentum=0.0003)   # TRAIN_BN_MOM (head BatchNorm)

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
# The published test.py calls DenseCRF.dense_crf_from_deeplabv2, which its DenseCRF.py does not contain; the
# name points at the DeepLab v2 (ResNet-101, VOC) CRF of deeplab-pytorch: _base_/dense_crf_deeplabv2.py.
