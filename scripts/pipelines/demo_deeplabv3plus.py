"""The demo ending in DeepLabV3+ instead of DeepLab v1 (issue #18): the demo's stages (PPC CAMs -> AffinityNet RW + CRF
pseudo masks) as they are, then mmsegmentation's DeepLabV3+ on the reduced ResNetV1c from its ImageNet stand-in
weights (``segmentation/configs/demo_deeplabv3plus_standin.py``, ``weights/standin/resnet_v1c_small.pth``) trained
on the pseudo masks with mmseg's cross-entropy, tested on val single-scale and with the published ms+flip ratios.
The stage names are demo_zoo's, so the two configs share a work folder (demo_zoo adds PSPNet, PUS and the
ground-truth bounds):

    python scripts/run_pipeline.py --config demo_deeplabv3plus --work_dir runs/demo
"""
from wseg.pipeline import segmentation_variant as _variant

_base_ = "demo.py"

stages = dict(
    seg_train=None, seg_test=None, label_train=None,
    **_variant("dlv3p_ce", "DeepLabV3+ CE on pseudo masks",
               dict(config="segmentation/configs/demo_deeplabv3plus_standin.py", voc12_root="{root}",
                    train_list="{train_list}", backbone_weights="{repo}/weights/standin/resnet_v1c_small.pth",
                    pseudo_mask_dir="{work}/pseudo")),
)
