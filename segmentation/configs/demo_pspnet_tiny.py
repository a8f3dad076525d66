"""CPU demo of mmsegmentation's pspnet recipe for the synthetic dataset (wseg.data.synthetic, 128x96 images).

The pspnet_r50-d8_512x512_20k_voc12aug.py recipe (mmseg's pipeline, SGD 0.01 poly to 1e-4, one parameter group,
mmseg's cross-entropy with the auxiliary head at 0.4, whole-image test) with the demo's settings of
``_base_/demo_mmseg_tiny.py`` (reduced ResNetV1c from scratch, resize target scaled to the small images, 96-pixel
crops, batch 8, 300 iterations, fp32, no workers). On the default synthetic set (240 train / 60 val, 6 classes) with
ground-truth masks it reached 25 % val mIoU in 300 iterations (about 1.5 min on one core). Pass the dataset and
pseudo masks on the command line, e.g.
    python segmentation/train.py --config segmentation/configs/demo_pspnet_tiny.py --voc12_root data/toy_voc \
        --pseudo_mask_dir runs/demo/pseudo
"""
_base_ = ["pspnet_r50-d8_512x512_20k_voc12aug.py", "_base_/demo_mmseg_tiny.py"]
exp_name = "demo_pspnet_tiny"
