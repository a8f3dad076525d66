"""Embedded default (`make demo`): the synthetic VOC-format dataset (easy preset, 300 train / 60 val images of
128x96, 6 classes) through PPC -> AffinityNet random walk -> DeepLab v1, with the published recipes on reduced
ResNet-38 backbones that start from the ImageNet stand-in weights (``weights/standin/resnet38_small.pth``, made by
``scripts/pretrain_backbone.py``; they load through the same ``--weights`` path as the ImageNet ``.params`` file).

The CAM stage is the published PPC step: poly SGD at lr 0.01 (the published PolyOptimizer, its momentum quirk
included), the published four parameter groups, fixed early blocks and frozen BatchNorm, dropout, colour jitter,
every SEAM+PPC term from the first step. What still differs from the published values (README: "What the demo
changes"), each scaled rather than tuned to this dataset:
- the heads' lr multiplier x80 (CAM and DeepLab heads) = the published x10 x (ResNet-38's 4,096 feature channels /
  this backbone's 512): a 1/8-width backbone feeds its new head 8x fewer features, which learn 8x slower at x10;
- image sizes relative to the image: crop 112 of the image resized x0.9-1.5 of its long side (published: crop 448 of
  448-768 on VOC's ~500-pixel images), SEAM's second view at 64 pixels (published 128);
- 12 epochs of 300 images (published 8 of 10,582), DeepLab 2,000 iterations of crop 112 of the image x0.9-1.5,
  tested at x1-1.5 (published 20k of crop 321-448 of x0.5-1.5, tests x0.5-1.75: half of the demo's image leaves its
  objects a few stride-8 cells wide);
- no hue jitter (published 0.1): the demo's classes differ in the hue of their heads, which a hue shift of 0.1 moves
  across classes; brightness / contrast / saturation 0.3 as published;
- AffinityNet (1/16 width, from scratch: no stand-in at that width) on the images resized x1.5-2 (x2 at inference:
  the 1/8 maps of 128x96 images are too coarse to walk on); the walk takes the published background score 0.27,
  with 2^4 steps and beta 16 (published 2^6, 8); the pseudo-mask CRF's kernel widths scaled with the image
  (``crf_scale_factor auto``: published widths x long side / 500, VOC's image size);
- DeepLab (``segmentation/configs/demo_resnet38_standin.py``: frozen backbone BN as published for ResNet-38) starts
  from the CAM network's backbone (published: from the ImageNet weights; measured in the README), 2,000 iterations,
  the first 100 a linear lr warm-up (published: none; without it some seeds collapse, README);
  its val test is also scored given the true image labels (a wseg diagnostic row of the report, not a result);
- two wseg additions to the DeepLab's test, each chosen on the training images against the pseudo masks the
  DeepLab learned from (``segmentation/test.py`` keys ``bg_scale=auto`` and ``label_filter_check``; weak
  supervision only, no val image); the published test is the report's first DeepLab row:
  - the background probability times a factor (1 to 0.05) before the arg-max: the DeepLab, trained briefly on masks
    whose objects are a small share of the pixels, under-segments (README: "The test's background scale");
  - the classes an image-label classifier predicts (``label_train``, after RS+EPM's ``pred_class >= conf_th``:
    the frozen stand-in backbone at twice the image size, its levels conv3-conv6 stacked with their maximum over
    the 5x5 cells around each position, a 1x1 class layer pooled by log-sum-exp, trained on the image-level
    labels): only those (the hard filter), or every class weighted by the classifier's score to a power
    (``label_filter_powers``, a soft filter), or neither, whichever scores best on the training images with the
    classifier's held-out labels and scores. The reduced DeepLab finds the objects but names them wrong where
    classes differ in a small part (README: "the classes, not the pixels"); where whole objects tell the classes
    apart it recognises them about as well as the classifier does, and a small power weighs the two.

The from-scratch recipe of earlier versions (AdamW, 20 warm-up epochs of classification alone) is
``demo_scratch.py``; every value is the named script's own key."""

_base_ = ["_base_/cam_aff_deeplab.py", "_base_/toy_data.py"]

stages = dict(
    data=dict(args=dict(preset="demo", num_train=300, num_val=60, seed=0)),
    cam_train=dict(args=dict(network="contrast", backbone="resnet38_small",
                             weights="{repo}/weights/standin/resnet38_small.pth", batch_size=8, max_epoches=12,
                             crop_size=112, resize_scale=[0.9, 1.5], color_jitter=[0.3, 0.3, 0.3, 0],
                             view2_size=64, lr=0.01, head_lr_mult=80, num_workers=1, seed=0, device="cpu")),
    cam_infer=dict(args=dict(scales=[0.5, 1.0, 1.5, 2.0], num_workers=1, device="cpu")),
    eval_cam=dict(args=dict(num_workers=1), report=[dict(label="PPC CAM", split="train")]),
    eval_cam_crf=dict(args=dict(num_workers=1), report=[dict(label="PPC CAM + CRF", split="train")]),
    aff_prepare=dict(args=dict(alphas=[4, 24], num_workers=2)),
    aff_train=dict(args=dict(backbone="resnet38_tiny", batch_size=8, max_epoches=8, crop_size=192,
                             resize_long=[192, 256], lr=0.1, momentum=0.9, num_workers=1, device="cpu")),
    aff_infer=dict(args=dict(scale=2, beta=16, logt=4, crf_scale_factor="auto", num_workers=1, device="cpu")),
    eval_rw=dict(args=dict(num_workers=1)),
    eval_pseudo=dict(args=dict(num_workers=1)),
    # the frozen stand-in backbone at twice the image size (its corpus' objects are 22-48 pixels, the demo's heads
    # 8-22), a 1x1 class layer pooled by log-sum-exp that also reads each feature's maximum over the 5x5 cells
    # around the position (context 5: a head AND the body it sits on): predicted val labels for seg_test's
    # label_filter; 8 folds train beside it in the same pass (held-out scores from classifiers close to the full one).
    # It reads only the dataset (needs=["data"]): it starts in its own process when the data is made and runs beside
    # the CAM stages (one core each), and a change to it re-runs only seg_test; it stays after seg_train in the list,
    # so that no stage before seg_test waits for it
    label_train=dict(script="scripts/label_train.py", describe="image-label classifier (the test's class filter)",
                     needs=["data"],
                     args=dict(voc12_root="{root}", classes="{classes}", train_list="{train_list}",
                               infer_list="{val_list}", backbone="resnet38_small",
                               weights="{repo}/weights/standin/resnet38_small.pth", scales=[2.0],
                               levels=["conv3", "conv4", "conv5", "conv6"],
                               session_name="{work}/models/labels", out_labels="{work}/labels/val.npy",
                               out_cv="{work}/labels/train_cv.npy", cv_folds=8, context=5, device="cpu",
                               progress=False),
                     outputs=["{work}/labels/*_scores.npy"]),
    # alone on the machine by then (label_train finished beside the CAM stages): both cores (make demo sets
    # OMP_NUM_THREADS=1 for the stages that share them). Two pipelines at once on this 2-core machine: --set
    # seg_train.threads=1 seg_test.threads=1, else four threads on two cores spin waiting for each other
    seg_train=dict(threads=2, args=dict(config="segmentation/configs/demo_resnet38_standin.py",
                                        backbone_weights="{work}/models/cam.pth")),
    # the published test (no background scale, no filter) is scored beside the chosen one; also scored given each
    # val image's true labels, as the pseudo masks are: how much of the gap is recognising the classes rather than
    # finding their pixels (README: "the classes, not the pixels")
    seg_test=dict(threads=2,
                  args=dict(test_true_labels=True, bg_scale="auto", label_filter="{work}/labels/val.npy",
                            label_filter_check="{work}/labels/train_cv.npy",
                            label_filter_powers=[0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]),
                  report=[dict(label="DeepLab, published test", split="val", metric="miou_published"),
                          dict(label="DeepLab, background scale and classifier's classes", split="val",
                               metric="miou"),
                          dict(label="DeepLab, background scale and classifier's classes + CRF", split="val",
                               metric="miou_crf"),
                          dict(label="DeepLab given the true image labels (diagnostic)", split="val",
                               metric="miou_true_labels")]),
)
