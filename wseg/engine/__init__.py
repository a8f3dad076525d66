"""The engine every stage runs on: device/AMP/DDP plumbing (:mod:`~wseg.engine.runtime`), optimisers and the one
poly schedule (:mod:`~wseg.engine.optim`), data plans (:mod:`~wseg.engine.plans`), the one training loop
(:mod:`~wseg.engine.trainer`) and the per-image inference runner (:mod:`~wseg.engine.per_image`)."""
from wseg.engine.runtime import (LOG, AverageMeter, Dist, ScalarLog, autocast, grad_scaler, optimizer_step,
                                 resolve_device, setup_logging, unwrap)

__all__ = ["LOG", "AverageMeter", "Dist", "ScalarLog", "autocast", "grad_scaler", "optimizer_step",
           "resolve_device", "setup_logging", "unwrap"]
