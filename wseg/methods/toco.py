"""ToCo (Ru et al., CVPR 2023, rulixiang/ToCo) on the single-stage seam (``--network toco``), and what LOC-BE shares
with it: the ViT network family (:class:`ViTSingleStage`) and the published training augmentation
(:class:`ToCoAugment`; LOC-BE's ``datasets/voc.py`` and ``datasets/transforms.py`` are the same git blobs).

References: T = rulixiang/ToCo@e13514d, L = whn786/LOC-BE@2900e73. The network, the losses and one iteration are
the library pieces of :mod:`wseg.locbe` (docs/locbe.md); this module wires them to the seam.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torch import nn

from wseg.cli import add_bool_flag
from wseg.data.transforms import hwc_to_chw, normalize, random_crop_with_box
from wseg.errors import WsegError
from wseg.methods.single_stage import SampleTransform, SingleStageMethod, register_single_stage

#: ToCo's / LOC-BE's published schedule (T/L:scripts/dist_train_voc_seg_neg.py: ``--lr 6e-5``, ``--wt_decay 1e-2``,
#: ``--max_iters 20000``, ``--warmup_iters 1500``, ``--warmup_lr 1e-6``, ``--power 0.9``, ``--crop_size 448``; 2
#: images per GPU on 2 GPUs, README).
VIT_DEFAULTS = dict(backbone="vit_base_patch16_224", max_iters=20000, batch_size=4, crop_size=448, lr=6e-5,
                    wt_decay=0.01, warmup_iters=1500, warmup_lr=1e-6, power=0.9)
#: The inference CRF of T/L:tools/infer_seg_voc.py:92-99.
SEG_CRF = dict(iters=10, pos_w=1, pos_xy_std=1, bi_w=4, bi_xy_std=121, bi_rgb_std=5)
#: T:datasets/voc.py:102-109: ColorJitter(brightness, contrast, saturation, hue), applied with p 0.8.
JITTER = (0.4, 0.4, 0.2, 0.1)
#: T:datasets/voc.py:102-109 RandomGrayscale(p=0.2); T:datasets/transforms.py:11-29 GaussianBlur radius 0.1-2.
GRAYSCALE_P = 0.2
BLUR_RADIUS = (0.1, 2.0)


# ----------------------------------------------------------------------------------------------- augmentation

def _color_jitter(img: Image.Image, rng, strength: Sequence[float] = JITTER) -> Image.Image:
    """torchvision's ``ColorJitter``: brightness, contrast, saturation factors uniform in ``[max(0, 1 - s), 1 + s]``,
    hue shift uniform in ``[-h, h]``, applied in a random order."""
    import torchvision.transforms.functional as TF

    b, c, s, h = strength
    factors = [rng.uniform(max(0.0, 1 - b), 1 + b), rng.uniform(max(0.0, 1 - c), 1 + c),
               rng.uniform(max(0.0, 1 - s), 1 + s), rng.uniform(-h, h)]
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for k in rng.sample(range(4), 4):
        img = ops[k](img, factors[k])
    return img


def _flip_and_color_jitter(img: Image.Image, rng, jitter: Sequence[float] = JITTER, grayscale_p: float = GRAYSCALE_P
                           ) -> Tuple[Image.Image, bool]:
    """``flip_and_color_jitter`` (T:datasets/voc.py:102-109): flip p 0.5, colour jitter p 0.8, grayscale p 0.2.
    Returns the image and whether it was flipped."""
    import torchvision.transforms.functional as TF

    flipped = rng.random() < 0.5
    if flipped:
        img = TF.hflip(img)
    if rng.random() < 0.8:
        img = _color_jitter(img, rng, jitter)
    if rng.random() < grayscale_p:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    return img, flipped


def _gaussian_blur(img: Image.Image, rng, p: float, radius: Sequence[float] = BLUR_RADIUS) -> Image.Image:
    """``GaussianBlur(p)`` (T:datasets/transforms.py:11-29): with probability ``p`` (``random() <= p``), PIL's
    Gaussian blur of radius uniform in [0.1, 2]."""
    if rng.random() <= p:
        return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(float(radius[0]), float(radius[1]))))
    return img


def _random_resized_crop(img: Image.Image, size: int, rng, scale: Tuple[float, float] = (0.4, 1.0),
                         ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> Image.Image:
    """torchvision's ``RandomResizedCrop(size, scale, interpolation=BICUBIC)``: up to 10 draws of an area fraction
    and a log-uniform aspect ratio, else the centre crop of the clamped ratio; resized to ``size x size``."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i, j = rng.randint(0, height - h), rng.randint(0, width - w)
            break
    else:
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, int(round(width / ratio[0]))
        elif in_ratio > ratio[1]:
            h, w = height, int(round(height * ratio[1]))
        else:
            w, h = width, height
        i, j = (height - h) // 2, (width - w) // 2
    return TF.resized_crop(img, i, j, h, w, [size, size], InterpolationMode.BICUBIC)


def scale_flip_crop(img: Image.Image, crop: int, rescale_range: Sequence[float], rng
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Steps 1-3 of :class:`ToCoAugment`: ``random_scaling`` (ratio U(``rescale_range``), sides ``int(ratio * w)``,
    PIL bilinear), ``random_fliplr`` (``random() > 0.5``), :func:`random_crop_with_box`."""
    ratio = rng.uniform(*rescale_range)
    w, h = img.size
    arr = np.asarray(img.resize((max(1, int(ratio * w)), max(1, int(ratio * h))), Image.BILINEAR))
    if rng.random() > 0.5:
        arr = arr[:, ::-1]
    return random_crop_with_box(np.ascontiguousarray(arr), crop, rng)


class ToCoAugment(SampleTransform):
    """ToCo's training augmentation (T:datasets/voc.py:134-186, T:datasets/transforms.py), which LOC-BE uses as is:

    1. ``random_scaling``: both sides x U(``rescale_range``) (published (0.5, 2.0)), ``int()``, PIL bilinear;
    2. ``random_fliplr``: flip with p 0.5;
    3. ``random_crop``: ``crop x crop`` from a black-padded canvas, ``img_box`` = the image's part of it;
    4. with ``views``: the local view = ``flip_and_color_jitter`` + blur p 0.5 of the crop;
    5. global view 1 (the training ``image``) = ``flip_and_color_jitter`` + blur p 1.0 of the crop. Its flip does
       not move ``img_box`` (published); ``flip_box=True`` mirrors the box with the image;
    6. with ``views``: global view 2 = ``RandomResizedCrop(crop, scale (0.4, 1), bicubic)`` of the *original* image,
       ``flip_and_color_jitter``, blur p 0.1, solarisation p 0.2;

    each view ImageNet-normalised. ``jitter`` (brightness, contrast, saturation, hue; published 0.4 0.4 0.2 0.1),
    ``grayscale_p`` (0.2) and ``blur_radius`` (0.1-2 pixels, for VOC's 448 crops) are the published values by
    default; the synthetic demos scale the blur with their crop and drop hue / grayscale (README). Output:
    ``image``, ``img_box`` and with ``views`` ``view2`` and ``local`` (the published ``crops`` are ``[image, view2,
    local]``). The draws come from the transform's own generator (the published ones mix Python's, NumPy's and
    torch's global generators); the distributions are the same."""

    def __init__(self, crop_size: int = 448, rescale_range: Sequence[float] = (0.5, 2.0), views: bool = True,
                 flip_box: bool = False, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), jitter: Sequence[float] = JITTER,
                 grayscale_p: float = GRAYSCALE_P, blur_radius: Sequence[float] = BLUR_RADIUS):
        super().__init__()
        self.crop, self.rescale_range, self.views, self.flip_box = int(crop_size), tuple(rescale_range), views, flip_box
        self.mean, self.std = tuple(mean), tuple(std)
        self.jitter, self.grayscale_p, self.blur_radius = tuple(jitter), float(grayscale_p), tuple(blur_radius)

    def _jitter(self, img: Image.Image, rng) -> Tuple[Image.Image, bool]:
        return _flip_and_color_jitter(img, rng, self.jitter, self.grayscale_p)

    def _blur(self, img: Image.Image, rng, p: float) -> Image.Image:
        return _gaussian_blur(img, rng, p, self.blur_radius)

    def _tensor(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(hwc_to_chw(normalize(np.asarray(img), self.mean, self.std)))

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        rng, crop = self.rng, self.crop
        original = sample["image"]
        arr, box = scale_flip_crop(original, crop, self.rescale_range, rng)
        cropped = Image.fromarray(arr)
        out: Dict[str, torch.Tensor] = {}
        if self.views:
            local, _ = self._jitter(cropped, rng)
            out["local"] = self._tensor(self._blur(local, rng, 0.5))
        image, flipped = self._jitter(cropped, rng)
        if flipped and self.flip_box:
            box = np.asarray([box[0], box[1], crop - box[3], crop - box[2]], np.int64)
        out["image"] = self._tensor(self._blur(image, rng, 1.0))
        out["img_box"] = torch.from_numpy(box)
        if self.views:
            view2, _ = self._jitter(_random_resized_crop(original, crop, rng), rng)
            view2 = self._blur(view2, rng, 0.1)
            if rng.random() < 0.2:
                view2 = ImageOps.solarize(view2)
            out["view2"] = self._tensor(view2)
        return out


# ------------------------------------------------------------------------------------------- the ViT family

class ViTSingleStage(SingleStageMethod):
    """ToCo and LOC-BE: :class:`~wseg.locbe.ViTSegNet`, the published augmentation, optimiser, schedule and
    inference: ``voc`` (T/L:tools/infer_seg_voc.py: scales 1, 1.5, 1.25, the image's and its mirror's logits summed,
    max over scales) and ``coco`` (T/L:tools/infer_seg_coco_ddp.py: the image resized to 448 x 448, scales 1, 1.25,
    1.5, max over the mirror pair, summed over scales); CRF 10 iterations, Gaussian 1/1, bilateral 121/5/4 on the
    softmax (both scripts)."""

    defaults = dict(VIT_DEFAULTS)
    infer_procedures = {"voc": (1.0, 1.5, 1.25), "coco": (1.0, 1.25, 1.5)}
    crf = dict(SEG_CRF)
    #: the published ``--local_crop_size`` of the method
    local_crop_default = 96
    #: whether the step reads the two extra views of :class:`ToCoAugment`
    needs_views = True

    def __init__(self, args: Optional[argparse.Namespace] = None):
        super().__init__(args)
        self._par = None
        self._energy = None

    @classmethod
    def add_vit_arguments(cls, g: argparse._ArgumentGroup) -> None:
        """The flags ToCo and LOC-BE share (published names and values of their ``dist_train_voc_seg_neg.py``)."""
        g.add_argument("--aux_layer", type=int, default=-3, help="block of the aux tokens (published -3)")
        g.add_argument("--cam_scales", type=float, nargs="+", default=[1.0, 0.5, 1.5],
                       help="scales of the training-time CAMs (published 1.0 0.5 1.5)")
        g.add_argument("--high_thre", type=float, default=0.7, help="high background score (published 0.7; COCO .65)")
        g.add_argument("--low_thre", type=float, default=0.25, help="low background score (published 0.25)")
        g.add_argument("--bkg_thre", type=float, default=0.5, help="background score of the token labels "
                                                                   "(published 0.5; COCO 0.45)")
        g.add_argument("--local_crop_size", type=int, default=cls.local_crop_default,
                       help=f"local crop size (published {cls.local_crop_default})")
        g.add_argument("--rescale_range", type=float, nargs=2, default=[0.5, 2.0], metavar=("MIN", "MAX"),
                       help="random rescale of the training images (published --scales 0.5 2)")
        g.add_argument("--color_jitter", type=float, nargs=4, default=list(JITTER),
                       metavar=("BRIGHTNESS", "CONTRAST", "SATURATION", "HUE"),
                       help="flip_and_color_jitter's ColorJitter (published 0.4 0.4 0.2 0.1)")
        g.add_argument("--grayscale_p", type=float, default=GRAYSCALE_P,
                       help=f"grayscale probability (published {GRAYSCALE_P})")
        g.add_argument("--blur_radius", type=float, nargs=2, default=list(BLUR_RADIUS), metavar=("MIN", "MAX"),
                       help="Gaussian blur radius range in pixels (published 0.1 2, for 448-pixel crops)")
        g.add_argument("--head_lr_mult", type=float, default=10.0,
                       help="lr multiplier of the classifiers, projection head and decoder (published 10; a narrower "
                            "ViT than ViT-B's 768 channels scales it by 768 / its width, as the demos do)")
        g.add_argument("--seg_start", type=int, default=2000,
                       help="seg (+ reg ...) join after this iteration (published 2000: `n_iter <= 2000`)")
        g.add_argument("--box_stride", type=int, choices=[1, 16], default=1,
                       help="1: the published pixel img_box on the token map of the token labels; 16: the box "
                            "mapped to the token grid")
        add_bool_flag(g, "--flip_box", "mirror img_box with global view 1's flip (published: the box is not "
                                       "mirrored, so it marks the wrong side of a flipped padded crop)")
        g.add_argument("--par_iters", type=int, default=10, help="PAR iterations (published 10)")
        g.add_argument("--energy_filter", choices=["auto", "exact", "grid"], default="auto",
                       help="filter of the dense energy loss: exact, grid (bilateral grid), auto (exact on CUDA and "
                            "small maps); see docs/locbe.md")

    def check_args(self, args: argparse.Namespace) -> None:
        crop = int(args.crop_size)
        local = int(self.option("local_crop_size", self.local_crop_default))
        lo, hi = self.option("rescale_range", [0.5, 2.0])
        if not 0 < lo <= hi <= 8:
            raise WsegError(f"--rescale_range {lo:g} {hi:g}: need 0 < MIN <= MAX <= 8 (published 0.5 2)")
        if not 0 < local <= crop:
            raise WsegError(f"--local_crop_size {local}: must lie in 1..--crop_size {crop} (published "
                            f"{self.local_crop_default} of 448)")
        low, high, bkg = (float(self.option(k, d)) for k, d in (("low_thre", .25), ("high_thre", .7),
                                                                 ("bkg_thre", .5)))
        if not 0 <= low <= bkg <= high <= 1:
            raise WsegError(f"--low_thre {low:g} / --bkg_thre {bkg:g} / --high_thre {high:g}: need 0 <= low <= bkg "
                            "<= high <= 1 (published 0.25, 0.5, 0.7)")
        if not all(s > 0 for s in self.option("cam_scales", [1.0])):
            raise WsegError("--cam_scales: each must be > 0 (published 1.0 0.5 1.5)")
        if int(self.option("par_iters", 10)) < 1 or int(self.option("seg_start", 2000)) < 0:
            raise WsegError("--par_iters must be >= 1 and --seg_start >= 0 (published 10 and 2000)")

    # -- network
    def network_kwargs(self) -> Dict[str, Any]:
        return {}

    def build_network(self, backbone: str, num_classes: int) -> nn.Module:
        from wseg.locbe import ViTSegNet

        return ViTSegNet(backbone, num_classes, aux_layer=int(self.option("aux_layer", -3)), **self.network_kwargs())

    def load_pretrained(self, net: nn.Module, path: str) -> None:
        """The ImageNet ViT (timm key names, e.g. ``vit_base_patch16_224.orig_in21k_ft_in1k``) into the encoder,
        strictly, except the classifier ``head``, which the network never uses: a file without it, or with a head of
        another class count (pre-training on another corpus), loads with the encoder's own head kept."""
        from wseg.models.backbones.vit import read_vit_weights
        from wseg.models.checkpoint import load_state_dict_strict

        state = read_vit_weights(path)
        own = net.backbone.state_dict()
        if any(k.startswith("head.") and (k not in own or own[k].shape != v.shape) for k, v in state.items()):
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        load_state_dict_strict(net.backbone, state, path, allow_missing=("head",))

    def param_groups(self, net: nn.Module, lr: float, weight_decay: float) -> List[Dict[str, Any]]:
        """The published four groups: encoder, encoder norms (x1), classifiers (+ ToCo's proj_head) and decoder
        (x10), weight decay on all (T/L:train :206-235)."""
        return net.optimizer_groups(lr, weight_decay, head_mult=float(self.option("head_lr_mult", 10.0)))

    # -- data and the step's helpers
    def train_transform(self, crop_size: int) -> SampleTransform:
        return ToCoAugment(crop_size, self.option("rescale_range", [0.5, 2.0]), views=self.needs_views,
                           flip_box=bool(self.option("flip_box", False)), mean=self.mean, std=self.std,
                           jitter=self.option("color_jitter", list(JITTER)),
                           grayscale_p=float(self.option("grayscale_p", GRAYSCALE_P)),
                           blur_radius=self.option("blur_radius", list(BLUR_RADIUS)))

    @property
    def par(self):
        from wseg.models.heads.par import PAR

        if self._par is None:
            self._par = PAR(num_iter=int(self.option("par_iters", 10)))
        return self._par

    @property
    def energy(self):
        from wseg.losses.dense_energy import DenseEnergyLoss

        if self._energy is None:
            self._energy = DenseEnergyLoss(method=str(self.option("energy_filter", "auto")))
        return self._energy

    def common_config(self) -> Dict[str, Any]:
        return dict(cam_scales=tuple(float(s) for s in self.option("cam_scales", [1.0, 0.5, 1.5])),
                    high=float(self.option("high_thre", 0.7)), low=float(self.option("low_thre", 0.25)),
                    bkg=float(self.option("bkg_thre", 0.5)),
                    local_crop_size=int(self.option("local_crop_size", self.local_crop_default)),
                    seg_start=int(self.option("seg_start", 2000)), box_stride=int(self.option("box_stride", 1)))

    # -- inference
    def predict(self, net: nn.Module, x: torch.Tensor, out_size: Tuple[int, int],
                scales: Optional[Sequence[float]] = None, procedure: Optional[str] = None) -> torch.Tensor:
        """The published inference: ``voc`` :func:`wseg.locbe.multiscale_seg_logits`, ``coco``
        :func:`wseg.locbe.multiscale_seg_logits_coco` (see the class docstring)."""
        from wseg.locbe import multiscale_seg_logits, multiscale_seg_logits_coco

        procedure = self.procedure(procedure)
        scales = tuple(scales or self.infer_scales(procedure))
        fn = multiscale_seg_logits_coco if procedure == "coco" else multiscale_seg_logits
        return fn(net, x, tuple(out_size), scales)[0].float()


@register_single_stage
class ToCo(ViTSingleStage):
    """ToCo: ViT-B/16, GMP classification on the final and aux tokens, PTC on the final tokens, CTC on class tokens
    of 2 global + 8 local views with an EMA teacher head, LargeFOV decoder on PAR-refined pseudo labels + the dense
    energy loss after iteration 2000 (T:scripts/dist_train_voc_seg_neg.py:251-300)."""

    name = "toco"
    summary = "ToCo (CVPR 2023): ViT, token contrast (PTC + CTC), PAR pseudo labels"
    local_crop_default = 96

    @classmethod
    def add_arguments(cls, g: argparse._ArgumentGroup) -> None:
        cls.add_vit_arguments(g)
        g.add_argument("--ncrops", type=int, default=10, help="CTC views: 2 global + ncrops - 2 local (published 10)")
        g.add_argument("--w_ptc", type=float, default=0.2, help="PTC weight (published 0.2)")
        g.add_argument("--w_ctc", type=float, default=0.5, help="CTC weight (published 0.5)")
        g.add_argument("--w_seg", type=float, default=0.1, help="seg weight after --seg_start (published 0.1)")
        g.add_argument("--w_reg", type=float, default=0.05, help="dense energy weight after --seg_start (published "
                                                                 "0.05)")
        g.add_argument("--temp", type=float, default=0.5, help="CTC temperature (published 0.5)")
        g.add_argument("--momentum", type=float, default=0.9, help="EMA momentum of the teacher head (published 0.9)")

    def check_args(self, args: argparse.Namespace) -> None:
        super().check_args(args)
        crop, local = int(args.crop_size), int(self.option("local_crop_size", 96))
        n = int(self.option("ncrops", 10)) - 2
        inner = crop - 2 * (local // 2)
        if n < 1 or inner < 1 or inner * inner < n:
            raise WsegError(f"--ncrops {n + 2} / --local_crop_size {local} / --crop_size {crop}: ToCo's local crops "
                            f"need ncrops >= 3 and at least ncrops - 2 crop positions inside the {local // 2}-pixel "
                            "margin (published 10, 96, 448)")
        if not 0 <= float(self.option("momentum", 0.9)) < 1 or float(self.option("temp", 0.5)) <= 0:
            raise WsegError("--momentum must lie in [0, 1) and --temp be > 0 (published 0.9 and 0.5)")

    def network_kwargs(self) -> Dict[str, Any]:
        return {"ctc": True, "momentum": float(self.option("momentum", 0.9))}

    def config(self):
        from wseg.locbe import ToCoConfig

        return ToCoConfig(**self.common_config(), ncrops=int(self.option("ncrops", 10)),
                          w_ptc=float(self.option("w_ptc", 0.2)), w_ctc=float(self.option("w_ctc", 0.5)),
                          w_seg=float(self.option("w_seg", 0.1)), w_reg=float(self.option("w_reg", 0.05)),
                          temp=float(self.option("temp", 0.5)))

    def training_step(self, net, batch, ctx):
        from wseg.locbe import toco_losses

        views = (batch["image"], batch["view2"], batch["local"])
        return toco_losses(net, batch["image"], batch["label"], batch["img_box"], views, ctx.iteration,
                           cfg=self.config(), par=self.par, energy=self.energy, generator=self.cpu_generator(ctx),
                           autocast=ctx.autocast)
