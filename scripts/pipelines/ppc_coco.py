"""PPC on SEAM (Du et al., CVPR 2022) on MS COCO 2014: the multi-stage recipe of ppc_voc.py on COCO train / val
(81 classes) with the CAM network trained on EPS's COCO schedule.

PPC (usr922/wseg) publishes no COCO script; its CAM training here takes the schedule of EPS's COCO script (EPS
``script/coco_eps.sh`` / ``main.py``, the method PPC's esp branch builds on; docs/coco.md): train2014 (the images
with annotations), batch 16, random long side 256-448, crop 321, 256,500 iterations of poly SGD at lr 0.01, weight
decay 5e-4, ResNet-38 from the ImageNet weights. That is an assumption, stated: PPC's own values are VOC ones (8
epochs of batch 8, crop 448, long side 448-768). Everything after the CAM network keeps the published VOC defaults
of its script (multi-scale + flip CAMs, AffinityNet alphas 4 / 24, the random walk with CRF, DeepLab v1 on
ResNet-38, 20k iterations); no COCO values for them are published by PSA / SEAM / PPC. CAMs and pseudo masks are
scored on train (EPS evaluates its COCO pseudo masks on train), DeepLab on val, on the 81 classes with classes absent
from the ground truth left out of the means (``--absent skip``, PMM / ToCo; on the full splits every class is
present, so ``skip``, ``nan`` (EPS) and ``zero`` give the same means). A COCO segmentation network of the zoo can
replace DeepLab v1: ``--set seg_train.config=segmentation/configs/deeplabv3plus_r101-d8_512x512_80k_coco.py``.

    python coco14/make_coco_masks.py --coco_root data/coco --out data/coco/voc81
    python scripts/run_pipeline.py --config ppc_coco --work_dir runs/ppc_coco --voc12_root data/coco/voc81 \\
        --set cam_train.weights=ilsvrc-cls_rna-a1_cls1000_ep-0001.params \\
        aff_train.weights=ilsvrc-cls_rna-a1_cls1000_ep-0001.params seg_train.backbone_weights=...
No published PPC COCO number to compare with (EPS on COCO: pseudo masks 37.15 train with its repo checkpoint,
35.7 val in the paper)."""

_base_ = "_base_/cam_aff_deeplab.py"

dataset = dict(root=None, classes="coco14", train_list="train", infer_list="train", eval_list="train",
               val_list="val")

_coco_eval = dict(classes="{classes}", absent="skip")

stages = dict(
    cam_train=dict(args=dict(network="contrast", batch_size=16, max_iters=256500, crop_size=321,
                             resize_long=[256, 448], lr=0.01, wt_dec=0.0005)),
    eval_cam=dict(args=_coco_eval, report=[dict(label="PPC CAM", split="train")]),
    eval_cam_crf=dict(args=_coco_eval, report=[dict(label="PPC CAM + CRF", split="train")]),
    eval_rw=dict(args=_coco_eval),
    eval_pseudo=dict(args=_coco_eval),
)
