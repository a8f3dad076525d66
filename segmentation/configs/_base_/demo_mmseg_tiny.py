"""The synthetic demo's settings for mmseg's recipes (``demo_pspnet_tiny.py``, ``demo_deeplabv3plus_tiny.py``): the
demo's run settings (``demo_cpu.py``) and the reduced ResNetV1c (one bottleneck per stage, base_channels 16: stem
8-8-16, stages 64/128/256/512 channels; heads scaled with it) from scratch, the resize target scaled to the 128x96
images (short side 96), no SyncBN. Listed after the published recipe in ``_base_``."""
_base_ = "demo_cpu.py"

model = dict(backbone="resnet_v1c", layers=[1, 1, 1, 1], base_channels=16)
backbone_weights = None

img_scale = [512, 96]
sync_bn = False
