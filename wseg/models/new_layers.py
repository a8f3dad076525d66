"""The published parameter groups of a network = pretrained backbone + heads trained from scratch."""
from __future__ import annotations

from typing import List, Tuple

from torch import nn


class NewLayersMixin:
    """For modules that list their from-scratch heads in ``self.from_scratch_layers``."""

    from_scratch_layers: List[nn.Module]

    def get_parameter_groups(self) -> Tuple[list, list, list, list]:
        """Published four groups: (backbone weights [lr x1], backbone biases [x2], new-layer weights [x10],
        new-layer biases [x20]). Every parameter with ``requires_grad`` lands in exactly one group; fixed layers
        (``not_training``, frozen BatchNorm) are in none."""
        scratch = {id(p) for m in self.from_scratch_layers for p in m.parameters()}
        groups: Tuple[list, list, list, list] = ([], [], [], [])
        for name, p in self.named_parameters():  # type: ignore[attr-defined]
            if not p.requires_grad:
                continue
            is_bias = name.rsplit(".", 1)[-1] == "bias"
            groups[(2 if id(p) in scratch else 0) + (1 if is_bias else 0)].append(p)
        return groups

    def new_layer_prefixes(self) -> Tuple[str, ...]:
        """State-dict prefixes of the layers trained from scratch (allowed missing in ImageNet weights)."""
        names = {id(m): n for n, m in self.named_modules()}  # type: ignore[attr-defined]
        return tuple(names[id(m)] + "." for m in self.from_scratch_layers)
