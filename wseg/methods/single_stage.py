"""The single-stage seam: one network from image-level labels to segmentation (ToCo, LOC-BE, ...), one module each.

A single-stage method (:class:`SingleStageMethod`) owns

- its network (``build_network``: named outputs, the published checkpoint layout; ``load_pretrained`` puts the
  ImageNet weights into it);
- its data: the published augmentation as a :class:`SampleTransform` of ``{"image": PIL image}`` to a dict of
  tensors (``image`` and whatever its step reads, e.g. the valid-region ``img_box``; the label is added by the
  dataset), re-seeded per sample so a resumed run draws the same;
- its flags (``add_arguments``, shown by ``wsss_train.py --network NAME --help``) and its schedule defaults
  (``defaults``: the values of the generic flags ``--max_iters``, ``--batch_size``, ``--lr`` ... it was published
  with);
- one training step (``training_step``: named loss terms, ``loss`` carries the gradient), its optimiser
  (``param_groups``, ``build_optimizer``) and learning-rate schedule (``schedule``);
- its inference (``predict``: the ``(C, H, W)`` segmentation logits of one image, by the shared TTA or its own
  published procedures, named in ``infer_procedures`` with their test scales) and the dense CRF its inference
  script applies (``crf``).

The generic stages (``scripts/wsss_train.py``, ``scripts/wsss_infer.py``) look a method up by ``--network NAME`` in
:data:`SINGLE_STAGE` and never name one. A new method is a module that subclasses :class:`SingleStageMethod` and
decorates it with :func:`register_single_stage`; a module ``wseg/methods/<name>.py`` is imported on first use of
``--network <name>``, and ``wseg/methods/__init__.py`` imports the shipped ones.
"""
from __future__ import annotations

import argparse
import importlib
import random
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from wseg.engine.trainer import StepContext
from wseg.errors import WsegError
from wseg.methods.base import MethodFlags

SINGLE_STAGE: Dict[str, Type["SingleStageMethod"]] = {}
#: The single-stage methods wseg ships (module ``wseg.methods.<name>``, imported when first asked for).
SHIPPED = ("toco", "locbe", "rsepm")


def register_single_stage(cls: Type["SingleStageMethod"]) -> Type["SingleStageMethod"]:
    """Class decorator: make a single-stage method selectable as ``--network <cls.name>``."""
    SINGLE_STAGE[cls.name] = cls
    return cls


def get_single_stage(name: Optional[str]) -> Type["SingleStageMethod"]:
    """The method registered as ``name``; a module ``wseg.methods.<name>`` is imported first when it is not."""
    name = str(name or "")
    if name not in SINGLE_STAGE and re.fullmatch(r"[a-z][a-z0-9_]*", name):
        try:
            importlib.import_module(f"wseg.methods.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"wseg.methods.{name}":
                raise
    if name not in SINGLE_STAGE:
        from wseg.methods.base import METHODS

        for shipped in SHIPPED:  # so that the error lists them all
            importlib.import_module(f"wseg.methods.{shipped}")
        hint = (f" ({name} is a CAM method: its network goes to scripts/contrast_train.py / contrast_infer.py)"
                if name in METHODS else "")
        raise WsegError(f"--network {name or '(none)'}: unknown single-stage method; choose one of "
                        f"{', '.join(sorted(SINGLE_STAGE))}{hint}")
    return SINGLE_STAGE[name]


class SampleTransform:
    """A training augmentation: ``transform({"image": PIL RGB image}) -> {"image": (3, S, S) tensor, ...}``.
    ``rng`` is a private :class:`random.Random`; :meth:`reseed` makes the next sample a function of its seed alone
    (:class:`~wseg.engine.plans.StepPlan`), whatever the worker count or a resumed run."""

    def __init__(self):
        self.rng = random.Random(0)

    def reseed(self, seed: int) -> None:
        self.rng.seed(int(seed))

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError


class SingleStageMethod(MethodFlags):
    """Base class of the single-stage methods (see the module docstring)."""

    name = ""
    summary = ""
    #: Values of the generic ``wsss_train`` flags this method was published with (``backbone``, ``max_iters``,
    #: ``batch_size`` (images per step over all processes), ``crop_size``, ``lr``, ``wt_decay``, ``warmup_iters``,
    #: ``warmup_lr`` (the warm-up's starting fraction), ``power``).
    defaults: Dict[str, Any] = dict(backbone="resnet50", max_iters=20000, batch_size=4, crop_size=448, lr=1e-4,
                                    wt_decay=0.0, warmup_iters=0, warmup_lr=1e-6, power=0.9)
    #: The loss term that is the image classification loss (checked against the label prior: did it learn?).
    cls_loss_key = "cls"
    #: ``training_step`` honours ``ctx.cls_only`` (the classification loss alone, without crops): ``wsss_train`` then
    #: checks the finished network in eval mode on the un-augmented training images, as the CAM trainers do
    #: (:func:`wseg.methods.base.eval_cls_loss`), instead of the training loss of the last iterations.
    eval_cls_check = False
    #: The published inference procedures by name, each with its test scales; the first is the default.
    infer_procedures: Dict[str, Tuple[float, ...]] = {"tta": (1.0,)}
    #: The published inference CRF (``iters``, ``pos_w``, ``pos_xy_std``, ``bi_w``, ``bi_xy_std``, ``bi_rgb_std``),
    #: or ``None`` when the method has none.
    crf: Optional[Dict[str, float]] = None
    #: Normalisation of the network input (0-1 RGB).
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD

    def check_args(self, args: argparse.Namespace) -> None:
        """One-line errors for the method's own flags, before anything is written (default: nothing to check)."""

    # -- network
    def build_network(self, backbone: str, num_classes: int) -> nn.Module:
        """The method's network; ``num_classes`` counts background. Override."""
        raise WsegError(f"method {self.name}: no network")

    def load_pretrained(self, net: nn.Module, path: str) -> None:
        """ImageNet (or other pre-training) weights into ``net`` (default: the whole network, strictly)."""
        from wseg.models.checkpoint import load_weights

        load_weights(net, path)

    def meta(self) -> Dict[str, Any]:
        """Saved with the weights, so inference rebuilds the same network."""
        return {"network": self.name, "options": self.options()}

    # -- data and training
    def train_transform(self, crop_size: int) -> SampleTransform:
        """The published training augmentation (crop ``crop_size``). Override."""
        raise WsegError(f"method {self.name}: no training augmentation")

    def training_step(self, net: nn.Module, batch: Dict[str, Any], ctx: StepContext) -> Dict[str, torch.Tensor]:
        """Named loss terms of one batch (``loss`` carries the gradient, the others are detached). Override."""
        raise WsegError(f"method {self.name}: no training step")

    def param_groups(self, net: nn.Module, lr: float, weight_decay: float) -> List[Dict[str, Any]]:
        """Optimiser group dicts (``params``, ``lr``, ``weight_decay``, optionally ``lr_mult``); default one group of
        every trainable parameter."""
        return [{"params": [p for p in net.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]

    def build_optimizer(self, net: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
        """Default: AdamW (betas 0.9, 0.999) over :meth:`param_groups` at ``--lr`` / ``--wt_decay``."""
        from wseg.engine.optim import build_optimizer

        groups = self.param_groups(net, args.lr, args.wt_decay)
        return build_optimizer("adamw", groups, args.lr, args.wt_decay)

    def schedule(self, args: argparse.Namespace):
        """Default: poly over ``--max_iters`` with power ``--power`` after a linear warm-up of ``--warmup_iters``
        from ``--warmup_lr`` x (ToCo's ``PolyWarmupAdamW``)."""
        from wseg.engine.optim import PolyLR

        return PolyLR(int(args.max_iters), float(args.power), warmup_iters=int(args.warmup_iters),
                      warmup_ratio=float(args.warmup_lr))

    @staticmethod
    def cpu_generator(ctx: StepContext) -> torch.Generator:
        """A CPU generator for the step's own draws, seeded from the step generator (the data plan re-seeds that
        one per iteration, so a resumed run draws the same; on CUDA the step generator is a CUDA one)."""
        gen = torch.Generator()
        if ctx.generator is not None:
            gen.manual_seed(int(ctx.generator.initial_seed()) % (2 ** 63))
        return gen

    # -- inference
    def procedure(self, name: Optional[str] = None) -> str:
        """An inference procedure's name checked against :attr:`infer_procedures` (``None``: the default)."""
        if name is None:
            return next(iter(self.infer_procedures))
        if name not in self.infer_procedures:
            raise WsegError(f"--procedure {name}: method {self.name} publishes {', '.join(self.infer_procedures)}")
        return name

    def infer_scales(self, procedure: Optional[str] = None) -> Tuple[float, ...]:
        """The published test scales of ``procedure``."""
        return tuple(self.infer_procedures[self.procedure(procedure)])

    def predict(self, net: nn.Module, x: torch.Tensor, out_size: Tuple[int, int],
                scales: Optional[Sequence[float]] = None, procedure: Optional[str] = None) -> torch.Tensor:
        """``(C, H, W)`` float32 segmentation logits of one normalised image ``x`` ``(1, 3, h, w)`` at ``out_size``
        by ``procedure`` (default: the first) at ``scales`` (default: the procedure's). Default implementation: the
        shared TTA (:func:`wseg.tta.multiscale_flip`): the mean of the ``seg`` outputs of each bilinearly rescaled
        image and its mirror."""
        from wseg.tta import multiscale_flip

        h, w = x.shape[-2:]
        inputs = [x[0] if s == 1 else F.interpolate(x, size=(max(1, int(h * s)), max(1, int(w * s))),
                                                     mode="bilinear", align_corners=False)[0]
                  for s in (scales or self.infer_scales(procedure))]
        return multiscale_flip(lambda t: net(t)["seg"], inputs, tuple(out_size), reduce="mean", device=x.device)
