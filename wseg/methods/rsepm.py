"""RS+EPM (RecurSeed + EdgePredictMix, Jo, Yu & Kim, arXiv 2204.06754) training on the single-stage seam
(``--network rsepm``).

The authors released the network and inference only (OFRIN/RecurSeed_and_EdgePredictMix); this is the training
reconstructed in docs/rsepm.md ("Training"), every choice a flag. Network: the released :class:`~wseg.models.rsepm.
RSEPMNet` (ResNet OS16 with layer4 undilated, CAM head, DeepLabV3+ head, released key names: the final weights load
in ``scripts/infer_rsepm.py`` and in the released code). Step (:func:`wseg.losses.rsepm.rsepm_losses`):

- classification (MultiLabelSoftMargin on the CAM averaged inside the crop box) throughout;
- from ``--rs_start`` (tag ``RS(ep=5)``): seeds = the CAM (``relu / max`` x labels, expanded by SCG on the
  backbone's features), and with RecurSeed (``--rs``, default on) from ``--recur_start`` also the segmentation
  branch's own softmax refined by PAMR, ``max`` of the two; the seed label CF(c=0.55, u=0.10); the segmentation
  head learns it (CE) and with RecurSeed the CAM learns it too (per-pixel BCE): the recursion;
- from ``--mix_start`` (tag ``CM(ep=15)``), ``--mix epm`` (default; ``certainmix`` the v1 paste; ``none`` off):
  each image gets its batch neighbour's confident foreground pasted, attenuated on the neighbour's predicted edges,
  with the mixed target and class labels; cls / cam / seg on the mixed batch.

Ablations from the same code: ``--no_rs`` (EPM alone: seeds from the CAM only, no CAM loss), ``--mix none`` (RS
alone), both off (the CAM -> segmentation baseline). Inference: the released procedure
(:func:`wseg.rsepm.infer_image`: scales 1, 0.5, 1.5, 2 + flips, nearest resizes, mean softmax); ``predict`` returns
its log so ``wsss_infer``'s argmax and CRF see the released probabilities. Not done: the EMA weights the released
trainer saves (the seam's Trainer has no post-step hook nor extra resume state; docs/rsepm.md).
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from wseg.cli import add_bool_flag
from wseg.data.transforms import hwc_to_chw, normalize, random_crop_with_box
from wseg.errors import WsegError
from wseg.methods.single_stage import SampleTransform, SingleStageMethod, register_single_stage

#: VOC ``train_aug`` (10,582 images) at 16 images per step: 662 iterations per epoch.
VOC_ITERS_PER_EPOCH = math.ceil(10582 / 16)
#: Schedule (docs/rsepm.md "Reconstruction" 7): 30 epochs, RS from epoch 5, mixing from epoch 15 (the tag's
#: ``RS(ep=5)`` / ``CM(ep=15)``), SGD lr 0.1, wd 1e-4, poly 0.9, batch 16, crop 512.
RSEPM_DEFAULTS = dict(backbone="resnet50", max_iters=30 * VOC_ITERS_PER_EPOCH, batch_size=16, crop_size=512,
                      lr=0.1, wt_decay=1e-4, warmup_iters=0, warmup_lr=1e-6, power=0.9, ema_decay=0.9999)
RS_START = 5 * VOC_ITERS_PER_EPOCH
MIX_START = 15 * VOC_ITERS_PER_EPOCH
#: ColorJitter(brightness, contrast, saturation, hue) of the authors' later trainer (D train.py:362-372).
JITTER = (0.3, 0.3, 0.3, 0.1)


class RSEPMAugment(SampleTransform):
    """Training augmentation (D train.py / R augment_utils): long side resized to U{``resize_long``} (PIL
    bilinear), horizontal flip p 0.5, ColorJitter(0.3, 0.3, 0.3, 0.1) (``jitter``), ImageNet normalisation, then
    the released ``Random_Crop``: the normalised image placed at a random offset in a zero canvas of at least
    ``crop x crop`` and a random ``crop x crop`` window cut; ``crop_box = [h0, h1, w0, w1]`` = where the image lies
    in the window."""

    def __init__(self, crop_size: int = 512, resize_long: Sequence[int] = (320, 640), jitter: bool = True):
        super().__init__()
        self.crop, self.resize_long, self.jitter = int(crop_size), tuple(int(v) for v in resize_long), bool(jitter)

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        from wseg.methods.toco import _color_jitter

        rng, crop = self.rng, self.crop
        img = sample["image"]
        w, h = img.size
        target = rng.randint(*self.resize_long)
        s = target / max(w, h)
        img = img.resize((max(1, int(round(w * s))), max(1, int(round(h * s)))), Image.BILINEAR)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.jitter:
            img = _color_jitter(img, rng, JITTER)
        arr = normalize(np.asarray(img))
        window, box = random_crop_with_box(arr, crop, rng)          # float32 canvas: zero is the mean colour
        return {"image": torch.from_numpy(hwc_to_chw(window)), "crop_box": torch.from_numpy(box)}


@register_single_stage
class RSEPM(SingleStageMethod):
    """RS+EPM: see the module docstring."""

    name = "rsepm"
    summary = "RS+EPM (arXiv 2204.06754): ResNet CAM + DeepLabV3+, RecurSeed seeds, EdgePredictMix (reconstructed)"
    defaults = dict(RSEPM_DEFAULTS)
    infer_procedures = {"released": (1.0, 0.5, 1.5, 2.0)}
    eval_cls_check = True      # training_step honours ctx.cls_only
    #: convert_seed_to_pseudo_masks.py's CRF (10 iterations, Gaussian 1/3, bilateral 67/3/4)
    crf = dict(iters=10, pos_w=3, pos_xy_std=1, bi_w=4, bi_xy_std=67, bi_rgb_std=3)

    @classmethod
    def add_arguments(cls, g: argparse._ArgumentGroup) -> None:
        add_bool_flag(g, "--rs", "RecurSeed: the segmentation prediction joins the seed and the CAM learns the seed "
                                 "label (--no_rs / --rs False: EPM alone)", default=True)
        g.add_argument("--no_rs", dest="rs", action="store_false", help="RecurSeed off (= --rs False)")
        g.add_argument("--mix", choices=["epm", "certainmix", "none"], default="epm",
                       help="epm: EdgePredictMix (v2+, default); certainmix: v1's paste without the edge term; none")
        g.add_argument("--no_epm", dest="mix", action="store_const", const="none", help="mixing off (= --mix none)")
        g.add_argument("--rs_start", type=int, default=RS_START,
                       help=f"seg / cam losses from this iteration (tag RS(ep=5): {RS_START} = 5 VOC epochs)")
        g.add_argument("--recur_start", type=int, default=None,
                       help="the segmentation branch joins the seed from this iteration (default --rs_start)")
        g.add_argument("--mix_start", type=int, default=MIX_START,
                       help=f"mixing from this iteration (tag CM(ep=15): {MIX_START} = 15 VOC epochs)")
        for key, what in (("w_cls", "classification"), ("w_cam", "CAM-on-seed"), ("w_seg", "segmentation"),
                          ("mix_w_cls", "mixed classification"), ("mix_w_cam", "mixed CAM"),
                          ("mix_w_seg", "mixed segmentation")):
            g.add_argument(f"--{key}", type=float, default=1.0, help=f"{what} weight (tag: 1.0)")
        g.add_argument("--cf_conf", type=float, default=0.55, help="CF confident cut (tag c=0.55)")
        g.add_argument("--cf_uncertain", type=float, default=0.10, help="CF background cut (tag u=0.10)")
        g.add_argument("--epm_edge", type=float, default=0.5, help="EPM: pasted pixels with edge > this are ignored")
        add_bool_flag(g, "--scg", "expand the CAM by SCG on --scg_levels (reconstruction)", default=True)
        g.add_argument("--scg_levels", nargs="+", default=["layer3", "layer4"], help="backbone levels of SCG")
        g.add_argument("--scg_th", type=float, nargs=4, default=[0.5, 0.1, 0.3, 0.05],
                       metavar=("FIRST", "SECOND", "FG", "BG"), help="SCG thresholds (released infer flags)")
        g.add_argument("--pamr_iter", type=int, default=10, help="PAMR iterations on the seg seed (0: none)")
        g.add_argument("--pamr_dilations", type=int, nargs="+", default=[1, 2, 4, 8, 12, 24], help="PAMR dilations")
        g.add_argument("--pamr_sigma", type=float, default=0.1, help="PAMR sigma (released 0.1)")
        g.add_argument("--seg_seed_norm", choices=["none", "max"], default="none",
                       help="seg softmax in the seed: none (its own probability) or / max per class (as inference)")
        add_bool_flag(g, "--cls_on_crop", "classification on the CAM inside the crop box (D's rule)", default=True)
        g.add_argument("--resize_long", type=int, nargs=2, default=[320, 640], metavar=("MIN", "MAX"),
                       help="training long side range (D: RandomResize 320-640)")
        add_bool_flag(g, "--jitter", "ColorJitter(.3, .3, .3, .1)", default=True)
        g.add_argument("--output_stride", type=int, choices=[16, 8], default=16, help="16 (released) or 8")
        g.add_argument("--lr_mult", type=float, nargs=4, default=[1.0, 2.0, 10.0, 20.0],
                       help="lr multipliers of the four released groups (PZ: 1 2 10 20)")
        g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
        add_bool_flag(g, "--nesterov", "Nesterov momentum (PZ)", default=True)
        g.add_argument("--head_init", choices=["default", "xavier"], default="default",
                       help="ASPP / decoder init: default (released HEAD) or xavier (v1)")
        g.add_argument("--base_channels", type=int, default=64, help="ResNet stem width (64 released; reduced nets)")
        g.add_argument("--feature_size", type=int, default=256, help="ASPP / decoder width (256 released)")

    def check_args(self, args: argparse.Namespace) -> None:
        conf, unc = float(self.option("cf_conf", 0.55)), float(self.option("cf_uncertain", 0.10))
        if not 0 <= unc < conf <= 1:
            raise WsegError(f"--cf_uncertain {unc:g} / --cf_conf {conf:g}: need 0 <= u < c <= 1 (tag 0.10, 0.55)")
        lo, hi = self.option("resize_long", [320, 640])
        if not 1 <= lo <= hi:
            raise WsegError(f"--resize_long {lo} {hi}: need 1 <= MIN <= MAX (published 320 640)")
        if int(args.batch_size) < 2:
            raise WsegError("--batch_size must be >= 2 (BatchNorm on the ASPP image pool; EPM pairs images)")

    def config(self):
        from wseg.losses.rsepm import RSEPMConfig

        rs_start = int(self.option("rs_start", RS_START))
        recur = self.option("recur_start", None)
        return RSEPMConfig(
            rs=bool(self.option("rs", True)), mix=str(self.option("mix", "epm")), rs_start=rs_start,
            recur_start=rs_start if recur is None else int(recur), mix_start=int(self.option("mix_start", MIX_START)),
            **{k: float(self.option(k, 1.0)) for k in ("w_cls", "w_cam", "w_seg", "mix_w_cls", "mix_w_cam",
                                                      "mix_w_seg")},
            cf_conf=float(self.option("cf_conf", 0.55)), cf_uncertain=float(self.option("cf_uncertain", 0.10)),
            epm_edge=float(self.option("epm_edge", 0.5)), scg=bool(self.option("scg", True)),
            scg_levels=tuple(self.option("scg_levels", ["layer3", "layer4"])),
            scg_th=tuple(float(v) for v in self.option("scg_th", [0.5, 0.1, 0.3, 0.05])),
            pamr_iter=int(self.option("pamr_iter", 10)),
            pamr_dilations=tuple(int(v) for v in self.option("pamr_dilations", [1, 2, 4, 8, 12, 24])),
            pamr_sigma=float(self.option("pamr_sigma", 0.1)), seg_seed_norm=str(self.option("seg_seed_norm", "none")),
            cls_on_crop=bool(self.option("cls_on_crop", True)))

    # -- network
    def net_kwargs(self) -> Dict[str, Any]:
        kw: Dict[str, Any] = {"output_stride": int(self.option("output_stride", 16)),
                              "feature_size": int(self.option("feature_size", 256)),
                              "low_channels": int(self.option("feature_size", 256))}
        if int(self.option("base_channels", 64)) != 64:
            kw["base_channels"] = int(self.option("base_channels", 64))
        return kw

    def build_network(self, backbone: str, num_classes: int) -> nn.Module:
        from wseg.models.rsepm import RSEPMNet

        return RSEPMNet(backbone, num_classes, head_init=str(self.option("head_init", "default")), **self.net_kwargs())

    def load_pretrained(self, net: nn.Module, path: str) -> None:
        """ImageNet ResNet weights (torchvision ``resnet50-19c8e357.pth``, ``fc.*`` ignored) into the backbone."""
        from wseg.segmentation.models import load_backbone_weights

        load_backbone_weights(net, path)

    def meta(self) -> Dict[str, Any]:
        """Also the network settings :func:`wseg.models.rsepm.build_rsepm` reads (``scripts/infer_rsepm.py``)."""
        kw = self.net_kwargs()
        bb = {"base_channels": kw.pop("base_channels")} if "base_channels" in kw else {}
        return {**super().meta(), **kw, "class_fn": "sigmoid", "backbone_kwargs": bb}

    def param_groups(self, net: nn.Module, lr: float, weight_decay: float) -> List[Dict[str, Any]]:
        """The released four groups (backbone weights, backbone biases, new weights, new biases) x ``--lr_mult``,
        weight decay on the weights only."""
        groups = net.released_param_groups()
        mults = [float(m) for m in self.option("lr_mult", [1.0, 2.0, 10.0, 20.0])]
        out = [{"params": list(g), "lr": lr * m, "weight_decay": wd}
               for g, m, wd in zip(groups, mults, (weight_decay, 0.0, weight_decay, 0.0))]
        return [d for d in out if d["params"]]

    def build_optimizer(self, net: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
        opt = torch.optim.SGD(self.param_groups(net, args.lr, args.wt_decay), lr=args.lr,
                              momentum=float(self.option("momentum", 0.9)), nesterov=bool(self.option("nesterov", True)))
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
        return opt

    # -- data and step
    def train_transform(self, crop_size: int) -> SampleTransform:
        return RSEPMAugment(crop_size, self.option("resize_long", [320, 640]), bool(self.option("jitter", True)))

    def training_step(self, net, batch, ctx):
        from wseg.losses.rsepm import rsepm_losses

        iteration = -1 if ctx.cls_only else ctx.iteration      # -1: before RecurSeed, the classification loss alone
        return rsepm_losses(net, batch["image"], batch["label"], batch.get("crop_box"), iteration,
                            self.config(), autocast=ctx.autocast)

    # -- inference
    def predict(self, net: nn.Module, x: torch.Tensor, out_size: Tuple[int, int],
                scales: Optional[Sequence[float]] = None, procedure: Optional[str] = None) -> torch.Tensor:
        """``log`` of the released mean softmax (:func:`wseg.rsepm.infer_image`, nearest, flips) at ``out_size``."""
        from wseg.rsepm import infer_image

        scales = tuple(scales or self.infer_scales(procedure))
        _, prob = infer_image(net, x[0], scales, hflip=True, same=True, interpolation="nearest", device=x.device)
        if tuple(prob.shape[-2:]) != tuple(out_size):
            prob = F.interpolate(prob[None], size=tuple(out_size), mode="bilinear", align_corners=False)[0]
        return torch.log(prob.float().clamp_min(1e-12))
