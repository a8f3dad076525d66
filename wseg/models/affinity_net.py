"""AffinityNet (Ahn & Kwak, CVPR 2018, "Learning Pixel-level Semantic Affinity with Image-level Supervision").

The published ``network/resnet38_aff.py`` (jiwoon-ahn/psa, usr922/wseg): the backbone's last three feature maps
(``conv4``, ``conv5``, ``conv6`` of :meth:`forward_features`, stride 8) are projected by 1x1 convolutions without
bias, ``f8_3`` (-> 64), ``f8_4`` (-> 128), ``f8_5`` (-> 256), each followed by ELU, concatenated and mixed by ``f9``
(448 -> 448, ELU) into the affinity feature ``f``. The semantic affinity of two positions ``i, j`` closer than the
radius (published 5, at 1/8 resolution) is ``a_ij = exp(-mean_d |f_i - f_j|)``; the pairs are those of
:func:`wseg.affinity.get_indices_of_pairs` in the published offset-major ``(K, M)`` layout.

Initialisation as published (kaiming-normal ``f8_*``, xavier-uniform ``f9`` with gain 4), the same fixed layers as
the CAM networks (``conv1a``, ``b2*`` and every BatchNorm) and the four published parameter groups. The heads are a
mixin placed before the backbone class, so the state-dict keys are the published ones (``conv1a..bn7``, ``f8_3``,
``f8_4``, ``f8_5``, ``f9``) and the released PSA/PPC affinity ``.pth`` files load key for key. Reduced-width
backbones (``resnet38_tiny``) scale the head widths with the backbone (``conv4`` channels / 512).

Training starts from the ImageNet backbone (as published), not from the CAM network.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wseg.affinity import DEFAULT_RADIUS, get_indices_of_pairs
from wseg.errors import WsegError
from wseg.models.new_layers import NewLayersMixin
from wseg.models import resnet38 as _r38
from wseg.models import resnets as _rn
from wseg.models.cam_nets import backbone_spec

#: Published head widths at full ResNet-38 width: (f8_3, f8_4, f8_5); f9 maps their sum (448) to itself.
HEAD_WIDTHS = (64, 128, 256)
#: Fixed layers during AffinityNet training (published ``not_training``: conv1a, b2, b2_1, b2_2).
_FROZEN = {_r38.ResNet38: _r38.CAM_FROZEN, _rn.ResNetBackbone: _rn.CAM_FROZEN}
NETWORK_NAME = "affinity"


@functools.lru_cache(maxsize=64)
def _pairs_np(radius: int, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    return get_indices_of_pairs(radius, (height, width))


def _pairs(radius: int, height: int, width: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    ind_from, ind_to = _pairs_np(int(radius), int(height), int(width))
    return torch.from_numpy(ind_from).to(device), torch.from_numpy(ind_to).to(device)


def pair_affinities(f: torch.Tensor, radius: int = DEFAULT_RADIUS) -> torch.Tensor:
    """``exp(-mean_d |f_i - f_j|)`` for the published pairs of a ``(B, D, h, w)`` feature map -> ``(B, K, M)``.

    Computed in float32 with one gather per end (no Python loop over pixels or offsets); differentiable.
    """
    b, d, h, w = f.shape
    ind_from, ind_to = _pairs(radius, h, w, f.device)
    m = ind_from.numel()
    x = f.float().reshape(b, d, h * w)
    ff = x.index_select(2, ind_from).unsqueeze(2)                  # (B, D, 1, M)
    ft = x.index_select(2, ind_to).view(b, d, -1, m)               # (B, D, K, M)
    return torch.exp(-(ft - ff).abs().mean(1))


def border_pad(radius: int) -> Tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding that makes every position of a map a source of the published pairs."""
    rf = int(radius) - 1
    return rf, rf, 0, rf


def full_pair_affinities(f: torch.Tensor, radius: int = DEFAULT_RADIUS) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Affinities of *all* in-radius pairs of a ``(1, D, h, w)`` map, including the border pairs the published
    layout leaves out (its sources skip the last ``radius - 1`` rows and the first/last ``radius - 1`` columns, so
    e.g. the top row's corner positions get no edge at all -- a large share of a small image's map).

    The map is padded (:func:`border_pad`) with dummy positions; pairs touching one get affinity 0, so the dummies
    are isolated (only their self-loop) and the real positions see exactly their in-radius neighbours. Returns
    ``(aff (K, M'), (h', w'))`` in the published layout of the padded ``h' x w'`` map; pad the CAMs the same way
    (:func:`pad_scores`) and crop the walk's result (:func:`crop_scores`).
    """
    if f.shape[0] != 1:
        raise WsegError(f"affinity features of shape {tuple(f.shape)}: full-pair affinities take one image")
    left, right, top, bottom = border_pad(radius)
    _, d, h, w = f.shape
    fp = F.pad(f.float(), (left, right, top, bottom))
    hp, wp = h + top + bottom, w + left + right
    aff = pair_affinities(fp, radius)[0]                                     # (K, M')
    valid = torch.zeros(hp, wp, dtype=torch.bool, device=f.device)
    valid[top:top + h, left:left + w] = True
    valid = valid.reshape(-1)
    ind_from, ind_to = _pairs(radius, hp, wp, f.device)
    keep = valid[ind_to].view(aff.shape) & valid[ind_from].unsqueeze(0)
    return aff * keep, (hp, wp)


def pad_scores(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Zero-pad ``(C, h, w)`` scores like :func:`full_pair_affinities` pads the features."""
    return F.pad(scores, border_pad(radius))


def crop_scores(scores: torch.Tensor, radius: int, size: Tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_scores`: the ``(C, h, w)`` real part of padded scores (``size = (h, w)``)."""
    left, _, top, _ = border_pad(radius)
    return scores[..., top:top + int(size[0]), left:left + int(size[1])]


def head_widths(feature_channels: Dict[str, int]) -> Tuple[int, int, int]:
    """``(f8_3, f8_4, f8_5)`` output widths: published 64/128/256, scaled by ``conv4`` channels / 512 when smaller
    (multiples of 4, at least 4)."""
    scale = min(1.0, feature_channels["conv4"] / 512.0)
    return tuple(_r38.scaled(c, scale) for c in HEAD_WIDTHS)  # type: ignore[return-value]


class AffinityHeads(NewLayersMixin, nn.Module):
    """AffinityNet heads ``f8_3``, ``f8_4``, ``f8_5``, ``f9``. Mixin: use before a backbone class.

    ``forward(x) -> (B, K, M)`` pair affinities at ``radius`` (published layout); :meth:`embed` gives the affinity
    feature map ``(B, D, H/8, W/8)``.
    """

    def __init__(self, radius: int = DEFAULT_RADIUS, **backbone_kwargs):
        backbone_kwargs.setdefault("frozen", _frozen_layers(type(self)))
        super().__init__(**backbone_kwargs)
        ch = self.feature_channels
        d3, d4, d5 = head_widths(ch)
        # Creation and initialisation order as published (fixes the RNG stream of the random init).
        self.f8_3 = nn.Conv2d(ch["conv4"], d3, 1, bias=False)
        self.f8_4 = nn.Conv2d(ch["conv5"], d4, 1, bias=False)
        self.f8_5 = nn.Conv2d(ch["conv6"], d5, 1, bias=False)
        self.f9 = nn.Conv2d(d3 + d4 + d5, d3 + d4 + d5, 1, bias=False)
        nn.init.kaiming_normal_(self.f8_3.weight)
        nn.init.kaiming_normal_(self.f8_4.weight)
        nn.init.kaiming_normal_(self.f8_5.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)
        self.from_scratch_layers: List[nn.Module] = [self.f8_3, self.f8_4, self.f8_5, self.f9]
        self.radius = int(radius)
        self.embed_dim = d3 + d4 + d5

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Affinity features ``f = elu(f9([elu(f8_3(conv4)), elu(f8_4(conv5)), elu(f8_5(conv6))]))``."""
        d = self.forward_features(x)
        f8_3 = F.elu(self.f8_3(d["conv4"]))
        f8_4 = F.elu(self.f8_4(d["conv5"]))
        f8_5 = F.elu(self.f8_5(d["conv6"]))
        return F.elu(self.f9(torch.cat([f8_3, f8_4, f8_5], dim=1)))

    def forward(self, x: torch.Tensor, to_dense: bool = False, radius: Optional[int] = None) -> torch.Tensor:
        """Pair affinities ``(B, K, M)`` (float32); ``to_dense=True`` (one image) returns the published dense
        ``N x N`` matrix (pairs, transposed pairs, self-loops 1) instead."""
        radius = self.radius if radius is None else int(radius)
        f = self.embed(x)
        aff = pair_affinities(f, radius)
        if to_dense:
            from wseg.randomwalk import dense_affinity_matrix

            if aff.shape[0] != 1:
                raise WsegError("to_dense=True takes one image (batch size 1)")
            return dense_affinity_matrix(aff[0], f.shape[2], f.shape[3], radius)
        return aff



_CLASSES: Dict[type, type] = {}


def _frozen_layers(cls: type) -> Tuple[str, ...]:
    for base, frozen in _FROZEN.items():
        if issubclass(cls, base):
            return frozen
    return ()


def affinity_net_class(backbone_cls: type) -> Type[AffinityHeads]:
    """The concrete class ``(AffinityHeads, backbone class)``, created once per backbone class."""
    if backbone_cls not in _CLASSES:
        _CLASSES[backbone_cls] = type(f"AffinityNet_{backbone_cls.__name__}", (AffinityHeads, backbone_cls),
                                      {"__module__": __name__})
    return _CLASSES[backbone_cls]


def build_affinity_net(backbone: str = "resnet38", radius: int = DEFAULT_RADIUS, **kwargs) -> AffinityHeads:
    """AffinityNet on a named backbone (``resnet38``, ``resnet38_tiny``, ``resnet50``, ``resnet101``,
    ``resnet_tiny``); ``radius`` is the default pair radius of :meth:`forward` (published 5)."""
    bb_cls, bb_kw = backbone_spec(backbone)
    net = affinity_net_class(bb_cls)(radius=radius, **{**bb_kw, **kwargs})
    net.network_name, net.backbone_name = NETWORK_NAME, backbone
    return net


def _looks_like_cam_checkpoint(state: Dict[str, torch.Tensor]) -> bool:
    return "fc8.weight" in state or "fc_proj.weight" in state


def build_affinity_net_for_training(backbone: str, weights: Optional[str] = None,
                                    radius: int = DEFAULT_RADIUS) -> AffinityHeads:
    """AffinityNet with the ImageNet backbone ``weights`` (MXNet ``.params`` for ResNet-38 or ``.pth``) loaded
    strictly; the heads start from their published init. ``weights=None`` trains from scratch (synthetic demo)."""
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    net = build_affinity_net(backbone, radius=radius)
    if weights:
        state, _ = read_state_dict(weights)
        if _looks_like_cam_checkpoint(state):
            raise WsegError(f"{weights}: this is a CAM network checkpoint (it has fc8); AffinityNet trains from the "
                            "ImageNet backbone weights, as published: pass e.g. "
                            "ilsvrc-cls_rna-a1_cls1000_ep-0001.params (ResNet-38) as --weights")
        load_state_dict_strict(net, state, weights, allow_missing=net.new_layer_prefixes(),
                               ignore_unexpected=tuple(getattr(net, "checkpoint_ignore", ())))
    return net


def build_affinity_net_from_weights(path: str, backbone: Optional[str] = None, radius: int = DEFAULT_RADIUS
                                    ) -> Tuple[AffinityHeads, Dict[str, Any]]:
    """A trained AffinityNet from ``path`` (wseg or published PSA/PPC ``.pth``); the backbone comes from the flag,
    else the wseg metadata, else ``resnet38``. Every key must fit (one-line error otherwise)."""
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    state, meta = read_state_dict(path)
    if meta.get("network") not in (None, NETWORK_NAME):
        raise WsegError(f"{path}: a '{meta.get('network')}' network checkpoint, not an AffinityNet; pass the "
                        "weights written by scripts/aff_train.py (or a published resnet38_aff .pth)")
    if _looks_like_cam_checkpoint(state):
        raise WsegError(f"{path}: a CAM network checkpoint (it has fc8), not an AffinityNet; pass the weights "
                        "written by scripts/aff_train.py")
    backbone = backbone or meta.get("backbone") or "resnet38"
    net = build_affinity_net(backbone, radius=radius)
    load_state_dict_strict(net, state, path)
    return net, {**meta, "network": NETWORK_NAME, "backbone": backbone}
