"""EPS (Lee et al., CVPR 2021, "Railroad is not a Train: Saliency as Pseudo-pixel Supervision"; halbielee/EPS).

Network (``network/resnet38_eps.py``): the ResNet-38 backbone and ``fc8`` (1x1, no bias, xavier) to ``C + 1`` maps
with the **background last**, straight on ``conv6`` (no ``dropout7``); output ``cam`` (logits at feature size).
Published names at the top level (``conv1a``..``bn7``, ``fc8``), so published ``.pth`` files load as they are.

Training step (``module/train.py`` ``train_eps``): one view; ``loss = loss_cls + loss_sal`` with the multilabel soft
margin on the pooled foreground logits and EPS's saliency loss (:func:`wseg.losses.eps.saliency_loss`, ``--tau``,
``--lam``). The saliency maps come from ``--saliency_root`` (``data_maps``: augmented jointly with the image by
:class:`~wseg.data.transforms.CamTrainTransform`, colour jitter on the image only).

CAMs for inference (``infer.py``): ``softmax`` over the ``C + 1`` logits at each scale, background dropped;
multi-scale + flip sum, then divide-by-max (``default_norm = "max"``).

The published schedule (20,000 iterations, batch 8, lr 0.01, long side 256-512, crop 448) is set with
``contrast_train.py`` flags; see docs/eps.md.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError
from wseg.losses.eps import LAM, TAU, cls_loss, image_logits, saliency_loss
from wseg.methods.base import CamMethod, StepContext, published_param_groups, register
from wseg.models.backbones import build_backbone
from wseg.models.heads import CAMHead, PCM, ProjectionHead
from wseg.models.heads.pcm import one_hot_cam
from wseg.models.layout import use_layout


class EPSNet(nn.Module):
    """EPS's network; with ``contrast=True`` EPS+PPC's (``esp`` ``network/resnet38_contrast.py``): plus the
    projection head ``proj_fc`` (128-d, ReLU'd, on ``conv6``) and the PCM on ``conv4``/``conv5`` whose input CAM has
    the background ``1 - max fg`` last.

    ``forward(x)`` returns feature-size maps: ``{"cam"}`` (EPS) or ``{"cam", "cam_rv", "f_proj"}`` (EPS+PPC);
    ``forward_cam(x)``: the ``fc8`` logits alone (the published inference)."""

    def __init__(self, backbone: str, num_classes: int, contrast: bool = False, proj_dim: int = 128,
                 dropout: bool = True, frozen: Optional[Sequence[str]] = None, freeze_bn: bool = True):
        super().__init__()
        bb = build_backbone(backbone, frozen=(), freeze_bn=freeze_bn)
        bb.set_frozen(bb.cam_frozen if frozen is None else frozen)
        self.backbone = bb
        self.backbone_name, self.num_classes, self.contrast = backbone, int(num_classes), bool(contrast)
        ch, lv = bb.feature_channels, bb.levels
        # Creation and initialisation order as published (it fixes the RNG stream of the random init):
        # fc8, proj_fc, f8_3, f8_4, f9 created, then initialised in that order (resnet38_contrast.py:12-24).
        self.cam_head = CAMHead(bb.out_channels, num_classes)
        if contrast:
            self.proj = ProjectionHead(bb.out_channels, proj_dim)
            self.pcm = PCM(ch[lv[-3]], ch[lv[-2]])
        self.cam_head.reset_parameters()
        if contrast:
            self.proj.reset_parameters()
            self.pcm.reset_parameters()
        if not dropout:  # b6/b7 Dropout2d off (reduced backbones trained from scratch)
            for m in self.modules():
                if isinstance(m, nn.Dropout2d):
                    m.p = 0.0
        use_layout(self, [("backbone.", ""), ("cam_head.", ""), ("proj.fc_proj.", "proj_fc."), ("pcm.", "")])

    def scratch_modules(self) -> list:
        return [self.cam_head] + ([self.proj, self.pcm] if self.contrast else [])

    def new_layer_prefixes(self) -> tuple:
        """Internal prefixes of the heads trained from scratch (missing from ImageNet weights)."""
        return ("cam_head.",) + (("proj.", "pcm.") if self.contrast else ())

    def get_parameter_groups(self):
        return published_param_groups(self, self.scratch_modules())

    def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_head(self.backbone(x)[self.backbone.levels[-1]])

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        feats = self.backbone(x)
        lv = self.backbone.levels
        cam = self.cam_head(feats[lv[-1]])
        if not self.contrast:
            return {"cam": cam}
        cam_rv = self.pcm(one_hot_cam(cam, background="last"), feats[lv[-3]], feats[lv[-2]], x)
        return {"cam": cam, "cam_rv": cam_rv, "f_proj": self.proj(feats[lv[-1]])}


def _unit(args: argparse.Namespace, name: str) -> None:
    value = getattr(args, name)
    if not 0 <= value <= 1:
        raise WsegError(f"--{name} {value:g}: must lie in [0, 1] (published tau 0.4, lam 0.5 VOC / 0.9 COCO)")


@register
class EPS(CamMethod):
    """EPS (``--network eps``)."""

    name = "eps"
    summary = "EPS: C+1 CAM (background last) supervised by saliency maps (--saliency_root)"
    fields = ("image", "label", "saliency")
    default_norm = "max"
    cls_loss_key = "loss_mlsm"
    contrast = False

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--saliency_root", default=None,
                           help="folder of saliency maps, <id>.png per image, grayscale 0-255, image-sized (PFAN maps "
                                "as EPS distributes them, or scripts/make_saliency.py); default <data root>/SALImages")
        group.add_argument("--tau", type=float, default=TAU,
                           help="overlap threshold of a labelled class with the saliency (published VOC/COCO 0.4; "
                                "the code's default 0.5)")
        group.add_argument("--lam", "--alpha", dest="lam", type=float, default=LAM,
                           help="blend of the foreground and background maps into the saliency estimate (published "
                                "0.5 VOC, 0.9 COCO; --alpha is EPS+PPC's name)")

    @staticmethod
    def saliency_root(args: argparse.Namespace) -> str:
        from wseg.data.saliency import DEFAULT_DIR

        return args.saliency_root or os.path.join(args.voc12_root, DEFAULT_DIR)

    def check_args(self, args: argparse.Namespace) -> None:
        from wseg.data.saliency import check_sizes, missing_saliency
        from wseg.data.voc import VOCRoot

        _unit(args, "tau")
        _unit(args, "lam")
        root = self.saliency_root(args)
        flag = f"--saliency_root {args.saliency_root}" if args.saliency_root else f"{root} (default --saliency_root)"
        if not os.path.isdir(root):
            raise WsegError(f"{flag}: no such folder; EPS needs one saliency map per training image: make them with "
                            "scripts/make_saliency.py or download the EPS (PFAN) maps, and pass the folder")
        voc = VOCRoot(args.voc12_root, args.classes)
        ids = voc.ids(args.train_list)
        missing = missing_saliency(root, ids)
        if missing:
            raise WsegError(f"{flag}: {len(missing)} of {len(ids)} training images have no saliency map (first: "
                            f"{os.path.join(root, missing[0] + '.png')}); make them with scripts/make_saliency.py or "
                            "pass the folder holding them")
        check_sizes(root, voc, ids)

    def data_maps(self, voc, args: argparse.Namespace) -> Dict[str, object]:
        from wseg.data.saliency import SaliencyLoader

        return {"saliency": SaliencyLoader(self.saliency_root(args), voc)}

    def build_network(self, backbone: str, num_classes: int, dropout: bool = True,
                      frozen: Optional[Sequence[str]] = None, freeze_bn: bool = True) -> EPSNet:
        return EPSNet(backbone, num_classes, self.contrast, dropout=dropout, frozen=frozen, freeze_bn=freeze_bn)

    def training_step(self, net: nn.Module, batch: Dict[str, torch.Tensor], ctx: StepContext
                      ) -> Dict[str, torch.Tensor]:
        label = batch["label"]
        with ctx.autocast():
            cam = net(batch["image"])["cam"]
        cam = cam.float()
        mlsm = cls_loss(cam, label)
        if ctx.cls_only:
            return {"loss": mlsm, "loss_mlsm": mlsm.detach()}
        sal = saliency_loss(cam, batch["saliency"], label, float(self.option("tau", TAU)),
                            float(self.option("lam", LAM)))
        return {"loss": mlsm + sal, "loss_cls": mlsm.detach(), "loss_mlsm": mlsm.detach(), "loss_sal": sal.detach()}

    def class_logits(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return image_logits(net(x)["cam"])

    def cams(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``softmax`` over the ``C + 1`` ``fc8`` logits, background (last) dropped (EPS ``infer.py``:125-131)."""
        return F.softmax(net.forward_cam(x).float(), dim=1)[:, :-1]
