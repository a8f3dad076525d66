"""The demo's DeepLabV3+ (mmsegmentation's deeplabv3plus_r50-d8 recipe) on the reduced ResNetV1c from its ImageNet
stand-in weights (``_base_/demo_resnet_v1c_small.py``). mmseg's pipeline, SGD 0.01 poly to 1e-4, one parameter
group, cross-entropy + auxiliary FCN head at 0.4, whole-image test; the resize target is scaled to the demo's images
(short side 96 instead of 512), 96-pixel crops, batch 8, 1,000 iterations, fp32 on the CPU.
    python segmentation/train.py --config segmentation/configs/demo_deeplabv3plus_standin.py \\
        --voc12_root runs/demo/data --pseudo_mask_dir runs/demo/pseudo \\
        --backbone_weights weights/standin/resnet_v1c_small.pth --out_dir runs/demo/dlv3p_ce
"""
_base_ = ["demo_deeplabv3plus_tiny.py", "_base_/demo_resnet_v1c_small.py"]
exp_name = "demo_deeplabv3plus_standin"
