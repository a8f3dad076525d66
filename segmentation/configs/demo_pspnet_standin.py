"""The demo's PSPNet (mmsegmentation's pspnet_r50-d8 recipe, PMM's network) on the reduced ResNetV1c from its
ImageNet stand-in weights (``_base_/demo_resnet_v1c_small.py``); everything else as
``demo_deeplabv3plus_standin.py`` (mmseg's pipeline and schedule, resize target scaled to the demo's images, crop 96,
batch 8, 1,000 iterations).
    python segmentation/train.py --config segmentation/configs/demo_pspnet_standin.py \\
        --voc12_root runs/demo/data --pseudo_mask_dir runs/demo/pseudo \\
        --backbone_weights weights/standin/resnet_v1c_small.pth --out_dir runs/demo/psp_ce
"""
_base_ = ["demo_pspnet_tiny.py", "_base_/demo_resnet_v1c_small.py"]
exp_name = "demo_pspnet_standin"
