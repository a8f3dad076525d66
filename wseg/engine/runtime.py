"""Run-time plumbing shared by the training/inference stages: device and AMP, torchrun DDP, logging, meters."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import Dict, Optional

import torch
import torch.distributed as dist

from wseg.errors import WsegError

LOG = logging.getLogger("wseg")


# --------------------------------------------------------------------------------------------- device / AMP


def resolve_device(name: Optional[str] = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is a one-line error."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise WsegError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WsegError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    return dev


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on GPU (fp16 autocast); a no-op on CPU or when disabled."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    return torch.amp.GradScaler("cuda", enabled=bool(enabled and device.type == "cuda"))


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, where: str,
                   losses: Optional[Dict[str, torch.Tensor]] = None,
                   hint: str = "lower --lr or disable --amp", accumulate: int = 1,
                   iteration: int = 0) -> None:
    """One training step on ``loss``: gradients zeroed, backward (scaled under AMP), optimiser and scaler stepped.
    With ``accumulate`` k > 1, gradients of k iterations are summed (each loss divided by k) and the optimiser steps
    after every k-th (``iteration`` counts from 0). A non-finite loss stops the run first, with a :class:`WsegError`
    naming ``where`` (e.g. ``iteration 12``), the values of ``losses`` and ``hint``: the weights, and every
    checkpoint written so far, stay finite."""
    if not torch.isfinite(loss):
        parts = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in (losses or {}).items())
        raise WsegError(f"non-finite loss at {where}" + (f" ({parts})" if parts else "") + f"; {hint}")
    if accumulate <= 1:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return
    if iteration % accumulate == 0:
        optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss / accumulate).backward()
    if (iteration + 1) % accumulate == 0:
        scaler.step(optimizer)
        scaler.update()


# --------------------------------------------------------------------------------------------- DDP (torchrun)


class Dist:
    """torchrun-aware process group: rank/world from the environment, NCCL on GPU, gloo on CPU."""

    def __init__(self, device_name: str = "auto"):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        dev = resolve_device(device_name)
        if dev.type == "cuda" and self.enabled:
            torch.cuda.set_device(self.local_rank)
            dev = torch.device("cuda", self.local_rank)
        self.device = dev
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


# --------------------------------------------------------------------------------------------- logging


def setup_logging(log_file: Optional[str] = None, main_process: bool = True) -> logging.Logger:
    """Log to stderr and (main process) ``log_file``, one file per run."""
    LOG.handlers.clear()
    LOG.setLevel(logging.INFO if main_process else logging.WARNING)
    LOG.propagate = False
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(fmt)
    LOG.addHandler(h)
    if log_file and main_process:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        LOG.addHandler(fh)
    return LOG


class ScalarLog:
    """Append-only JSON-lines scalar log (``step``, losses, lr, ...) next to the checkpoints."""

    def __init__(self, path: Optional[str]):
        self.path = path
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(self, step: int, **scalars) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "time": round(time.time(), 3), **scalars}) + "\n")


class AverageMeter:
    """Running means of named scalars between ``pop()`` calls."""

    def __init__(self):
        self.sums: Dict[str, float] = {}
        self.counts: Dict[str, int] = {}

    def add(self, **values) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop(self) -> Dict[str, float]:
        out = {k: self.sums[k] / max(1, self.counts[k]) for k in self.sums}
        self.sums, self.counts = {}, {}
        return out
