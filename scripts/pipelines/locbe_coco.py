"""LOC-BE on MS COCO 2014 with the published values of whn786/LOC-BE scripts/dist_train_coco_seg_neg.py and
tools/infer_seg_coco_ddp.py: ViT-B/16 from the ImageNet-21k/1k weights, COCO train, 80 000 iterations of 8 images
(2 per GPU on 4 GPUs, README; 224 crops), PolyWarmupAdamW (6e-5, heads x10, weight decay 0.01, 1500 warm-up
iterations), background scores high 0.65 / low 0.25 / token labels 0.45, the three phases (cls + aux up to 8000;
+ 0.1 seg + 0.05 reg on the aux CAM's pseudo labels up to 12 000; then + 0.2 seg + BE + LOC + 0.3 L_sc); inference
on the image resized to 448, scales 1, 1.25, 1.5, CRF as VOC; scored on val (81 classes, classes absent from the
ground truth skipped as the COCO evaluations do).

    python scripts/run_pipeline.py --config locbe_coco --work_dir runs/locbe_coco --voc12_root data/coco/voc81 \\
        --set wsss_train.weights=vit_base_patch16_224.orig_in21k_ft_in1k.pth
The root: COCO in the VOC layout of ``coco14/make_coco_masks.py`` (docs/coco.md; lists train / val). The published
script cannot run as released (undefined ``cachu`` and ``attn_mask``); see docs/locbe.md."""

_base_ = "_base_/single_stage.py"

dataset = dict(root=None, classes="coco14", train_list="train", infer_list="val", eval_list="val", val_list="val")

stages = dict(
    wsss_train=dict(args=dict(network="locbe", session_name="{work}/models/locbe_coco", schedule="coco",
                              crop_size=224, max_iters=80000, batch_size=8, high_thre=0.65, low_thre=0.25,
                              bkg_thre=0.45, w_seg=0.2, coco_phases=[8000, 12000], w_seg_mid=0.1)),
    infer_train=None,
    eval_train=None,
    eval_train_crf=None,
    infer_val=dict(args_from=None, script="scripts/wsss_infer.py",
                   args=dict(voc12_root="{root}", classes="{classes}", weights="{work}/models/locbe_coco.pth",
                             infer_list="{val_list}", procedure="coco", out_pred="{work}/pred_val",
                             out_crf="{work}/pred_val_crf")),
    eval_val=dict(report=[dict(label="LOC-BE seg", split="val")]),
    eval_val_crf=dict(report=[dict(label="LOC-BE seg + CRF", split="val")]),
)
