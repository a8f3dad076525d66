"""SEAM (Wang et al., CVPR 2020, "Self-supervised Equivariant Attention Mechanism"), the smallest CAM method.

Network (``network/resnet38_SEAM.py``): the backbone, ``dropout7`` (``Dropout2d(0.5)``) on its last level, the CAM
head ``fc8`` and the pixel correlation module (PCM) on the two levels before it; outputs ``cam`` and ``cam_rv``
(PCM-refined) at the input size and ``cam_rv_down`` at the feature size. Published names at the top level
(``conv1a``..``bn7``, ``fc8``, ``f8_3``, ``f8_4``, ``f9``), so published ``.pth`` files load as they are.

Training step (``train_SEAM.py``): view 1 is the crop, view 2 the crop rescaled to ``--view2_size`` (published
128); losses :func:`wseg.losses.seam.seam_losses` (classification + adaptive min-pooling, equivariant
regularisation ER, equivariant cross regularisation ECR). CAMs for inference: ``cam_rv`` without its background
channel 0.
"""
from __future__ import annotations

import argparse
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError
from wseg.losses.seam import classification_loss, image_logits, seam_losses, with_background
from wseg.methods.base import CamMethod, StepContext, published_param_groups, register
from wseg.models.backbones import build_backbone
from wseg.models.heads import CAMHead, PCM, ProjectionHead
from wseg.models.heads.pcm import one_hot_cam
from wseg.models.layout import use_layout

VIEW2_SIZE = 128


class SEAMNet(nn.Module):
    """SEAM's network (``proj_dim``: PPC's projection head too). ``forward(x)`` returns ``{"cam", "cam_rv",
    "cam_rv_down"}`` (+ ``"f_proj"`` with a projection head)."""

    def __init__(self, backbone: str, num_classes: int, proj_dim: Optional[int] = None, dropout: bool = True,
                 frozen: Optional[Sequence[str]] = None, freeze_bn: bool = True):
        super().__init__()
        bb = build_backbone(backbone, frozen=(), freeze_bn=freeze_bn)
        bb.set_frozen(bb.cam_frozen if frozen is None else frozen)
        self.backbone = bb
        self.backbone_name, self.num_classes = backbone, int(num_classes)
        ch, lv = bb.feature_channels, bb.levels
        # Creation and initialisation order as published (it fixes the RNG stream of the random init).
        self.dropout7 = nn.Dropout2d(0.5)
        self.cam_head = CAMHead(bb.out_channels, num_classes)
        if proj_dim:
            self.proj = ProjectionHead(bb.out_channels, proj_dim)
        self.pcm = PCM(ch[lv[-3]], ch[lv[-2]])
        self.cam_head.reset_parameters()
        self.pcm.reset_parameters()
        if proj_dim:
            self.proj.reset_parameters()
        if not dropout:  # every Dropout2d of backbone and head off (reduced backbones trained from scratch)
            for m in self.modules():
                if isinstance(m, nn.Dropout2d):
                    m.p = 0.0
        use_layout(self, [("backbone.", ""), ("cam_head.", ""), ("proj.", ""), ("pcm.", "")])

    def scratch_modules(self) -> list:
        return [m for m in (self.pcm, self.cam_head, getattr(self, "proj", None)) if m is not None]

    def new_layer_prefixes(self) -> tuple:
        """Internal prefixes of the heads trained from scratch (missing from ImageNet weights)."""
        return ("cam_head.", "pcm.") + (("proj.",) if hasattr(self, "proj") else ())

    def get_parameter_groups(self):
        return published_param_groups(self, self.scratch_modules())

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        size = x.shape[-2:]
        feats = self.backbone(x)
        lv = self.backbone.levels
        fea = self.dropout7(feats[lv[-1]])
        cam = self.cam_head(fea)
        cam_rv_down = self.pcm(one_hot_cam(cam), feats[lv[-3]], feats[lv[-2]], x)
        out = {"cam": F.interpolate(cam, size, mode="bilinear", align_corners=True),
               "cam_rv": F.interpolate(cam_rv_down, size, mode="bilinear", align_corners=True),
               "cam_rv_down": cam_rv_down}
        if hasattr(self, "proj"):
            out["f_proj"] = self.proj(fea)
        return out


@register
class SEAM(CamMethod):
    """The SEAM baseline (``--network seam``)."""

    name = "seam"
    summary = "SEAM: CAM + PCM, equivariant regularisation between the crop and its rescaled view"
    proj_dim: Optional[int] = None

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--view2_size", type=int, default=VIEW2_SIZE,
                           help="side of the second (rescaled) view; published 128")

    def check_args(self, args: argparse.Namespace) -> None:
        if args.view2_size < 8:
            raise WsegError(f"--view2_size {args.view2_size}: must be at least 8 (one feature pixel at output "
                            "stride 8; published 128)")

    def build_network(self, backbone: str, num_classes: int, dropout: bool = True,
                      frozen: Optional[Sequence[str]] = None, freeze_bn: bool = True) -> SEAMNet:
        return SEAMNet(backbone, num_classes, self.proj_dim, dropout, frozen, freeze_bn)

    def views(self, net: nn.Module, batch: Dict[str, torch.Tensor], ctx: StepContext):
        """Network outputs (fp32) on view 1 (the crop) and view 2 (the crop rescaled to ``--view2_size``)."""
        img1 = batch["image"]
        s = int(self.option("view2_size", VIEW2_SIZE))
        img2 = F.interpolate(img1, size=(s, s), mode="bilinear", align_corners=True)
        with ctx.autocast():
            out1, out2 = net(img1), net(img2)
        return ({k: v.float() for k, v in out1.items()}, {k: v.float() for k, v in out2.items()})

    def losses(self, out1: Dict[str, torch.Tensor], out2: Dict[str, torch.Tensor], label: torch.Tensor,
               ctx: StepContext) -> Dict[str, torch.Tensor]:
        """The published loss of the two views' outputs: ``loss = loss_cls + loss_er + loss_ecr``."""
        if ctx.cls_only:
            lab = with_background(label).to(out1["cam"].device)
            mlsm = (classification_loss(out1["cam"], lab) + classification_loss(out2["cam"], lab)) / 2
            return {"loss": mlsm, "loss_mlsm": mlsm.detach()}
        out = seam_losses(out1["cam"], out1["cam_rv"], out2["cam"], out2["cam_rv"], label)
        return {k: v if k == "loss" else v.detach() for k, v in out.items()}

    def training_step(self, net, batch, ctx):
        out1, out2 = self.views(net, batch, ctx)
        return self.losses(out1, out2, batch["label"], ctx)

    def cams(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return net(x)["cam_rv"][:, 1:]

    def class_logits(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return image_logits(net(x)["cam"])

