"""Segmentation networks by ``model.type`` and their weights (ImageNet backbone or whole-network checkpoints).

A new segmentation network is one builder in :data:`MODELS` (``fn(model_cfg, num_classes) -> network``) and, for
keys of its own beyond :data:`~wseg.segmentation.config.MODEL_DEFAULTS`, one entry in :data:`MODEL_KEYS`.
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
    if m["type"] == "deeplabv2":
        kw.update(aspp_rates=tuple(int(r) for r in m["aspp_rates"]), aspp_global=bool(m["aspp_global"]))
    return DeepLab(m["type"], m["backbone"], num_classes, **kw)


MODELS: Dict[str, Callable[[Mapping[str, Any], int], nn.Module]] = {"deeplabv1": _deeplab, "deeplabv2": _deeplab}


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

    state, meta = read_state_dict(path)
    arch = net.architecture()
    for key in ("model", "backbone", "num_classes", "stem"):
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
