"""The one training loop of wseg (CAM networks, AffinityNet, segmentation networks, single-stage methods).

Read top to bottom, one iteration is: the data plan hands over a batch (:mod:`wseg.engine.plans`), the poly
schedule sets the learning rates (:class:`~wseg.engine.optim.PolyLR`), the caller's ``step`` returns named loss
terms (``loss`` carries the gradient), :func:`~wseg.engine.runtime.optimizer_step` refuses a non-finite loss and
steps (AMP-scaled on GPU, every ``grad_accum`` iterations), then logging, validation and checkpoints.

Iteration-based throughout: an epoch-based published recipe is its number of iterations (epochs x steps per
epoch). A resume checkpoint ``checkpoint`` (model, optimiser, AMP scaler, iteration, settings) is written
atomically every ``ckpt_every`` iterations (at epoch ends for the epoch plan) and at the end; re-running continues
from it, and a checkpoint written with other ``resume_keys`` settings is refused with one line, the same way in
every trainer. Works under ``torchrun`` (DDP; rank 0 logs and writes).
"""
from __future__ import annotations

import collections
import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Deque, Dict, Mapping, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from wseg.engine.optim import PolyLR
from wseg.engine.runtime import LOG, AverageMeter, Dist, ScalarLog, autocast, grad_scaler, optimizer_step, unwrap
from wseg.errors import WsegError, one_line


@dataclass
class StepContext:
    """What a training step may use besides the batch: the iteration, the epoch, a seeded generator for the
    method's own sampling (re-seeded by the data plan, so a resumed run draws the same), ``cls_only`` (the
    classification loss alone: the optional warm-up of from-scratch training) and ``autocast`` (the mixed-precision
    context for the forward passes; losses run in fp32 outside it)."""

    iteration: int = 0
    epoch: int = 0
    generator: Optional[torch.Generator] = None
    cls_only: bool = False
    autocast: Callable[[], ContextManager] = contextlib.nullcontext


#: A run learned when its final classification loss is at most this fraction of the label prior's loss: the training
#: loss of the last tenth of the run (LEARNED_RATIO), or, where the trainer is given ``final_cls_loss`` (the CAM
#: trainers), the finished network's loss in eval mode on the un-augmented training images (LEARNED_RATIO_FINAL: that
#: loss is deterministic, so a smaller margin is clear). Dropout, augmentation and SEAM's small second view keep the
#: training loss high: the published PPC recipe from the stand-in weights ended its training at 0.85-0.98 of the
#: prior with CAMs of 49-59 mIoU, and at 0.79-0.89 in eval mode; networks that learned nothing stay at 0.98-1.00.
LEARNED_RATIO = 0.9
LEARNED_RATIO_FINAL = 0.95

StepFn = Callable[[torch.nn.Module, Any, StepContext], Dict[str, torch.Tensor]]


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to ``device``; anything else (ids) kept."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def multilabel_prior_loss(labels) -> float:
    """The multilabel soft-margin loss of predicting each class's frequency ``p_c`` (the label prior):
    ``mean_c -(p_c log p_c + (1 - p_c) log(1 - p_c))``. ``labels``: ``(N, C)`` 0/1 image-level labels."""
    import numpy as np

    p = np.clip(np.asarray(labels, np.float64).mean(0), 1e-6, 1 - 1e-6)
    return float(np.mean(-(p * np.log(p) + (1 - p) * np.log(1 - p))))


def categorical_prior_loss(counts) -> float:
    """The cross-entropy of predicting the class frequencies (the entropy of the label distribution)."""
    import numpy as np

    p = np.asarray(counts, np.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum()) if len(p) else math.log(2)


def _norm(v: Any) -> Any:
    return [float(x) if isinstance(x, (int, float)) else x for x in v] if isinstance(v, (list, tuple)) else v


def check_resume(path: str, saved: Mapping[str, Any], settings: Mapping[str, Any], keys: Sequence[str],
                 how: str = "--resume False") -> None:
    """Refuse a checkpoint written with other values of ``keys`` (they fix the schedule and the network)."""
    diff = [f"{k} {saved.get(k)!r} -> {settings.get(k)!r}" for k in keys
            if k in saved and _norm(saved.get(k)) != _norm(settings.get(k))]
    if diff:
        raise WsegError(f"{path}: checkpoint of another configuration ({'; '.join(diff)}); use another output "
                        f"name, restore those values, or pass {how} to start over")


class Trainer:
    """See the module docstring. ``validate(itr) -> {"miou": ..}`` runs every ``val_every`` iterations and at the
    end (``best`` is tracked and saved by ``on_best``); ``on_step(itr, losses)`` after each iteration (tests use it
    to simulate crashes)."""

    def __init__(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: PolyLR, plan: Any,
                 step: StepFn, dist: Dist, max_iters: int, checkpoint: str, settings: Mapping[str, Any],
                 resume_keys: Sequence[str] = (), resume: bool = True, ckpt_every: int = 1000, log_every: int = 20,
                 amp: bool = False, scalars: Optional[str] = None, stop_iter: Optional[int] = None,
                 grad_accum: int = 1, meta: Optional[Mapping[str, Any]] = None, progress: bool = True,
                 images_per_step: int = 1, validate: Optional[Callable[[int], Dict[str, Any]]] = None,
                 val_every: int = 0, on_best: Optional[Callable[[int, Dict[str, Any]], None]] = None,
                 on_step: Optional[Callable[[int, Dict[str, torch.Tensor]], None]] = None,
                 resume_hint: str = "--resume False", desc: str = "train",
                 prior: Optional[Tuple[str, float]] = None, ema: Any = None,
                 final_cls_loss: Optional[Callable[[torch.nn.Module], float]] = None):
        # final_cls_loss(model): the finished network's classification loss in eval mode (e.g.
        # wseg.methods.base.eval_cls_loss), compared with the prior instead of the training loss
        self.model, self.optimizer, self.schedule, self.plan, self.step = model, optimizer, schedule, plan, step
        self.dist, self.max_iters, self.checkpoint, self.settings = dist, int(max_iters), checkpoint, dict(settings)
        self.resume_keys, self.resume, self.resume_hint = tuple(resume_keys), bool(resume), resume_hint
        self.ckpt_every, self.log_every, self.amp = max(1, int(ckpt_every)), max(1, int(log_every)), bool(amp)
        self.scalars = ScalarLog(scalars if dist.is_main else None)
        self.end_iter = int(stop_iter or max_iters)
        self.grad_accum, self.meta, self.progress = max(1, int(grad_accum)), dict(meta or {}), progress
        self.images_per_step, self.desc = images_per_step, desc
        self.validate, self.val_every, self.on_best, self.on_step = validate, int(val_every), on_best, on_step
        self.scaler = grad_scaler(dist.device, amp)
        self.best: Dict[str, Any] = {"miou": None, "iter": None}
        self.last_val: Optional[Dict[str, Any]] = None
        self.first_losses: Optional[Dict[str, float]] = None
        self.last_losses: Dict[str, float] = {}
        self.prior = prior
        self.ema = ema                    # a wseg.engine.ema.ModelEMA updated after every optimiser step, or None
        self.final_cls_loss = final_cls_loss
        self.recent: Deque[float] = collections.deque(maxlen=max(10, self.end_iter // 10))

    # -- checkpoints
    def _resume(self) -> int:
        import os

        from wseg.models.checkpoint import load_checkpoint

        if not (self.resume and os.path.isfile(self.checkpoint)):
            return 0
        state = load_checkpoint(self.checkpoint, self.model, self.optimizer, self.scaler, ema=self.ema,
                                check_args=lambda saved: check_resume(self.checkpoint, saved, self.settings,
                                                                      self.resume_keys, self.resume_hint))
        self.best = dict((state.get("meta") or {}).get("best") or self.best)
        start = int(state["step"])
        if not self.plan.resumable_mid_epoch and start % self.plan.steps_per_epoch:
            raise WsegError(f"{self.checkpoint}: written in the middle of an epoch, but this trainer resumes at epoch "
                            "boundaries; delete it to start over")
        LOG.info("resumed from %s at iteration %d", self.checkpoint, start)
        return start

    def _save(self, itr: int) -> None:
        from wseg.models.checkpoint import save_checkpoint

        if self.dist.is_main:
            save_checkpoint(self.checkpoint, unwrap(self.model), self.optimizer, itr, self.settings,
                            epoch=itr // self.plan.steps_per_epoch, scaler=self.scaler,
                            meta={**self.meta, "best": self.best}, ema=self.ema)
        self.dist.barrier()

    def _checkpoint_due(self, itr: int) -> bool:
        if itr >= self.end_iter:
            return True
        if self.plan.resumable_mid_epoch:
            return itr % self.ckpt_every == 0
        return itr % self.plan.steps_per_epoch == 0

    # -- logging
    def _log(self, itr: int, lr: float, meter: AverageMeter, t0: float, start: int) -> None:
        avg = meter.pop()
        if self.dist.enabled:
            avg = {k: float(self.dist.all_reduce_mean(torch.tensor(v, device=self.dist.device))) for k, v in avg.items()}
        self.scalars.write(itr, lr=lr, **avg)
        seconds = max(1e-6, time.perf_counter() - t0)
        LOG.info("step %d/%d %s lr %.5g %.2f it/s %.1f img/s", itr, self.max_iters,
                 " ".join(f"{k} {v:.4g}" for k, v in avg.items()), lr, (itr - start) / seconds,
                 (itr - start) * self.images_per_step / seconds)

    def _validate(self, itr: int) -> None:
        self.last_val = self.validate(itr)
        self.scalars.write(itr, **{f"val_{k}": v for k, v in self.last_val.items() if isinstance(v, (int, float))})
        LOG.info("step %d val mIoU %.3f%%", itr, self.last_val["miou"])
        if self.best["miou"] is None or self.last_val["miou"] > self.best["miou"]:
            self.best = {"miou": self.last_val["miou"], "iter": itr}
            if self.on_best is not None and self.dist.is_main:
                self.on_best(itr, self.last_val)

    def _learned(self, itr: int) -> Dict[str, Any]:
        """Did the network learn? Its classification loss (``prior[0]``), averaged over the last tenth of the run,
        against the loss of predicting the label prior (``prior[1]``: each class's frequency); a run that does not
        beat it by a clear margin (:data:`LEARNED_RATIO`) is warned about in the log and flagged in the result (the
        pipeline report marks every stage it feeds)."""
        if self.prior is None or not self.recent or itr < self.max_iters:
            return {}
        key, prior = self.prior
        final = float(sum(self.recent) / len(self.recent))
        train_loss, ratio = final, LEARNED_RATIO
        if self.final_cls_loss is not None:
            ratio = LEARNED_RATIO_FINAL
            final = float(self.final_cls_loss(self.model))          # it sets eval mode and no_grad itself
            key = f"{key} of the final network on the un-augmented training images (training: {train_loss:.4g})"
        learned = final <= ratio * prior
        if not learned:
            LOG.warning("the network did not learn: its %s ended at %.4g, the label prior's loss is %.4g (a network "
                        "that learned ends below %.2f x the prior); check the learning rate, the weights and the "
                        "labels", key, final, prior, ratio)
        else:
            LOG.info("%s ended at %.4g, %.0f%% of the label prior's %.4g", key, final, 100 * final / prior, prior)
        return {"learned": learned, "cls_loss": final, "prior_loss": prior, "train_cls_loss": train_loss}

    # -- the loop
    def run(self) -> Dict[str, Any]:
        start = itr = self._resume()
        net = self.dist.wrap(self.model)
        net.train()
        device = self.dist.device
        gen = torch.Generator(device=device)
        ctx = StepContext(generator=gen, autocast=lambda: autocast(device, self.amp))
        meter = AverageMeter()
        spe = self.plan.steps_per_epoch
        t0 = time.perf_counter()
        bar = tqdm(total=self.end_iter, initial=start, desc=self.desc, dynamic_ncols=True, leave=False,
                   disable=not (self.progress and self.dist.is_main))
        while itr < self.end_iter:
            epoch, first = divmod(itr, spe)
            gen.manual_seed(self.plan.begin_epoch(epoch))
            batches = self.plan.epoch_batches(epoch, first)
            while itr < self.end_iter:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except WsegError as exc:
                    raise one_line(exc) from None
                seed = self.plan.before_step(itr)
                if seed is not None:
                    gen.manual_seed(seed)
                lr = self.schedule.apply(self.optimizer, itr)
                ctx.iteration, ctx.epoch = itr, epoch
                losses = self.step(net, to_device(batch, device), ctx)
                optimizer_step(losses["loss"], self.optimizer, self.scaler, f"iteration {itr}", losses,
                               accumulate=self.grad_accum, iteration=itr)
                if self.ema is not None and (itr + 1) % max(1, self.grad_accum) == 0:
                    self.ema.update(unwrap(net))    # after every optimiser step (RS+EPM's ModelEMA)
                itr += 1
                values = {k: float(v.detach()) for k, v in losses.items()}
                self.first_losses = self.first_losses or values
                self.last_losses = values
                if self.prior is not None and self.prior[0] in values:
                    self.recent.append(values[self.prior[0]])
                meter.add(**values)
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                if self.on_step is not None:
                    self.on_step(itr, losses)
                if itr % self.log_every == 0 or itr == self.end_iter:
                    self._log(itr, lr, meter, t0, start)
                if self.validate is not None and self.val_every > 0 and (itr % self.val_every == 0
                                                                          or itr == self.max_iters):
                    self._validate(itr)
                if self._checkpoint_due(itr):
                    self._save(itr)
        bar.close()
        seconds = time.perf_counter() - t0
        if itr < self.max_iters:
            LOG.info("stopped at iteration %d of %d (stop_iter); re-run to continue", itr, self.max_iters)
        learned = self._learned(itr)
        return {**learned, "iters": itr, "trained_iters": itr - start, "seconds": round(seconds, 2),
                "iters_per_s": round((itr - start) / seconds, 3) if seconds > 0 and itr > start else None,
                "val_miou": None if self.last_val is None else self.last_val["miou"], "best_miou": self.best["miou"],
                "finished": itr >= self.max_iters, "first_losses": self.first_losses, "last_losses": self.last_losses}
