"""AffinityNet (Ahn & Kwak, CVPR 2018, "Learning Pixel-level Semantic Affinity with Image-level Supervision"):
the random-walk refinement PSA, SEAM and PPC put between their CAMs and the pseudo masks.

Network (``network/resnet38_aff.py``): the backbone's last three levels through :class:`~wseg.models.heads.AffinityHead`
into the affinity feature ``f``; the semantic affinity of two positions closer than the radius (published 5, at
1/8 resolution) is ``a_ij = exp(-mean_d |f_i - f_j|)`` (:func:`wseg.affinity.pair_affinities`, published
offset-major ``(K, M)`` pair layout). The same fixed layers as the CAM networks on ImageNet weights, the four
published parameter groups, the published key layout (``conv1a..bn7``, ``f8_3``, ``f8_4``, ``f8_5``, ``f9``), so the
released PSA/PPC affinity ``.pth`` files load key for key. Training starts from the ImageNet backbone (as published),
not from the CAM network.

Training (``scripts/aff_train.py``): :class:`~wseg.data.affinity_dataset.AffinityTrainDataset` labels and
:func:`~wseg.losses.affinity.affinity_loss`. Inference (``scripts/aff_infer.py``): :func:`walk_image`, the random walk
``T^(2^logt)`` of the sparse transition matrix (:mod:`wseg.randomwalk`).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from wseg.affinity import (DEFAULT_RADIUS, crop_scores, full_pair_affinities, pad_scores, pair_affinities)
from wseg.errors import WsegError
from wseg.methods.base import published_param_groups
from wseg.models.backbones import build_backbone
from wseg.models.heads import AffinityHead
from wseg.models.layout import published_prefixes, use_layout

NETWORK_NAME = "affinity"


class AffinityNet(nn.Module):
    """``forward(x) -> (B, K, M)`` pair affinities at ``radius``; :meth:`embed` gives the affinity feature map."""

    def __init__(self, backbone: str = "resnet38", radius: int = DEFAULT_RADIUS,
                 frozen: Optional[Sequence[str]] = None, freeze_bn: bool = True):
        super().__init__()
        bb = build_backbone(backbone, frozen=(), freeze_bn=freeze_bn)
        bb.set_frozen(bb.cam_frozen if frozen is None else frozen)
        self.backbone = bb
        self.head = AffinityHead([bb.feature_channels[n] for n in bb.levels[-3:]])
        self.head.reset_parameters()
        self.radius, self.embed_dim, self.backbone_name = int(radius), self.head.out_channels, backbone
        use_layout(self, [("backbone.", ""), ("head.", "")])

    def new_layer_prefixes(self) -> Tuple[str, ...]:
        return ("head.",)

    def get_parameter_groups(self):
        return published_param_groups(self, [self.head])

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Affinity features ``(B, D, H/8, W/8)``."""
        feats = self.backbone(x)
        return self.head([feats[n] for n in self.backbone.levels[-3:]])

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


def build_affinity_net(backbone: str = "resnet38", radius: int = DEFAULT_RADIUS, **kwargs: Any) -> AffinityNet:
    """AffinityNet on a named backbone; ``radius`` is the default pair radius of ``forward`` (published 5)."""
    return AffinityNet(backbone, radius, **kwargs)


def _looks_like_cam_checkpoint(state: Dict[str, torch.Tensor]) -> bool:
    return "fc8.weight" in state or "fc_proj.weight" in state


def build_affinity_net_for_training(backbone: str, weights: Optional[str] = None,
                                    radius: int = DEFAULT_RADIUS) -> AffinityNet:
    """AffinityNet with the ImageNet backbone ``weights`` (MXNet ``.params`` for ResNet-38 or ``.pth``) loaded
    strictly; the head starts from its published init. ``weights=None`` trains from scratch."""
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    net = build_affinity_net(backbone, radius=radius)
    if weights:
        state, _ = read_state_dict(weights)
        if _looks_like_cam_checkpoint(state):
            raise WsegError(f"{weights}: this is a CAM network checkpoint (it has fc8); AffinityNet trains from the "
                            "ImageNet backbone weights, as published: pass e.g. "
                            "ilsvrc-cls_rna-a1_cls1000_ep-0001.params (ResNet-38) as --weights")
        load_state_dict_strict(net, state, weights, allow_missing=published_prefixes(net, net.new_layer_prefixes()),
                               ignore_unexpected=tuple(net.backbone.checkpoint_ignore))
    return net


def build_affinity_net_from_weights(path: str, backbone: Optional[str] = None, radius: int = DEFAULT_RADIUS
                                    ) -> Tuple[AffinityNet, Dict[str, Any]]:
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


# --------------------------------------------------------------------------------------------- the random walk


def published_radius(radius: int, h: int, w: int) -> int:
    """Published ``resnet38_aff.forward`` at inference: on a feature map whose shorter side is under
    ``2 * radius + 1`` the pair radius shrinks to ``(shorter side - 1) // 2`` (images under 88 px at radius 5)."""
    m = min(int(h), int(w))
    return (m - 1) // 2 if m < 2 * int(radius) + 1 else int(radius)


@torch.no_grad()
def walk_image(model: AffinityNet, x: torch.Tensor, scores: torch.Tensor, radius: int, beta: float, logt: int,
               published_pairs: bool = False, amp: bool = False) -> torch.Tensor:
    """Random walk of one image's scores: ``x`` the padded normalised image ``(1, 3, H8, W8)``, ``scores``
    ``(C, H, W)`` with background at channel 0. Returns the walked scores at feature size ``(C, H8/8, W8/8)``."""
    from wseg.engine.runtime import autocast
    from wseg.randomwalk import build_transition, downsample_cams, random_walk

    device = x.device
    with autocast(device, amp):
        f = model.embed(x)
    small = downsample_cams(scores.to(device))
    h, w = f.shape[-2:]
    if tuple(small.shape[-2:]) != (h, w):
        raise WsegError(f"AffinityNet feature map {h}x{w} does not match the image's {tuple(small.shape[-2:])} at "
                        "stride 8; the backbone must have output stride 8 (check --backbone)")
    if published_pairs:
        radius = published_radius(radius, h, w)
        aff = pair_affinities(f, radius)[0]
        trans = build_transition(aff, h, w, radius, beta, device=device)
        return random_walk(small, trans, logt)
    aff, (hp, wp) = full_pair_affinities(f, radius)
    trans = build_transition(aff, hp, wp, radius, beta, device=device)
    return crop_scores(random_walk(pad_scores(small, radius), trans, logt), radius, (h, w))
