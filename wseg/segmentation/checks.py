"""One-line errors for segmentation config values that would only fail later (before anything is written)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from wseg.errors import WsegError


def check_worker_config(cfg: Mapping[str, Any]) -> None:
    """Config values training and testing share: worker counts and the seed."""
    for key in ("num_workers", "crf_workers"):
        if key in cfg and int(cfg[key]) < 0:
            raise WsegError(f"{key} {cfg[key]}: must be >= 0 (0 = in the main process)")
    if "seed" in cfg and not 0 <= int(cfg["seed"]) < 2 ** 32:
        raise WsegError(f"seed {cfg['seed']}: must lie in [0, 2**32)")


def check_scales_config(cfg: Mapping[str, Any], key: str) -> None:
    """``test_scales`` / ``val_scales``: at least one finite factor in ``(0, 4]``."""
    scales = [float(v) for v in cfg[key]]
    if not scales or not all(0 < v <= 4 for v in scales):
        raise WsegError(f"{key} {list(cfg[key])}: need one or more scale factors in (0, 4] (published test "
                        "0.5 0.75 1 1.25 1.5 1.75)")


def check_normalisation_config(cfg: Mapping[str, Any]) -> None:
    """``mean``/``std``: three finite values each (RGB, 0..1), the stds positive."""
    mean, std = [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
    if len(mean) != 3 or len(std) != 3 or not all(np.isfinite(mean)) or not all(0 < v < np.inf for v in std):
        raise WsegError(f"mean {cfg['mean']} / std {cfg['std']}: need three finite RGB values each, the stds > 0 "
                        "(ImageNet: 0.485 0.456 0.406 / 0.229 0.224 0.225)")


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """One-line errors for values that would only fail later."""
    for key in ("max_iters", "batch_size", "ckpt_every", "log_every"):
        if int(cfg[key]) < 1:
            raise WsegError(f"{key} {cfg[key]}: must be at least 1")
    if int(cfg["val_every"]) < 0:
        raise WsegError(f"val_every {cfg['val_every']}: must be 0 (off) or positive")
    if cfg.get("stop_iter") is not None and not 0 < int(cfg["stop_iter"]) <= int(cfg["max_iters"]):
        raise WsegError(f"stop_iter {cfg['stop_iter']}: must lie in [1, max_iters={cfg['max_iters']}]")
    if not float(cfg["lr"]) > 0:
        raise WsegError(f"lr {cfg['lr']}: must be positive")
    for key, low, high in (("momentum", 0, 1), ("weight_decay", 0, 1), ("power", 0, 10)):
        if not low <= float(cfg[key]) < high:
            raise WsegError(f"{key} {cfg[key]}: must lie in [{low}, {high}) (published momentum 0.9, weight_decay "
                            "5e-4, power 0.9)")
    check_worker_config(cfg)
    crop = int(cfg["crop_size"])
    if crop == 0 and int(cfg["batch_size"]) > 1:
        raise WsegError(f"crop_size 0 (no crop) with batch_size {cfg['batch_size']}: images of different sizes cannot "
                        "be batched; set a crop_size (published 448) or batch_size 1")
    if 0 < crop < 8:
        raise WsegError(f"crop_size {crop}: must be 0 (no crop) or at least 8, the network's output stride")
    check_model_config(cfg["model"])
    check_normalisation_config(cfg)
    check_mmseg_config(cfg)
    if not 0 <= float(cfg.get("min_lr") or 0) < float(cfg["lr"]):
        raise WsegError(f"min_lr {cfg['min_lr']}: must lie in [0, lr={cfg['lr']}) (mmseg eta_min 1e-4)")
    from wseg.engine.optim import OPTIMIZERS

    if cfg.get("optimizer", "sgd") not in OPTIMIZERS:
        raise WsegError(f"optimizer {cfg['optimizer']!r}: choose {' or '.join(OPTIMIZERS)} (published: sgd)")
    if cfg.get("pus_type") not in (None, "", "clamp", "pow", "ignore"):
        raise WsegError(f"pus_type {cfg['pus_type']!r}: choose clamp, pow, ignore or '' (off; PMM: clamp)")
    if cfg.get("pus_group") is not None and int(cfg["pus_group"]) < 1:
        raise WsegError(f"pus_group {cfg['pus_group']}: must be at least 1 (PMM: 2 images per GPU) or none")
    if cfg.get("pus_type") and cfg["model"]["type"] not in ("deeplabv3plus", "pspnet", "deeplabv3"):
        raise WsegError(f"pus_type {cfg['pus_type']}: PUS is part of mmseg's cross-entropy; use an mmseg model "
                        "(deeplabv3plus, pspnet) or pus_type ''")
    if float(cfg.get("aux_weight", 0.4)) < 0:
        raise WsegError(f"aux_weight {cfg['aux_weight']}: must be >= 0 (mmseg 0.4)")
    if cfg.get("save_format", "wseg") not in ("wseg", "mmseg"):
        raise WsegError(f"save_format {cfg['save_format']}: choose wseg or mmseg")
    if int(cfg["val_every"]) > 0:
        check_scales_config(cfg, "val_scales")
    _check_root(cfg)


def check_mmseg_config(cfg: Mapping[str, Any]) -> None:
    """The keys of mmseg's pipeline and test (data_pipeline, img_scale, cat_max_ratio, test_mode, tta_ratio_of)."""
    pipeline = cfg.get("data_pipeline", "deeplab")
    if pipeline not in ("deeplab", "mmseg"):
        raise WsegError(f"data_pipeline {pipeline}: choose deeplab (published usr922/wseg) or mmseg")
    mmseg_model = cfg["model"]["type"] in ("deeplabv3plus", "pspnet", "deeplabv3")
    if mmseg_model != (pipeline == "mmseg"):
        raise WsegError(f"data_pipeline {pipeline} with model.type {cfg['model']['type']}: mmseg's networks go with "
                        "data_pipeline mmseg and the published DeepLab ones with deeplab; set data_pipeline")
    if cfg.get("long_side") is not None:
        if pipeline == "mmseg":
            raise WsegError(f"long_side {cfg['long_side']}: the mmseg pipeline sizes its images by img_scale; clear "
                            "long_side (long_side=none) or use data_pipeline deeplab")
        from wseg.data.seg_transforms import check_long_side

        check_long_side(cfg["long_side"])
    if pipeline != "mmseg":
        return
    scale = [int(v) for v in cfg.get("img_scale") or ()]
    if len(scale) != 2 or min(scale) < 1:
        raise WsegError(f"img_scale {cfg.get('img_scale')}: expected [long, short] sides, e.g. [2048, 512]")
    if not 0 < float(cfg.get("cat_max_ratio", 0.75)) <= 1:
        raise WsegError(f"cat_max_ratio {cfg['cat_max_ratio']}: must lie in (0, 1] (mmseg 0.75; 1 = off)")
    if cfg.get("test_mode", "whole") not in ("whole", "slide"):
        raise WsegError(f"test_mode {cfg['test_mode']}: choose whole or slide")
    if not 0 < int(cfg.get("test_stride", 480)) <= int(cfg.get("test_crop", 512)):
        raise WsegError(f"test_crop {cfg.get('test_crop')} / test_stride {cfg.get('test_stride')}: need 0 < stride "
                        "<= crop (PMM 512 / 480)")
    if cfg.get("tta_ratio_of", "resized") not in ("resized", "original"):
        raise WsegError(f"tta_ratio_of {cfg['tta_ratio_of']}: choose resized (mmseg 0.x) or original (mmseg 1.x)")


def check_model_config(m: Mapping[str, Any]) -> None:
    """The ``model`` dict's shared values (each model's builder checks its own)."""
    if m.get("head_dim") is not None and int(m["head_dim"]) < 1:
        raise WsegError(f"model.head_dim {m['head_dim']}: must be at least 1 (default 512 for v1, 256 for v2)")
    if m.get("aspp_rates") is not None and min(int(r) for r in m["aspp_rates"]) < 1:
        raise WsegError(f"model.aspp_rates {list(m['aspp_rates'])}: dilation rates must be at least 1 (published 6 12 "
                        "18 24)")
    if m.get("fov_dilation") is not None:
        from wseg.models.heads.deeplab import check_fov_dilation

        check_fov_dilation(m["fov_dilation"])
    if not 0 <= float(m["bn_momentum"]) <= 1:
        raise WsegError(f"model.bn_momentum {m['bn_momentum']}: must lie in [0, 1] (published 3e-4)")


def check_test_config(cfg: Mapping[str, Any]) -> None:
    """One-line errors for test-time values that would only fail later (the CRF's: :func:`crf_params`)."""
    check_worker_config(cfg)
    check_normalisation_config(cfg)
    check_scales_config(cfg, "test_scales")
    check_mmseg_config(cfg)
    if cfg.get("on_error", "skip") not in ("skip", "stop"):
        raise WsegError(f"on_error {cfg['on_error']}: choose skip or stop")
    if cfg.get("label_filter_check") and not cfg.get("label_filter"):
        raise WsegError(f"label_filter_check {cfg['label_filter_check']}: set label_filter too (the labels to keep), "
                        "or drop label_filter_check")
    powers = cfg.get("label_filter_powers") or []
    if powers and not cfg.get("label_filter_check"):
        raise WsegError(f"label_filter_powers {list(powers)}: the soft filter is chosen on the held-out scores of "
                        "the training images; set label_filter_check too, or label_filter_powers=[]")
    if any(not (isinstance(a, (int, float)) and 0 < float(a) < 1e3) for a in powers):
        raise WsegError(f"label_filter_powers {list(powers)}: give powers in (0, 1000), e.g. [0.5, 1, 2]")
    from wseg.segmentation.calibration import bg_scale_setting, check_grid

    if bg_scale_setting(cfg.get("bg_scale", 1.0)) is None:
        check_grid(cfg.get("bg_scale_grid") or [])
    _check_root(cfg)


def _check_root(cfg: Mapping[str, Any]) -> None:
    if not cfg.get("voc12_root"):
        raise WsegError("voc12_root: not set; pass --voc12_root (or --data_root) <dataset root holding JPEGImages/>")
