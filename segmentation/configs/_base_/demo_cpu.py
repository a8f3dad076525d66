"""The synthetic demo's run settings shared by its tiny segmentation configs (``demo_tiny.py``, the mmseg ones via
``demo_mmseg_tiny.py``): the demo's splits, the pipeline's pseudo masks (none: the ground truth), 96-pixel crops,
batch 8, 300 iterations with checkpoints and validation every 100, fp32 on the CPU, no loader or CRF workers.
Listed after the published recipe in ``_base_``."""
train_list = "train"
val_list = "val"
test_list = "val"
pseudo_mask_dir = None             # none: train on the ground truth; the pipeline passes its pseudo masks
num_workers = 0

crop_size = 96
batch_size = 8
max_iters = 300
ckpt_every = 100
val_every = 100
log_every = 50
device = "cpu"
amp = False
crf_workers = 0
