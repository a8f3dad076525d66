"""LOC-BE (Wang et al., CVIU 2025, whn786/LOC-BE) on the single-stage seam (``--network locbe``).

ToCo's network, augmentation, optimiser and inference (:class:`~wseg.methods.toco.ViTSingleStage`) with LOC-BE's
step (:func:`wseg.locbe.locbe_losses`): classification on the image (GMP) and on the BE image (the CAM region
partition's confident and background parts erased, hybrid pooling), the aux classification, L_sc (PTC on the final
tokens), and after iteration 2000 the LOC contrast of the class tokens of 4 crops around confident pixels, the seg
loss on PAR-refined pseudo labels and the dense energy loss (L:scripts/dist_train_voc_seg_neg.py:282-336).
``--schedule coco`` is the COCO script's three phases (:func:`wseg.locbe.locbe_coco_losses`); the COCO values
(``--high_thre 0.65 --bkg_thre 0.45 --w_seg 0.2 --crop_size 224 --max_iters 80000``) are set by
``scripts/pipelines/locbe_coco.py``. Published crash fixes are the defaults (docs/locbe.md, "Deviations").
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

from wseg.cli import add_bool_flag
from wseg.errors import WsegError
from wseg.methods.single_stage import register_single_stage
from wseg.methods.toco import ViTSingleStage


@register_single_stage
class LocBe(ViTSingleStage):
    """LOC-BE: see the module docstring. The network carries LOC-BE's unused ``attn_proj`` so the published
    checkpoints load strictly; the step reads no extra view of the augmentation (published: computed, unused)."""

    name = "locbe"
    summary = "LOC-BE (CVIU 2025): ViT, local-global class-token contrast + background erasing, PAR pseudo labels"
    local_crop_default = 86
    needs_views = False

    @classmethod
    def add_arguments(cls, g: argparse._ArgumentGroup) -> None:
        cls.add_vit_arguments(g)
        g.add_argument("--num_crops", type=int, default=4, help="LOC crops per iteration (published 4)")
        g.add_argument("--w_sc", type=float, default=0.3, help="L_sc weight (published 0.3)")
        g.add_argument("--w_seg", type=float, default=0.1,
                       help="seg weight after --seg_start (published --w_seg 0.1; the training line reads the "
                            "undefined args.seg; COCO phase 3: 0.2)")
        g.add_argument("--w_reg", type=float, default=0.05, help="dense energy weight (published 0.05)")
        g.add_argument("--w_loc", type=float, default=1.0, help="L_LOC weight (published 1.0)")
        g.add_argument("--w_be", type=float, default=1.0, help="BE classification weight (published 1.0)")
        add_bool_flag(g, "--loc_stop_grad", "detach the global class token in L_LOC, as the paper figure draws "
                                            "(published code: no detach)")
        g.add_argument("--schedule", choices=["voc", "coco"], default="voc",
                       help="voc: the VOC script's totals (warm phase up to --seg_start); coco: the COCO script's "
                            "three phases (--coco_phases)")
        g.add_argument("--coco_phases", type=int, nargs=2, default=[8000, 12000], metavar=("CLS", "AUX_SEG"),
                       help="--schedule coco: cls + aux up to CLS; + w_seg_mid seg + w_reg reg on the aux CAM's "
                            "pseudo labels up to AUX_SEG; then every term (published 8000 12000)")
        g.add_argument("--w_seg_mid", type=float, default=0.1, help="--schedule coco: seg weight of the middle phase "
                                                                    "(published 0.1)")

    def check_args(self, args: argparse.Namespace) -> None:
        super().check_args(args)
        if int(self.option("num_crops", 4)) < 1:
            raise WsegError(f"--num_crops {self.option('num_crops', 4)}: must be >= 1 (published 4)")
        first, second = self.option("coco_phases", [8000, 12000])
        if not 0 <= first <= second:
            raise WsegError(f"--coco_phases {first} {second}: need 0 <= CLS <= AUX_SEG (published 8000 12000)")

    def network_kwargs(self) -> Dict[str, Any]:
        return {"attn_proj": True}

    def config(self):
        from wseg.locbe import LocBeConfig

        return LocBeConfig(**self.common_config(), num_crops=int(self.option("num_crops", 4)),
                           w_sc=float(self.option("w_sc", 0.3)), w_seg=float(self.option("w_seg", 0.1)),
                           w_reg=float(self.option("w_reg", 0.05)), w_loc=float(self.option("w_loc", 1.0)),
                           w_be=float(self.option("w_be", 1.0)),
                           loc_stop_grad=bool(self.option("loc_stop_grad", False)))

    def training_step(self, net, batch, ctx):
        from wseg.locbe import locbe_coco_losses, locbe_losses

        common = dict(par=self.par, energy=self.energy, generator=self.cpu_generator(ctx), autocast=ctx.autocast)
        if self.option("schedule", "voc") == "coco":
            return locbe_coco_losses(net, batch["image"], batch["label"], batch["img_box"], ctx.iteration,
                                     cfg=self.config(), phases=tuple(self.option("coco_phases", [8000, 12000])),
                                     w_seg_mid=float(self.option("w_seg_mid", 0.1)), **common)
        return locbe_losses(net, batch["image"], batch["label"], batch["img_box"], ctx.iteration, cfg=self.config(),
                            **common)
