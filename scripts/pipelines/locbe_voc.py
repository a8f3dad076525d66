"""LOC-BE (Wang et al., CVIU 2025) on PASCAL VOC 2012 + SBD with the published values of
whn786/LOC-BE scripts/dist_train_voc_seg_neg.py and tools/infer_seg_voc.py: ViT-B/16 from the ImageNet-21k/1k weights,
train_aug, 20 000 iterations of 4 images (448 crops), PolyWarmupAdamW (6e-5, heads x10, weight decay 0.01, 1500
warm-up iterations), seg + LOC + dense energy after iteration 2000; predictions at scales 1, 1.5, 1.25 with flips,
CRF 10 iterations (Gaussian 1/1, bilateral 121/5/4), scored on VOC train (pseudo labels) and val.

    python scripts/run_pipeline.py --config locbe_voc --work_dir runs/locbe_voc --voc12_root VOC2012 \\
        --set wsss_train.weights=vit_base_patch16_224.orig_in21k_ft_in1k.pth
(timm's ``vit_base_patch16_224.orig_in21k_ft_in1k``, the published ``jx_vit_base_p16_224-80ecf9dd.pth``). Multi-GPU
training: run the wsss_train stage with torchrun (``--list`` prints its command). The code drop ships no numbers
(the paper's tables could not be read here, docs/locbe.md)."""

from wseg.pipeline import single_stage_method as _method

_base_ = "_base_/single_stage.py"

dataset = dict(root=None, train_list="train_aug", infer_list="train", eval_list="train", val_list="val")

stages = _method("locbe", "LOC-BE")
