"""PSPNet R-101-D8 with PMM's PUS on COCO pseudo masks: the recipe of pspnet_r50-d8_512x512_40k_coco_pus.py on
ResNetV1c-101, ImageNet weights open-mmlab://resnet101_v1c."""
_base_ = "pspnet_r50-d8_512x512_40k_coco_pus.py"
exp_name = "pspnet_r101-d8_512x512_40k_coco_pus"
model = dict(backbone="resnet101_v1c")
backbone_weights = None           # resnet101_v1c-e67eebb6.pth
