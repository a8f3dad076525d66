"""MS COCO 2014 (81 classes: background + the 80 categories) on mmsegmentation's data and test settings, 512x512
crops: the training pipeline of the VOC base (RandomResize 2048x512 x 0.5-2.0, RandomCrop 512 with cat_max_ratio
0.75, flip, PhotoMetricDistortion, pad), which COCO configs use unchanged (jungletada/mmseg_wsss
configs/_base_/datasets/mscoco.py; Eli-YiLi/WSSS_MMSeg configs/_base_/datasets/ms_coco_wsss.py over
pascal_voc12.py). The root: COCO converted by coco14/make_coco_masks.py (docs/coco.md) or any layout wseg reads;
lists train / val (82,081 / 40,137 images with annotations); WSSS trains on pseudo masks of train
(pseudo_mask_dir). Test: whole image resized to fit 2048x512, single scale; the ms+flip option is the same six
ratios 0.5..1.75 x flip as VOC (test_scales / test_flip). Evaluated on the 81 classes with classes absent from the
ground truth left out (eval ``--absent auto``; on COCO val every class is present)."""
_base_ = "mmseg_voc12aug_512x512.py"
classes = "coco14"
train_list = "train"
val_list = "val"
test_list = "val"
