"""Pixel-to-Prototype Contrast on SEAM (PPC; Du et al., CVPR 2022; usr922/wseg ``contrast_train.py``).

SEAM's network plus the projection head ``fc_proj`` (1x1 to 128-d, no bias, ReLU'd: the pixel embedding), and
SEAM's losses plus PPC's cross-view and intra-view pixel-to-prototype contrast
(:func:`wseg.losses.ppc.ppc_losses`, weight 0.1 each, temperature 0.1) on the PCM-refined CAMs at feature size,
with ``--bg_threshold`` (published 0.2) as the background score of the pseudo labels. Selected with
``--network contrast`` (the published name).
"""
from __future__ import annotations

import argparse

from wseg.errors import WsegError
from wseg.losses.ppc import BG_THRESHOLD, ppc_losses
from wseg.methods.base import register
from wseg.methods.seam import SEAM


@register
class PPC(SEAM):
    """SEAM + pixel-to-prototype contrast (``--network contrast``)."""

    name = "contrast"
    summary = "PPC: SEAM + pixel-to-prototype contrast (cross-view and intra-view)"
    proj_dim = 128

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        super().add_arguments(group)
        group.add_argument("--bg_threshold", type=float, default=BG_THRESHOLD,
                           help="PPC background score for the pseudo labels (published 0.2)")

    def check_args(self, args: argparse.Namespace) -> None:
        super().check_args(args)
        if not 0 <= args.bg_threshold <= 1:
            raise WsegError(f"--bg_threshold {args.bg_threshold:g}: must lie in [0, 1], the range of the normalised "
                            "CAMs it competes with (published 0.2)")

    def losses(self, out1, out2, label, ctx):
        out = super().losses(out1, out2, label, ctx)
        if ctx.cls_only:
            return out
        nce = ppc_losses(out1["f_proj"], out1["cam_rv_down"], out2["f_proj"], out2["cam_rv_down"], label,
                         bg_threshold=float(self.option("bg_threshold", BG_THRESHOLD)), generator=ctx.generator)
        out["loss"] = out["loss"] + nce["loss_nce"]
        out.update({k: v.detach() for k, v in nce.items()})
        return out
