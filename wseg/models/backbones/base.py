"""The backbone contract every network of wseg is composed on.

A backbone is an ``nn.Module`` whose ``forward(x)`` returns its feature maps by name, ordered from low to high
level (``levels``), with ``feature_channels`` and ``feature_strides`` per name, so heads ask for features by
position (``levels[-1]`` the last, ``levels[0]`` the stride-4 one a DeepLabV3+ decoder wants) and never by a
backbone's own names. ``cam_frozen`` names the layers the published CAM/affinity recipes keep fixed on ImageNet
weights, ``checkpoint_ignore`` the key prefixes of ImageNet files that belong to no backbone layer (``fc.``).
"""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

from torch import nn


class FrozenBNMixin:
    """The published ``train()`` override: BatchNorm always in eval mode with fixed affine parameters, and the
    ``not_training`` layers fixed. Applied at construction too, so parameter groups see the final ``requires_grad``
    flags (the published scripts only reach them through ``model.train()``)."""

    not_training: Tuple[str, ...] = ()
    freeze_bn: bool = True

    def set_frozen(self, names: Iterable[str]) -> None:
        """Fix the parameters of the named top-level modules (``not_training``)."""
        self.not_training = tuple(names)
        for name in self.not_training:
            for p in getattr(self, name).parameters():
                p.requires_grad_(False)
        self._freeze_bn()

    def _freeze_bn(self) -> None:
        if not self.freeze_bn:
            return
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                for p in m.parameters(recurse=False):
                    p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        self._freeze_bn()
        return self


class Backbone(FrozenBNMixin, nn.Module):
    """Base class: subclasses set ``levels``, ``feature_channels``, ``feature_strides`` and implement
    :meth:`forward` returning ``{level: (N, C, H/s, W/s)}``."""

    levels: Tuple[str, ...] = ()
    cam_frozen: Tuple[str, ...] = ()
    checkpoint_ignore: Tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self.feature_channels: Dict[str, int] = {}
        self.feature_strides: Dict[str, int] = {}

    @property
    def out_channels(self) -> int:
        """Channels of the last level (the one CAM and segmentation heads read)."""
        return self.feature_channels[self.levels[-1]]

    @property
    def output_stride(self) -> int:
        return self.feature_strides[self.levels[-1]]

    def level(self, index: int) -> str:
        """The name of level ``index`` (negative counts from the last)."""
        return self.levels[index]
