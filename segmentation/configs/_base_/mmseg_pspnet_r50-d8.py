"""mmsegmentation's PSPNet on ResNetV1c-50-D8 (mmseg 1.2.2 configs/_base_/models/pspnet_r50-d8.py).

The DeepLabV3+ base's backbone, auxiliary head and loss; decode head PSPHead (in 2048, channels 512, pool scales
1/2/3/6, dropout 0.1): logits at stride 8.
"""
_base_ = "mmseg_deeplabv3plus_r50-d8.py"
model = dict(
    type="pspnet",
    pool_scales=[1, 2, 3, 6],
)
