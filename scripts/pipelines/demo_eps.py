"""EPS and EPS+PPC next to SEAM and PPC on the embedded default (issue #20): the demo's data with synthetic
saliency maps (``make_saliency``: soft edges, 15% of labelled objects missed, salient blobs on 30% of the
backgrounds), then the CAM networks of the four methods trained with the demo's CAM flags, seed and budget (only
``--network`` differs), each scored as a CAM threshold curve, plus what each method takes as its pseudo masks (EPS:
the CAM PNG with background 0.20; EPS+PPC: CRF with alpha 8, 5 iterations). The saliency maps' own
foreground/background mIoU (2 classes) is printed beside them. Run it in the demo's work folder: finished stages
are skipped.

    python scripts/run_pipeline.py --config demo_eps --work_dir runs/demo"""

_base_ = "demo_cams.py"

stages = dict(
    saliency=dict(script="scripts/make_saliency.py", describe="synthetic saliency maps (<root>/SALImages)",
                  args=dict(voc12_root="{root}", list="{train_list}", seed=0),
                  report=[dict(label="Saliency maps alone (fg/bg, 2 classes)", split="train")]),
    eps_cam_train=dict(script="scripts/contrast_train.py", describe="train the EPS CAM network",
                       args_from="cam_train", args=dict(network="eps", view2_size=None,
                                                                   session_name="{work}/models/eps_cam")),
    eps_cam_infer=dict(script="scripts/contrast_infer.py", describe="EPS CAMs and their PNGs (background 0.20)",
                       args_from="cam_infer", args=dict(weights="{work}/models/eps_cam.pth", out_cam="{work}/eps_cam",
                                                        out_cam_pred="{work}/eps_cam_png", out_cam_pred_alpha=0.20,
                                                        out_crf=None)),
    eval_eps_cam=dict(script="scripts/eval.py", args_from="eval_cam", args=dict(predict_dir="{work}/eps_cam"),
                      report=[dict(label="EPS CAM", split="train")]),
    eval_eps_pseudo=dict(script="scripts/eval.py", args_from="eval_cam_crf",
                         args=dict(predict_dir="{work}/eps_cam_png"),
                         report=[dict(label="EPS pseudo masks (CAM PNG, bg 0.20)", split="train")]),
    epsppc_cam_train=dict(script="scripts/contrast_train.py", describe="train the EPS+PPC CAM network",
                          args_from="cam_train", args=dict(network="eps_contrast",
                                                           session_name="{work}/models/epsppc_cam")),
    epsppc_cam_infer=dict(script="scripts/contrast_infer.py", describe="EPS+PPC CAMs",
                          args_from="cam_infer", args=dict(weights="{work}/models/epsppc_cam.pth",
                                                           out_cam="{work}/epsppc_cam", out_cam_pred=None,
                                                           out_crf=None)),
    eval_epsppc_cam=dict(script="scripts/eval.py", args_from="eval_cam", args=dict(predict_dir="{work}/epsppc_cam"),
                         report=[dict(label="EPS+PPC CAM", split="train")]),
    epsppc_pseudo=dict(script="scripts/aff_prepare.py", describe="EPS+PPC pseudo masks: CRF alpha 8, 5 iterations",
                       args=dict(voc12_root="{root}", infer_list="{infer_list}", cam_dir="{work}/epsppc_cam",
                                 alphas=[8], crf_iters=5, la_crf_dir="{work}/epsppc_pseudo", num_workers=2)),
    eval_epsppc_pseudo=dict(script="scripts/eval.py", args_from="eval_cam_crf",
                            args=dict(predict_dir="{work}/epsppc_pseudo"),
                            report=[dict(label="EPS+PPC pseudo masks (CRF alpha 8)", split="train")]),
)
