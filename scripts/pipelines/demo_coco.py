"""The COCO demo (`make demo-coco`): the multi-stage recipe end to end on a synthetic MS COCO 2014 download, on one
CPU core in about 7-8 minutes.

The data stage writes the toy COCO (scripts/make_toy_coco.py: the demo's easy 128x96 images as train2014 / val2014,
annotations/instances_*.json with polygons and crowd RLE, the 6 toy classes as COCO category ids 1, 18, 37, 53, 73,
90) and converts it with coco14/make_coco_masks.py into the VOC-style root ``<work>/toy_coco/voc81`` (81 classes,
crowds 255; every network has 80 foreground outputs, 74 of which never see a positive label). Then every stage of
the demo on that root with the demo's values (``_base_ = demo_scratch.py``) at a smaller budget, each stage in one process
(``num_workers 0``):

- 160 train / 40 val images (demo: 300 / 60);
- the CAM network (PPC, resnet38_small) starts from the ImageNet stand-in weights (``weights/standin/
  resnet38_small.pth``, live BatchNorm: ``--freeze none``) and trains 15 epochs, the first 10 on the classification
  loss alone (demo: from scratch, 30 / 20). With 81 classes a step with the SEAM+PPC terms costs 2-3x what it costs
  with the demo's 7 (81-channel full-resolution CAMs in PCM, ER and ECR), and from scratch the classifier did not
  beat the label prior within the budget (the demo's 30 / 20 epochs from scratch on these images: 13 min on one core,
  classification loss at 96 % of the prior's); from the stand-in weights it reaches ~76 % of the prior in 150
  steps;
- AffinityNet 6 epochs (demo 8), DeepLab 300 iterations (demo 1,000) without validation during training.

Every evaluation scores the 81-class COCO list with classes absent from the ground truth left out of the means
(``--absent skip``, PMM / ToCo; ``auto`` picks it too): the toy uses 6 of the 80 categories.

    python scripts/run_pipeline.py --config demo_coco --work_dir runs/demo_coco

The trainer's check flags the CAM network (its classification loss ends at ~81 % of the label prior's, the check
wants 80 %): it is at ~76 % when the SEAM+PPC terms join and rises, since the classification loss averaged over 80
classes is ~13x smaller next to them than with the demo's 6. The budget values come from timings and train-side
numbers, not from any val score (see docs/coco.md, "README section")."""

_base_ = "demo_scratch.py"

dataset = dict(root="{work}/toy_coco/voc81", classes="coco14", train_list="train", infer_list="train",
               eval_list="train", val_list="val")

_coco_eval = dict(classes="{classes}", absent="skip", num_workers=0)

stages = dict(
    data=dict(script="scripts/make_toy_coco.py", describe="synthetic COCO json + make_coco_masks -> voc81 root",
              creates_root=True,
              args=dict(out="{work}/toy_coco", preset=None, num_train=160, num_val=40, num_classes=6, size="128x96",
                        seed=0, difficulty="easy", classes="coco14", workers=1)),  # preset: make_toy_voc's only
    cam_train=dict(args=dict(weights="{repo}/weights/standin/resnet38_small.pth", freeze="none", max_epoches=15,
                             cls_warmup_epochs=10, num_workers=0)),
    cam_infer=dict(args=dict(num_workers=0)),
    eval_cam=dict(args=_coco_eval),
    eval_cam_crf=dict(args=_coco_eval),
    aff_prepare=dict(args=dict(num_workers=0)),
    aff_train=dict(args=dict(max_epoches=6, num_workers=0)),
    aff_infer=dict(args=dict(num_workers=0)),
    eval_rw=dict(args=_coco_eval),
    eval_pseudo=dict(args=_coco_eval),
    seg_train=dict(args=dict(max_iters=300, ckpt_every=150, val_every=0, num_workers=0)),
)
