"""mmsegmentation's PASCAL VOC 2012 + SBD ("voc12aug") data and test settings, 512x512 crops.

mmseg 1.2.2 configs/_base_/datasets/pascal_voc12_aug.py (pipelines) and configs/_base_/models/*_r50-d8.py
(SegDataPreProcessor); the 4xb4 configs: 4 GPUs x 4 images = 16 per iteration. mmseg trains on train.txt
(SegmentationClass) + aug.txt (SegmentationClassAug), i.e. the 10,582 "train_aug" images; WSSS trains on pseudo
masks of the same list (pseudo_mask_dir). Test: mmseg's plain single-scale test (Resize to fit 2048x512, whole
image); its ms+flip numbers use test_scales 0.5..1.75 with test_flip (see docs/segmentation_zoo.md for what a
ratio multiplies in mmseg 0.x and 1.x: tta_ratio_of).
"""
data_pipeline = "mmseg"
train_list = "train_aug"
pseudo_mask_dir = None            # none: the ground truth (mmseg's fully supervised setting)
val_list = "val"
num_workers = 4

# RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True), RandomCrop(512, cat_max_ratio=0.75),
# RandomFlip(0.5), PhotoMetricDistortion(), Pad(512) on the uint8 image (img 0, seg 255)
img_scale = [2048, 512]
scale_range = [0.5, 2.0]
crop_size = 512
cat_max_ratio = 0.75
flip_prob = 0.5
photometric = True
pad_before_normalize = True
# SegDataPreProcessor: mean [123.675, 116.28, 103.53], std [58.395, 57.12, 57.375] (0..255, RGB after bgr_to_rgb)
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]

batch_size = 16
seed = 1
sync_bn = True                    # norm_cfg SyncBN(requires_grad=True), norm_eval False
amp = False                       # fp32 as the published mmseg models (AMP: --set amp=True)

# test: Resize(scale=(2048, 512), keep_ratio=True), test_cfg mode='whole', no CRF
test_list = "val"
test_resize = True
test_mode = "whole"
test_scales = [1.0]
test_flip = False
tta_ratio_of = "resized"          # mmseg 0.x MultiScaleFlipAug (the published ms+flip); "original" = mmseg 1.x
crf = False
val_scales = [1.0]
val_flip = False
