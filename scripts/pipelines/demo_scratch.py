"""The from-scratch demo of earlier versions (before the ImageNet stand-in weights): the embedded default's data and
stages (``demo.py``) with reduced ResNet-38 backbones trained from scratch on CPU: the PPC CAM network at 1/8 width
without dropout or colour jitter, 20 epochs of classification warm-up before the SEAM+PPC terms join, poly AdamW;
AffinityNet as in ``demo.py``, walked with background 0.2, 2^4 steps, beta 16; DeepLab v1 on the CAM network's
backbone with the published x10 head multiplier. The EPS, PMM and COCO demos and the SEAM-vs-PPC comparison build on
this one (their README tables were measured with it). Every value is the named script's own key.

    python scripts/run_pipeline.py --config demo_scratch --work_dir runs/demo_scratch"""

_base_ = ["demo.py"]

stages = dict(
    cam_train=dict(args=dict(weights=None, dropout=False, max_epoches=30, cls_warmup_epochs=20, crop_size=96,
                             resize_long=[96, 144], resize_scale=None, color_jitter=[0, 0, 0, 0], view2_size=64,
                             lr=0.001, head_lr_mult=None, optimizer="adamw", wt_dec=0.0001)),
    aff_infer=dict(args=dict(bg_score=0.2)),
    seg_train=dict(args=dict(config="segmentation/configs/demo_resnet38.py")),
    # the published test, as this recipe was measured (no image-label classifier)
    label_train=None,
    seg_test=dict(args=dict(label_filter=None, label_filter_check=None, label_filter_powers=[], bg_scale=1.0),
                  report=[dict(label="DeepLab", split="val", metric="miou"),
                          dict(label="DeepLab + CRF", split="val", metric="miou_crf"),
                          dict(label="DeepLab given the true image labels (diagnostic)", split="val",
                               metric="miou_true_labels")]),
)
