"""Build a stage's network and load its weights in one call (shared by training, inference and the runner)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from torch import nn

from wseg.models.cam_nets import build_cam_net
from wseg.models.checkpoint import load_state_dict_strict, load_weights, read_state_dict


def freeze_kwargs(freeze: str, weights: Optional[str]) -> Dict[str, Any]:
    """Backbone freezing: ``published`` keeps the published fixed layers and frozen BatchNorm (right for ImageNet
    weights); ``none`` trains everything with live BatchNorm (needed from scratch: frozen random layers and
    BN statistics of an untrained net stop learning); ``auto`` picks ``published`` iff weights are given."""
    if freeze == "auto":
        freeze = "published" if weights else "none"
    if freeze == "published":
        return {}
    if freeze == "none":
        return {"frozen": (), "freeze_bn": False}
    raise ValueError(f"unknown freeze mode {freeze!r}")


def build_cam_net_for_training(network: str, backbone: str, num_classes: int,
                               weights: Optional[str] = None, freeze: str = "auto", dropout: bool = True) -> nn.Module:
    """A SEAM/PPC network; ``weights`` (ImageNet ``.params``/``.pth`` or a CAM checkpoint) loaded strictly,
    except the new heads (``fc8``, PCM, ``fc_proj``), which may be missing and start from their published init."""
    net = build_cam_net(network, backbone, num_classes, dropout=dropout, **freeze_kwargs(freeze, weights))
    if weights:
        load_weights(net, weights, allow_missing=net.new_layer_prefixes())
    return net


def build_cam_model_from_weights(path: str, network: Optional[str] = None, backbone: Optional[str] = None,
                                 num_classes: Optional[int] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """A trained SEAM/PPC network from ``path``: architecture from the flags, else from the wseg metadata saved
    with the weights, else the published default (``contrast`` on ``resnet38``); every key must fit."""
    state, meta = read_state_dict(path)
    network = network or meta.get("network") or "contrast"
    backbone = backbone or meta.get("backbone") or "resnet38"
    num_classes = num_classes or meta.get("num_classes") or 21
    net = build_cam_net(network, backbone, int(num_classes))
    load_state_dict_strict(net, state, path)
    return net, {**meta, "network": network, "backbone": backbone, "num_classes": num_classes}
