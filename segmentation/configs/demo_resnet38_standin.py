"""The demo's DeepLab v1 when its CAM network was fine-tuned from the ImageNet stand-in weights (``make demo``):
``demo_resnet38.py`` with the published ResNet-38 BatchNorm handling (``deeplabv1_resnet38.py``: backbone BN in eval
mode, fixed, as the CAM network kept it) and the heads' lr multiplier scaled with the backbone's width (x80 = the
published x10 x 4,096 / 512 features; see the README's stand-in section). Frozen BN scored 43.3 / 45.1 (MS+flip /
+CRF) on the demo's val split against 39.5 / 39.8 with live BN (same pseudo masks, 1,000 iterations).
    python segmentation/train.py --config segmentation/configs/demo_resnet38_standin.py --voc12_root runs/demo/data \\
        --set pseudo_mask_dir=runs/demo/pseudo backbone_weights=runs/demo/models/cam.pth out_dir=runs/demo/seg
"""
_base_ = "demo_resnet38.py"
exp_name = "demo_resnet38_standin"

model = dict(freeze_backbone_bn=True)
head_lr_mult = 80.0
