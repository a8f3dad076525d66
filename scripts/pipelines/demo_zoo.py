"""The segmentation zoo on the demo (issue #18): the demo's stages as they are (PPC CAMs -> AffinityNet RW + CRF pseudo
masks -> DeepLab v1, whose rows stay for comparison), then mmsegmentation's DeepLabV3+ and PSPNet on the reduced
ResNetV1c from its ImageNet stand-in weights (``weights/standin/resnet_v1c_small.pth``;
``segmentation/configs/demo_{deeplabv3plus,pspnet}_standin.py``), each trained three ways on the demo's train
images: plain cross-entropy on the demo's RW + CRF pseudo masks, PMM's pretended under-fitting loss (PUS, clamp,
beta = k = 0.5 as published for VOC) on the same masks, and cross-entropy on the ground truth (the fully supervised
upper bound; the demo's DeepLab v1 too, with its own test). Every zoo network is tested on val single-scale (mmseg's
mIoU) and with the published ms+flip ratios 0.5-1.75 (mmseg's mIoU(ms+flip)). Run it in the demo's work folder and
the demo's finished stages are skipped:

    python scripts/run_pipeline.py --config demo_zoo --work_dir runs/demo
"""
from wseg.pipeline import segmentation_variant as _variant

_base_ = "demo.py"

_weights = "{repo}/weights/standin/resnet_v1c_small.pth"
_nets = (("dlv3p", "DeepLabV3+", "segmentation/configs/demo_deeplabv3plus_standin.py"),
         ("psp", "PSPNet", "segmentation/configs/demo_pspnet_standin.py"))
_losses = (("ce", "CE on pseudo masks", dict(pseudo_mask_dir="{work}/pseudo")),
           ("pus", "PUS on pseudo masks", dict(pseudo_mask_dir="{work}/pseudo", pus_type="clamp", pus_beta=0.5,
                                               pus_k=0.5)),
           ("gt", "CE on ground truth (upper bound)", dict(pseudo_mask_dir=None)))

# the demo's DeepLab v1 on the ground truth, its own test (MS+flip, + CRF): its upper bound at the demo's budget
stages = dict(
    seg_train_gt=dict(script="segmentation/train.py", describe="DeepLab v1 on the ground truth (upper bound)",
                      args_from="seg_train", args=dict(pseudo_mask_dir=None, out_dir="{work}/seg_gt")),
    seg_test_gt=dict(script="segmentation/test.py", describe="DeepLab v1 (ground truth) on val",
                     args_from="seg_train", args=dict(pseudo_mask_dir=None, out_dir="{work}/seg_gt",
                                                      test_list="{val_list}"),
                     report=[dict(label="DeepLab v1 on ground truth (upper bound)", split="val", metric="miou"),
                             dict(label="DeepLab v1 on ground truth + CRF", split="val", metric="miou_crf")]),
)
for _key, _name, _config in _nets:
    for _suffix, _what, _extra in _losses:
        stages.update(_variant(f"{_key}_{_suffix}", f"{_name} {_what}",
                               dict(config=_config, voc12_root="{root}", train_list="{train_list}",
                                    backbone_weights=_weights, **_extra)))
