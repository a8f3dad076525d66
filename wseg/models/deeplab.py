"""DeepLab v1 (LargeFOV) and the published "deeplabv2" (ASPP 6/12/18/24) of usr922/wseg ``segmentation/lib/net``.

An :class:`~wseg.models.segmentors.EncoderDecoder` whose state dict speaks the published layout (``backbone.*`` and
the head's names at the top level: ``conv_fov``, ``cls_conv``, ``aspp.*``), so published DeepLab ``.pth`` files
load key for key (ResNet-101 ones with ``stem="resnet101s"``, the published "deep base"). Backbones: ResNet-38
(output stride 8, ``conv1a`` and every BatchNorm fixed as published) and torchvision-layout ResNets (nothing fixed,
BN statistics keep updating, as the published ResNet-101 has no ``train()`` override).

Published optimisation details: :meth:`DeepLab.get_parameter_groups` returns only *convolution* parameters (the
published SGD never sees BatchNorm scale/shift, so they are marked fixed here), split into backbone weights (lr x1),
backbone biases (x2), new-layer weights (x10) and new-layer biases (x20).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from torch import nn

from wseg.errors import WsegError
from wseg.models.backbones import ResNet, ResNet38, build_backbone
from wseg.models.heads.deeplab import ASPP_RATES, BN_MOMENTUM, ASPPHead, LargeFOVHead
from wseg.models.layout import use_layout
from wseg.models.segmentors import EncoderDecoder

#: The published training set-up of each backbone family: fixed layers and whether backbone BatchNorm is frozen.
BACKBONE_DEFAULTS = {ResNet38: {"frozen": ("conv1a",), "freeze_bn": True}, ResNet: {"frozen": (), "freeze_bn": False}}
HEADS = {"deeplabv1": (LargeFOVHead, 512), "deeplabv2": (ASPPHead, 256)}


class DeepLab(EncoderDecoder):
    """A published DeepLab: ``forward(x) -> {"out": logits at the input size}`` (``align_corners=True``)."""

    def __init__(self, model: str, backbone: str, num_classes: int, head_dim: Optional[int] = None,
                 bn_momentum: float = BN_MOMENTUM, stem: str = "torchvision", frozen: Optional[Sequence[str]] = None,
                 freeze_bn: Optional[bool] = None, **head_kwargs: Any):
        if model not in HEADS:
            raise WsegError(f"model {model}: unknown segmentation network; choose one of {', '.join(HEADS)}")
        if num_classes < 2:
            raise WsegError(f"num_classes {num_classes}: needs background and at least one class")
        from wseg.models.backbones import BACKBONES

        family = BACKBONES[backbone][0] if backbone in BACKBONES else None
        defaults = BACKBONE_DEFAULTS.get(family, {"frozen": (), "freeze_bn": False})
        kw: Dict[str, Any] = {"frozen": tuple(defaults["frozen"] if frozen is None else frozen),
                              "freeze_bn": bool(defaults["freeze_bn"] if freeze_bn is None else freeze_bn)}
        if family is ResNet:
            kw["stem"] = stem
        elif stem != "torchvision":
            raise WsegError(f"stem {stem}: only the ResNet-50/101 backbones have stem variants, not {backbone}")
        bb = build_backbone(backbone, **kw)
        head_cls, default_dim = HEADS[model]
        head_dim = int(head_dim or default_dim)
        head = head_cls(bb.out_channels, num_classes, head_dim=head_dim, bn_momentum=bn_momentum, **head_kwargs)
        super().__init__(bb, head, align_corners=True)
        head.reset_parameters()
        # The published optimiser holds only convolution parameters: BatchNorm scale/shift never change.
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters(recurse=False):
                    p.requires_grad_(False)
        self.model_name, self.backbone_name, self.num_classes = model, backbone, int(num_classes)
        self.head_dim, self.stem = head_dim, stem
        self.head_kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in head_kwargs.items()}
        use_layout(self, [("decode_head.", "")])

    @property
    def deep_base(self) -> bool:
        return self.stem == "resnet101s"

    def get_parameter_groups(self) -> Tuple[list, list, list, list]:
        """Published four groups over convolutions only: (backbone weights [lr x1], backbone biases [x2],
        new-layer weights [x10], new-layer biases [x20])."""
        scratch = {id(m) for m in self.decode_head.scratch_convs()}
        groups: Tuple[list, list, list, list] = ([], [], [], [])
        for m in self.modules():
            if not isinstance(m, nn.Conv2d):
                continue
            new = 2 if id(m) in scratch else 0
            if m.weight.requires_grad:
                groups[new].append(m.weight)
            if m.bias is not None and m.bias.requires_grad:
                groups[new + 1].append(m.bias)
        return groups

    def architecture(self) -> Dict[str, object]:
        """What is needed to rebuild this network (saved as checkpoint metadata)."""
        return {"model": self.model_name, "backbone": self.backbone_name, "num_classes": self.num_classes,
                "stem": self.stem, "head_dim": self.head_dim, **self.head_kwargs}


def build_deeplab(model: str = "deeplabv1", backbone: str = "resnet38", num_classes: int = 21,
                  deep_base: bool = False, **kwargs: Any) -> DeepLab:
    """``deeplabv1`` / ``deeplabv2`` on a named backbone. Keywords: ``head_dim``, ``bn_momentum``, ``stem`` (or
    ``deep_base=True`` for ``resnet101s``), ``frozen``, ``freeze_bn``, and for v2 ``aspp_rates``, ``aspp_global``."""
    if deep_base:
        kwargs["stem"] = "resnet101s"
    return DeepLab(model, backbone, num_classes, **kwargs)


__all__ = ["ASPP_RATES", "BN_MOMENTUM", "DeepLab", "build_deeplab"]
