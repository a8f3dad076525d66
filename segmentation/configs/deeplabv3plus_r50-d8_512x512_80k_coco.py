"""DeepLabV3+ R-50-D8, 512x512 crops, 80k iterations, MS COCO 2014 (81 classes), on pseudo masks of train.

Model, data and iterations of the OpenMMLab WSSS project's COCO config (jungletada/mmseg_wsss
configs/deeplabv3plus/deeplabv3plus_r50-d8_80k_mscoco-512x512.py, mmseg 1.2.2: mmseg's deeplabv3plus_r50-d8 with
81 classes on both heads, configs/_base_/datasets/mscoco.py, 80k iterations) and mmseg's schedule_80k optimiser (SGD
0.01, momentum 0.9, wd 5e-4, poly 0.9 to 1e-4), batch 16 as mmseg's 4x4.
Deviation, stated: that COCO config replaces the optimiser with AdamW (lr 1e-4, betas 0.9/0.999, wd 0.01, lr x10 on
the heads) under a 1,500-iteration linear warm-up and poly power 1.0 to 0, batch 15 on one GPU; wseg's segmentation
trainer has SGD only, so this config keeps mmseg's own 80k schedule. No published WSSS number comes with either
(that project's README leaves its COCO WSSS row blank; its fully supervised run: 58.85 / 59.75 ms+flip with R-101).
RS+EPM's COCO 46.4 is a DeepLabV3+ R-101 whose training code is not published.

    python segmentation/train.py --config segmentation/configs/deeplabv3plus_r50-d8_512x512_80k_coco.py \\
        --voc12_root data/coco/voc81 --pseudo_mask_dir PSEUDO --backbone_weights resnet50_v1c-2cccc1ad.pth
"""
_base_ = ["_base_/mmseg_deeplabv3plus_r50-d8.py", "_base_/mmseg_coco14_512x512.py", "_base_/mmseg_schedule_80k.py"]
exp_name = "deeplabv3plus_r50-d8_512x512_80k_coco"
tta_ratio_of = "original"         # mmseg 1.x TestTimeAug: Resize(scale_factor=r) of the original image
