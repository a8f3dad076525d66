"""LOC-BE against ToCo and LOC-BE's two ablations (without LOC: ``--w_loc 0``; without BE: ``--w_be 0``) on the
demo's data, each with the demo_locbe flags, seed and budget (only the method or one weight differs), scored on
val without and with the published CRF (issue #23). Run it in demo_locbe's work folder: its finished stages are
skipped. ToCo's local crops are scaled to the 96-pixel crops (32 px, 6 views: 2 global + 4 local; published
448 / 96 / 10).

    python scripts/run_pipeline.py --config demo_locbe_ablation --work_dir runs/demo_locbe"""

from wseg.pipeline import single_stage_variant as _variant

_base_ = "demo_locbe.py"


stages = dict(
    **_variant("toco", "ToCo", dict(network="toco", local_crop_size=32, ncrops=6)),  # local crops inside 96-px crops
    **_variant("locbe_noloc", "LOC-BE without LOC", dict(w_loc=0.0)),
    **_variant("locbe_nobe", "LOC-BE without BE", dict(w_be=0.0)),
)
