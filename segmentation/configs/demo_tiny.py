"""Tiny CPU demo of the DeepLab v1 / ResNet-38 recipe for the synthetic dataset (wseg.data.synthetic).

Same pipeline as deeplabv1_resnet38.py with a 1/16-width ResNet-38 trained from scratch, small crops, few
iterations, no AMP. Pass the dataset and pseudo masks on the command line, e.g.
    python segmentation/train.py --config segmentation/configs/demo_tiny.py --voc12_root data/toy_voc \\
        --pseudo_mask_dir runs/demo/rw --train_list train --val_list val
"""
base = "deeplabv1_resnet38.py"
exp_name = "demo_tiny"

train_list = "train"
val_list = "val"
test_list = "val"
pseudo_mask_dir = None             # none: train on the ground truth; the pipeline passes its pseudo masks
num_workers = 0

backbone = "resnet38_tiny"
head_dim = 64
bn_momentum = 0.1                  # few iterations: let the head BN statistics follow the data
backbone_weights = None

crop_size = 64
lr = 0.01
batch_size = 4
max_iters = 60
ckpt_every = 20
val_every = 20
log_every = 10
device = "cpu"
amp = False

test_scales = [0.75, 1.0, 1.25]
crf_workers = 0
