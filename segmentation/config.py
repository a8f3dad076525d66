"""Experiment configs of the segmentation stage: small Python files of ``key = value`` lines + command-line overrides.

A config file (``segmentation/configs/*.py``) sets module-level names from :data:`SCHEMA`; ``base = "other.py"``
(relative to the file) inherits another config first. Anything can be overridden on the command line, either as
``--set key=value [key=value ...]`` or as ``--key value`` (lists: ``--test_scales 0.5 1 1.5`` or ``0.5,1,1.5``;
``none`` clears an optional value). A key that does not exist, in a file or on the command line, is a one-line
:class:`~wseg.errors.WsegError` naming it and listing the closest existing keys.

    python segmentation/train.py --config segmentation/configs/deeplabv1_resnet38.py \\
        --voc12_root VOC2012 --pseudo_mask_dir out_rw --set batch_size=8 max_iters=30000
"""
from __future__ import annotations

import argparse
import ast
import difflib
import os
import runpy
import types
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from wseg.cli import str2bool
from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wseg.errors import WsegError

BASE_KEY = "base"

# key: (default, type, help). Types: str, int, float, bool, list[int], list[float], list[str]; "?" = may be None.
SCHEMA: Dict[str, Tuple[Any, str, str]] = {
    # ---------------------------------------------------------------- experiment
    "exp_name": ("deeplab", "str", "experiment name (output folder name, log comment)"),
    "out_dir": (None, "str?", "outputs: checkpoints, logs, predictions (default runs/segmentation/<exp_name>)"),
    "seed": (1, "int", "random seed (published 1)"),
    "device": ("auto", "str", "auto | cpu | cuda | cuda:N"),
    "amp": (True, "bool", "fp16 autocast + gradient scaling on GPU (ignored on CPU)"),
    # ---------------------------------------------------------------- data
    "voc12_root": (None, "str?", "VOC-format dataset root (holds JPEGImages/)"),
    "classes": (None, "str?", "voc12 | coco14 | classes.txt path (default: the root's classes.txt, else voc12)"),
    "train_list": ("train_aug", "str", "training split name or list file (published: trainaug)"),
    "pseudo_mask_dir": (None, "str?", "pseudo-mask PNG folder to train on (published DATA_PSEUDO_GT); "
                                      "none = the ground truth (fully supervised)"),
    "val_list": ("val", "str", "validation split (needs ground truth) for the mIoU during training"),
    "mean": (list(IMAGENET_MEAN), "list[float]", "normalisation mean (RGB, 0..1)"),
    "std": (list(IMAGENET_STD), "list[float]", "normalisation std (RGB, 0..1)"),
    "num_workers": (4, "int", "data-loading processes per training/inference process"),
    # ---------------------------------------------------------------- augmentation
    "crop_size": (448, "int", "random crop side (image padded with 0, labels with 255)"),
    "scale_range": ([0.5, 1.5], "list[float]", "random rescale factor range [low, high]"),
    "flip_prob": (0.5, "float", "horizontal flip probability"),
    "hsv_jitter": ([10, 10, 10], "list[int]", "max random HSV shifts [h (of 180), s, v]"),
    # ---------------------------------------------------------------- network
    "model": ("deeplabv1", "str", "deeplabv1 (LargeFOV) | deeplabv2 (ASPP 6/12/18/24)"),
    "backbone": ("resnet38", "str", "resnet38 | resnet101 | resnet50 | resnet38_tiny | resnet_tiny"),
    "deep_base": (False, "bool", "ResNet with the 3x3 'deep base' stem of the published resnet101s (needed to "
                                 "load published ResNet-101 DeepLab weights)"),
    "head_dim": (None, "int?", "head width (default: 512 for deeplabv1, 256 for deeplabv2)"),
    "bn_momentum": (0.0003, "float", "head BatchNorm momentum (published TRAIN_BN_MOM)"),
    "freeze_backbone_bn": (None, "bool?", "backbone BN in eval mode (default: True for ResNet-38, False for ResNet)"),
    "frozen_layers": (None, "list[str]?", "backbone layers kept fixed (default: conv1a for ResNet-38, none for "
                                          "ResNet)"),
    "aspp_rates": ([6, 12, 18, 24], "list[int]", "deeplabv2 ASPP dilation rates"),
    "aspp_global": (True, "bool", "deeplabv2 ASPP image-pooling branch (published MODEL_ASPP_HASGLOBAL)"),
    "backbone_weights": (None, "str?", "ImageNet weights: MXNet .params (ResNet-38) or torchvision .pth"),
    "init_weights": (None, "str?", "whole-network weights to start from (published TRAIN_CKPT)"),
    # ---------------------------------------------------------------- optimisation
    "lr": (0.001, "float", "base learning rate (groups x1/x2/x10/x20)"),
    "momentum": (0.9, "float", "SGD momentum"),
    "weight_decay": (0.0005, "float", "weight decay of the two weight groups (biases: 0)"),
    "power": (0.9, "float", "poly power: lr * (1 - itr / (max_iters + 1)) ** power"),
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
}


class Config(dict):
    """A flat ``{key: value}`` experiment config with attribute access (``cfg.lr``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def output_dir(self) -> str:
        return self["out_dir"] or os.path.join("runs", "segmentation", self["exp_name"])


def defaults() -> Config:
    return Config({k: (list(v[0]) if isinstance(v[0], list) else v[0]) for k, v in SCHEMA.items()})


def unknown_key_error(key: str, where: str) -> WsegError:
    close = difflib.get_close_matches(key, list(SCHEMA), n=3, cutoff=0.6)
    if not close:  # fall back to keys sharing a word
        parts = set(key.lower().split("_"))
        close = [k for k in SCHEMA if parts & set(k.split("_"))][:4]
    hint = f"; did you mean {', '.join(close)}?" if close else "; see --help for the list of keys"
    return WsegError(f"{where}: unknown config key {key!r}{hint}")


def _base_type(kind: str) -> Tuple[str, bool]:
    return kind.rstrip("?"), kind.endswith("?")


def _scalar(value: Any, kind: str, key: str, where: str) -> Any:
    try:
        if kind == "bool":
            return str2bool(value)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str):
                value = ast.literal_eval(value.strip())
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "str":
            return str(value)
    except (ValueError, TypeError, SyntaxError, argparse.ArgumentTypeError):
        pass
    raise WsegError(f"{where}: {key} = {value!r} is not a valid {kind}")


def coerce(key: str, value: Any, where: str) -> Any:
    """Convert a file or command-line value to the key's type (strings are parsed)."""
    kind, optional = _base_type(SCHEMA[key][1])
    if isinstance(value, str) and value.strip().lower() in ("none", "null") and optional:
        return None
    if value is None:
        if optional:
            return None
        raise WsegError(f"{where}: {key} may not be None (expected a {kind})")
    if kind.startswith("list["):
        item = kind[5:-1]
        if isinstance(value, str):
            text = value.strip()
            if text.startswith(("[", "(")):
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise WsegError(f"{where}: {key} = {value!r} is not a valid list")
            else:
                value = [v for v in text.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_scalar(v, item, key, where) for v in value]
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise WsegError(f"{where}: {key} takes one {kind} value, got {list(value)}")
        value = value[0]
    return _scalar(value, kind, key, where)


def read_config_file(path: str, _seen: Optional[List[str]] = None) -> Dict[str, Any]:
    """The keys a config file sets (after its ``base``), validated and typed."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise WsegError(f"{path}: config file not found; pass --config segmentation/configs/<name>.py")
    seen = (_seen or []) + [path]
    if len(seen) > 8 or path in seen[:-1]:
        raise WsegError(f"{path}: config 'base' chain loops or is deeper than 8 files")
    try:
        ns = runpy.run_path(path)
    except Exception as exc:  # a typo in the user's file: one line with its cause
        raise WsegError(f"{path}: cannot execute config ({exc.__class__.__name__}: {exc})")
    values: Dict[str, Any] = {}
    base = ns.get(BASE_KEY)
    if base:
        values.update(read_config_file(os.path.join(os.path.dirname(path), str(base)), seen))
    for key, value in ns.items():
        if key.startswith("_") or key == BASE_KEY or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        if key not in SCHEMA:
            raise unknown_key_error(key, path)
        values[key] = coerce(key, value, path)
    return values


def parse_override_tokens(tokens: Sequence[str]) -> List[Tuple[str, List[str]]]:
    """``["--lr", "0.01", "--test_scales", "0.5", "1"]`` -> ``[("lr", ["0.01"]), ("test_scales", ["0.5", "1"])]``."""
    out: List[Tuple[str, List[str]]] = []
    for tok in tokens:
        if tok.startswith("--") and len(tok) > 2:
            key, eq, val = tok[2:].partition("=")
            out.append((key.replace("-", "_"), [val] if eq else []))
        elif out:
            out[-1][1].append(tok)
        else:
            raise WsegError(f"unexpected argument {tok!r}; overrides are --key value or --set key=value")
    return out


def apply_overrides(cfg: Config, pairs: Iterable[Tuple[str, List[str]]], flag: str = "--{key}") -> Config:
    """Apply ``(key, [values])`` pairs; ``flag`` names the option in error messages."""
    for key, vals in pairs:
        where = flag.format(key=key)
        if key not in SCHEMA:
            raise unknown_key_error(key, where)
        kind = SCHEMA[key][1]
        if not vals:
            if _base_type(kind)[0] != "bool":
                raise WsegError(f"{where}: needs a value ({kind})")
            vals = ["True"]
        cfg[key] = coerce(key, vals[0] if len(vals) == 1 else vals, where)
    return cfg


def parse_set(items: Iterable[str]) -> List[Tuple[str, List[str]]]:
    """``--set key=value`` items -> override pairs."""
    out = []
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise WsegError(f"--set {item!r}: expected key=value")
        out.append((key.strip().replace("-", "_"), [val]))
    return out


def load_config(path: Optional[str], overrides: Sequence[Tuple[str, List[str]]] = (),
                set_items: Sequence[str] = ()) -> Config:
    """Defaults <- config file (with its base chain) <- ``--key value`` overrides <- ``--set`` items."""
    cfg = defaults()
    if path:
        cfg.update(read_config_file(path))
    set_pairs = parse_set(set_items)
    flagged = dict(overrides)
    for key, vals in set_pairs:
        if key in flagged and flagged[key] != vals:
            raise WsegError(f"{key}: given as --{key} {' '.join(flagged[key])} and as --set {key}={vals[0]}; "
                            "pass it once")
    apply_overrides(cfg, overrides)
    apply_overrides(cfg, set_pairs, "--set {key}")
    cfg["config_file"] = os.path.abspath(path) if path else None
    return cfg


def keys_help() -> str:
    lines = ["config keys (set in the --config file, or override with --key value / --set key=value):"]
    for key, (default, kind, text) in SCHEMA.items():
        lines.append(f"  {key:<20} {kind:<12} {text} [default {default!r}]")
    return "\n".join(lines)


class ConfigArgumentParser(argparse.ArgumentParser):
    """``argparse`` parser that keeps unknown ``--key value`` pairs as config overrides (``args.overrides``);
    they are checked against :data:`SCHEMA` in :func:`config_from_args`, so a wrong key is a WsegError."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("epilog", keys_help())
        super().__init__(*args, **kwargs)
        self.add_argument("--config", default=None, help="config file (segmentation/configs/*.py)")
        self.add_argument("--set", dest="set_items", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                          help="override config values")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extra = self.parse_known_args(args, namespace)
        ns.override_tokens = list(extra)
        return ns


def config_from_args(args: argparse.Namespace) -> Config:
    """The config of a parsed command line (``--config``, ``--key value`` overrides, ``--set`` items)."""
    if not getattr(args, "config", None):
        raise WsegError("--config: missing; pass an experiment config, e.g. segmentation/configs/deeplabv1_resnet38.py")
    pairs = parse_override_tokens(getattr(args, "override_tokens", []))
    return load_config(args.config, pairs, getattr(args, "set_items", []))
