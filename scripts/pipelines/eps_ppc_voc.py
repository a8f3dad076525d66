"""EPS + Pixel-to-Prototype Contrast (Du et al., CVPR 2022, the second baseline; usr922/wseg branch ``esp``) on
PASCAL VOC 2012 + SBD with the branch's values: the EPS network with PPC's projection (``proj_fc``) and contrast
(background threshold 0.10, weight 0.1, prototypes from the top h*w//16 pixels), 10,000 x 2 iterations of batch 8
(the branch steps the optimiser at every inner step: 20,000 SGD steps; 15 epochs of train_aug = 19,830 is the poly
length it used); pseudo masks = dense CRF with one background power (alpha 8, 5 iterations) and argmax, as its
``pseudo_label_gen``; no random walk. Paper: seeds 70.5 train, DeepLab v1 72.3 val with CRF.

    python scripts/run_pipeline.py --config eps_ppc_voc --work_dir runs/eps_ppc_voc --voc12_root VOC2012 \\
        --set cam_train.weights=ilsvrc-cls_rna-a1_cls1000_ep-0001.params"""

_base_ = "_base_/cam_aff_deeplab.py"

dataset = dict(root=None, train_list="train_aug", infer_list="train_aug", eval_list="train", val_list="val")

stages = dict(
    cam_train=dict(args=dict(network="eps_contrast", batch_size=8, max_epoches=15, lr=0.01, wt_dec=5e-4,
                             crop_size=448, resize_long=[448, 768], tau=0.4, lam=0.5, view2_size=128,
                             bg_threshold=0.10, proto_div=16)),
    cam_infer=dict(args=dict(scales=[0.5, 1.0, 1.5, 2.0], out_cam_pred_alpha=0.22, out_crf=None)),
    eval_cam=dict(report=[dict(label="EPS+PPC CAM", split="train")]),
    eval_cam_crf=None,
    aff_prepare=dict(describe="pseudo masks: CRF with alpha 8 (5 iterations) and argmax",
                     args=dict(infer_list="{infer_list}", alphas=[8], crf_iters=5, out_crf=None,
                               la_crf_dir="{work}/pseudo")),
    aff_train=None, aff_infer=None, eval_rw=None,
    eval_pseudo=dict(report=[dict(label="Pseudo masks (CRF alpha 8)", split="train")]),
)
