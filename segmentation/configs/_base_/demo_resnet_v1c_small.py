"""The synthetic demo's mmseg networks on the reduced ResNetV1c (``resnet_v1c_small``: deep stem, two bottlenecks
per stage, base width 16) from its ImageNet stand-in weights, as every published DeepLabV3+ / PSPNet starts from
``open-mmlab://resnet50_v1c``: 1,000 iterations (the demo configs' crop 96, batch 8 and scaled resize stay)."""
model = dict(backbone="resnet_v1c", layers=[2, 2, 2, 2], base_channels=16)
backbone_weights = None            # the pipeline passes weights/standin/resnet_v1c_small.pth
max_iters = 1000
ckpt_every = 250
val_every = 250
