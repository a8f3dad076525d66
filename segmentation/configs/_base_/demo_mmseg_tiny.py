"""The synthetic demo's settings for mmseg's recipes (``demo_pspnet_tiny.py``, ``demo_deeplabv3plus_tiny.py``): the
demo's splits, the reduced ResNetV1c (one bottleneck per stage, base_channels 16: stem 8-8-16, stages 64/128/256/512
channels; heads scaled with it) from scratch, the resize target scaled to the 128x96 images (short side 96), 96-pixel
crops, batch 8, 300 iterations, fp32 on the CPU, no workers. Listed after the published recipe in ``_base_``."""
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
