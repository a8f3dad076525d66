"""The plain ViT of ToCo / LOC-BE, built from timm (``timm.create_model(..., dynamic_img_size=True)``).

ToCo and LOC-BE ship their own copy of timm 0.5's ``vision_transformer.py`` (T:model/backbone/vit.py); this is the
same network on timm 1.x modules, with timm's parameter names (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.*``, ``norm``, ``head``), so the published ImageNet file and the published ``encoder.*`` keys load
strictly. What the published forward does, and this one too (T:model/backbone/vit.py:283-321):

- the input is cut to a multiple of the patch size (the stride-16 patch convolution drops the remainder anyway;
  timm's dynamic size asserts divisibility, so the crop makes both agree);
- the patch part of ``pos_embed`` (14x14 for 224) is resized to the token grid with bicubic interpolation,
  ``align_corners=False`` and *no* antialias (timm's own ``resample_abs_pos_embed`` antialiases: 1e-2 token error
  at 448; ``antialias=True`` gives that behaviour), the CLS position is kept;
- ``pos_embed`` is frozen (``requires_grad=False``, T:vit.py:237); everything else trains;
- outputs: ``out`` = the final-norm patch tokens as a map ``(N, D, h, w)``, ``aux`` = the patch tokens of block
  ``aux_layer`` (-3: block 9 of 12) *before* the final norm (ToCo's ``embeds[self.aux_layer]``; only the last block's
  entry is replaced by the normed tokens, so ``aux_layer=-1`` means the normed output), ``cls`` = the final-norm
  CLS token ``(N, D)``.

Weights: ToCo/LOC-BE load timm 0.5's ``vit_base_patch16_224`` URL ``jx_vit_base_p16_224-80ecf9dd.pth``
(ImageNet-21k pre-training, ImageNet-1k fine-tuning; T:vit.py:53-56), which timm 1.x calls
``vit_base_patch16_224.orig_in21k_ft_in1k``. The bare timm 1.x name ``vit_base_patch16_224`` now means
``augreg2_in21k_ft_in1k``: other weights. Download the ``orig_in21k_ft_in1k`` file yourself and pass it to
:func:`load_vit_weights` (``.pth`` or timm's ``.safetensors``). The classifier ``head`` (1000 classes) is kept
only so the file and the published checkpoints load strictly; it is never used and is frozen.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from wseg.errors import WsegError
from wseg.models.backbones.base import Backbone

#: timm 1.x tag of the weights ToCo / LOC-BE used (timm 0.5 ``jx_vit_base_p16_224-80ecf9dd.pth``).
PUBLISHED_WEIGHTS = "vit_base_patch16_224.orig_in21k_ft_in1k"
PUBLISHED_URL = ("https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
                 "jx_vit_base_p16_224-80ecf9dd.pth")

#: registry name -> ViT keyword arguments (``arch`` is the timm architecture, the rest override its sizes).
VIT_BACKBONES: Dict[str, dict] = {
    "vit_base_patch16_224": {"arch": "vit_base_patch16_224"},          # the published ViT-B/16 (768, 12, 12)
    "vit_tiny_patch16": {"arch": "vit_tiny_patch16_224"},              # 192, 12 blocks, 3 heads (CPU demo)
    "vit_test": {"arch": "vit_tiny_patch16_224", "embed_dim": 48, "depth": 4, "num_heads": 3},  # tests
    # the synthetic demos' reduced ViT (128 channels, 6 blocks, 4 heads): cheap enough to pretrain on the CPU stand-in
    "vit_small_demo": {"arch": "vit_tiny_patch16_224", "embed_dim": 128, "depth": 6, "num_heads": 4},
    # the same with a convolutional stem instead of the 16x16 patch projection (Xiao et al. 2021, "Early
    # convolutions help transformers see better"): still 16-pixel tokens, but it learns from a CPU-sized corpus
    "vit_small_demo_cs": {"arch": "vit_tiny_patch16_224", "embed_dim": 128, "depth": 6, "num_heads": 4,
                          "conv_stem": (16, 32, 64, 128)},
}


def build_conv_stem(channels: Sequence[int], embed_dim: int) -> torch.nn.Sequential:
    """Four 3x3 stride-2 convolutions (+ BatchNorm + ReLU) of ``channels`` widths and a 1x1 projection to
    ``embed_dim``: a stride-16 patch embedding that sees each patch through small receptive fields (the
    "convolutional stem" of Xiao et al. 2021). Replaces ``patch_embed.proj``; the token grid is unchanged."""
    from torch import nn

    if len(channels) != 4:
        raise WsegError(f"conv_stem {list(channels)}: four widths, one per stride-2 convolution (16 = 2^4)")
    layers, cin = [], 3
    for c in channels:
        layers += [nn.Conv2d(cin, int(c), 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(int(c)),
                   nn.ReLU(inplace=True)]
        cin = int(c)
    layers.append(nn.Conv2d(cin, int(embed_dim), 1))
    return nn.Sequential(*layers)


class ViT(Backbone):
    """ViT backbone (see the module docstring); ``forward(x) -> {"aux", "out", "cls"}``."""

    levels = ("aux", "out")

    def __init__(self, arch: str = "vit_base_patch16_224", aux_layer: int = -3, antialias: bool = False,
                 frozen: Sequence[str] = (), freeze_bn: bool = False, conv_stem: Optional[Sequence[int]] = None,
                 **timm_kwargs):
        super().__init__()
        import timm   # imported here: building any other backbone must not pay for timm

        try:
            vit = timm.create_model(arch, pretrained=False, dynamic_img_size=True, **timm_kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise WsegError(f"ViT {arch}: timm cannot build it ({exc})") from None
        if getattr(vit, "cls_token", None) is None or getattr(vit, "pos_embed", None) is None:
            raise WsegError(f"ViT {arch}: needs a CLS token and learned absolute position embeddings")
        self.arch, self.antialias, self.freeze_bn = arch, bool(antialias), bool(freeze_bn)
        # timm's parameter names at the top level: the published files load as they are.
        self.cls_token, self.pos_embed = vit.cls_token, vit.pos_embed
        self.patch_embed, self.blocks, self.norm, self.head = vit.patch_embed, vit.blocks, vit.norm, vit.head
        if conv_stem:
            self.patch_embed.proj = build_conv_stem(conv_stem, int(vit.embed_dim))
        self.patch_size = int(self.patch_embed.patch_size[0])
        self.embed_dim = int(vit.embed_dim)
        self.grid = tuple(int(g) for g in self.patch_embed.grid_size)
        depth = len(self.blocks)
        if not -depth <= aux_layer < depth:
            raise WsegError(f"aux_layer {aux_layer}: the ViT has {depth} blocks")
        self.aux_layer, self.aux_index = int(aux_layer), int(aux_layer) % depth
        self.pos_embed.requires_grad_(False)             # published: frozen position embeddings
        for p in self.head.parameters():                 # kept for the key layout only
            p.requires_grad_(False)
        self.feature_channels = {"aux": self.embed_dim, "out": self.embed_dim}
        self.feature_strides = {"aux": self.patch_size, "out": self.patch_size}
        self.set_frozen(frozen)

    def resized_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """``(1, 1 + h*w, D)``: the CLS position plus the patch positions resized bicubically to ``h x w``."""
        gh, gw = self.grid
        patch = self.pos_embed[:, 1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", align_corners=False, antialias=self.antialias)
        return torch.cat([self.pos_embed[:, :1], patch.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        p = self.patch_size
        H, W = (x.shape[-2] // p) * p, (x.shape[-1] // p) * p
        if H == 0 or W == 0:
            raise WsegError(f"ViT input {tuple(x.shape[-2:])}: smaller than one {p}x{p} patch")
        x = x[..., :H, :W]
        n = x.shape[0]
        tokens = self.patch_embed(x)                    # (N, h, w, D): timm's dynamic-size layout
        h, w = tokens.shape[1], tokens.shape[2]
        tokens = torch.cat([self.cls_token.expand(n, -1, -1), tokens.reshape(n, h * w, -1)], dim=1)
        tokens = tokens + self.resized_pos_embed(h, w)
        aux = tokens
        last = len(self.blocks) - 1
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens)
            if i == self.aux_index:
                aux = tokens
        tokens = self.norm(tokens)
        if self.aux_index == last:
            aux = tokens

        def to_map(t: torch.Tensor) -> torch.Tensor:
            return t[:, 1:].transpose(1, 2).reshape(n, -1, h, w)

        return {"aux": to_map(aux), "out": to_map(tokens), "cls": tokens[:, 0]}


def read_vit_weights(path: str) -> Dict[str, torch.Tensor]:
    """A timm ViT state dict from ``.pth``/``.pt`` (through :mod:`wseg.models.checkpoint`) or ``.safetensors``;
    a flattened patch projection (timm 0.5's ``_conv_filter`` case) is reshaped to the convolution."""
    path = os.fspath(path)
    if path.endswith(".npz"):
        raise WsegError(f"{path}: timm's AugReg .npz files are not supported; use the "
                        f"{PUBLISHED_WEIGHTS} .pth or .safetensors ({PUBLISHED_URL})")
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise WsegError(f"{path}: weights file not found; check the ViT weights path")
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WsegError(f"{path}: reading .safetensors needs the safetensors package; pass the .pth") from None
        try:
            state = dict(load_file(path))
        except Exception as exc:   # safetensors raises its own error types for corrupt files
            raise WsegError(f"{path}: cannot read safetensors ({str(exc)[:120]}); the file is corrupt") from None
    else:
        from wseg.models.checkpoint import read_state_dict

        state = dict(read_state_dict(path)[0])
    w = state.get("patch_embed.proj.weight")
    if w is not None and w.dim() == 2:
        p = int(round((w.shape[1] / 3) ** 0.5))
        state["patch_embed.proj.weight"] = w.reshape(w.shape[0], 3, p, p)
    return state


def load_vit_weights(backbone: ViT, path: str, allow_missing: Optional[Sequence[str]] = ()) -> None:
    """Load ImageNet ViT weights (timm key names) into ``backbone`` strictly (one line listing any mismatch)."""
    from wseg.models.checkpoint import load_state_dict_strict

    load_state_dict_strict(backbone, read_vit_weights(path), path, allow_missing=tuple(allow_missing or ()))
