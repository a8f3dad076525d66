"""Optimisers and the one learning-rate schedule of every trainer.

- :class:`PolyLR`: ``lr = initial_lr * (1 - step / max_step) ** power`` per group, times the group's ``lr_mult``,
  with an optional linear warm-up (ToCo / LOC-BE ``PolyWarmupAdamW``: from ``warmup_ratio`` x to 1x over
  ``warmup_iters``) and an optional floor ``min_lr`` (mmsegmentation's ``eta_min``:
  ``(lr - min_lr) * (1 - step / max_step) ** power + min_lr``). The PSA / SEAM / PPC ``PolyOptimizer`` is
  ``max_step`` = the number of steps; the published DeepLab's ``adjust_lr`` is ``max_step = max_iters + 1``.
- :func:`build_optimizer`: ``sgd`` (momentum; the published ``PolyOptimizer`` passes the weight decay into SGD's
  momentum slot, so its momentum is 5e-4 unless ``momentum`` is given), ``adamw`` (for small backbones trained from
  scratch, and ToCo/LOC-BE). Parameter groups are dicts with ``lr`` and ``weight_decay`` (and optionally
  ``lr_mult``); :func:`published_groups` builds the four PSA groups (x1/x2/x10/x20, no decay on biases).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

LR_MULTS = (1.0, 2.0, 10.0, 20.0)
POLY_POWER = 0.9


def poly_lr(base_lr: float, step: int, max_step: int, power: float = POLY_POWER) -> float:
    """``base_lr * (1 - step / max_step) ** power`` (0 from ``max_step`` on)."""
    if max_step <= 0:
        return base_lr
    return base_lr * max(0.0, 1.0 - step / max_step) ** power


@dataclass
class PolyLR:
    """The poly schedule (see the module docstring); stateless: the lr is a function of the step."""

    max_step: int
    power: float = POLY_POWER
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6
    min_lr: float = 0.0

    def lr(self, initial_lr: float, step: int) -> float:
        if step < self.warmup_iters:
            return initial_lr * (1 - (1 - step / self.warmup_iters) * (1 - self.warmup_ratio))
        if self.min_lr:
            return (initial_lr - self.min_lr) * max(0.0, 1.0 - step / self.max_step) ** self.power + self.min_lr
        return poly_lr(initial_lr, step, self.max_step, self.power)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for optimiser step ``step`` (0-based); returns the first group's."""
        for group in optimizer.param_groups:
            group["lr"] = self.lr(group["initial_lr"], step) * group.get("lr_mult", 1.0)
        return optimizer.param_groups[0]["lr"]


def head_lr_mults(mult: float = LR_MULTS[2]) -> Tuple[float, float, float, float]:
    """The four groups' multipliers with the new heads' weights at ``mult`` and their biases at twice it
    (``--head_lr_mult`` / config ``head_lr_mult``; published 10: 1, 2, 10, 20)."""
    m = float(mult)
    return (LR_MULTS[0], LR_MULTS[1], m, 2 * m)


def published_groups(groups: Sequence[Sequence[torch.Tensor]], lr: float, weight_decay: float,
                     mults: Sequence[float] = LR_MULTS, split_mult: bool = False) -> List[Dict[str, Any]]:
    """The four published groups as dicts: (weights x1, wd), (biases x2, 0), (new weights x10, wd), (new biases
    x20, 0). ``split_mult``: keep ``lr`` the base and put the multiplier in ``lr_mult`` (the published DeepLab's
    ``adjust_lr``) instead of folding it into ``lr`` (``PolyOptimizer``). Empty groups are dropped."""
    if len(groups) != 4:
        raise ValueError("expected the four groups of get_parameter_groups()")
    wds = (weight_decay, 0.0, weight_decay, 0.0)
    out = []
    for g, m, wd in zip(groups, mults, wds):
        d = {"params": list(g), "weight_decay": wd}
        d.update({"lr": lr, "lr_mult": m} if split_mult else {"lr": m * lr})
        out.append(d)
    return [d for d in out if d["params"]]


#: The optimisers :func:`build_optimizer` builds (flag choices and config checks read this).
OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(name: str, groups: List[Dict[str, Any]], lr: float, weight_decay: float,
                    momentum: Optional[float] = None, betas=(0.9, 0.999)) -> torch.optim.Optimizer:
    """``sgd`` (``momentum=None``: the published quirk, momentum = ``weight_decay``) or ``adamw`` over group dicts;
    every group remembers its ``initial_lr`` for :class:`PolyLR`."""
    if name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, weight_decay=0.0,
                                                     momentum=weight_decay if momentum is None else momentum)
    elif name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    for group in opt.param_groups:
        group.setdefault("initial_lr", group["lr"])
    return opt


def adamw_groups(groups: Sequence[Sequence[torch.Tensor]], weight_decay: float) -> List[Dict[str, Any]]:
    """The four published groups for AdamW without the x2/x10/x20 multipliers (Adam normalises step sizes); biases
    get no weight decay. Not a published setting: for small backbones trained from scratch."""
    return [{"params": list(g), "weight_decay": 0.0 if i % 2 else weight_decay} for i, g in enumerate(groups) if len(g)]
