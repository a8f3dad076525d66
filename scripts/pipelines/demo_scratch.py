"""Embedded default (`make demo`): the synthetic VOC-format dataset (easy preset, 300 train / 60 val images),
reduced ResNet-38 backbones trained from scratch on CPU (no ImageNet weights here): the PPC CAM network at 1/8
width without dropout or colour jitter, 20 epochs of classification warm-up before the SEAM+PPC terms join, poly
AdamW; AffinityNet at 1/16 width on the images resized x1.5-2 (x2 at inference: the 1/8 maps of 128x96 images are
too coarse to walk on), walked with background 0.2, 2^4 steps, beta 16; DeepLab v1 on the CAM network's backbone
(the stand-in for ImageNet weights). Every value is the named script's own key."""

_base_ = ["_base_/cam_aff_deeplab.py", "_base_/toy_data.py"]

stages = dict(
    data=dict(args=dict(num_train=300, num_val=60, num_classes=6, size="128x96", seed=0, difficulty="easy")),
    cam_train=dict(args=dict(network="contrast", backbone="resnet38_small", dropout=False, batch_size=8,
                             max_epoches=30, cls_warmup_epochs=20, crop_size=96, resize_long=[96, 144],
                             color_jitter=[0, 0, 0, 0], view2_size=64, lr=0.001, num_workers=1, seed=0,
                             device="cpu", optimizer="adamw", wt_dec=0.0001)),
    cam_infer=dict(args=dict(scales=[0.5, 1.0, 1.5, 2.0], num_workers=1, device="cpu")),
    eval_cam=dict(args=dict(num_workers=1), report=[dict(label="PPC CAM", split="train")]),
    eval_cam_crf=dict(args=dict(num_workers=1), report=[dict(label="PPC CAM + CRF", split="train")]),
    aff_prepare=dict(args=dict(alphas=[4, 24], num_workers=2)),
    aff_train=dict(args=dict(backbone="resnet38_tiny", batch_size=8, max_epoches=8, crop_size=192,
                             resize_long=[192, 256], lr=0.1, momentum=0.9, num_workers=1, device="cpu")),
    aff_infer=dict(args=dict(scale=2, beta=16, logt=4, bg_score=0.2, num_workers=1, device="cpu")),
    eval_rw=dict(args=dict(num_workers=1)),
    eval_pseudo=dict(args=dict(num_workers=1)),
    seg_train=dict(args=dict(config="segmentation/configs/demo_resnet38.py",
                             backbone_weights="{work}/models/cam.pth")),
)
