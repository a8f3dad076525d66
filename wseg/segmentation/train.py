"""Segmentation training (the last step of WSSS) on the one engine (:mod:`wseg.engine.trainer`).

Published recipe (usr922/wseg ``segmentation/experiment/*``): cross-entropy over the pseudo masks with 255 ignored,
SGD with four parameter groups (lr x1/x2/x10/x20), ``lr = base * (1 - itr / (max_itr + 1)) ** 0.9`` set before
each iteration, momentum 0.9, weight decay 5e-4 on the weight groups. The data order and every augmentation draw are
a function of ``(seed, iteration)`` (:class:`~wseg.engine.plans.StepPlan`), so a run resumed at any checkpoint equals
an uninterrupted one.

mmsegmentation's recipe (models ``deeplabv3plus`` / ``pspnet`` / ``deeplabv3``; mmseg 1.2.2
``configs/_base_/schedules/schedule_{20k,40k}.py``, WSSS_MMSeg's for PMM): SGD over *one* group of every parameter
(no ``paramwise_cfg``: BN and biases decay too) at ``lr``, ``lr = (lr - min_lr) * (1 - itr / max_iters) ** power
+ min_lr`` (mmengine ``PolyLR`` with ``eta_min``, mmcv 0.x ``PolyLrUpdaterHook`` with ``min_lr``: the same closed
form), the decode head's mmseg cross-entropy plus ``aux_weight`` x the auxiliary head's, optionally with PMM's PUS
on both (:mod:`wseg.losses.segmentation`), SyncBN under ``torchrun`` (``sync_bn``), validation with mmseg's test,
weights saved in mmseg's layout with ``save_format=mmseg``. The image-pooling BatchNorm of both heads (a 1x1 map)
needs at least 2 images per BN group.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch.utils.data import DataLoader

from wseg.data.datasets import ImageMaskDataset, unbatch_one
from wseg.data.voc import VOCRoot
from wseg.engine.runtime import LOG, Dist, setup_logging
from wseg.errors import WsegError
from wseg.losses.segmentation import seg_loss
from wseg.segmentation.checks import check_train_config
from wseg.segmentation.data import MultiScaleJoint, check_mask_sizes, train_transform
from wseg.segmentation.models import build_model
from wseg.segmentation.predict import confusion_on

LAST_CKPT = "last.pth"
#: Config keys that must not change between a checkpoint and its resumption.
RESUME_KEYS = ("model", "max_iters", "batch_size", "lr", "head_lr_mult", "optimizer", "warmup_iters", "power", "seed",
               "train_list", "pseudo_mask_dir", "crop_size", "min_lr", "data_pipeline", "pus_type", "pus_beta", "pus_k")


def final_weights_path(cfg: Mapping[str, Any], out_dir: str, dataset: str) -> str:
    """Published name ``<model>_<backbone>_<dataset>_itr<N>_all.pth`` in ``out_dir``."""
    m = cfg["model"]
    return os.path.join(out_dir, f"{m['type']}_{m['backbone']}_{dataset}_itr{int(cfg['max_iters'])}_all.pth")


def _val_loader(cfg, voc: VOCRoot, dist: Dist) -> Optional[DataLoader]:
    if int(cfg["val_every"]) <= 0 or not cfg.get("val_list"):
        return None
    ids = voc.ids(cfg["val_list"])
    missing = [i for i in ids if voc.mask_path(i) is None]
    if missing:
        raise WsegError(f"{cfg['val_list']}: {len(missing)} of {len(ids)} validation images have no ground truth "
                        f"(first: {missing[0]}); pass a labelled val_list or --val_every 0")
    if cfg.get("data_pipeline") == "mmseg":
        from wseg.segmentation.data import MMSegValImages
        from wseg.segmentation.predict import MMSegTest

        ds = MMSegValImages(voc, ids[dist.rank::dist.world_size], MMSegTest.from_config(cfg, val=True), cfg["mean"],
                            cfg["std"])
    else:
        ds = ImageMaskDataset(voc, ids[dist.rank::dist.world_size], None,
                              MultiScaleJoint(cfg["val_scales"], cfg["mean"], cfg["std"], cfg.get("long_side")))
    return DataLoader(ds, batch_size=1, shuffle=False, num_workers=min(int(cfg["num_workers"]), 2),
                      collate_fn=unbatch_one)


def validate(model: torch.nn.Module, loader: DataLoader, num_classes: int, dist: Dist, cfg: Mapping[str, Any]
             ) -> Dict[str, Any]:
    """Validation mIoU (percent) over all ranks' shards: confusion matrices summed with ``all_reduce``."""
    from wseg.metrics import scores

    from wseg.segmentation.predict import MMSegTest

    was_training = model.training
    model.eval()
    test = MMSegTest.from_config(cfg, val=True) if cfg.get("data_pipeline") == "mmseg" else None
    conf = confusion_on(model, loader, num_classes, bool(cfg["val_flip"]), dist.device, bool(cfg["amp"]), test)
    model.train(was_training)
    if dist.enabled:
        t = torch.from_numpy(conf).to(dist.device)
        torch.distributed.all_reduce(t)
        conf = t.cpu().numpy()
    s = scores(conf)
    return {"miou": s["miou"] * 100, "pixel_acc": s["pixel_acc"] * 100, "iou": (s["iou"] * 100).tolist()}


def train(cfg: Mapping[str, Any], progress: bool = True,
          on_step: Optional[Callable[[int, float], None]] = None) -> Dict[str, Any]:
    """Train the configured network on pseudo masks; resumable, DDP-aware (``torchrun``).

    Outputs in ``out_dir``: ``last.pth`` (atomic resume checkpoint every ``ckpt_every`` iterations and at the end),
    the final plain state dict ``<model>_<backbone>_<dataset>_itr<N>_all.pth`` (published name), ``best.pth``
    (best validation mIoU), ``train.log`` and ``scalars.jsonl``. ``on_step(itr, loss)`` is called after each
    iteration (tests use it to simulate crashes). Returns the weights path, iterations, timings and mIoUs.
    """
    from wseg.engine.optim import LR_MULTS, PolyLR, build_optimizer, head_lr_mults, published_groups
    from wseg.engine.plans import StepPlan
    from wseg.engine.trainer import Trainer
    from wseg.segmentation.models import is_mmseg, save_weights

    check_train_config(cfg)
    out_dir = cfg.get("out_dir") or os.path.join("runs", "segmentation", cfg["exp_name"])
    dist = Dist(cfg["device"])
    try:
        os.makedirs(out_dir, exist_ok=True)
        setup_logging(os.path.join(out_dir, "train.log"), dist.is_main)
        voc = VOCRoot(cfg["voc12_root"], cfg.get("classes"))
        num_classes = voc.spec.num_classes
        max_iters = int(cfg["max_iters"])
        final = final_weights_path(cfg, out_dir, voc.spec.name)
        last = os.path.join(out_dir, LAST_CKPT)
        LOG.info("segmentation train %s", json.dumps(dict(cfg), default=str))
        ids = voc.ids(cfg["train_list"])
        if not cfg.get("pseudo_mask_dir"):
            LOG.warning("pseudo_mask_dir is not set: training on the ground-truth masks (fully supervised)")
        elif not os.path.isdir(cfg["pseudo_mask_dir"]):
            raise WsegError(f"{cfg['pseudo_mask_dir']}: pseudo-mask folder not found; set pseudo_mask_dir to the "
                            "folder of <id>.png pseudo masks (e.g. scripts/aff_infer.py --out_rw)")
        transform = train_transform(cfg)
        base = ImageMaskDataset(voc, ids, cfg.get("pseudo_mask_dir") or None, transform)  # missing masks: error
        check_mask_sizes(voc, ids, cfg.get("pseudo_mask_dir") or None)
        plan = StepPlan(base, transform, int(cfg["batch_size"]), int(cfg["seed"]), int(cfg["num_workers"]), dist)
        per_rank = plan.sampler.per_rank
        if cfg["model"]["type"] == "deeplabv2" and cfg["model"].get("aspp_global", True) and per_rank < 2:
            raise WsegError(f"batch_size {cfg['batch_size']} over {dist.world_size} process(es) gives {per_rank} "
                            "image per process: the image-pooling BatchNorm of deeplabv2 needs at least 2; raise "
                            "batch_size or set model.aspp_global=False")
        mmseg_model = cfg["model"]["type"] in ("deeplabv3plus", "pspnet", "deeplabv3")
        sync = bool(cfg.get("sync_bn")) and dist.enabled
        if mmseg_model and (int(cfg["batch_size"]) if sync else per_rank) < 2:
            raise WsegError(f"batch_size {cfg['batch_size']} over {dist.world_size} process(es) gives {per_rank} "
                            f"image(s) per BatchNorm group{'' if sync else ' (sync_bn off)'}: the image-pooling BN of "
                            f"{cfg['model']['type']} (a 1x1 map) needs at least 2; raise batch_size or set sync_bn")
        group = cfg.get("pus_group")
        if cfg.get("pus_type") and group and per_rank > int(group) and per_rank % int(group):
            raise WsegError(f"pus_group {group}: the {per_rank} images per process are not a multiple of it; pick "
                            "batch_size = processes x a multiple of pus_group")
        val_loader = _val_loader(cfg, voc, dist)

        torch.manual_seed(int(cfg["seed"]))  # the heads' random initialisation
        model = build_model(cfg, num_classes)
        if sync:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(dist.device)
        warmup = int(cfg.get("warmup_iters") or 0)
        if is_mmseg(model):
            groups = model.param_groups(float(cfg["lr"]), float(cfg["weight_decay"]))
            schedule = PolyLR(max_iters, float(cfg["power"]), warmup_iters=warmup,
                              min_lr=float(cfg.get("min_lr") or 0.0))
        else:
            groups = published_groups(model.get_parameter_groups(), float(cfg["lr"]), float(cfg["weight_decay"]),
                                      head_lr_mults(cfg.get("head_lr_mult", LR_MULTS[2])), split_mult=True)
            schedule = PolyLR(max_iters + 1, float(cfg["power"]), warmup_iters=warmup)
        optimizer = build_optimizer(str(cfg.get("optimizer") or "sgd"), groups, float(cfg["lr"]),
                                    float(cfg["weight_decay"]), float(cfg["momentum"]))
        arch = model.architecture()
        save_format = str(cfg.get("save_format") or "wseg")
        if mmseg_model:
            from wseg.losses.segmentation import mmseg_cross_entropy

            ce = dict(avg_non_ignore=bool(cfg.get("avg_non_ignore")), pus_type=str(cfg.get("pus_type") or ""),
                      pus_beta=float(cfg.get("pus_beta", 0.5)), pus_k=float(cfg.get("pus_k", 0.5)),
                      pus_group=cfg.get("pus_group"))
            aux_weight = float(cfg.get("aux_weight", 0.4))

            def step(net, batch, ctx):
                _, images, labels = batch
                with ctx.autocast():
                    out = net(images)
                losses = {"decode": mmseg_cross_entropy(out["out"], labels, **ce)}
                if "aux" in out:
                    losses["aux"] = mmseg_cross_entropy(out["aux"], labels, loss_weight=aux_weight, **ce)
                return {"loss": sum(losses.values()), **losses}
        else:
            def step(net, batch, ctx):
                _, images, labels = batch
                with ctx.autocast():
                    logits = net(images)["out"]
                return {"loss": seg_loss(logits, labels)}

        def on_best(itr: int, val: Dict[str, Any]) -> None:
            save_weights(os.path.join(out_dir, "best.pth"), model, {**arch, "iter": itr, "val_miou": val["miou"]},
                         save_format, voc.spec)

        if cfg.get("resume", True) and os.path.isfile(last) and os.path.isfile(final):
            from wseg.engine.trainer import check_resume
            from wseg.models.checkpoint import load_checkpoint

            state = load_checkpoint(last, model)
            # a finished run of other settings is not this run's result (refused as a resume would be)
            check_resume(last, state.get("args") or {}, dict(cfg), RESUME_KEYS, "--resume False (or another out_dir)")
            if int(state["step"]) >= max_iters:
                LOG.info("already trained: %s", final)
                return {"weights": final, "iters": max_iters, "trained_iters": 0,
                        "best_miou": ((state.get("meta") or {}).get("best") or {}).get("miou"),
                        "out_dir": out_dir, "checkpoint": last}
        trainer = Trainer(model=model, optimizer=optimizer, schedule=schedule,
                          plan=plan, step=step, dist=dist, max_iters=max_iters, checkpoint=last, settings=dict(cfg),
                          resume_keys=RESUME_KEYS, resume=bool(cfg.get("resume", True)),
                          ckpt_every=int(cfg["ckpt_every"]), log_every=int(cfg["log_every"]), amp=bool(cfg["amp"]),
                          scalars=os.path.join(out_dir, "scalars.jsonl"), stop_iter=cfg.get("stop_iter"), meta=arch,
                          progress=progress, images_per_step=int(cfg["batch_size"]),
                          validate=(lambda itr: validate(model, val_loader, num_classes, dist, cfg))
                          if val_loader is not None else None, val_every=int(cfg["val_every"]), on_best=on_best,
                          on_step=(lambda itr, losses: on_step(itr, float(losses["loss"].detach()))) if on_step else None,
                          resume_hint="--resume False (or another out_dir)", desc="train")
        result = trainer.run()
        result.update(out_dir=out_dir, checkpoint=last, weights=None)
        if result["finished"]:
            if dist.is_main:
                save_weights(final, model, {**arch, "exp_name": cfg["exp_name"], "iters": result["iters"]},
                             save_format, voc.spec)
                LOG.info("saved %s", final)
            result["weights"] = final
        dist.barrier()
        return result
    finally:
        dist.close()
