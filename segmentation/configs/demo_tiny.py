"""Tiny CPU demo of the DeepLab v1 recipe for the synthetic dataset (wseg.data.synthetic, 128x96 images).

The published DeepLab v1 set-up (deeplabv1_resnet101.py: LargeFOV head, lr groups x1/x2/x10/x20, poly, SGD momentum
0.9, MS+flip test with CRF) on the reduced ResNet (one bottleneck per stage, torchvision names) trained from
scratch, with the demo's run settings (``_base_/demo_cpu.py``: small crops, few iterations, no AMP). The 1/16-width
ResNet-38 (resnet38_tiny), from scratch or from the demo's CAM network, does not learn dense prediction in a few
hundred iterations; this one reaches about 36 % val mIoU on ground-truth masks of the 200-image demo set in 300
iterations (about 3.5 min on one core).
Pass the dataset and pseudo masks on the command line, e.g.
    python segmentation/train.py --config segmentation/configs/demo_tiny.py --voc12_root data/toy_voc \\
        --pseudo_mask_dir runs/demo/pseudo
"""
_base_ = ["deeplabv1_resnet101.py", "_base_/demo_cpu.py"]
exp_name = "demo_tiny"

model = dict(
    backbone="resnet_tiny",
    head_dim=64,
    bn_momentum=0.1,               # few iterations: let the head BN statistics follow the data
)
backbone_weights = None

lr = 0.01
test_scales = [0.75, 1.0, 1.25]
