"""Exponential moving average of a model's weights (the ``ModelEMA`` of the RS+EPM trainer, as in YOLOv5).

After every optimiser step each floating-point entry ``v`` of the state dict (parameters and BatchNorm statistics)
becomes ``d * v + (1 - d) * model[v]`` with ``d = decay * (1 - exp(-updates / tau))``: a short memory early in
training, ``decay`` later. The released RS+EPM trainer saves these averaged weights as its result
(``decay`` 0.9999, ``tau`` 2000); the engine's :class:`~wseg.engine.trainer.Trainer` updates the average, keeps it in
its resume checkpoints and hands it to the stage, which saves it instead of the raw weights.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict

import torch
from torch import nn


class ModelEMA:
    """``ModelEMA(model, decay=0.9999, tau=2000)``; ``update(model)`` after each step; ``module`` is the average."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        if not (0 <= decay < 1 and tau > 0):
            raise ValueError(f"EMA decay {decay} must lie in [0, 1) and tau {tau} be positive")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = float(decay), float(tau), int(updates)

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.current_decay()
        own = self.module.state_dict()
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                own[k].mul_(d).add_(v.detach(), alpha=1 - d)

    def state_dict(self) -> Dict[str, Any]:
        return {"updates": self.updates, "decay": self.decay, "tau": self.tau,
                "model": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["model"])
