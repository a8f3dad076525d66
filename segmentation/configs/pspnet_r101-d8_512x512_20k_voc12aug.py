"""PSPNet R-101-D8, 512x512 crops, 20k iterations, PASCAL VOC 2012 aug: mmsegmentation's
pspnet_r101-d8_4xb4-20k_voc12aug-512x512.py (ImageNet weights open-mmlab://resnet101_v1c)."""
_base_ = "pspnet_r50-d8_512x512_20k_voc12aug.py"
exp_name = "pspnet_r101-d8_512x512_20k_voc12aug"
model = dict(backbone="resnet101_v1c")
backbone_weights = None           # resnet101_v1c-e67eebb6.pth
