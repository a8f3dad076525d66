"""CPU demo of the DeepLab v1 / ResNet-38 recipe (SEAM_deeplabv1_resnet38) for the synthetic dataset.

The published set-up (deeplabv1_resnet38.py: LargeFOV head, lr groups x1/x2/x10/x20, poly, lr 0.001, SGD momentum
0.9, MS+flip test with CRF) on the 1/8-width ResNet-38 (resnet38_small), with small crops, 1,000 iterations and
live backbone BatchNorm. The demo settings (splits, crops, batch, CPU, test scales) come from demo_tiny.py: its
published base, deeplabv1_resnet101.py, is the same v1 recipe as deeplabv1_resnet38.py except for the backbone
keys, which are all set here. There are no ImageNet weights here, so the backbone starts from the demo's trained
CAM network (the same backbone; its CAM heads are ignored): the role the ImageNet checkpoint plays in the published
recipe. The pipeline passes the CAM weights and the pseudo masks, e.g.
    python segmentation/train.py --config segmentation/configs/demo_resnet38.py --voc12_root runs/demo/data \\
        --set pseudo_mask_dir=runs/demo/pseudo backbone_weights=runs/demo/models/cam.pth out_dir=runs/demo/seg
"""
_base_ = "demo_tiny.py"
exp_name = "demo_resnet38"

model = dict(
    backbone="resnet38_small",
    frozen_layers=[],
    freeze_backbone_bn=False,      # the CAM backbone was trained with live BatchNorm; let it adapt here too
    head_dim=128,
)
backbone_weights = None            # the pipeline passes its CAM network (models/cam.pth)

lr = 0.001
max_iters = 1000
ckpt_every = 250
val_every = 250
