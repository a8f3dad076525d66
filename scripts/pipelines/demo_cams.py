"""The demo plus the SEAM baseline's CAMs trained and evaluated with the same data, flags and budget (issue #3's
comparison of SEAM and PPC). Run it in the demo's work folder: the demo's finished stages are skipped."""

_base_ = "demo_scratch.py"

stages = dict(
    seam_cam_train=dict(script="scripts/contrast_train.py", describe="train the SEAM baseline CAM network",
                        args_from="cam_train", args=dict(network="seam", session_name="{work}/models/seam_cam")),
    seam_cam_infer=dict(script="scripts/contrast_infer.py", describe="SEAM multi-scale + flip CAMs",
                        args_from="cam_infer", args=dict(weights="{work}/models/seam_cam.pth", out_cam="{work}/seam_cam",
                                                         out_cam_pred=None, out_crf=None)),
    eval_seam_cam=dict(script="scripts/eval.py", args_from="eval_cam", args=dict(predict_dir="{work}/seam_cam"),
                       report=[dict(label="SEAM CAM (baseline)", split="train")]),
)
