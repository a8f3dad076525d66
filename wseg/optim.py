"""Poly learning-rate schedule and the published ``PolyOptimizer`` (PSA / SEAM / PPC ``tool/torchutils.py``).

Published behaviour reproduced by default:

- ``lr = initial_lr * (1 - global_step / max_step) ** 0.9`` per group, set before each step while
  ``global_step < max_step`` (afterwards the last value is kept);
- four parameter groups from ``get_parameter_groups()``: lr x1 / x2 / x10 / x20, weight decay ``wt_dec`` on the two
  weight groups and 0 on the two bias groups (set per group, so it *is* applied);
- the momentum quirk: ``PolyOptimizer.__init__`` calls ``SGD.__init__(params, lr, weight_decay)``, whose third
  positional argument is ``momentum``; every group therefore trains with momentum = ``wt_dec`` (5e-4, i.e.
  practically plain SGD). ``published_momentum_quirk=False`` or an explicit ``momentum`` changes that.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

import torch

LR_MULTS = (1.0, 2.0, 10.0, 20.0)
POLY_POWER = 0.9


def poly_lr(base_lr: float, step: int, max_step: int, power: float = POLY_POWER) -> float:
    """``base_lr * (1 - step / max_step) ** power`` (0 from ``max_step`` on): the poly schedule of every stage."""
    if max_step <= 0:
        return base_lr
    return base_lr * max(0.0, 1.0 - step / max_step) ** power


def published_param_groups(groups: Sequence[Sequence[torch.Tensor]], lr: float,
                           weight_decay: float) -> List[Dict[str, Any]]:
    """The four published groups as SGD group dicts: (weights x1, wd), (biases x2, 0), (new weights x10, wd),
    (new biases x20, 0)."""
    if len(groups) != 4:
        raise ValueError("expected the four groups of get_parameter_groups()")
    wds = (weight_decay, 0.0, weight_decay, 0.0)
    return [{"params": list(g), "lr": m * lr, "weight_decay": wd} for g, m, wd in zip(groups, LR_MULTS, wds)]


def _is_four_groups(params: Any) -> bool:
    return (isinstance(params, (tuple, list)) and len(params) == 4
            and all(isinstance(g, (tuple, list)) and all(isinstance(p, torch.Tensor) for p in g) for g in params))


class PolySchedule:
    """Poly learning-rate decay applied before every ``step`` and a ``global_step`` saved in ``state_dict``;
    mixed into an optimiser class (before it in the bases)."""

    def step(self, closure=None):
        if self.global_step < self.max_step:
            for group in self.param_groups:
                group["lr"] = poly_lr(group["initial_lr"], self.global_step, self.max_step, self.power)
        loss = super().step(closure)
        self.global_step += 1
        return loss

    def state_dict(self) -> Dict[str, Any]:
        sd = super().state_dict()
        sd["poly"] = {"global_step": self.global_step, "max_step": self.max_step, "power": self.power}
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        poly = state_dict.pop("poly", None)
        super().load_state_dict(state_dict)
        if poly is not None:
            self.global_step = int(poly["global_step"])
            self.max_step = int(poly["max_step"])
            self.power = float(poly["power"])


class PolyOptimizer(PolySchedule, torch.optim.SGD):
    """SGD with the published poly schedule; counts ``global_step`` (saved in ``state_dict``).

    ``params``: the 4-tuple of :meth:`get_parameter_groups` (expanded with :func:`published_param_groups`), or
    ordinary parameters / group dicts. ``momentum=None`` means the published quirk (momentum = ``weight_decay``)
    unless ``published_momentum_quirk=False`` (then 0.9).
    """

    def __init__(self, params: Iterable, lr: float, weight_decay: float, max_step: int,
                 momentum: Optional[float] = None, power: float = POLY_POWER,
                 published_momentum_quirk: bool = True, nesterov: bool = False):
        if _is_four_groups(params):
            params = published_param_groups(params, lr, weight_decay)
            default_wd = 0.0  # the published SGD default; each group sets its own
        else:
            default_wd = weight_decay
        if momentum is None:
            momentum = weight_decay if published_momentum_quirk else 0.9
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=default_wd, nesterov=nesterov)
        self.global_step = 0
        self.max_step = int(max_step)
        self.power = float(power)
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])



class PolyAdamW(PolySchedule, torch.optim.AdamW):
    """AdamW with the same poly schedule and ``global_step`` bookkeeping as :class:`PolyOptimizer`.

    Not a published setting: for training small backbones from scratch (the synthetic demo, no ImageNet
    weights), where SGD at the published rates needs far more steps than a CPU demo can afford. The four
    published groups are kept, without the x2/x10/x20 multipliers (Adam normalises step sizes); biases get no
    weight decay.
    """

    def __init__(self, params: Iterable, lr: float, weight_decay: float, max_step: int, power: float = POLY_POWER):
        if _is_four_groups(params):
            params = [{"params": list(g), "weight_decay": 0.0 if i % 2 else weight_decay}
                      for i, g in enumerate(params) if len(g)]
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        self.global_step = 0
        self.max_step = int(max_step)
        self.power = float(power)
        for group in self.param_groups:
            group.setdefault("initial_lr", group["lr"])


def build_optimizer(name: str, groups, lr: float, weight_decay: float, max_step: int,
                    momentum: Optional[float] = None) -> torch.optim.Optimizer:
    """``sgd``: the published :class:`PolyOptimizer`; ``adamw``: :class:`PolyAdamW` (from-scratch training)."""
    if name == "sgd":
        return PolyOptimizer(groups, lr=lr, weight_decay=weight_decay, max_step=max_step, momentum=momentum)
    if name == "adamw":
        return PolyAdamW(groups, lr=lr, weight_decay=weight_decay, max_step=max_step)
    raise ValueError(f"unknown optimizer {name!r}; expected sgd or adamw")
