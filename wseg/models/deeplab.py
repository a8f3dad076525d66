"""DeepLab segmentation networks of the published segmentation stage (usr922/wseg ``segmentation/lib/net``).

- :class:`DeepLabV1`: DeepLab v1 "LargeFOV" head: ``conv_fov`` (3x3, dilation 12, no bias) -> ``bn_fov`` -> ReLU
  -> ``conv_fov2`` (1x1, no bias) -> ``bn_fov2`` -> ReLU -> ``dropout1`` (0.5) -> ``cls_conv`` (1x1, bias);
  published on ResNet-38 (SEAM / PPC pseudo masks) and ResNet-101 (EPS pseudo masks).
- :class:`DeepLabV2`: the published "deeplabv2": an ASPP with rates 6/12/18/24 (``aspp.branch1..4``: 3x3
  dilated conv + BN + ReLU), a global-pooling branch (``aspp.branch5_conv/bn``), ``aspp.conv_cat`` (1x1 + BN +
  ReLU + dropout 0.5), ``dropout1`` and ``cls_conv``; on ResNet-101.

Parameter names and shapes are the published modules' (``backbone.*`` + the head names above), so published
DeepLab ``.pth`` files load key for key (ResNet-101 ones with ``deep_base=True``: the published backbone is the
"deep base" ResNet-101 of PyTorch-Encoding, whose stem is three 3x3 convolutions). Backbones are wseg's:
:mod:`wseg.models.resnet38` (output stride 8) and :mod:`wseg.models.resnets` (torchvision ResNet dilated to output
stride 8, loadable from ``resnet101-5d3b4d8f.pth``). Logits are upsampled bilinearly (``align_corners=True``) to the
input size, as published.

Published optimisation details kept here: new layers start with ``kaiming_normal_(fan_out, relu)`` convolutions
and BN weight 1 / bias 0; :meth:`DeepLab.get_parameter_groups` returns only *convolution* parameters (the
published SGD never sees BatchNorm scale/shift, so they are marked fixed here), split into backbone weights
(lr x1), backbone biases (x2), new-layer weights (x10) and new-layer biases (x20).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError
from wseg.models.cam_nets import BACKBONES, build_backbone
from wseg.models.resnet38 import ResNet38
from wseg.models.resnets import ResNetBackbone

#: Published head BatchNorm momentum (``TRAIN_BN_MOM``; PyTorch convention: weight of the new batch statistic).
BN_MOMENTUM = 0.0003
ASPP_RATES = (6, 12, 18, 24)
FOV_DILATION = 12

#: Per-backbone published training set-up: layers kept fixed and whether backbone BatchNorm is frozen (eval mode).
#: ResNet-38's published ``Net.train`` fixes ``conv1a`` and every backbone BN; the published ResNet-101 has no such
#: override (BN statistics keep updating, momentum 0.1).
BACKBONE_DEFAULTS: Dict[str, Dict[str, object]] = {
    "resnet38": {"frozen": ("conv1a",), "freeze_bn": True},
    "resnet38_tiny": {"frozen": ("conv1a",), "freeze_bn": True},
    "resnet50": {"frozen": (), "freeze_bn": False},
    "resnet101": {"frozen": (), "freeze_bn": False},
    "resnet_tiny": {"frozen": (), "freeze_bn": False},
}


def _init_new_layers(modules) -> None:
    """Published ``__initial__`` of the layers outside the backbone."""
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def make_deep_base(backbone: ResNetBackbone) -> ResNetBackbone:
    """Give a torchvision-layout ResNet the published "deep base" stem (PyTorch-Encoding ``resnet101s``):
    ``conv1`` = 3x3/2 (64) - BN - ReLU - 3x3 (64) - BN - ReLU - 3x3 (128), ``bn1`` over 128 channels, and
    ``layer1.0`` reading 128 channels. Keys become ``conv1.{0,1,3,4,6}``."""
    bn_mom = backbone.bn1.momentum
    backbone.conv1 = nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64, momentum=bn_mom),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64, momentum=bn_mom), nn.ReLU(inplace=True),
        nn.Conv2d(64, 128, 3, padding=1, bias=False))
    backbone.bn1 = nn.BatchNorm2d(128, momentum=bn_mom)
    first = backbone.layer1[0]
    first.conv1 = nn.Conv2d(128, first.conv1.out_channels, 1, bias=False)
    ds = first.downsample[0]
    first.downsample[0] = nn.Conv2d(128, ds.out_channels, 1, stride=ds.stride, bias=False)
    for m in (*backbone.conv1, backbone.bn1, first.conv1, first.downsample[0]):
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    backbone.deep_base = True
    backbone.set_frozen(backbone.not_training)  # re-apply the frozen flags to the new modules
    return backbone


class ASPP(nn.Module):
    """The published ASPP (``lib/net/operators/ASPP.py``): four 3x3 atrous branches (conv + BN + ReLU), an
    optional image-pooling branch, concatenation, ``conv_cat`` (1x1 + BN + ReLU + dropout 0.5)."""

    def __init__(self, dim_in: int, dim_out: int, rates: Sequence[int] = ASPP_RATES, bn_momentum: float = 0.1,
                 has_global: bool = True):
        super().__init__()
        if len(rates) != 4:
            raise WsegError(f"aspp_rates {list(rates)}: the published ASPP has exactly four branches")
        self.has_global = bool(has_global)

        def branch(rate: int) -> nn.Sequential:
            conv = (nn.Conv2d(dim_in, dim_out, 1, bias=False) if rate == 0 else
                    nn.Conv2d(dim_in, dim_out, 3, padding=rate, dilation=rate, bias=False))
            return nn.Sequential(conv, nn.BatchNorm2d(dim_out, momentum=bn_momentum), nn.ReLU(inplace=True))

        self.branch1, self.branch2, self.branch3, self.branch4 = (branch(int(r)) for r in rates)
        if self.has_global:
            self.branch5_conv = nn.Conv2d(dim_in, dim_out, 1, bias=False)
            self.branch5_bn = nn.BatchNorm2d(dim_out, momentum=bn_momentum)
            self.branch5_relu = nn.ReLU(inplace=True)
        n = 5 if self.has_global else 4
        # The published no-global variant's conv_cat has a bias; the default (global) one has none.
        self.conv_cat = nn.Sequential(nn.Conv2d(dim_out * n, dim_out, 1, bias=not self.has_global),
                                      nn.BatchNorm2d(dim_out, momentum=bn_momentum), nn.ReLU(inplace=True),
                                      nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        if self.has_global:
            g = self.branch5_relu(self.branch5_bn(self.branch5_conv(F.adaptive_avg_pool2d(x, 1))))
            feats.append(F.interpolate(g, x.shape[-2:], mode="bilinear", align_corners=True))
        return self.conv_cat(torch.cat(feats, dim=1))


class DeepLab(nn.Module):
    """Common part: backbone, published parameter groups and BN handling. Subclasses build the head."""

    model_name = "deeplab"

    def __init__(self, backbone: str, num_classes: int, deep_base: bool = False,
                 frozen: Optional[Sequence[str]] = None, freeze_bn: Optional[bool] = None):
        super().__init__()
        if backbone not in BACKBONES:
            raise WsegError(f"backbone {backbone}: unknown; choose one of {', '.join(BACKBONES)}")
        if num_classes < 2:
            raise WsegError(f"num_classes {num_classes}: needs background and at least one class")
        defaults = BACKBONE_DEFAULTS.get(backbone, {"frozen": (), "freeze_bn": False})
        frozen = tuple(defaults["frozen"] if frozen is None else frozen)
        freeze_bn = bool(defaults["freeze_bn"] if freeze_bn is None else freeze_bn)
        try:
            self.backbone = build_backbone(backbone, frozen=frozen, freeze_bn=freeze_bn)
        except AttributeError as exc:
            raise WsegError(f"frozen_layers {list(frozen)}: not a top-level layer of {backbone} ({exc})")
        if deep_base:
            if not isinstance(self.backbone, ResNetBackbone):
                raise WsegError(f"deep_base=True: only for the ResNet-50/101 backbones, not {backbone}")
            make_deep_base(self.backbone)
        self.backbone_name, self.num_classes, self.deep_base = backbone, int(num_classes), bool(deep_base)
        self.in_channels = int(self.backbone.out_channels)
        self.output_stride = int(self.backbone.output_stride)
        self.from_scratch_layers: List[nn.Module] = []

    def _finish(self, head_modules) -> None:
        _init_new_layers(head_modules)
        # The published optimiser holds only convolution parameters: BatchNorm scale/shift never change.
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters(recurse=False):
                    p.requires_grad_(False)

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised images -> ``(N, num_classes, H, W)`` logits."""
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=True)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the feature resolution (stride 8), before the upsampling."""
        return self.head(self.backbone(x))

    def get_parameter_groups(self) -> Tuple[list, list, list, list]:
        """Published four groups over convolutions only: (backbone weights [lr x1], backbone biases [x2],
        new-layer weights [x10], new-layer biases [x20])."""
        scratch = {id(m) for m in self.from_scratch_layers}
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

    def new_layer_prefixes(self) -> Tuple[str, ...]:
        """State-dict prefixes outside the backbone (absent from ImageNet weights)."""
        return tuple(sorted({k.split(".", 1)[0] + "." for k in self.state_dict() if not k.startswith("backbone.")}))

    def architecture(self) -> Dict[str, object]:
        """What is needed to rebuild this network (saved as checkpoint metadata)."""
        return {"model": self.model_name, "backbone": self.backbone_name, "num_classes": self.num_classes,
                "deep_base": self.deep_base}


class DeepLabV1(DeepLab):
    """DeepLab v1 with the LargeFOV head (published ``deeplabv1``)."""

    model_name = "deeplabv1"

    def __init__(self, backbone: str = "resnet38", num_classes: int = 21, head_dim: int = 512,
                 bn_momentum: float = BN_MOMENTUM, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.conv_fov = nn.Conv2d(self.in_channels, head_dim, 3, padding=FOV_DILATION, dilation=FOV_DILATION,
                                  bias=False)
        self.bn_fov = nn.BatchNorm2d(head_dim, momentum=bn_momentum)
        self.conv_fov2 = nn.Conv2d(head_dim, head_dim, 1, bias=False)
        self.bn_fov2 = nn.BatchNorm2d(head_dim, momentum=bn_momentum)
        self.dropout1 = nn.Dropout(0.5)
        self.cls_conv = nn.Conv2d(head_dim, num_classes, 1)
        self.from_scratch_layers = [self.conv_fov, self.conv_fov2, self.cls_conv]
        self.head_dim = int(head_dim)
        self._finish([self.conv_fov, self.bn_fov, self.conv_fov2, self.bn_fov2, self.cls_conv])

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_fov(self.conv_fov(x)), inplace=True)
        x = F.relu(self.bn_fov2(self.conv_fov2(x)), inplace=True)
        return self.cls_conv(self.dropout1(x))

    def architecture(self) -> Dict[str, object]:
        return {**super().architecture(), "head_dim": self.head_dim}


class DeepLabV2(DeepLab):
    """The published ``deeplabv2``: ASPP (rates 6/12/18/24 + image pooling) on the backbone, dropout, classifier."""

    model_name = "deeplabv2"

    def __init__(self, backbone: str = "resnet101", num_classes: int = 21, head_dim: int = 256,
                 aspp_rates: Sequence[int] = ASPP_RATES, aspp_global: bool = True,
                 bn_momentum: float = BN_MOMENTUM, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.aspp = ASPP(self.in_channels, head_dim, aspp_rates, bn_momentum, aspp_global)
        self.dropout1 = nn.Dropout(0.5)
        self.cls_conv = nn.Conv2d(head_dim, num_classes, 1)
        self.from_scratch_layers = [self.cls_conv] + [m for m in self.aspp.modules() if isinstance(m, nn.Conv2d)]
        self.head_dim, self.aspp_rates, self.aspp_global = int(head_dim), tuple(int(r) for r in aspp_rates), \
            bool(aspp_global)
        self._finish(list(self.aspp.modules()) + [self.cls_conv])

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_conv(self.dropout1(self.aspp(x)))

    def architecture(self) -> Dict[str, object]:
        return {**super().architecture(), "head_dim": self.head_dim, "aspp_rates": list(self.aspp_rates),
                "aspp_global": self.aspp_global}


MODELS = {"deeplabv1": DeepLabV1, "deeplabv2": DeepLabV2}


def build_deeplab(model: str = "deeplabv1", backbone: str = "resnet38", num_classes: int = 21,
                  **kwargs) -> DeepLab:
    """``deeplabv1`` / ``deeplabv2`` on a named backbone (``resnet38``, ``resnet101``, ``resnet38_tiny``,
    ``resnet_tiny``, ...). ``num_classes`` includes background. Extra keywords: ``head_dim``, ``bn_momentum``,
    ``deep_base``, ``frozen``, ``freeze_bn`` and for v2 ``aspp_rates``, ``aspp_global``."""
    if model not in MODELS:
        raise WsegError(f"model {model}: unknown segmentation network; choose one of {', '.join(MODELS)}")
    return MODELS[model](backbone=backbone, num_classes=num_classes, **kwargs)


#: Heads of wseg's CAM networks (SEAM / PPC, :mod:`wseg.models.cam_nets`): dropped when their checkpoint initialises a
#: DeepLab backbone.
CAM_HEADS = ("fc8.", "f8_3.", "f8_4.", "f9.", "fc_proj.")


def load_backbone_weights(net: DeepLab, path: str) -> None:
    """Backbone weights into ``net.backbone`` strictly: ImageNet MXNet ``.params`` for ResNet-38, torchvision
    ``resnet101-5d3b4d8f.pth`` (``fc.*`` ignored), the deep-base ``resnet101s`` for ``deep_base=True``, or a trained
    SEAM/PPC CAM network of the same backbone (its CAM heads ignored; e.g. the synthetic demo, which has no
    ImageNet weights)."""
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    state, _ = read_state_dict(path)
    if isinstance(net.backbone, ResNetBackbone):
        tv_stem = "conv1.weight" in state
        if net.deep_base and tv_stem:
            raise WsegError(f"{path}: torchvision ResNet weights (7x7 stem) but deep_base=True; set deep_base=False "
                            "or pass deep-base (resnet101s) weights")
        if not net.deep_base and "conv1.0.weight" in state:
            raise WsegError(f"{path}: deep-base ResNet weights (3x3 stem, resnet101s) but deep_base=False; set "
                            "deep_base=True")
    if isinstance(net.backbone, ResNet38) and any(k.startswith("backbone.") for k in state):
        raise WsegError(f"{path}: holds a whole segmentation network (backbone.* keys), not ImageNet backbone "
                        "weights; pass it as init_weights instead of backbone_weights")
    ignore = tuple(getattr(net.backbone, "checkpoint_ignore", ())) + CAM_HEADS
    load_state_dict_strict(net.backbone, state, path, ignore_unexpected=ignore)
