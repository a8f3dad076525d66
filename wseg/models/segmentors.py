"""Segmentation networks as mmsegmentation composes them: a backbone, a decode head on one of its levels and an
optional auxiliary head on another. ``forward`` returns named outputs (``out``: logits at the input size; ``aux``
in training when there is an auxiliary head), as torchvision's segmentation models do."""
from __future__ import annotations

from typing import Dict, Optional

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
                 multi_level: bool = False):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        if auxiliary_head is not None:
            self.auxiliary_head = auxiliary_head
        self.in_index, self.aux_index = int(in_index), int(aux_index)
        self.align_corners, self.multi_level = bool(align_corners), bool(multi_level)

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

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.backbone(x)
        out = {"out": self.resize(self.decode(feats), x.shape[-2:])}
        if self.has_aux and self.training:
            out["aux"] = self.resize(self.auxiliary_head(feats[self.backbone.levels[self.aux_index]]), x.shape[-2:])
        return out
