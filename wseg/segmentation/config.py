"""Segmentation experiment configs (``segmentation/configs/*.py``) on the one config system (:mod:`wseg.config`).

A config file sets keys of :data:`SCHEMA`; ``_base_ = "other.py"`` composes it from a base. The network is one
dict, ``model = dict(type=..., backbone=..., ...)``, whose keys belong to the model (:data:`MODEL_DEFAULTS`;
``--set model.aspp_rates=[6,12,18,24]``), everything else is top level. Overrides as in every script:
``--KEY VALUE`` or ``--set KEY=VALUE`` (lists ``0.5,1,1.5`` or ``[0.5, 1.0]``; ``none`` clears an optional value).

Two recipes share the keys: the published DeepLab (usr922/wseg; ``data_pipeline = "deeplab"``) and mmsegmentation's
(``data_pipeline = "mmseg"``, models ``deeplabv3plus`` / ``pspnet`` / ``deeplabv3``: mmseg's augmentation and test
resize, 0..255 normalisation of BGR-decoded images, mean of the softmaxes over test views, ``min_lr``, one parameter
group, mmseg's cross-entropy with the auxiliary head and PMM's PUS). See docs/segmentation_zoo.md.

    python segmentation/train.py --config segmentation/configs/deeplabv1_resnet38.py \\
        --voc12_root VOC2012 --pseudo_mask_dir out_rw --set batch_size=8 max_iters=30000
"""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Tuple

from wseg.cli import str2bool
from wseg.config import ConfigArgumentParser, json_dict
from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wseg.errors import WsegError

#: The keys of ``model = dict(...)`` and their defaults (published DeepLab v1 on ResNet-38).
MODEL_DEFAULTS: Dict[str, Any] = {
    "type": "deeplabv1",          # deeplabv1 (LargeFOV) | deeplabv2 (ASPP 6/12/18/24)
    "backbone": "resnet38",       # resnet38 | resnet101 | resnet50 | resnet38_small | resnet38_tiny | resnet_tiny
    "stem": "torchvision",        # ResNet stem: torchvision | resnet101s (published DeepLab ResNet-101) | v1c
    "head_dim": None,             # head width (default: 512 for deeplabv1, 256 for deeplabv2)
    "bn_momentum": 0.0003,        # head BatchNorm momentum (published TRAIN_BN_MOM)
    "freeze_backbone_bn": None,   # backbone BN in eval mode (default: True for ResNet-38, False for ResNet)
    "frozen_layers": None,        # backbone layers kept fixed (default: conv1a for ResNet-38, none for ResNet)
    "fov_dilation": 12,           # deeplabv1 LargeFOV dilation (published 12)
    "aspp_rates": [6, 12, 18, 24],  # deeplabv2 ASPP dilation rates
    "aspp_global": True,          # deeplabv2 ASPP image-pooling branch (published MODEL_ASPP_HASGLOBAL)
}
# mmseg models (deeplabv3plus, pspnet, deeplabv3) read: backbone (resnet50_v1c | resnet101_v1c | resnet_v1c with
# layers), stem (must be v1c), head_dim (decode channels, default 8 x base_channels = 512), bn_momentum (every BN),
# aspp_rates (the DeepLabV3(+) dilations, 1 12 24 36), frozen_layers, freeze_backbone_bn, and the keys of
# wseg.segmentation.models.MODEL_KEYS (base_channels, layers, c1_channels, aux, aux_channels, pool_scales, ...).

# key: (default, type, help). Types: str, int, float, bool, list[int], list[float], list[str], dict; "?" = may be None.
SCHEMA: Dict[str, Tuple[Any, str, str]] = {
    # ---------------------------------------------------------------- experiment
    "exp_name": ("deeplab", "str", "experiment name (output folder name, log comment)"),
    "out_dir": (None, "str?", "outputs: checkpoints, logs, predictions (default runs/segmentation/<exp_name>)"),
    "seed": (1, "int", "random seed (published 1)"),
    "device": ("auto", "str", "auto | cpu | cuda | cuda:N"),
    "amp": (True, "bool", "fp16 autocast + gradient scaling on GPU (ignored on CPU)"),
    # ---------------------------------------------------------------- data
    "voc12_root": (None, "str?", "dataset root (VOC layout, holds JPEGImages/); --data_root is the same key"),
    "classes": (None, "str?", "voc12 | coco14 | classes.txt path (default: the root's classes.txt, else voc12)"),
    "train_list": ("train_aug", "str", "training split name or list file (published: trainaug)"),
    "pseudo_mask_dir": (None, "str?", "pseudo-mask PNG folder to train on (published DATA_PSEUDO_GT); "
                                      "none = the ground truth (fully supervised)"),
    "val_list": ("val", "str", "validation split (needs ground truth) for the mIoU during training"),
    "mean": (list(IMAGENET_MEAN), "list[float]", "normalisation mean (RGB, 0..1)"),
    "std": (list(IMAGENET_STD), "list[float]", "normalisation std (RGB, 0..1)"),
    "num_workers": (4, "int", "data-loading processes per training/inference process"),
    "data_pipeline": ("deeplab", "str", "deeplab (published usr922/wseg augmentation and test) | mmseg (RandomResize "
                                        "img_scale x scale_range, RandomCrop with cat_max_ratio, flip, "
                                        "PhotoMetricDistortion, pad; OpenCV test resize to img_scale)"),
    # ---------------------------------------------------------------- augmentation
    "crop_size": (448, "int", "random crop side (image padded with 0, labels with 255)"),
    "scale_range": ([0.5, 1.5], "list[float]", "random rescale factor range [low, high]"),
    "long_side": (None, "int?", "deeplab pipeline: bring every image to this long side first, so that scale_range "
                                "and test_scales multiply it rather than the image's own size (none = published: "
                                "VOC's images are all ~500 px; for datasets of mixed sizes)"),
    "flip_prob": (0.5, "float", "horizontal flip probability"),
    "hsv_jitter": ([10, 10, 10], "list[int]", "max random HSV shifts [h (of 180), s, v] (deeplab pipeline)"),
    "img_scale": ([2048, 512], "list[int]", "mmseg pipeline: resize target [long, short] (RandomResize base, test "
                                            "Resize)"),
    "cat_max_ratio": (0.75, "float", "mmseg pipeline: RandomCrop redraws (10x) windows where one class covers this "
                                     "share of the labelled pixels or more (1: off)"),
    "photometric": (True, "bool", "mmseg pipeline: PhotoMetricDistortion (brightness 32, contrast/saturation "
                                  "0.5-1.5, hue 18, each p 0.5)"),
    "pad_before_normalize": (True, "bool", "mmseg pipeline: pad crops with black pixels before normalising (mmseg "
                                           "1.x voc12aug); False: zeros after it (mmseg 0.x / PMM)"),
    # ---------------------------------------------------------------- network
    "model": (dict(MODEL_DEFAULTS), "dict", "the network: dict(type=deeplabv1|deeplabv2, backbone=..., stem=..., "
                                            "head_dim=..., ...); override one key with --set model.KEY=VALUE"),
    "backbone_weights": (None, "str?", "ImageNet weights: MXNet .params (ResNet-38) or torchvision .pth, or a trained "
                                       "CAM network of the same backbone"),
    "init_weights": (None, "str?", "whole-network weights to start from (published TRAIN_CKPT)"),
    # ---------------------------------------------------------------- optimisation
    "lr": (0.001, "float", "base learning rate (groups x1/x2/x10/x20)"),
    "head_lr_mult": (10.0, "float", "lr multiplier of the new head's weights (biases twice it); published 10 (DeepLab "
                                    "v1/v2 groups; mmseg models use one lr)"),
    "optimizer": ("sgd", "str", "sgd (published) | adamw (not published: Adam's per-weight step sizes; the lr "
                                "groups' multipliers are kept, momentum is not used)"),
    "momentum": (0.9, "float", "SGD momentum"),
    "weight_decay": (0.0005, "float", "weight decay of the two weight groups (biases: 0); mmseg models: of every "
                                      "parameter"),
    "power": (0.9, "float", "poly power: lr * (1 - itr / (max_iters + 1)) ** power; mmseg models: (lr - min_lr) * "
                            "(1 - itr / max_iters) ** power + min_lr"),
    "warmup_iters": (0, "int", "linear lr warm-up from ~0 over the first iterations, then poly (published: 0, none)"),
    "min_lr": (0.0, "float", "mmseg models: poly floor eta_min (mmseg 1e-4; PMM 1e-4 at 20k, 5e-5 at 40k)"),
    "sync_bn": (False, "bool", "BatchNorm as SyncBatchNorm under torchrun (mmseg's SyncBN)"),
    "aux_weight": (0.4, "float", "mmseg models: loss weight of the auxiliary FCN head"),
    "avg_non_ignore": (False, "bool", "mmseg models: average the cross-entropy over labelled pixels only (mmseg's "
                                      "default False: over all pixels, ignored ones as 0)"),
    "pus_type": ("", "str", "PMM's pretended under-fitting on both heads: clamp | pow | ignore | '' (off)"),
    "pus_beta": (0.5, "float", "PUS trigger: the batch-mean loss below beta (PMM: 0.5 VOC, 0.8 COCO)"),
    "pus_k": (0.5, "float", "PUS k: clamp level / power / ignore threshold (PMM: 0.5 VOC, 0.8 COCO)"),
    "pus_group": (None, "int?", "PUS test per this many images of a process batch (PMM: 2 per GPU); none: the "
                                "whole process batch"),
    "save_format": ("wseg", "str", "final/best weights: wseg (plain state dict + metadata) | mmseg "
                                   "({'meta', 'state_dict'}, loads in mmsegmentation)"),
    "batch_size": (10, "int", "images per iteration over all processes (split evenly under torchrun)"),
    "max_iters": (20000, "int", "training iterations"),
    "stop_iter": (None, "int?", "stop after this iteration with a checkpoint (e.g. a job time limit); re-run to "
                                "continue"),
    "ckpt_every": (1000, "int", "iterations between resume checkpoints"),
    "val_every": (2000, "int", "iterations between validation mIoU runs (0: off)"),
    "val_scales": ([1.0], "list[float]", "validation scales"),
    "val_flip": (False, "bool", "flip in validation"),
    "log_every": (20, "int", "iterations between log lines"),
    "resume": (True, "bool", "continue from <out_dir>/last.pth when present"),
    # ---------------------------------------------------------------- test
    "test_list": ("val", "str", "split to predict (labelled: evaluated; unlabelled, e.g. test: server layout)"),
    "test_scales": ([0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "list[float]", "multi-scale test factors"),
    "test_flip": (True, "bool", "add horizontally flipped inputs at test time"),
    "test_mode": ("whole", "str", "mmseg pipeline: whole (one pass per view) | slide (test_crop windows every "
                                  "test_stride pixels, logits averaged)"),
    "test_crop": (512, "int", "slide window side (mmseg / PMM 512)"),
    "test_stride": (480, "int", "slide window stride (PMM 480)"),
    "test_resize": (True, "bool", "mmseg pipeline: resize the test image to fit img_scale first (mmseg's test "
                                  "Resize keep_ratio)"),
    "tta_ratio_of": ("resized", "str", "mmseg pipeline: a test scale multiplies the resize target (resized: mmseg "
                                       "0.x MultiScaleFlipAug) or the original image (original: mmseg 1.x "
                                       "tta_pipeline)"),
    "test_true_labels": (False, "bool", "labelled split: also score the MS+flip prediction given each image's true "
                                        "labels (absent classes dropped before the arg-max, as the pseudo masks "
                                        "are scored): recognition solved, localisation as it is (wseg diagnostic)"),
    "bg_scale": (1.0, "str", "the background probability times this factor before the arg-max and the CRF (1: "
                             "the published test), or auto: the factor of bg_scale_grid whose test scores best on "
                             "the training images (at most 1,000) against the masks the network learned from "
                             "(pseudo_mask_dir). wseg addition, README: 'The test's background scale'"),
    "bg_scale_grid": ([1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05], "list[float]",
                      "the factors bg_scale=auto tries"),
    "label_filter": (None, "str?", "image labels to keep (cls_labels.npy format, e.g. scripts/label_train.py's "
                                   "--out_labels): the other classes' probabilities are zeroed before the arg-max "
                                   "and the CRF; the published arg-max is scored too (miou_published). wseg "
                                   "addition (RS+EPM's inference filters by its classifier); none: off, as published"),
    "label_filter_check": (None, "str?", "held-out labels of training images (label_train's --out_cv): the "
                                         "label_filter is used only where the test filtered by these labels scores "
                                         "better on those of train_list's images (at most 1,000) than the "
                                         "unfiltered one, against the masks the network learned from "
                                         "(pseudo_mask_dir); chosen together with bg_scale=auto"),
    "label_filter_powers": ([], "list[float]", "with label_filter_check, also try the soft filter at each of these "
                                               "powers: each foreground probability times the classifier's score "
                                               "to the power (label_train's <stem>_scores.npy beside both label "
                                               "files), renormalised; chosen with the hard filter, the unfiltered "
                                               "test and bg_scale on the training images"),
    "crf": (True, "bool", "dense CRF on the averaged probabilities"),
    "crf_iters": (10, "int", "CRF mean-field iterations"),
    "crf_pos_w": (3.0, "float", "CRF Gaussian (smoothness) kernel weight"),
    "crf_pos_xy_std": (1.0, "float", "CRF Gaussian kernel spatial std"),
    "crf_bi_w": (4.0, "float", "CRF bilateral (appearance) kernel weight"),
    "crf_bi_xy_std": (67.0, "float", "CRF bilateral kernel spatial std"),
    "crf_bi_rgb_std": (3.0, "float", "CRF bilateral kernel colour std"),
    "crf_workers": (4, "int", "processes running the CRF (0: in the main process)"),
    "pred_dir": (None, "str?", "prediction PNG folder (default <out_dir>/pred_<list>[_crf], or "
                               "<out_dir>/results/VOC2012/Segmentation/comp6_test_cls for an unlabelled split)"),
    "gt_dir": (None, "str?", "ground-truth folder for the evaluation (default the root's SegmentationClass)"),
    "eval_log": (None, "str?", "evaluation log appended as published (default <out_dir>/eval_log.txt)"),
    "on_error": ("skip", "str", "test: skip (an unreadable image is skipped and listed at the end) | stop"),
}


class Config(dict):
    """A ``{key: value}`` experiment config with attribute access (``cfg.lr``, ``cfg.model["backbone"]``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def output_dir(self) -> str:
        return self["out_dir"] or os.path.join("runs", "segmentation", self["exp_name"])


def _optional(conv):
    def parse(text: str):
        return None if str(text).strip().lower() in ("none", "null") else conv(text)
    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


class _ListAction(argparse.Action):
    """``--key a b c`` or ``--key a,b,c``; ``--key none`` for an optional list."""

    def __call__(self, parser, namespace, values, option_string=None):
        parts = [p for v in values for p in str(v).replace(",", " ").strip("[]() ").split() if p]
        if self.metavar == "none-ok" and [p.lower() for p in parts] in (["none"], ["null"]):
            setattr(namespace, self.dest, None)
            return
        try:
            setattr(namespace, self.dest, [self.const(p.strip("'\"")) for p in parts])
        except ValueError:
            parser.error(f"argument {option_string}: invalid value in {' '.join(map(str, values))}")


def add_schema_arguments(p: ConfigArgumentParser) -> None:
    """One flag per :data:`SCHEMA` key."""
    types = {"str": str, "int": int, "float": float}
    for key, (default, kind, text) in SCHEMA.items():
        base, optional = kind.rstrip("?"), kind.endswith("?")
        names = ["--" + key] + (["--data_root"] if key == "voc12_root" else [])
        helptext = f"{text} [default {default!r}]"
        if base == "bool":
            p.add_argument(*names, nargs="?", const=True, default=default, help=helptext,
                           type=_optional(str2bool) if optional else str2bool)
        elif base.startswith("list["):
            p.add_argument(*names, nargs="*", action=_ListAction, const=types[base[5:-1]], default=default,
                           metavar="none-ok" if optional else None, help=helptext)
        elif base == "dict":
            p.add_argument(*names, type=json_dict, default=default, help=helptext)
        else:
            conv = types[base]
            p.add_argument(*names, type=_optional(conv) if optional else conv, default=default, help=helptext)


def build_parser(description: str) -> ConfigArgumentParser:
    p = ConfigArgumentParser(description=description, dict_keys=("model",))
    add_schema_arguments(p)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """The config of a parsed command line (``--config`` file, ``--KEY VALUE``, ``--set``)."""
    if not getattr(args, "config", None):
        raise WsegError("--config: missing; pass an experiment config, e.g. segmentation/configs/deeplabv1_resnet38.py")
    cfg = Config({k: getattr(args, k) for k in SCHEMA})
    model = dict(MODEL_DEFAULTS)
    model.update(cfg["model"] or {})
    unknown = sorted(set(model) - set(MODEL_DEFAULTS) - set(_extra_model_keys(model.get("type"))))
    if unknown:
        from wseg.config import close_keys

        raise WsegError(f"{args.config}: unknown model key {unknown[0]!r}{close_keys(unknown[0], list(MODEL_DEFAULTS))}")
    cfg["model"] = model
    cfg["config_file"] = args.config
    return cfg


def _extra_model_keys(model_type: Any) -> Tuple[str, ...]:
    """Keys a registered segmentation model adds to :data:`MODEL_DEFAULTS` (see :mod:`wseg.segmentation.models`)."""
    from wseg.segmentation.models import MODEL_KEYS

    return tuple(MODEL_KEYS.get(str(model_type), ()))
