"""Published checkpoint layouts for composed networks.

wseg builds every network from a backbone and heads (``backbone.*``, ``pcm.*``, ``decode_head.*``), while the
published files name the same tensors their own way: SEAM/PPC/AffinityNet put the ResNet-38 and the heads at the
top level (``conv1a``, ``fc8``, ``f9``), the published DeepLab has ``backbone.*`` and top-level heads. A
:class:`KeyLayout` is an ordered list of ``(internal prefix, published prefix)`` rules; :func:`use_layout` makes a
module's ``state_dict()`` speak the published layout and its ``load_state_dict()`` accept it, so published files
load as they are and ours stay readable by the published scripts.
"""
from __future__ import annotations

from typing import Sequence, Tuple

from torch import nn


class KeyLayout:
    """Prefix rules ``(internal, published)``; the first matching rule wins (list longer prefixes first)."""

    def __init__(self, rules: Sequence[Tuple[str, str]]):
        self.rules = [(str(a), str(b)) for a, b in rules]

    @staticmethod
    def _map(key: str, pairs) -> str:
        for src, dst in pairs:
            if key.startswith(src):
                return dst + key[len(src):]
        return key

    def to_published(self, key: str) -> str:
        return self._map(key, self.rules)



def _rename_in_place(d: dict, prefix: str, fn) -> None:
    items = list(d.items())
    d.clear()
    for k, v in items:
        d[prefix + fn(k[len(prefix):]) if k.startswith(prefix) else k] = v


def use_layout(module: nn.Module, rules: Sequence[Tuple[str, str]]) -> nn.Module:
    """Give ``module`` the published key layout ``rules`` (see the module docstring); returns it."""
    layout = KeyLayout(rules)
    # Published prefixes may be empty (top-level names), so the reverse map is a table of the module's own keys.
    published = {layout.to_published(k): k for k in module.state_dict()}
    if len(published) != len(module.state_dict()):
        raise ValueError("layout rules map two parameters to one published name")
    module.key_layout, module.internal_keys = layout, published

    def to_internal(key: str) -> str:
        return published.get(key, key)

    def save_hook(mod, state_dict, prefix, local_metadata):
        _rename_in_place(state_dict, prefix, layout.to_published)
        meta = getattr(state_dict, "_metadata", None)
        if meta is not None:
            for k in list(meta):
                if k.startswith(prefix) and k != prefix[:-1]:
                    new = layout.to_published(k[len(prefix):] + ".")[:-1]
                    if new:
                        meta[prefix + new] = meta.pop(k)

    def load_hook(mod, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        _rename_in_place(state_dict, prefix, to_internal)

    module.register_state_dict_post_hook(save_hook)
    module.register_load_state_dict_pre_hook(load_hook)
    return module


def published_prefixes(module: nn.Module, internal_prefixes: Sequence[str]) -> Tuple[str, ...]:
    """Internal module prefixes (``"pcm."``) in the module's published layout (``"f8_3."``, ``"f8_4."``, ...):
    what ``allow_missing`` needs when heads start fresh on ImageNet weights."""
    table = getattr(module, "internal_keys", None)
    if table is None:
        return tuple(internal_prefixes)
    out = [k.rsplit(".", 1)[0] + "." for k, internal in table.items()
           if any(internal.startswith(p) for p in internal_prefixes)]
    return tuple(dict.fromkeys(out))
