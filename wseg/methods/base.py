"""The method seam: what is specific to one published CAM system lives in one module under ``wseg/methods``.

A CAM method (:class:`CamMethod`) owns

- its network (``build_network``: a backbone from :mod:`wseg.models.backbones` and heads from
  :mod:`wseg.models.heads`, returning *named* outputs) and the published checkpoint layout;
- the batch fields it needs (``fields``: ``image``, ``label``, ``saliency`` ...) and its own flags
  (``add_arguments``, shown by ``contrast_train.py --network NAME --help``);
- one training step (``training_step``: its views and losses, returning a dict of named loss terms with ``loss``);
- how CAMs come out of its network (``cams``: the foreground score maps, wherever its background channel lives).

The generic stages (``scripts/contrast_train.py``, ``scripts/contrast_infer.py``) look a method up by
``--network NAME`` in :data:`METHODS` and never name one. A new method is a module that subclasses
:class:`CamMethod`, decorates it with :func:`register`, and is imported in ``wseg/methods/__init__.py``.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import torch
from torch import nn

from wseg.engine.trainer import StepContext
from wseg.errors import WsegError

METHODS: Dict[str, Type["CamMethod"]] = {}


def register(cls: Type["CamMethod"]) -> Type["CamMethod"]:
    """Class decorator: make a method selectable as ``--network <cls.name>``."""
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> Type["CamMethod"]:
    if name not in METHODS:
        raise WsegError(f"--network {name}: unknown CAM method; choose one of {', '.join(METHODS)}")
    return METHODS[name]


class MethodFlags:
    """A method's own command-line flags, shared by the CAM and the single-stage methods: declared by
    :meth:`add_arguments`, read with :meth:`option`, saved with the weights by ``meta()`` (:meth:`options`) so that
    a network rebuilt from its file computes as it was trained."""

    def __init__(self, args: Optional[argparse.Namespace] = None):
        self.args = args

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """The method's own flags (default: none)."""

    @classmethod
    def flag_names(cls) -> List[str]:
        """The ``dest`` names of the method's own flags (saved with the weights, part of the resume settings)."""
        group = argparse.ArgumentParser(add_help=False).add_argument_group()
        cls.add_arguments(group)
        return [a.dest for a in group._group_actions]

    def option(self, key: str, default: Any) -> Any:
        """A method flag's value (``default`` when the method is used without parsed flags, e.g. in tests)."""
        value = getattr(self.args, key, None) if self.args is not None else None
        return default if value is None else value

    def options(self) -> Dict[str, Any]:
        """The method's flag values (what ``meta()`` saves, so inference rebuilds the same method)."""
        return {k: getattr(self.args, k) for k in self.flag_names() if self.args is not None and hasattr(self.args, k)}

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], args: Optional[argparse.Namespace] = None) -> "MethodFlags":
        """The method as its weights were trained: ``args`` when given, else the flags saved in ``meta`` (only when
        ``meta`` names this method; older files without them get the published defaults)."""
        options = meta.get("options") if meta.get("network") == cls.name else None
        return cls(args if args is not None or not options else argparse.Namespace(**options))


class CamMethod(MethodFlags):
    """Base class of the CAM methods (see the module docstring)."""

    name = ""
    summary = ""
    #: Batch fields the training step reads (the dataset provides exactly these).
    fields: Tuple[str, ...] = ("image", "label")
    #: CAM normalisation of the published inference (``minmax`` or ``max``).
    default_norm = "minmax"
    #: The loss term that is the image classification loss (checked against the label prior: did it learn?).
    cls_loss_key = "loss_mlsm"

    def build_network(self, backbone: str, num_classes: int, dropout: bool = True,
                      frozen: Optional[Sequence[str]] = None, freeze_bn: bool = True) -> nn.Module:
        """The method's network; ``num_classes`` counts background. Override."""
        raise WsegError(f"method {self.name}: no network")

    def training_step(self, net: nn.Module, batch: Dict[str, torch.Tensor], ctx: StepContext
                      ) -> Dict[str, torch.Tensor]:
        """Named loss terms of one batch (``loss`` carries the gradient, the others are detached). Override."""
        raise WsegError(f"method {self.name}: no training step")

    def cams(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_fg, h, w)`` foreground class scores of a batch for CAM inference (background dropped). Override."""
        raise WsegError(f"method {self.name}: no CAM inference")

    def class_logits(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_fg)`` image-level class logits, the ones the classification loss reads (> 0: the class is
        predicted present): how well the network recognises an image's classes, which CAM scoring never asks
        (it is given the true labels). Override."""
        raise WsegError(f"method {self.name}: no image classifier")

    def check_args(self, args: argparse.Namespace) -> None:
        """One-line errors for the method's own flags (default: nothing to check)."""

    def data_maps(self, voc: Any, args: argparse.Namespace) -> Dict[str, Any]:
        """Per-image maps beyond the image the training step reads, as ``{field: fn(image_id) -> PIL image}``
        (e.g. EPS's saliency); they get the image's geometric augmentation. Default: none."""
        return {}

    def meta(self) -> Dict[str, Any]:
        """Saved with the weights, so inference (and the did-it-learn check) rebuilds the same network and method."""
        return {"network": self.name, "options": self.options()}


def freeze_kwargs(freeze: str, weights: Optional[str]) -> Dict[str, Any]:
    """Backbone freezing: ``published`` keeps the published fixed layers and frozen BatchNorm (right for ImageNet
    weights); ``none`` trains everything with live BatchNorm (needed from scratch: frozen random layers and BN
    statistics of an untrained net stop learning); ``auto`` picks ``published`` iff weights are given."""
    if freeze == "auto":
        freeze = "published" if weights else "none"
    if freeze == "published":
        return {}
    if freeze == "none":
        return {"frozen": (), "freeze_bn": False}
    raise WsegError(f"--freeze {freeze}: choose auto, published or none")


def build_for_training(method: CamMethod, backbone: str, num_classes: int, weights: Optional[str] = None,
                       freeze: str = "auto", dropout: bool = True) -> nn.Module:
    """The method's network with ``weights`` (ImageNet ``.params``/``.pth`` or a CAM checkpoint) loaded strictly,
    except the new heads, which may be missing and start from their published init."""
    from wseg.models.checkpoint import load_weights
    from wseg.models.layout import published_prefixes

    net = method.build_network(backbone, num_classes, dropout=dropout, **freeze_kwargs(freeze, weights))
    if weights:
        load_weights(net, weights, allow_missing=published_prefixes(net, net.new_layer_prefixes()),
                     ignore_unexpected=tuple(net.backbone.checkpoint_ignore))
    return net


def _eval_images(method: CamMethod, voc: Any, ids: Sequence[str], device: Any):
    """``(id, (1, 3, H, W) tensor)`` of each image as it is, normalised as the method's network expects."""
    from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, hwc_to_chw, normalize
    from wseg.io import load_image

    norm = (getattr(method, "mean", IMAGENET_MEAN), getattr(method, "std", IMAGENET_STD))   # single-stage: its own
    for i in ids:
        yield i, torch.from_numpy(hwc_to_chw(normalize(load_image(voc.image_path(i)), *norm)))[None].to(device)


def eval_cls_loss(method: CamMethod, net: nn.Module, voc: Any, ids: Sequence[str], labels: Mapping[str, Any],
                  device: Any = "cpu") -> float:
    """The method's classification loss (its classification-only step) of a network in eval mode, averaged over
    ``ids`` fed one at a time as they are (no augmentation, no dropout): what the did-it-learn check compares with the
    label prior (:data:`wseg.engine.trainer.LEARNED_RATIO_FINAL`)."""
    import numpy as np

    ctx = StepContext(cls_only=True)
    was = net.training
    net.eval()
    total = 0.0
    with torch.no_grad():
        for i, x in _eval_images(method, voc, ids, device):
            label = torch.from_numpy(np.asarray(labels[i], np.float32))[None].to(device)
            total += float(method.training_step(net, {"image": x, "label": label}, ctx)[method.cls_loss_key])
    net.train(was)
    return total / max(1, len(ids))


def image_label_accuracy(method: CamMethod, net: nn.Module, voc: Any, ids: Sequence[str],
                         labels: Mapping[str, Any], device: Any = "cpu") -> Dict[str, float]:
    """How well a CAM network names each image's classes (its ``class_logits`` > 0, eval mode, images as they are):
    per-label accuracy (%), the share of images with every label right, and the per-label accuracy of always
    answering each class's more frequent value on these images (the prior)."""
    import numpy as np

    was = net.training
    net.eval()
    pred, true = [], []
    with torch.no_grad():
        for i, x in _eval_images(method, voc, ids, device):
            pred.append((method.class_logits(net, x)[0] > 0).cpu().numpy())
            true.append(np.asarray(labels[i]) > 0.5)
    net.train(was)
    pred, true = np.array(pred), np.array(true)
    freq = true.mean(0)
    return {"accuracy": 100.0 * float((pred == true).mean()), "all_right": 100.0 * float((pred == true).all(1).mean()),
            "prior": 100.0 * float(np.maximum(freq, 1 - freq).mean())}


def build_from_weights(path: str, network: Optional[str] = None, backbone: Optional[str] = None,
                       num_classes: Optional[int] = None, args: Optional[argparse.Namespace] = None
                       ) -> Tuple[CamMethod, nn.Module, Dict[str, Any]]:
    """A trained CAM network from ``path``: method and backbone from the flags, else from the wseg metadata saved
    with the weights, else the published default (``contrast`` on ``resnet38``); every key must fit."""
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    state, meta = read_state_dict(path)
    if not network and meta.get("network") and meta["network"] not in METHODS:
        raise WsegError(f"{path}: holds a '{meta['network']}' network, not a CAM method ({', '.join(METHODS)}); "
                        "pass the CAM network's weights (e.g. models/cam.pth)")
    network = network or meta.get("network") or "contrast"
    backbone = backbone or meta.get("backbone") or "resnet38"
    num_classes = int(num_classes or meta.get("num_classes") or 21)
    method = get_method(network).from_meta(meta, args)
    net = method.build_network(backbone, num_classes)
    own = net.state_dict()
    trunk = set(net.backbone.state_dict()) if isinstance(getattr(net, "backbone", None), nn.Module) else set()
    missing = [k for k in own if k not in state]
    if missing and state and trunk and set(state) <= trunk:  # nothing but the backbone: not a trained CAM network
        heads = sorted({k.split(".", 1)[0] for k in missing})
        raise WsegError(f"{path}: backbone weights without the CAM layers ({', '.join(heads)}), e.g. ImageNet or "
                        "stand-in weights; CAM inference needs a trained CAM network (the weights "
                        "scripts/contrast_train.py writes)")
    load_state_dict_strict(net, state, path)
    return method, net, {**meta, "network": network, "backbone": backbone, "num_classes": num_classes}


def published_param_groups(net: nn.Module, scratch: Sequence[nn.Module]) -> Tuple[list, list, list, list]:
    """The published four groups (PSA / SEAM / PPC ``get_parameter_groups``): backbone weights (lr x1), backbone
    biases (x2), new-layer weights (x10), new-layer biases (x20). Every parameter with ``requires_grad`` lands in
    exactly one group; fixed layers (``not_training``, frozen BatchNorm) are in none."""
    new = {id(p) for m in scratch for p in m.parameters()}
    groups: Tuple[list, list, list, list] = ([], [], [], [])
    for name, p in net.named_parameters():
        if p.requires_grad:
            groups[(2 if id(p) in new else 0) + (1 if name.rsplit(".", 1)[-1] == "bias" else 0)].append(p)
    return groups
