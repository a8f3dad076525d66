"""PSPNet R-50-D8 with PMM's pretended under-fitting strategy (PUS), trained on pseudo masks: PMM's segmentation
step (Eli-YiLi/WSSS_MMSeg configs/pspnet_wsss/pspnet_r50-d8_20k_voc12aug.py + the *_pus.py loss settings).

WSSS_MMSeg's own r50 config cannot run (its base models/pspnet_r50_wsss.py has no backbone entry); this is its
recipe on mmseg's ResNetV1c-50-D8: PMM's 20k schedule (lr 0.005, min_lr 1e-4), 8 GPUs x 2 images = 16 with the PUS
test per 2 images (pus_group), clamp with beta = k = 0.5 on the decode and the auxiliary head, mmseg 0.x padding
(zeros after the normalisation), pseudo masks "ppmg" (PMM's PPMG output), and PMM's test: slide 512 / 480,
ratios 0.5..1.75 of the 2048x512 target (mmseg 0.x) x flip, mean softmax, dense CRF (10 iterations, 3/1, 4/67/3).
PMM picks the best of the 2k-step checkpoints with val ground truth (pick_best_pth.py); best.pth here does the same
with val_every, so report the final weights or flag it.

    python segmentation/train.py --config segmentation/configs/pspnet_r50-d8_512x512_20k_voc12aug_pus.py \\
        --voc12_root VOC2012 --pseudo_mask_dir ppmg --backbone_weights resnet50_v1c-2cccc1ad.pth
"""
_base_ = ["pspnet_r50-d8_512x512_20k_voc12aug.py", "_base_/pmm_schedule_20k.py", "_base_/dense_crf_deeplabv2.py"]
exp_name = "pspnet_r50-d8_512x512_20k_voc12aug_pus"
pseudo_mask_dir = "ppmg"          # data/voc12/VOC2012/ppmg in WSSS_MMSeg
pad_before_normalize = False      # mmseg 0.x: Normalize then Pad(pad_val=0)

pus_type = "clamp"
pus_beta = 0.5
pus_k = 0.5
pus_group = 2                     # samples_per_gpu 2: the PUS test runs on each GPU's 2 images

# test_cfg = dict(mode='slide', crop_size=(512, 512), stride=(480, 480), crf=True) + MultiScaleFlipAug
test_mode = "slide"
test_crop = 512
test_stride = 480
test_scales = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
test_flip = True
tta_ratio_of = "resized"
# WSSS evaluates every 2k iterations with the test pipeline (MS + flip + CRF); single scale here keeps it cheap
val_scales = [1.0]
val_flip = False
