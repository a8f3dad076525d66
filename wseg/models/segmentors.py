"""Segmentation networks as mmsegmentation composes them: a backbone, a decode head on one of its levels and an
optional auxiliary head on another. ``forward`` returns named outputs (``out``: logits at the input size; ``aux``
in training when there is an auxiliary head), as torchvision's segmentation models do.

:class:`MMSegEncoderDecoder` is mmseg's ``EncoderDecoder`` of the ``*_r{50,101}-d8`` configs (mmseg 1.2.2
``configs/_base_/models/{deeplabv3plus,pspnet}_r50-d8.py``): ResNetV1c-D8 (:class:`~wseg.models.backbones.resnet
.ResNet` with ``stem="v1c"``, output stride 8, contract dilation), a decode head of :mod:`wseg.models.heads.mmseg`
(DeepLabV3+ ``DepthwiseSeparableASPPHead`` on level 3 + level 0, or ``PSPHead``) and the auxiliary ``FCNHead`` on
level 2 (256 channels, one 3x3 conv). Its state dict *is* mmseg's layout (``backbone.stem.0.weight``,
``decode_head.aspp_modules.1.depthwise_conv.conv.weight``, ``auxiliary_head.convs.0.bn.running_var``...), so an
mmseg ``.pth`` loads strictly and ours load in mmseg. ``align_corners=False`` everywhere, as mmseg. Key and
parameter counts at 21 classes (checked in tests/test_mmseg.py against mmseg 1.2.2 built models): DeepLabV3+ R50
424 keys / 43.59M parameters, R101 730 / 62.58M; PSPNet R50 370 / 48.98M, R101 676 / 67.97M (aux included)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wseg.models.backbones.base import Backbone


class EncoderDecoder(nn.Module):
    """``backbone`` + ``decode_head`` (reading ``levels[in_index]``, or every level when the head takes a dict) +
    ``auxiliary_head`` (reading ``levels[aux_index]``). Logits are resized bilinearly to the input size with
    ``align_corners`` (the published DeepLab: True; mmsegmentation: False)."""

    def __init__(self, backbone: Backbone, decode_head: nn.Module, in_index: int = -1,
                 auxiliary_head: Optional[nn.Module] = None, aux_index: int = -2, align_corners: bool = True,
                 multi_level: bool = False, aux_multi_level: Optional[bool] = None):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        if auxiliary_head is not None:
            self.auxiliary_head = auxiliary_head
        self.in_index, self.aux_index = int(in_index), int(aux_index)
        self.align_corners, self.multi_level = bool(align_corners), bool(multi_level)
        self.aux_multi_level = self.multi_level if aux_multi_level is None else bool(aux_multi_level)

    @property
    def has_aux(self) -> bool:
        return hasattr(self, "auxiliary_head")

    def decode(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        if self.multi_level:
            return self.decode_head(feats)
        return self.decode_head(feats[self.backbone.levels[self.in_index]])

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Decode-head logits at the head's resolution (before the resize)."""
        return self.decode(self.backbone(x))

    def resize(self, logits: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(logits, size, mode="bilinear", align_corners=self.align_corners)

    def aux_decode(self, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
        if self.aux_multi_level:
            return self.auxiliary_head(feats)
        return self.auxiliary_head(feats[self.backbone.levels[self.aux_index]])

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.backbone(x)
        out = {"out": self.resize(self.decode(feats), x.shape[-2:])}
        if self.has_aux and self.training:
            out["aux"] = self.resize(self.aux_decode(feats), x.shape[-2:])
        return out


#: Decode heads of :class:`MMSegEncoderDecoder` (mmseg names: DepthwiseSeparableASPPHead, ASPPHead, PSPHead).
MMSEG_DECODERS = ("deeplabv3plus", "deeplabv3", "pspnet")


class MMSegEncoderDecoder(EncoderDecoder):
    """mmseg's ``EncoderDecoder`` on ResNetV1c-D8 (see the module docstring): ``forward(x) -> {"out", "aux"}``.

    ``base_channels`` scales the backbone (64 = published) and, unless given, the head widths with it: decode
    ``channels`` 8x (512), DeepLabV3+ ``c1_channels`` 3/4x (48), auxiliary ``aux_channels`` 4x (256); ``layers``
    replaces the blocks per stage (reduced networks for CPU tests and the demo). ``aux=False`` drops the auxiliary
    head. ``zero_init_residual``: mmseg's from-scratch ResNet init (overwritten by any loaded weights).
    ``stem="torchvision"`` is mmseg's ``ResNet`` (V1b, the ``*_r50b-d8`` configs: 7x7 ``conv1`` + ``bn1``, the
    ``torchvision://resnet50`` weights) instead of ``ResNetV1c``.
    """

    def __init__(self, decoder: str = "deeplabv3plus", depth: int = 50, num_classes: int = 21,
                 base_channels: int = 64, layers: Optional[Sequence[int]] = None, channels: Optional[int] = None,
                 c1_channels: Optional[int] = None, aux: bool = True, aux_channels: Optional[int] = None,
                 dilations: Sequence[int] = (1, 12, 24, 36), pool_scales: Sequence[int] = (1, 2, 3, 6),
                 dropout_ratio: float = 0.1, output_stride: int = 8, zero_init_residual: bool = True,
                 stem: str = "v1c"):
        from wseg.errors import WsegError
        from wseg.models.backbones.resnet import DEPTHS, ResNet
        from wseg.models.heads.mmseg import ASPPHead, DepthwiseSeparableASPPHead, FCNHead, PSPHead

        if decoder not in MMSEG_DECODERS:
            raise WsegError(f"model.type {decoder}: choose one of {', '.join(MMSEG_DECODERS)}")
        if layers is None and int(depth) not in DEPTHS:
            raise WsegError(f"model.depth {depth}: choose 50 or 101 (or give model.layers)")
        if int(num_classes) < 2:
            raise WsegError(f"num_classes {num_classes}: needs background and at least one class")
        b = int(base_channels)
        if stem not in ("v1c", "torchvision"):
            raise WsegError(f"model.stem {stem}: mmseg's networks run on ResNetV1c (v1c) or ResNetV1b (torchvision)")
        backbone = ResNet(depth=depth, layers=layers, stem=stem, output_stride=output_stride, base_channels=b,
                          zero_init_residual=zero_init_residual)
        ch = [backbone.feature_channels[n] for n in backbone.levels]
        width = int(channels or 8 * b)
        common = dict(num_classes=int(num_classes), dropout_ratio=dropout_ratio, align_corners=False)
        if decoder == "deeplabv3plus":
            head: nn.Module = DepthwiseSeparableASPPHead(ch[3], width, in_index=3, dilations=dilations,
                                                         c1_in_channels=ch[0],
                                                         c1_channels=int(c1_channels or (48 * b) // 64), **common)
        elif decoder == "deeplabv3":
            head = ASPPHead(ch[3], width, in_index=3, dilations=dilations, **common)
        else:
            head = PSPHead(ch[3], width, in_index=3, pool_scales=pool_scales, **common)
        aux_head = FCNHead(ch[2], int(aux_channels or 4 * b), in_index=2, num_convs=1, concat_input=False,
                           **common) if aux else None
        super().__init__(backbone, head, auxiliary_head=aux_head, align_corners=False, multi_level=True)
        head.reset_parameters()
        if aux_head is not None:
            aux_head.reset_parameters()
        self.model_name, self.num_classes = decoder, int(num_classes)
        self.arch: Dict[str, Any] = {
            "model": decoder, "backbone": (f"resnet{depth}" if layers is None else "resnet") + (
                "_v1c" if stem == "v1c" else "b"), "num_classes": int(num_classes), "stem": stem, "depth": depth,
            "base_channels": b,
            "layers": None if layers is None else [int(n) for n in layers], "channels": width, "aux": bool(aux),
            "dilations": [int(d) for d in dilations], "pool_scales": [int(s) for s in pool_scales]}

    def architecture(self) -> Dict[str, Any]:
        """What is needed to rebuild this network (saved as checkpoint metadata)."""
        return dict(self.arch)

    def param_groups(self, lr: float, weight_decay: float) -> List[Dict[str, Any]]:
        """mmseg's optimiser of these configs (no ``paramwise_cfg``): one group, every trainable parameter (BN and
        biases included) at ``lr`` with ``weight_decay``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": float(lr),
                 "weight_decay": float(weight_decay)}]
