"""PSPNet R-50-D8 with PMM's PUS on COCO pseudo masks: PMM's COCO segmentation step (Eli-YiLi/WSSS_MMSeg
configs/pspnet_wsss/pspnet_{wres38-d8,res2net-d8,scalenet101}_40kx32_coco.py, run by tools/run_wsss.sh coco14).

The VOC PUS recipe (pspnet_r50-d8_512x512_20k_voc12aug_pus.py: mmseg 0.x padding, PUS per 2 images, slide 512 / 480
test with ratios 0.5..1.75 of 2048x512 x flip and the dense CRF) with the COCO values: 91 classes, label = raw COCO
category id (COCODataset CLASSES '0'..'90'; ``coco14_91``: the ``pmm`` layout or a ``--classes coco14_91``
conversion), PMM's 40k schedule (schedule_40k.py: SGD 0.01, momentum 0.9, wd 5e-4, poly 0.9, min_lr 5e-5,
checkpoint and evaluation every 4k), 2 images per GPU x 16 GPUs = 32 (run_wsss.sh; the author says 32 GPUs in
WSSS_MMSeg#7), PUS clamp with beta = k = 0.8 on both heads, lists voc_format/{train,val}.txt, pseudo masks
voc_format/ppmg. No cyclic stage on COCO. Evaluated with classes absent from the ground truth left out (mmseg's
nanmean, PMM's evaluation.py skip: the 10 unused ids never count). PMM's COCO backbones (WideResNet-38, Res2Net-101,
ScaleNet-101) are not in wseg; this is the recipe on mmseg's ResNetV1c as for VOC (WSSS_MMSeg's own
pspnet_r50-d8_40kx32_coco.py has neither a backbone entry nor PUS). Paper: COCO val 40.2 (abstract); 36.7 WR38.

    python segmentation/train.py --config segmentation/configs/pspnet_r50-d8_512x512_40k_coco_pus.py \\
        --voc12_root data/coco/voc91 --pseudo_mask_dir PPMG --backbone_weights resnet50_v1c-2cccc1ad.pth
"""
_base_ = ["pspnet_r50-d8_512x512_20k_voc12aug_pus.py", "_base_/pmm_schedule_40k.py"]
exp_name = "pspnet_r50-d8_512x512_40k_coco_pus"
classes = "coco14_91"
train_list = "train"
val_list = "val"
test_list = "val"
pseudo_mask_dir = "ppmg"          # data/coco2014/voc_format/ppmg in WSSS_MMSeg
batch_size = 32                   # samples_per_gpu 2 x 16 GPUs

pus_beta = 0.8
pus_k = 0.8
