"""EPS+PPC: Pixel-to-Prototype Contrast on EPS (Du et al., CVPR 2022; usr922/wseg branch ``esp``, the second
baseline of the paper). Selected with ``--network eps_contrast`` (the branch names its network
``network.resnet38_contrast``, as PPC's master branch does, whose wseg name is ``contrast``).

Network (``network/resnet38_contrast.py``): :class:`~wseg.methods.eps.EPSNet` with ``contrast=True``: ``fc8`` to
``C + 1`` maps (background last, no ``dropout7``), ``proj_fc`` (128-d, ReLU'd) and the PCM whose input CAM has the
background ``1 - max fg`` last; every output at feature size.

Training step (``module/train.py`` ``train_contrast``): view 1 is the crop, view 2 the crop rescaled to 128x128
(bilinear, ``align_corners``), and its saliency likewise; the loss :func:`wseg.losses.eps.eps_ppc_losses`
(classification + adaptive min-pooling, EPS's saliency loss on the CAM and the PCM CAM of both views, ER, ECR, and
PPC's contrast with background score 0.10, weight 0.1, temperature 0.1, top ``h*w // 16`` prototype pixels).
``--fix_max_onehot`` corrects the branch's ECR one-hot (see :func:`wseg.losses.eps.er_ecr_losses`).

CAMs for inference: as EPS, from ``fc8`` alone (``softmax``, background dropped; the branch's own inference script
cannot load this network, the authors use ``resnet38_eps``'s ``forward_cam``: usr922/wseg issue #4).
"""
from __future__ import annotations

import argparse
from typing import Dict

import torch
import torch.nn.functional as F

from wseg.cli import add_bool_flag
from wseg.errors import WsegError
from wseg.losses.eps import ESP_BG_THRESHOLD, ESP_PROTO_DIV, LAM, TAU, cls_loss, eps_ppc_losses
from wseg.methods.base import StepContext, register
from wseg.methods.eps import EPS

VIEW2_SIZE = 128


@register
class EPSPPC(EPS):
    """EPS + pixel-to-prototype contrast (``--network eps_contrast``)."""

    name = "eps_contrast"
    summary = "EPS+PPC: EPS (saliency, background last) + PCM, ER/ECR and pixel-to-prototype contrast (esp branch)"
    contrast = True

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        super().add_arguments(group)
        group.add_argument("--view2_size", type=int, default=VIEW2_SIZE,
                           help="side of the second (rescaled) view; published 128")
        group.add_argument("--bg_threshold", type=float, default=ESP_BG_THRESHOLD,
                           help="background score of PPC's pseudo labels (esp branch 0.10; PPC on SEAM 0.20)")
        group.add_argument("--proto_div", type=int, default=ESP_PROTO_DIV,
                           help="each prototype averages the top h*w // proto_div pixels of the batch (esp 16; PPC "
                                "on SEAM 8)")
        add_bool_flag(group, "--fix_max_onehot",
                      "ECR target: one-hot the foreground and keep the background (SEAM's intent); default False "
                      "reproduces the branch, whose one-hot keeps the first class and lets the background compete")

    def check_args(self, args: argparse.Namespace) -> None:
        if args.view2_size < 8:
            raise WsegError(f"--view2_size {args.view2_size}: must be at least 8 (one feature pixel at output "
                            "stride 8; published 128)")
        if not 0 <= args.bg_threshold <= 1:
            raise WsegError(f"--bg_threshold {args.bg_threshold:g}: must lie in [0, 1], the range of the normalised "
                            "CAMs it competes with (esp branch 0.10)")
        if args.proto_div < 1:
            raise WsegError(f"--proto_div {args.proto_div}: must be at least 1 (esp branch 16)")
        super().check_args(args)

    def training_step(self, net, batch: Dict[str, torch.Tensor], ctx: StepContext) -> Dict[str, torch.Tensor]:
        s = int(self.option("view2_size", VIEW2_SIZE))
        img1, label = batch["image"], batch["label"]
        img2 = F.interpolate(img1, size=(s, s), mode="bilinear", align_corners=True)
        with ctx.autocast():
            out1, out2 = net(img1), net(img2)
        out1, out2 = ({k: v.float() for k, v in o.items()} for o in (out1, out2))
        if ctx.cls_only:             # the classification loss alone reads no saliency (warm-up, did-it-learn check)
            mlsm = (cls_loss(out1["cam"], label) + cls_loss(out2["cam"], label)) / 2
            return {"loss": mlsm, "loss_mlsm": mlsm.detach()}
        sal1 = batch["saliency"]
        sal2 = F.interpolate(sal1, size=(s, s), mode="bilinear", align_corners=True)
        out = eps_ppc_losses(out1, out2, sal1, sal2, label, tau=float(self.option("tau", TAU)),
                             lam=float(self.option("lam", LAM)),
                             bg_threshold=float(self.option("bg_threshold", ESP_BG_THRESHOLD)),
                             proto_div=int(self.option("proto_div", ESP_PROTO_DIV)),
                             fix_max_onehot=bool(self.option("fix_max_onehot", False)), generator=ctx.generator)
        return {k: v if k == "loss" else v.detach() for k, v in out.items()}
