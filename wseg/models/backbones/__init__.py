"""Backbones by name: the registry every network builder uses (:mod:`wseg.models.backbones.base` is the contract).

``build_backbone(name, **overrides)``: ``resnet38`` (PSA/SEAM/PPC wide ResNet-38), its channel-scaled
``resnet38_small`` (1/8) and ``resnet38_tiny`` (1/16), torchvision-layout ``resnet50`` / ``resnet101`` (stem,
output stride and dilation options of :class:`~wseg.models.backbones.resnet.ResNet`), ``resnet_tiny`` (one block
per stage, for tests), ``resnet_v1c_small`` (deep stem, two blocks per stage, base width 16: the demos' reduced
ResNet-50/101) and the timm ViTs of ToCo / LOC-BE (``vit_base_patch16_224``, ``vit_tiny_patch16``,
``vit_small_demo``, ``vit_small_demo_cs`` (its convolutional-stem twin, the demos' stand-in), ``vit_test``;
:mod:`~wseg.models.backbones.vit`). A new backbone is one module here plus one registry line.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from wseg.errors import WsegError
from wseg.models.backbones.base import Backbone, FrozenBNMixin
from wseg.models.backbones.resnet import TINY, ResNet
from wseg.models.backbones.resnet38 import SMALL_WIDTH, TINY_WIDTH, ResNet38

#: name -> (factory, default keyword arguments)
BACKBONES: Dict[str, tuple] = {
    "resnet38": (ResNet38, {"width": 1.0}),
    "resnet38_small": (ResNet38, {"width": SMALL_WIDTH}),
    "resnet38_tiny": (ResNet38, {"width": TINY_WIDTH}),
    "resnet50": (ResNet, {"depth": 50}),
    "resnet101": (ResNet, {"depth": 101}),
    "resnet_tiny": (ResNet, dict(TINY)),
    # the reduced ResNetV1c of the synthetic demos (segmentation zoo, RS+EPM): deep stem, two bottlenecks per stage,
    # base width 16 (stage outputs 64/128/256/512); its ImageNet stand-in is weights/standin/resnet_v1c_small.pth
    "resnet_v1c_small": (ResNet, {"depth": "small", "layers": (2, 2, 2, 2), "stem": "v1c", "base_channels": 16}),
}


from wseg.models.backbones.vit import VIT_BACKBONES, ViT  # noqa: E402  (timm, imported lazily by ViT)

BACKBONES.update({name: (ViT, dict(kw)) for name, kw in VIT_BACKBONES.items()})


def register_backbone(name: str, factory: Callable[..., Backbone], **defaults: Any) -> None:
    """Add a backbone to the registry (e.g. the ViT of LOC-BE/ToCo)."""
    BACKBONES[name] = (factory, defaults)


def build_backbone(name: str, **overrides: Any) -> Backbone:
    """The backbone ``name`` with its registry defaults, updated by ``overrides`` (``frozen``, ``freeze_bn``,
    ``output_stride``, ``stem``...); an unknown name or keyword is a one-line error."""
    if name not in BACKBONES:
        raise WsegError(f"backbone {name}: unknown; choose one of {', '.join(BACKBONES)}")
    factory, defaults = BACKBONES[name]
    try:
        net = factory(**{**defaults, **overrides})
    except TypeError as exc:
        raise WsegError(f"backbone {name}: {exc}") from None
    except AttributeError as exc:   # a frozen layer name that does not exist
        raise WsegError(f"backbone {name}: frozen layers {list(overrides.get('frozen', ()))} are not all top-level "
                        f"layers ({exc})") from None
    net.name = name
    return net


__all__ = ["Backbone", "FrozenBNMixin", "BACKBONES", "build_backbone", "register_backbone", "ResNet", "ResNet38"]
