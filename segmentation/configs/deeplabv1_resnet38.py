"""DeepLab v1 (LargeFOV) on ResNet-38, trained on SEAM/PPC pseudo masks.

Published experiment: usr922/wseg segmentation/experiment/SEAM_deeplabv1_resnet38 (config.py, train.py, test.py);
what it shares with the other DeepLab experiments (data, SGD schedule, test, CRF) is ``_base_/usr922_deeplab_voc.py``.
Every value is the published one unless a comment says otherwise.
"""
_base_ = "_base_/usr922_deeplab_voc.py"
exp_name = "deeplabv1_resnet38"

pseudo_mask_dir = "rw_train_aug"   # published <SEAM>/store/AffinityNet/rw_train_aug: scripts/aff_infer.py --out_rw

# network (published MODEL_*)
model = dict(
    backbone="resnet38",
    freeze_backbone_bn=True,       # resnet38d Net.train(): backbone BN in eval mode, fixed
    frozen_layers=["conv1a"],      # resnet38d Net.not_training
)
backbone_weights = None            # ilsvrc-cls_rna-a1_cls1000_ep-0001.params (MXNet ImageNet ResNet-38)
