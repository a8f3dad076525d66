"""mmsegmentation's DeepLabV3+ on ResNetV1c-50-D8 (mmseg 1.2.2 configs/_base_/models/deeplabv3plus_r50-d8.py).

ResNetV1c depth 50, strides (1, 2, 1, 1), dilations (1, 1, 2, 4), contract_dilation, SyncBN; decode head
DepthwiseSeparableASPPHead (in 2048, channels 512, dilations 1/12/24/36, c1 256 -> 48, dropout 0.1); auxiliary
FCNHead on layer3 (1024 -> 256, one conv, dropout 0.1, loss weight 0.4); align_corners False; mmseg's
cross-entropy (mean over all pixels).
"""
model = dict(
    type="deeplabv3plus",
    backbone="resnet50_v1c",
    stem="v1c",
    head_dim=None,                # decode channels: 8 x base_channels = 512
    bn_momentum=0.1,              # every BN (mmseg's default)
    freeze_backbone_bn=False,     # norm_eval False
    frozen_layers=[],             # frozen_stages -1
    aspp_rates=[1, 12, 24, 36],
    base_channels=64,
    aux=True,
)
backbone_weights = None           # open-mmlab://resnet50_v1c: resnet50_v1c-2cccc1ad.pth ({'state_dict'}; fc dropped)
aux_weight = 0.4
avg_non_ignore = False
pus_type = ""
