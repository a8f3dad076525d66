"""The demo's DeepLabV3+ (mmsegmentation's deeplabv3plus_r50-d8 recipe) on the reduced ResNetV1c
(``resnet_v1c_small``: deep stem, two bottlenecks per stage, base width 16) from its ImageNet stand-in weights, as
every published DeepLabV3+ starts from ``open-mmlab://resnet50_v1c``. mmseg's pipeline, SGD 0.01 poly to 1e-4, one
parameter group, cross-entropy + auxiliary FCN head at 0.4, whole-image test; the resize target is scaled to the
demo's images (short side 96 instead of 512), 96-pixel crops, batch 8, 1,000 iterations, fp32 on the CPU.
    python segmentation/train.py --config segmentation/configs/demo_deeplabv3plus_standin.py \\
        --voc12_root runs/demo/data --pseudo_mask_dir runs/demo/pseudo \\
        --backbone_weights weights/standin/resnet_v1c_small.pth --out_dir runs/demo/dlv3p_ce
"""
_base_ = "demo_deeplabv3plus_tiny.py"
exp_name = "demo_deeplabv3plus_standin"

model = dict(backbone="resnet_v1c", layers=[2, 2, 2, 2], base_channels=16)
backbone_weights = None            # the pipeline passes weights/standin/resnet_v1c_small.pth
max_iters = 1000
ckpt_every = 250
val_every = 250
