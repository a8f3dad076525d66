"""Segmentation networks by ``model.type`` and their weights (ImageNet backbone or whole-network checkpoints).

A new segmentation network is one builder in :data:`MODELS` (``fn(model_cfg, num_classes) -> network``) and, for
keys of its own beyond :data:`~wseg.segmentation.config.MODEL_DEFAULTS`, one entry in :data:`MODEL_KEYS`.

mmsegmentation's networks (``deeplabv3plus``, ``pspnet``, ``deeplabv3``:
:class:`~wseg.models.segmentors.MMSegEncoderDecoder`) keep mmseg's checkpoint layout, so an mmseg ``.pth``
(``{"meta", "state_dict"}``, ``backbone.*`` / ``decode_head.*`` / ``auxiliary_head.*``) loads strictly with
``weights_only`` (nothing but tensors and plain containers is unpickled), mismatched keys are listed, and
:func:`save_weights` with ``fmt="mmseg"`` writes the same layout (with ``meta.dataset_meta`` classes and palette,
which mmseg's ``init_model`` reads). ImageNet ``open-mmlab://resnet{50,101}_v1c`` files (``state_dict`` without the
``backbone.`` prefix, ``fc.*`` dropped) and torchvision ResNets (``model.stem=torchvision``: mmseg's ResNetV1b of the
``*_r50b-d8`` configs, ``torchvision://resnet50``) go through :func:`load_backbone_weights`; weights of the other
stem are refused with a one-line hint.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence

from torch import nn

from wseg.errors import WsegError
from wseg.models.deeplab import DeepLab

#: Extra ``model`` keys per model type (beyond MODEL_DEFAULTS).
MODEL_KEYS: Dict[str, Sequence[str]] = {}


def _deeplab(m: Mapping[str, Any], num_classes: int) -> DeepLab:
    kw: Dict[str, Any] = {"bn_momentum": float(m["bn_momentum"]), "stem": str(m.get("stem") or "torchvision")}
    if m.get("head_dim"):
        kw["head_dim"] = int(m["head_dim"])
    if m.get("frozen_layers") is not None:
        kw["frozen"] = tuple(m["frozen_layers"])
    if m.get("freeze_backbone_bn") is not None:
        kw["freeze_bn"] = bool(m["freeze_backbone_bn"])
    if m["type"] == "deeplabv1" and m.get("fov_dilation") is not None:
        kw["fov_dilation"] = int(m["fov_dilation"])
    if m["type"] == "deeplabv2":
        kw.update(aspp_rates=tuple(int(r) for r in m["aspp_rates"]), aspp_global=bool(m["aspp_global"]))
    return DeepLab(m["type"], m["backbone"], num_classes, **kw)


def _mmseg(m: Mapping[str, Any], num_classes: int) -> nn.Module:
    """mmseg's DeepLabV3+ / PSPNet / DeepLabV3 on ResNetV1c-D8 (``model`` keys: see MODEL_KEYS and config.py)."""
    import re

    from wseg.models.segmentors import MMSegEncoderDecoder

    name = str(m["backbone"])
    found = re.fullmatch(r"resnet(\d*)(_v1c|b)?", name)
    layers = m.get("layers")
    if found is None or (layers is None and found.group(1) not in ("50", "101")):
        raise WsegError(f"model.backbone {name}: mmseg's {m['type']} takes resnet50_v1c or resnet101_v1c (or "
                        "resnet_v1c with model.layers; resnet50b / resnet101b with model.stem=torchvision)")
    kw: Dict[str, Any] = dict(
        depth=int(found.group(1) or 50), stem=str(m.get("stem") or "v1c"), num_classes=num_classes,
        base_channels=int(m.get("base_channels") or 64), layers=None if layers is None else [int(n) for n in layers],
        channels=m.get("head_dim") or None, c1_channels=m.get("c1_channels") or None, aux=bool(m.get("aux", True)),
        aux_channels=m.get("aux_channels") or None,
        dilations=[int(d) for d in (m.get("aspp_rates") or (1, 12, 24, 36))],
        pool_scales=[int(p) for p in (m.get("pool_scales") or (1, 2, 3, 6))],
        dropout_ratio=float(m.get("dropout_ratio", 0.1)), zero_init_residual=bool(m.get("zero_init_residual", True)))
    try:
        net = MMSegEncoderDecoder(m["type"], **kw)
    except (TypeError, ValueError) as exc:
        raise WsegError(f"model: {exc}") from None
    for mod in net.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.momentum = float(m["bn_momentum"])
    frozen = tuple(m.get("frozen_layers") or ())
    if frozen or m.get("freeze_backbone_bn"):
        net.backbone.freeze_bn = bool(m.get("freeze_backbone_bn"))
        try:
            net.backbone.set_frozen(frozen)
        except AttributeError:
            raise WsegError(f"model.frozen_layers {list(frozen)}: not all are top-level backbone layers (stem, "
                            "layer1..layer4)") from None
    return net


MODELS: Dict[str, Callable[[Mapping[str, Any], int], nn.Module]] = {
    "deeplabv1": _deeplab, "deeplabv2": _deeplab, "deeplabv3plus": _mmseg, "pspnet": _mmseg, "deeplabv3": _mmseg}
_MMSEG_KEYS = ("base_channels", "layers", "c1_channels", "aux", "aux_channels", "pool_scales", "dropout_ratio",
               "zero_init_residual")
MODEL_KEYS.update({"deeplabv3plus": _MMSEG_KEYS, "pspnet": _MMSEG_KEYS, "deeplabv3": _MMSEG_KEYS})


def is_mmseg(net: nn.Module) -> bool:
    """An mmseg-layout network (one parameter group, mmseg's losses and checkpoints)."""
    from wseg.models.segmentors import MMSegEncoderDecoder

    return isinstance(net, MMSegEncoderDecoder)


def build_model(cfg: Mapping[str, Any], num_classes: int, weights: bool = True) -> nn.Module:
    """The configured network; with ``weights``, ``init_weights`` (whole network, strict) or else
    ``backbone_weights`` (ImageNet, strict on the backbone)."""
    m = cfg["model"]
    if m["type"] not in MODELS:
        raise WsegError(f"model.type {m['type']}: unknown segmentation network; choose one of {', '.join(MODELS)}")
    net = MODELS[m["type"]](m, num_classes)
    if weights and cfg.get("init_weights"):
        load_segmentation_weights(net, cfg["init_weights"])
    elif weights and cfg.get("backbone_weights"):
        load_backbone_weights(net, cfg["backbone_weights"])
    return net


def load_segmentation_weights(net: nn.Module, path: str) -> Dict[str, Any]:
    """Whole-network weights (ours: plain state dict or resume checkpoint; or a published ``.pth``), strictly. The
    architecture saved with wseg files must match ``net``."""
    from wseg.models.backbones.resnet import check_stem
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    try:
        state, meta = read_state_dict(path)
    except WsegError as exc:
        if is_mmseg(net) and "refuses to unpickle" in str(exc):
            raise WsegError(f"{exc}. An mmseg/mmengine checkpoint with objects in 'meta' or 'message_hub': keep "
                            "only the tensors once, in an environment you trust: torch.save({'meta': {}, "
                            "'state_dict': torch.load(p, weights_only=False)['state_dict']}, out)") from None
        raise
    arch = net.architecture()
    for key in ("model", "backbone", "num_classes", "stem", "fov_dilation"):
        if key in meta and key in arch and meta[key] != arch[key]:
            raise WsegError(f"{path}: weights of a {key}={meta[key]!r} network, but the config builds "
                            f"{key}={arch[key]!r}; pass the matching --config / model.{key} or other weights")
    if hasattr(net.backbone, "stem_type"):
        check_stem(state, net.backbone, path, prefix="backbone.")
    load_state_dict_strict(net, state, path)
    return meta


def load_backbone_weights(net: nn.Module, path: str) -> None:
    """Backbone weights into ``net.backbone`` strictly: ImageNet MXNet ``.params`` for ResNet-38, torchvision
    ``resnet101-5d3b4d8f.pth`` (``fc.*`` ignored), the deep-base ``resnet101s`` or mmseg ``resnet*_v1c`` for those
    stems, or a trained network of wseg with the same backbone (its heads ignored; e.g. the CAM network of the
    synthetic demo, which has no ImageNet weights)."""
    from wseg.models.backbones.resnet import check_stem
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    state, _ = read_state_dict(path)
    if hasattr(net.backbone, "stem_type"):
        check_stem(state, net.backbone, path)
    own = set(net.backbone.state_dict())
    if any(k.startswith("backbone.") for k in state) and not own & set(state):
        raise WsegError(f"{path}: holds a whole segmentation network (backbone.* keys), not ImageNet backbone "
                        "weights; pass it as init_weights instead of backbone_weights")
    # Top-level modules the backbone does not have (an ImageNet classifier, a CAM network's heads) are dropped;
    # every backbone key must be there, with its shape.
    top = {k.split(".", 1)[0] for k in own}
    ignore = tuple(net.backbone.checkpoint_ignore) + tuple(sorted({k.split(".", 1)[0] + "." for k in state
                                                                    if k.split(".", 1)[0] not in top}))
    load_state_dict_strict(net.backbone, state, path, ignore_unexpected=ignore)


SAVE_FORMATS = ("wseg", "mmseg")


def save_weights(path: str, net: nn.Module, meta: Mapping[str, Any], fmt: str = "wseg", spec: Any = None) -> None:
    """Final/best weights: ``wseg`` (a plain state dict with wseg's metadata, :func:`~wseg.models.checkpoint
    .save_state_dict`) or ``mmseg`` (``{"meta": {"dataset_meta": {classes, palette}, "wseg": meta}, "state_dict":
    ...}``, what mmseg's ``init_model`` / ``load_checkpoint`` read; wseg reads it back too). Atomic."""
    import torch

    from wseg.models.checkpoint import META_KEY, _cpu_state, _plain, save_state_dict
    from wseg.io import atomic_path

    if fmt not in SAVE_FORMATS:
        raise WsegError(f"save_format {fmt}: choose wseg or mmseg")
    if fmt == "wseg":
        save_state_dict(path, net, meta)
        return
    import wseg
    from wseg.io import VOC_PALETTE

    sd = _cpu_state(net)
    info = _plain({**dict(meta), "wseg_version": wseg.__version__})
    sd._metadata[META_KEY] = info  # type: ignore[attr-defined]
    ckpt_meta: Dict[str, Any] = {"wseg": info}
    if spec is not None:
        n = spec.num_classes
        ckpt_meta["dataset_meta"] = {"classes": list(spec.class_names),
                                     "palette": VOC_PALETTE[:n].astype(int).tolist()}
    with atomic_path(path) as tmp:
        torch.save({"meta": ckpt_meta, "state_dict": sd}, tmp)
