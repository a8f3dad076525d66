"""The multi-stage WSSS recipe of PSA / SEAM / PPC: CAM network -> multi-scale CAMs -> AffinityNet random walk ->
CRF pseudo masks -> DeepLab, each stage with the published defaults of its script. Derived configs set the dataset,
the CAM method (``stages.cam_train.args.network``) and any stage value."""

dataset = dict(root=None, classes=None, train_list="train", infer_list="train", val_list="val")

_eval = dict(list="{eval_list}", gt_dir="{gt}", classes="{classes}", logfile="{work}/eval_log.txt",
             out_dir="{work}/report", progress=False)

stages = dict(
    cam_train=dict(script="scripts/contrast_train.py", describe="train the CAM network",
                   args=dict(voc12_root="{root}", train_list="{train_list}", session_name="{work}/models/cam",
                             network="contrast")),
    cam_infer=dict(script="scripts/contrast_infer.py", describe="multi-scale + flip CAMs (and CAM + CRF labels)",
                   args=dict(voc12_root="{root}", weights="{work}/models/cam.pth", infer_list="{infer_list}",
                             out_cam="{work}/cam", out_cam_pred="{work}/cam_png", out_crf="{work}/cam_crf")),
    eval_cam=dict(script="scripts/eval.py", describe="CAM threshold curve",
                  args=dict(_eval, predict_dir="{work}/cam", type="npy", curve=True),
                  report=[dict(label="CAM", split="train")]),
    eval_cam_crf=dict(script="scripts/eval.py", args=dict(_eval, predict_dir="{work}/cam_crf", type="png"),
                      report=[dict(label="CAM + CRF", split="train")]),
    aff_prepare=dict(script="scripts/aff_prepare.py", describe="low/high-alpha CRF labels for AffinityNet",
                     args=dict(voc12_root="{root}", infer_list="{train_list}", cam_dir="{work}/cam",
                               out_crf="{work}/aff_labels")),
    aff_train=dict(script="scripts/aff_train.py", describe="train AffinityNet",
                   args=dict(voc12_root="{root}", train_list="{train_list}", la_crf_dir="{work}/aff_labels/crf_la",
                             ha_crf_dir="{work}/aff_labels/crf_ha", session_name="{work}/models/aff")),
    aff_infer=dict(script="scripts/aff_infer.py", describe="random walk + CRF pseudo masks",
                   args=dict(voc12_root="{root}", weights="{work}/models/aff.pth", infer_list="{infer_list}",
                             cam_dir="{work}/cam", out_rw="{work}/rw", out_crf="{work}/pseudo")),
    eval_rw=dict(script="scripts/eval.py", args=dict(_eval, predict_dir="{work}/rw", type="png"),
                 report=[dict(label="Random walk (RW)", split="train")]),
    eval_pseudo=dict(script="scripts/eval.py", args=dict(_eval, predict_dir="{work}/pseudo", type="png"),
                     report=[dict(label="Pseudo masks (RW + CRF)", split="train")]),
    seg_train=dict(script="segmentation/train.py", describe="train DeepLab on the pseudo masks",
                   args=dict(config="segmentation/configs/deeplabv1_resnet38.py", voc12_root="{root}",
                             train_list="{train_list}", pseudo_mask_dir="{work}/pseudo", out_dir="{work}/seg",
                             progress=False)),
    # optional, a wseg addition (off as published): an image-label classifier whose predicted val labels restrict
    # the segmentation test (seg_test's label_filter); demo.py turns it on. After seg_train, so that changing it
    # re-runs the test only
    label_train=None,
    seg_test=dict(script="segmentation/test.py", describe="DeepLab multi-scale + flip (+ CRF) on val",
                  args_from="seg_train", args=dict(test_list="{val_list}"),
                  outputs=["{work}/seg/pred_*"],   # its folders inside seg_train's out_dir, set aside on a re-run
                  report=[dict(label="DeepLab", split="val", metric="miou"),
                          dict(label="DeepLab + CRF", split="val", metric="miou_crf")]),
)
