"""LOC-BE against ToCo and LOC-BE's two ablations (without LOC: ``--w_loc 0``; without BE: ``--w_be 0``) on the
demo's data, each with the demo_locbe flags, seed and budget (only the method or one weight differs), scored on
val without and with the published CRF (issue #23). Run it in demo_locbe's work folder: its finished stages are
skipped. ToCo's local crops are scaled to the 96-pixel crops (32 px, 6 views: 2 global + 4 local; published
448 / 96 / 10).

    python scripts/run_pipeline.py --config demo_locbe_ablation --work_dir runs/demo_locbe"""

_base_ = "demo_locbe.py"


def _variant(name, label, **train):
    """Train one variant with demo_locbe's flags, predict val (+ CRF), evaluate both."""
    return {
        f"{name}_train": dict(script="scripts/wsss_train.py", describe=f"train {label}", args_from="wsss_train",
                              args=dict(train, session_name="{work}/models/" + name)),
        f"{name}_infer_val": dict(script="scripts/wsss_infer.py", describe=f"{label}: predictions (+ CRF) of val",
                                  args_from="infer_train", args=dict(weights="{work}/models/" + name + ".pth",
                                                                     infer_list="{val_list}",
                                                                     out_pred="{work}/" + name + "_val",
                                                                     out_crf="{work}/" + name + "_val_crf")),
        f"{name}_eval_val": dict(script="scripts/eval.py", args_from="eval_val",
                                 args=dict(predict_dir="{work}/" + name + "_val"),
                                 report=[dict(label=f"{label} seg", split="val")]),
        f"{name}_eval_val_crf": dict(script="scripts/eval.py", args_from="eval_val_crf",
                                     args=dict(predict_dir="{work}/" + name + "_val_crf"),
                                     report=[dict(label=f"{label} seg + CRF", split="val")]),
    }


stages = dict(
    **_variant("toco", "ToCo", network="toco", local_crop_size=32, ncrops=6),  # ToCo local crops inside 96-px crops
    **_variant("locbe_noloc", "LOC-BE without LOC", w_loc=0.0),
    **_variant("locbe_nobe", "LOC-BE without BE", w_be=0.0),
)
