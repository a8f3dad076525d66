"""PMM (Pseudo-mask Matters, Li et al., ICCV 2021) on PASCAL VOC 2012 + SBD: CAMs -> CVS + PPMG pseudo masks ->
PSPNet with PUS -> one cycle of pseudo masks from it -> PSPNet retrained on them with plain cross-entropy, and PSPNet
with plain CE on the PPMG masks as the PUS baseline. See docs/pmm.md.

    python scripts/run_pipeline.py --config pmm_voc --work_dir runs/pmm_voc --voc12_root VOC2012 \\
        --set cam_train.weights=ilsvrc-cls_rna-a1_cls1000_ep-0001.params \\
        seg_train_ce.backbone_weights=resnet101_v1c-e67eebb6.pth seg_train_pus.backbone_weights=... \\
        seg_train_cyclic.backbone_weights=...

Published values: multi-crop CAMs (scales 0.75-3, crop 448, stride 300; PMM run.py:47-48, infer_multi_crop.py:31),
PPMG alpha 11 (run.py:173), PSPNet 20k iterations at lr 0.005 with PUS clamp 0.5/0.5, its test slide 512/480 +
ratios 0.5-1.75 x flip + CRF on trainaug for the cyclic masks (WSSS_MMSeg run_wsss.sh:13-17, *_cp.py:11-13), the
retraining without PUS. Deviations: the CAM network is SEAM on ResNet-38 trained on whole images (PMM's final CAM
network, ScaleNet-101 SEAM trained on CAM-guided crops, run.py:119-131, is not in wseg); PSPNet on ResNetV1c-101
(PMM: WideResNet-38 / Res2Net-101 / ScaleNet-101); the cyclic step takes the final PUS weights unless
``--set cyclic.ckpt_choice=best_val`` (published: the best val checkpoint, pick_best_pth.py; the report marks it).
Paper: 70.0 val (Res2Net-101), 68.5 (WideResNet-38).
"""

_base_ = "_base_/cam_aff_deeplab.py"

dataset = dict(root=None, train_list="train_aug", infer_list="train_aug", eval_list="train", val_list="val")

_eval = dict(list="{eval_list}", gt_dir="{gt}", classes="{classes}", logfile="{work}/eval_log.txt",
             out_dir="{work}/report", progress=False, type="png")
# PSPNet + PMM's recipe; pus_type "" is plain cross-entropy (the PUS baseline and the cyclic retraining)
_seg = dict(config="segmentation/configs/pspnet_r101-d8_512x512_20k_voc12aug_pus.py", voc12_root="{root}",
            train_list="{train_list}", progress=False)

stages = dict(
    cam_train=dict(args=dict(network="seam")),
    cam_infer=dict(describe="multi-crop CAMs (and CAM + CRF labels)",
                   args=dict(crop_mode="grid", scales=[0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0],
                             crop_size=448, crop_stride=300)),
    eval_cam=dict(report=[dict(label="SEAM multi-crop CAM (argmax, best bg threshold)", split="train")]),
    eval_cam_crf=dict(report=[dict(label="SEAM multi-crop CAM + CRF", split="train")]),
    aff_prepare=None, aff_train=None, aff_infer=None, eval_rw=None, eval_pseudo=None, seg_train=None, seg_test=None,
    ppmg=dict(script="scripts/ppmg.py", describe="CVS + PPMG pseudo masks",
              args=dict(voc12_root="{root}", infer_list="{infer_list}", cam_dir="{work}/cam", out_dir="{work}/ppmg",
                        alpha=11)),
    eval_ppmg=dict(script="scripts/eval.py", args=dict(_eval, predict_dir="{work}/ppmg"),
                   report=[dict(label="CVS + PPMG pseudo masks", split="train")]),
    seg_train_ce=dict(script="segmentation/train.py", describe="PSPNet, plain CE on the PPMG masks (PUS baseline)",
                      args=dict(_seg, pseudo_mask_dir="{work}/ppmg", out_dir="{work}/seg_ce", pus_type="")),
    seg_test_ce=dict(script="segmentation/test.py", describe="PSPNet (CE) slide + MS + flip (+ CRF) on val",
                     args_from="seg_train_ce", args=dict(test_list="{val_list}"),
                     report=[dict(label="PSPNet CE on PPMG masks", split="val", metric="miou"),
                             dict(label="PSPNet CE on PPMG masks + CRF", split="val", metric="miou_crf")]),
    seg_train_pus=dict(script="segmentation/train.py", describe="PSPNet with PUS on the PPMG masks",
                       args=dict(_seg, pseudo_mask_dir="{work}/ppmg", out_dir="{work}/seg_pus")),
    seg_test_pus=dict(script="segmentation/test.py", describe="PSPNet (PUS) slide + MS + flip (+ CRF) on val",
                      args_from="seg_train_pus", args=dict(test_list="{val_list}"),
                      report=[dict(label="PSPNet PUS on PPMG masks", split="val", metric="miou"),
                              dict(label="PSPNet PUS on PPMG masks + CRF", split="val", metric="miou_crf")]),
    cyclic=dict(script="scripts/cyclic_pseudo.py", describe="cyclic pseudo masks: the PUS network relabels train_aug",
                args_from="seg_train_pus", args=dict(out_masks="{work}/cyclic", infer_list="{infer_list}",
                                                     ckpt_choice="last")),
    eval_cyclic=dict(script="scripts/eval.py", args=dict(_eval, predict_dir="{work}/cyclic"),
                     report=[dict(label="Cyclic pseudo masks (one round)", split="train")]),
    seg_train_cyclic=dict(script="segmentation/train.py", describe="PSPNet retrained on the cyclic masks, plain CE",
                          args=dict(_seg, pseudo_mask_dir="{work}/cyclic", out_dir="{work}/seg_cyclic", pus_type="")),
    seg_test_cyclic=dict(script="segmentation/test.py", describe="retrained PSPNet slide + MS + flip (+ CRF) on val",
                         args_from="seg_train_cyclic", args=dict(test_list="{val_list}"),
                         report=[dict(label="PSPNet CE on cyclic masks", split="val", metric="miou"),
                                 dict(label="PSPNet CE on cyclic masks + CRF", split="val", metric="miou_crf")]),
)
