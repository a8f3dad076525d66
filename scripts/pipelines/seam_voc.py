"""SEAM (Wang et al., CVPR 2020) on PASCAL VOC 2012 + SBD: the PPC pipeline with the SEAM CAM network (paper:
CAM 55.4 train, DeepLab 64.5 val).

    python scripts/run_pipeline.py --config seam_voc --work_dir runs/seam_voc --voc12_root VOC2012"""

_base_ = "ppc_voc.py"

stages = dict(
    cam_train=dict(args=dict(network="seam")),
    eval_cam=dict(report=[dict(label="SEAM CAM", split="train")]),
    eval_cam_crf=dict(report=[dict(label="SEAM CAM + CRF", split="train")]),
)
