"""ToCo (Ru et al., CVPR 2023) on PASCAL VOC 2012 + SBD with the published values of rulixiang/ToCo
scripts/dist_train_voc_seg_neg.py and tools/infer_seg_voc.py: ViT-B/16 from the ImageNet-21k/1k weights, train_aug,
20 000 iterations of 4 images (448 crops), PolyWarmupAdamW (6e-5, heads x10, weight decay 0.01, 1500 warm-up
iterations), PTC 0.2 + CTC 0.5 (2 global + 8 local 96-pixel views) from the start, seg 0.1 + dense energy 0.05
after iteration 2000; predictions at scales 1, 1.5, 1.25 with flips, CRF 10 iterations (Gaussian 1/1, bilateral
121/5/4), scored on VOC train (pseudo labels) and val.

    python scripts/run_pipeline.py --config toco_voc --work_dir runs/toco_voc --voc12_root VOC2012 \\
        --set wsss_train.weights=vit_base_patch16_224.orig_in21k_ft_in1k.pth
Published (README): ViT-B val 69.2, 71.1 with MS + CRF."""

from wseg.pipeline import single_stage_method as _method

_base_ = "_base_/single_stage.py"

dataset = dict(root=None, train_list="train_aug", infer_list="train", eval_list="train", val_list="val")

stages = _method("toco", "ToCo")
