"""DeepLabV3+ R-101-D8, 512x512 crops, 80k iterations, MS COCO 2014 (81 classes): the R-50 COCO config
(deeplabv3plus_r50-d8_512x512_80k_coco.py, its stated optimiser deviation included) on ResNetV1c-101, ImageNet
weights open-mmlab://resnet101_v1c (jungletada/mmseg_wsss deeplabv3plus_r101-d8_80k_mscoco-512x512.py)."""
_base_ = "deeplabv3plus_r50-d8_512x512_80k_coco.py"
exp_name = "deeplabv3plus_r101-d8_512x512_80k_coco"
model = dict(backbone="resnet101_v1c")
backbone_weights = None           # resnet101_v1c-e67eebb6.pth
