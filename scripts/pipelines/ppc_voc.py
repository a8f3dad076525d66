"""PPC on SEAM (Du et al., CVPR 2022) on PASCAL VOC 2012 + SBD, every stage with its published defaults:
ResNet-38 CAM network from the ImageNet weights (train_aug, 8 epochs, batch 8), CAMs, AffinityNet (alphas 4/24) and
the random walk with CRF pseudo masks of train_aug (each scored on VOC train, as the papers report), DeepLab v1 on
ResNet-38 trained on them and tested on val.

    python scripts/run_pipeline.py --config ppc_voc --work_dir runs/ppc_voc --voc12_root VOC2012
Pass the ImageNet weights with --set cam_train.weights=ilsvrc-cls_rna-a1_cls1000_ep-0001.params
aff_train.weights=ilsvrc-cls_rna-a1_cls1000_ep-0001.params seg_train.backbone_weights=...; paper: CAM 61.5 (train),
pseudo masks 69.2 (train), DeepLab v1 67.7 (val)."""

_base_ = "_base_/cam_aff_deeplab.py"

dataset = dict(root=None, train_list="train_aug", infer_list="train_aug", eval_list="train", val_list="val")

stages = dict(
    cam_train=dict(args=dict(network="contrast")),
    eval_cam=dict(report=[dict(label="PPC CAM", split="train")]),
    eval_cam_crf=dict(report=[dict(label="PPC CAM + CRF", split="train")]),
)
