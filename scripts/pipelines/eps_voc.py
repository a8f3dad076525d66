"""EPS (Lee et al., CVPR 2021, "Railroad is not a train") on PASCAL VOC 2012 + SBD with its published values
(halbielee/EPS ``script/voc12_eps.sh``): ResNet-38 with C+1 maps (background last) trained on image labels and
saliency maps, 20,000 iterations of batch 8; its CAM PNGs (background score 0.20, no CRF) are the pseudo masks that
DeepLab trains on. No AffinityNet. Saliency: the PFAN maps EPS distributes, in ``<root>/SALImages`` (or pass
``--set cam_train.saliency_root=DIR``). Paper: pseudo masks 71.6 train; the released checkpoint's CAM PNGs 69.22.

    python scripts/run_pipeline.py --config eps_voc --work_dir runs/eps_voc --voc12_root VOC2012 \\
        --set cam_train.weights=ilsvrc-cls_rna-a1_cls1000_ep-0001.params"""

_base_ = "_base_/cam_aff_deeplab.py"

dataset = dict(root=None, train_list="train_aug", infer_list="train_aug", eval_list="train", val_list="val")

stages = dict(
    cam_train=dict(args=dict(network="eps", batch_size=8, max_iters=20000, lr=0.01, wt_dec=5e-4, crop_size=448,
                             resize_long=[256, 512], tau=0.4, lam=0.5)),
    cam_infer=dict(describe="multi-scale + flip CAMs; their PNGs (background 0.20) are the pseudo masks",
                   args=dict(scales=[0.5, 1.0, 1.5, 2.0], out_cam_pred_alpha=0.20, out_crf=None)),
    eval_cam=dict(report=[dict(label="EPS CAM", split="train")]),
    eval_cam_crf=None, aff_prepare=None, aff_train=None, aff_infer=None, eval_rw=None,
    eval_pseudo=dict(args=dict(predict_dir="{work}/cam_png"),
                     report=[dict(label="Pseudo masks (EPS CAM PNG, bg 0.20)", split="train")]),
    seg_train=dict(args=dict(pseudo_mask_dir="{work}/cam_png")),
)
