"""DeepLabV3+ R-50-D8, 512x512 crops, 20k iterations, PASCAL VOC 2012 aug: mmsegmentation's
deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py (0.x name deeplabv3plus_r50-d8_512x512_20k_voc12aug.py).

    python segmentation/train.py --config segmentation/configs/deeplabv3plus_r50-d8_512x512_20k_voc12aug.py \
        --voc12_root VOC2012 --backbone_weights resnet50_v1c-2cccc1ad.pth [--pseudo_mask_dir PSEUDO]
"""
_base_ = ["_base_/mmseg_deeplabv3plus_r50-d8.py", "_base_/mmseg_voc12aug_512x512.py", "_base_/mmseg_schedule_20k.py"]
exp_name = "deeplabv3plus_r50-d8_512x512_20k_voc12aug"
