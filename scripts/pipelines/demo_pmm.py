"""PMM's steps on the demo (synthetic dataset, small networks, CPU): the demo's CAM network, CAMs and AffinityNet
stages as they are (the RW rows for comparison), then PMM's multi-crop CAMs of the same network, CVS + PPMG pseudo
masks, the tiny PSPNet (segmentation/configs/demo_pspnet_tiny.py) with plain CE and with PUS on them, one cycle of
pseudo masks from the PUS network with PMM's test, and the tiny PSPNet retrained on them with plain CE. Run it in the
demo's work folder and the demo's finished stages are skipped:

    python scripts/run_pipeline.py --config demo_pmm --work_dir runs/demo

Sizes scaled to the 128x96 images (the CAM network sees 96-pixel crops): multi-crop crop 96 / stride 64 (PMM:
448 / 300 on ~500x375 images) at the published scales 0.75-3; PSPNet test windows 96 / 90 (PMM 512 / 480 on images
resized to a 512 short side; here the short side is 96) with the published ratios 0.5-1.75 x flip and CRF
(10 iterations, 3/1, 4/67/3). PUS clamp with beta = k = 0.5 as published. The multi-crop CAMs cost about ten
times the multi-scale ones (~110 crops + mirrors per image at these scales: ~1.5 s per image on one CPU core).
"""

_base_ = "demo_scratch.py"

# the PMM test (WSSS_MMSeg *_cp.py: slide + ratios 0.5-1.75 x flip + CRF), windows scaled to the demo's images
_seg = dict(config="segmentation/configs/demo_pspnet_tiny.py", voc12_root="{root}", train_list="{train_list}",
            progress=False, test_mode="slide", test_crop=96, test_stride=90,
            test_scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75], test_flip=True, crf=True, crf_iters=10, crf_pos_w=3,
            crf_pos_xy_std=1, crf_bi_w=4, crf_bi_xy_std=67, crf_bi_rgb_std=3)

stages = dict(
    seg_train=None, seg_test=None,
    cam_infer_mc=dict(script="scripts/contrast_infer.py", describe="multi-crop CAMs of the demo's CAM network",
                      args_from="cam_infer", args=dict(crop_mode="grid", crop_size=96, crop_stride=64, crop_batch=32,
                                                       scales=[0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0],
                                                       out_cam="{work}/cam_mc", out_cam_pred=None,
                                                       out_crf="{work}/cam_mc_crf")),
    eval_cam_mc=dict(script="scripts/eval.py", args_from="eval_cam", args=dict(predict_dir="{work}/cam_mc"),
                     report=[dict(label="PPC multi-crop CAM", split="train")]),
    eval_cam_mc_crf=dict(script="scripts/eval.py", args_from="eval_cam_crf", args=dict(predict_dir="{work}/cam_mc_crf"),
                         report=[dict(label="PPC multi-crop CAM + CRF", split="train")]),
    ppmg=dict(script="scripts/ppmg.py", describe="CVS + PPMG pseudo masks of the multi-crop CAMs",
              args=dict(voc12_root="{root}", infer_list="{infer_list}", cam_dir="{work}/cam_mc",
                        out_dir="{work}/ppmg", alpha=11, num_workers=1)),
    eval_ppmg=dict(script="scripts/eval.py", args_from="eval_cam_crf", args=dict(predict_dir="{work}/ppmg"),
                   report=[dict(label="CVS + PPMG pseudo masks", split="train")]),
    seg_train_ce=dict(script="segmentation/train.py", describe="tiny PSPNet, plain CE on the PPMG masks",
                      args=dict(_seg, pseudo_mask_dir="{work}/ppmg", out_dir="{work}/pmm_seg_ce")),
    seg_test_ce=dict(script="segmentation/test.py", args_from="seg_train_ce", args=dict(test_list="{val_list}"),
                     report=[dict(label="PSPNet CE on PPMG masks", split="val", metric="miou"),
                             dict(label="PSPNet CE on PPMG masks + CRF", split="val", metric="miou_crf")]),
    seg_train_pus=dict(script="segmentation/train.py", describe="tiny PSPNet with PUS on the PPMG masks",
                       args=dict(_seg, pseudo_mask_dir="{work}/ppmg", out_dir="{work}/pmm_seg_pus",
                                 pus_type="clamp", pus_beta=0.5, pus_k=0.5)),
    seg_test_pus=dict(script="segmentation/test.py", args_from="seg_train_pus", args=dict(test_list="{val_list}"),
                      report=[dict(label="PSPNet PUS on PPMG masks", split="val", metric="miou"),
                              dict(label="PSPNet PUS on PPMG masks + CRF", split="val", metric="miou_crf")]),
    cyclic=dict(script="scripts/cyclic_pseudo.py", describe="cyclic pseudo masks from the PUS network",
                args_from="seg_train_pus", args=dict(out_masks="{work}/cyclic", infer_list="{infer_list}",
                                                     ckpt_choice="last")),
    eval_cyclic=dict(script="scripts/eval.py", args_from="eval_cam_crf", args=dict(predict_dir="{work}/cyclic"),
                     report=[dict(label="Cyclic pseudo masks (one round)", split="train")]),
    seg_train_cyclic=dict(script="segmentation/train.py", describe="tiny PSPNet retrained on the cyclic masks, CE",
                          args=dict(_seg, pseudo_mask_dir="{work}/cyclic", out_dir="{work}/pmm_seg_cyclic")),
    seg_test_cyclic=dict(script="segmentation/test.py", args_from="seg_train_cyclic",
                         args=dict(test_list="{val_list}"),
                         report=[dict(label="PSPNet CE on cyclic masks", split="val", metric="miou"),
                                 dict(label="PSPNet CE on cyclic masks + CRF", split="val", metric="miou_crf")]),
)
