"""CAM networks: SEAM (Wang et al., CVPR 2020) and Pixel-to-Prototype Contrast (PPC; Du et al., CVPR 2022).

Both are the backbone plus, as published (``network/resnet38_SEAM.py``, usr922/wseg
``network/resnet38_contrast.py``):

- ``dropout7`` (``Dropout2d(0.5)``) on the last feature map and the CAM head ``fc8`` (1x1, no bias, xavier);
- the Pixel Correlation Module (PCM): ``f8_3`` (conv4 -> 64) and ``f8_4`` (conv5 -> 128), kaiming-normal, on
  detached backbone features, concatenated with the image resized to the CAM size, then ``f9`` (195 -> 192,
  xavier gain 4); the affinity ``relu(f^T f)`` of the L2-normalised embedding, normalised over its first index,
  propagates the max-normalised one-hot CAM: ``cam_rv = cam @ aff``;
- PPC only: the projection head ``fc_proj`` (1x1 to 128-d, no bias, xavier) whose ReLU'd output is the pixel
  embedding for the contrast.

The heads are a mixin placed before the backbone class, so parameters keep the published top-level names
(``conv1a``, ..., ``fc8``, ``f9``) and published ``.pth`` files load as they are.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError
from wseg.models.new_layers import NewLayersMixin
from wseg.models import resnet38 as _r38
from wseg.models import resnets as _rn

#: Backbone name -> (class, constructor kwargs). Shared by every stage that builds a network.
BACKBONES: Dict[str, Tuple[type, dict]] = {
    "resnet38": (_r38.ResNet38, {"width": 1.0}),
    "resnet38_tiny": (_r38.ResNet38, {"width": _r38.TINY_WIDTH}),
    "resnet38_small": (_r38.ResNet38, {"width": _r38.SMALL_WIDTH}),
    "resnet50": (_rn.ResNetBackbone, {"depth": 50}),
    "resnet101": (_rn.ResNetBackbone, {"depth": 101}),
    "resnet_tiny": (_rn.ResNetBackbone, dict(_rn.TINY)),
}
_CAM_FROZEN = {_r38.ResNet38: _r38.CAM_FROZEN, _rn.ResNetBackbone: _rn.CAM_FROZEN}


def backbone_spec(name: str) -> Tuple[type, dict]:
    if name not in BACKBONES:
        raise WsegError(f"--backbone {name}: unknown backbone; choose one of {', '.join(BACKBONES)}")
    cls, kw = BACKBONES[name]
    return cls, dict(kw)


def build_backbone(name: str, **kwargs) -> nn.Module:
    """A bare backbone by name (``frozen`` etc. may be overridden through ``kwargs``)."""
    cls, kw = backbone_spec(name)
    return cls(**{**kw, **kwargs})


class CamHeads(NewLayersMixin, nn.Module):
    """SEAM's CAM head + PCM (and PPC's projection head when ``proj_dim``). Mixin: use before a backbone class."""

    def __init__(self, num_classes: int = 21, proj_dim: Optional[int] = None, dropout: bool = True,
                 **backbone_kwargs):
        backbone_kwargs.setdefault("frozen", _cam_frozen(type(self)))
        super().__init__(**backbone_kwargs)
        ch = self.feature_channels
        self.num_classes = int(num_classes)
        # Creation and initialisation order as published (it fixes the RNG stream of the random init).
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(ch["conv6"], num_classes, 1, bias=False)
        if proj_dim:
            self.fc_proj = nn.Conv2d(ch["conv6"], proj_dim, 1, bias=False)
        self.f8_3 = nn.Conv2d(ch["conv4"], 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(ch["conv5"], 128, 1, bias=False)
        self.f9 = nn.Conv2d(192 + 3, 192, 1, bias=False)
        nn.init.xavier_uniform_(self.fc8.weight)
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)
        scratch = [self.f8_3, self.f8_4, self.f9, self.fc8]
        if proj_dim:
            nn.init.xavier_uniform_(self.fc_proj.weight)
            scratch.append(self.fc_proj)
        self.from_scratch_layers: List[nn.Module] = scratch
        if not dropout:  # every Dropout2d of backbone and head off (reduced backbones trained from scratch)
            for m in self.modules():
                if isinstance(m, nn.Dropout2d):
                    m.p = 0.0

    # ------------------------------------------------------------------ heads
    @staticmethod
    def one_hot_cam(cam: torch.Tensor) -> torch.Tensor:
        """PCM input: per-map max-normalised ReLU CAM, background ``1 - max_fg``, foreground kept only at the
        per-pixel arg-max class (computed without gradient, as published)."""
        with torch.no_grad():
            cam = F.relu(cam.detach())
            mx = cam.flatten(2).amax(-1)[..., None, None] + 1e-5
            norm = F.relu(cam - 1e-5) / mx
            fg = norm[:, 1:]
            fg_max = fg.amax(1, keepdim=True)
            fg = torch.where(fg < fg_max, torch.zeros_like(fg), fg)
            return torch.cat([1 - fg_max, fg], 1)

    def PCM(self, cam: torch.Tensor, f: torch.Tensor) -> torch.Tensor:  # noqa: N802 (published name)
        """Pixel Correlation Module: ``cam_rv = cam @ aff``, ``aff = relu(f^T f) / column sums``."""
        n, _, h, w = f.shape
        cam = F.interpolate(cam, (h, w), mode="bilinear", align_corners=True).reshape(n, -1, h * w)
        f = self.f9(f).reshape(n, -1, h * w)
        f = f / (torch.norm(f, dim=1, keepdim=True) + 1e-5)
        aff = F.relu(torch.matmul(f.transpose(1, 2), f))
        aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)
        return torch.matmul(cam, aff).reshape(n, -1, h, w)

    def _heads(self, x: torch.Tensor):
        d = self.forward_features(x)
        fea = self.dropout7(d["conv6"])
        cam = self.fc8(fea)
        h, w = cam.shape[-2:]
        f8_3 = F.relu(self.f8_3(d["conv4"].detach()))
        f8_4 = F.relu(self.f8_4(d["conv5"].detach()))
        x_s = F.interpolate(x, (h, w), mode="bilinear", align_corners=True)
        f = torch.cat([x_s.to(f8_3.dtype), f8_3, f8_4], dim=1)
        cam_rv_down = self.PCM(self.one_hot_cam(cam).to(f.dtype), f)
        return fea, cam, cam_rv_down



class SEAMNet(CamHeads):
    """SEAM: ``forward(x) -> (cam, cam_rv)``, both ``(N, num_classes, H, W)`` (bilinear to the input size).

    ``cam`` is the raw ``fc8`` CAM (background at channel 0), ``cam_rv`` the PCM-refined CAM.
    """

    def __init__(self, num_classes: int = 21, **kwargs):
        super().__init__(num_classes=num_classes, proj_dim=None, **kwargs)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        _, cam, cam_rv_down = self._heads(x)
        cam_rv = F.interpolate(cam_rv_down, size, mode="bilinear", align_corners=True)
        cam = F.interpolate(cam, size, mode="bilinear", align_corners=True)
        return cam, cam_rv


class ContrastNet(CamHeads):
    """PPC: ``forward(x) -> (cam, cam_rv, f_proj, cam_rv_down)``.

    ``cam``/``cam_rv`` as in :class:`SEAMNet` (input size); ``f_proj`` = ``relu(fc_proj(dropout7(conv6)))``
    ``(N, 128, H/8, W/8)``; ``cam_rv_down`` = the PCM output at the feature size ``(N, num_classes, H/8, W/8)``.
    """

    def __init__(self, num_classes: int = 21, proj_dim: int = 128, **kwargs):
        super().__init__(num_classes=num_classes, proj_dim=proj_dim, **kwargs)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        fea, cam, cam_rv_down = self._heads(x)
        f_proj = F.relu(self.fc_proj(fea))
        cam_rv = F.interpolate(cam_rv_down, size, mode="bilinear", align_corners=True)
        cam = F.interpolate(cam, size, mode="bilinear", align_corners=True)
        return cam, cam_rv, f_proj, cam_rv_down


NETWORKS = {"seam": SEAMNet, "contrast": ContrastNet}
_CLASSES: Dict[Tuple[type, type], type] = {}


def _cam_frozen(cls: type) -> Tuple[str, ...]:
    for base, frozen in _CAM_FROZEN.items():
        if issubclass(cls, base):
            return frozen
    return ()


def cam_net_class(network: str, backbone_cls: type) -> Type[CamHeads]:
    """The concrete class ``(SEAMNet|ContrastNet, backbone class)``, created once per pair."""
    if network not in NETWORKS:
        raise WsegError(f"--network {network}: unknown CAM network; choose one of {', '.join(NETWORKS)}")
    key = (NETWORKS[network], backbone_cls)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"{key[0].__name__}_{backbone_cls.__name__}", key, {"__module__": __name__})
    return _CLASSES[key]


def build_cam_net(name: str = "contrast", backbone: str = "resnet38", num_classes: int = 21,
                  **kwargs) -> CamHeads:
    """SEAM (``name='seam'``) or PPC (``'contrast'``) on a named backbone (``resnet38``, ``resnet38_tiny``,
    ``resnet38_small``, ``resnet50``, ``resnet101``, ``resnet_tiny``). ``num_classes`` includes background;
    ``dropout=False`` turns every ``Dropout2d`` off."""
    bb_cls, bb_kw = backbone_spec(backbone)
    net = cam_net_class(name, bb_cls)(num_classes=num_classes, **{**bb_kw, **kwargs})
    net.network_name, net.backbone_name = name, backbone
    return net
