"""RS+EPM's single-stage network (RecurSeed + EdgePredictMix, Jo, Yu & Kim, arXiv 2204.06754) as released.

Released code: OFRIN/RecurSeed_and_EdgePredictMix HEAD df538e2, ``core/networks.py`` ``RSEPM`` (lines 44-100) on
``core/backbones/resnet`` (``model.py``, ``__init__.py``) and ``core/layers.py``:

- **Backbone**: torchvision-layout ResNet-50/101 (``resnet50-19c8e357.pth``), trainable BatchNorm. Output stride
  16 is ``strides=(2, 2, 2, 1)`` with ``dilations=(1, 1, 1, 1)`` (``build_resnet``): layer4 keeps stride 1
  **without dilation** (unlike DeepLab's OS16, which dilates layer4 by 2). Output stride 8 is strides (2, 2, 1, 1),
  dilations (1, 1, 2, 4). The first block of every layer has dilation 1 (``_make_layer``). In wseg's
  :class:`~wseg.models.backbones.resnet.ResNet` (whose first stride is layer1's, the stem always halving twice):
  ``strides=(1, 2, 2, 1), dilations=(1, 1, 1, 1)`` / ``(1, 2, 1, 1), (1, 1, 2, 4)`` with ``first_dilation="one"``.
- **CAM head** ``classifier``: 1x1 convolution 2048 -> C (foreground classes) without bias on C5 gives ``cams``
  (raw class maps, stride 16); ``cls_logits`` = global average pooling of ``cams`` (``class_fn`` sigmoid: multi-label).
- **Segmentation head**: :class:`~wseg.models.heads.rsepm.RSEPMSegHead` (``aspp.*``, ``decoder.*``): DeepLabV3+ with
  ASPP 6/12/18 + image pooling on C5 and the stride-4 C2 projected to 256 channels; ``seg_logits`` has C + 1
  channels (background first) at stride 4. ``same=True`` resizes them to the input size with ``interpolation``
  (the released inference uses ``nearest``).

State dicts use the released names (``model.*``, ``classifier.weight``, ``aspp.*``, ``decoder.*``), so the released
``last.pth`` loads strictly and ours load in the released code. R50 on VOC: 40,969,024 parameters.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError
from wseg.models.backbones import build_backbone
from wseg.models.heads.cam import CAMHead
from wseg.models.heads.rsepm import RSEPMSegHead, resize_as_released
from wseg.models.layout import use_layout

#: wseg ResNet ``(strides, dilations)`` of the released ``build_resnet`` per output stride (``first_dilation="one"``).
RESNET_STRIDES: Dict[int, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    16: ((1, 2, 2, 1), (1, 1, 1, 1)),
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
}
#: The released state-dict prefixes of the composed network.
LAYOUT = (("backbone.", "model."), ("cam_head.fc8.", "classifier."), ("seg_head.", ""))
CLASS_FNS = ("sigmoid", "softmax")
NETWORK = "rsepm"


class RSEPMNet(nn.Module):
    """Backbone + CAM head + DeepLabV3+ head (see the module docstring). ``num_classes`` counts background.

    ``backbone_kwargs`` go to the backbone (``layers``, ``base_channels`` for reduced test networks).
    ``head_init``: ``default`` (PyTorch's, released HEAD) or ``xavier`` (v1 code drop) for ASPP and decoder.
    """

    def __init__(self, backbone: str = "resnet50", num_classes: int = 21, output_stride: int = 16,
                 feature_size: int = 256, low_channels: int = 256, class_fn: str = "sigmoid",
                 head_init: str = "default", **backbone_kwargs: Any):
        super().__init__()
        if output_stride not in RESNET_STRIDES:
            raise WsegError(f"output_stride {output_stride}: RS+EPM's network knows 16 (released) and 8")
        if class_fn not in CLASS_FNS:
            raise WsegError(f"class_fn {class_fn!r}: choose sigmoid (released) or softmax")
        if num_classes < 2:
            raise WsegError(f"num_classes {num_classes}: needs background and at least one class")
        strides, dilations = RESNET_STRIDES[output_stride]
        bb = build_backbone(backbone, strides=strides, dilations=dilations, first_dilation="one", frozen=(),
                            freeze_bn=False, **backbone_kwargs)
        self.backbone = bb
        self.num_classes, self.output_stride, self.class_fn = int(num_classes), int(output_stride), class_fn
        self.config = {"backbone": backbone, "num_classes": int(num_classes), "output_stride": int(output_stride),
                       "feature_size": int(feature_size), "low_channels": int(low_channels), "class_fn": class_fn,
                       "backbone_kwargs": dict(backbone_kwargs)}
        self.cam_head = CAMHead(bb.out_channels, num_classes - 1)        # released: PyTorch's default init
        self.seg_head = RSEPMSegHead(bb.out_channels, bb.feature_channels[bb.levels[0]], num_classes, feature_size,
                                     low_channels, output_stride)
        self.seg_head.reset_parameters(head_init)
        use_layout(self, LAYOUT)

    def new_layer_prefixes(self) -> Tuple[str, ...]:
        """Layers that start fresh on ImageNet weights (internal names)."""
        return ("cam_head.", "seg_head.")

    def released_param_groups(self) -> Tuple[list, list, list, list]:
        """``Guide_For_Model.get_parameter_groups``: [backbone weights (BN weights too), backbone biases, new
        weights, new biases] (the released rule is ``'model' in name`` / ``'weight' in name``)."""
        groups: Tuple[list, list, list, list] = ([], [], [], [])
        for name, p in self.named_parameters():
            new = not name.startswith("backbone.")
            groups[2 * new + (0 if name.endswith("weight") else 1)].append(p)
        return groups

    def class_scores(self, cls_logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities: ``sigmoid`` (released, multi-label) or softmax over classes."""
        return torch.sigmoid(cls_logits) if self.class_fn == "sigmoid" else torch.softmax(cls_logits, dim=1)

    def forward(self, x: torch.Tensor, with_decoder: bool = True, same: bool = False,
                interpolation: str = "bilinear", with_features: bool = False) -> Dict[str, torch.Tensor]:
        """``{"cams": (N, C, h16, w16), "cls_logits": (N, C), "seg_logits": (N, C + 1, h4, w4) or input-sized with
        same, "features": {level: map} with with_features}`` (C foreground classes)."""
        feats = self.backbone(x)
        levels = self.backbone.levels
        cams = self.cam_head(feats[levels[-1]])
        out: Dict[str, Any] = {"cams": cams, "cls_logits": F.adaptive_avg_pool2d(cams, 1)[:, :, 0, 0]}
        if with_decoder:
            seg = self.seg_head(feats[levels[-1]], feats[levels[0]])
            out["seg_logits"] = resize_as_released(seg, x.shape[-2:], interpolation) if same else seg
        if with_features:
            out["features"] = feats
        return out


# --------------------------------------------------------------------------------------------- weights


def detect_config(state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """What a released-layout state dict says about the network: ``num_classes`` (from ``classifier.weight``) and
    the ResNet depth (blocks in ``model.layer3``: 6 -> resnet50, 23 -> resnet101); empty when unrecognisable."""
    out: Dict[str, Any] = {}
    w = state.get("classifier.weight")
    if isinstance(w, torch.Tensor) and w.dim() == 4:
        out["num_classes"] = int(w.shape[0]) + 1
    blocks = {k.split(".")[2] for k in state if k.startswith("model.layer3.") and k.split(".")[2].isdigit()}
    depth = {6: "resnet50", 23: "resnet101"}.get(len(blocks))
    if depth:
        out["backbone"] = depth
    return out


def build_rsepm(path: Optional[str] = None, backbone: Optional[str] = None, num_classes: Optional[int] = None,
                output_stride: Optional[int] = None, class_fn: Optional[str] = None,
                **overrides: Any) -> RSEPMNet:
    """An :class:`RSEPMNet` for the weights at ``path`` (released ``last.pth`` or saved by :func:`save_rsepm`),
    loaded strictly. Settings come from the arguments, else wseg's metadata in the file, else the file's tensors
    (classes, depth), else the released defaults (resnet50, OS16, sigmoid)."""
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    state, meta = ({}, {}) if path is None else read_state_dict(path)
    if meta.get("network") not in (None, NETWORK):
        raise WsegError(f"{path}: weights of the {meta.get('network')!r} network, not RS+EPM's; pass RS+EPM weights")
    found = {**detect_config(state), **{k: v for k, v in meta.items() if k in (
        "backbone", "num_classes", "output_stride", "feature_size", "low_channels", "class_fn", "backbone_kwargs")}}
    asked = {"backbone": backbone, "num_classes": num_classes, "output_stride": output_stride, "class_fn": class_fn}
    if path is not None and num_classes is not None and found.get("num_classes", num_classes) != num_classes:
        raise WsegError(f"{path}: weights for {found['num_classes']} classes (background included) but the dataset "
                        f"has {num_classes}; pass the matching --dataset/--classes or other weights")
    cfg = {"backbone": "resnet50", "output_stride": 16, "class_fn": "sigmoid", "num_classes": 21}
    cfg.update(found)
    cfg.update({k: v for k, v in asked.items() if v is not None})
    cfg.update(overrides)
    kwargs = dict(cfg.pop("backbone_kwargs", None) or {})
    net = RSEPMNet(**cfg, **kwargs)
    if path is not None:
        load_state_dict_strict(net, state, path)
    return net


def save_rsepm(path: str, net: RSEPMNet, meta: Optional[Mapping[str, Any]] = None) -> None:
    """A plain released-layout state dict (the released ``infer_rsepm.py`` loads it) with wseg's metadata."""
    from wseg.models.checkpoint import save_state_dict

    save_state_dict(path, net, meta={"network": NETWORK, **net.config, **dict(meta or {})})


__all__: Sequence[str] = ("RSEPMNet", "RESNET_STRIDES", "LAYOUT", "build_rsepm", "save_rsepm", "detect_config")
