"""Segmentation stage (the last step of WSSS): a DeepLab trained on pseudo masks, multi-scale + flip inference.

Published recipe (usr922/wseg ``segmentation/experiment/*``): cross-entropy over the pseudo masks with 255 ignored,
SGD with four parameter groups (lr x1/x2/x10/x20), ``lr = base * (1 - itr / (max_itr + 1)) ** 0.9`` set before
each iteration, momentum 0.9, weight decay 5e-4 on the weight groups. Test: for every scale and its mirror the
upsampled logits are resized to the image, un-mirrored and *averaged*, then softmax, optional dense CRF, argmax.

Library pieces used by ``segmentation/train.py`` / ``segmentation/test.py`` (and the pipeline runner):

- :func:`build_model` (network + ImageNet/whole-network weights), :func:`make_optimizer`, :func:`set_poly_lr`,
  :func:`seg_loss`;
- :class:`StepSampler` + :class:`SeededSamples`: data order and augmentation as a pure function of
  ``(seed, epoch, position)``, split over DDP ranks by position, so a resumed run equals an uninterrupted one;
- :func:`ms_flip_logits` / :func:`ms_flip_probs`: multi-scale + flip inference; :func:`crf_refine`: dense CRF
  with the configured kernels; :func:`predict_split`: predictions as palette PNGs, skipping finished images;
- :func:`train`: the whole training loop (AMP, DDP via ``torchrun``, atomic checkpoints, resume, validation mIoU).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from wseg.data.datasets import ImageMaskDataset, open_rgb, unbatch_one
from wseg.data.seg_transforms import SegTrainTransform, multiscale_inputs
from wseg.data.voc import VOCRoot
from wseg.engine import LOG, AverageMeter, Dist, ScalarLog, autocast, grad_scaler, optimizer_step, setup_logging
from wseg.errors import WsegError
from wseg.io import atomic_write_text, pending_ids, save_mask_png
from wseg.models.deeplab import DeepLab, build_deeplab, load_backbone_weights
from wseg.optim import LR_MULTS, poly_lr, published_param_groups

IGNORE = 255
LAST_CKPT = "last.pth"

# --------------------------------------------------------------------------------------------- model


def build_model(cfg: Mapping[str, Any], num_classes: int, weights: bool = True) -> DeepLab:
    """The configured DeepLab; with ``weights``, ``init_weights`` (whole network, strict) or else
    ``backbone_weights`` (ImageNet, strict on the backbone)."""
    kw: Dict[str, Any] = {"bn_momentum": float(cfg["bn_momentum"]), "deep_base": bool(cfg.get("deep_base", False))}
    if cfg.get("head_dim"):
        kw["head_dim"] = int(cfg["head_dim"])
    if cfg.get("frozen_layers") is not None:
        kw["frozen"] = tuple(cfg["frozen_layers"])
    if cfg.get("freeze_backbone_bn") is not None:
        kw["freeze_bn"] = bool(cfg["freeze_backbone_bn"])
    if cfg["model"] == "deeplabv2":
        kw.update(aspp_rates=tuple(cfg["aspp_rates"]), aspp_global=bool(cfg["aspp_global"]))
    net = build_deeplab(cfg["model"], cfg["backbone"], num_classes, **kw)
    if weights and cfg.get("init_weights"):
        load_segmentation_weights(net, cfg["init_weights"])
    elif weights and cfg.get("backbone_weights"):
        load_backbone_weights(net, cfg["backbone_weights"])
    return net


def load_segmentation_weights(net: DeepLab, path: str) -> Dict[str, Any]:
    """Whole-network weights (ours: plain state dict or resume checkpoint; or a published DeepLab ``.pth``),
    strictly. The architecture saved with wseg files must match ``net``."""
    from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

    state, meta = read_state_dict(path)
    arch = net.architecture()
    for key in ("model", "backbone", "num_classes", "deep_base"):
        if key in meta and meta[key] != arch[key]:
            raise WsegError(f"{path}: weights of a {key}={meta[key]!r} network, but the config builds "
                            f"{key}={arch[key]!r}; pass the matching --config/--{key} or other weights")
    if "backbone.conv1.0.weight" in state and not net.deep_base:
        raise WsegError(f"{path}: a deep-base ResNet (published resnet101s layout); set deep_base=True")
    load_state_dict_strict(net, state, path)
    return meta


# --------------------------------------------------------------------------------------------- optimisation


def make_optimizer(net: DeepLab, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD:
    """Published SGD: groups (backbone weights, backbone biases, head weights, head biases) at lr x1/x2/x10/x20
    (``lr_mult`` per group, used by :func:`set_poly_lr`), weight decay on the weight groups only. Empty groups
    (e.g. ResNet-38 has no backbone biases) are left out."""
    groups = published_param_groups(net.get_parameter_groups(), lr, weight_decay)
    for g, mult in zip(groups, LR_MULTS):
        g["lr_mult"] = mult
    return torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum)


def set_poly_lr(optimizer: torch.optim.Optimizer, base_lr: float, itr: int, max_iters: int,
                power: float = 0.9) -> float:
    """Published ``adjust_lr``: ``now = base * (1 - itr / (max_iters + 1)) ** power``; group ``k`` gets
    ``now * lr_mult_k``. Returns ``now``."""
    now = poly_lr(base_lr, itr, max_iters + 1, power)
    for g in optimizer.param_groups:
        g["lr"] = now * g.get("lr_mult", 1.0)
    return now


def seg_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over the labelled pixels, label 255 ignored (fp32). Equals the published
    ``CrossEntropyLoss(ignore_index=255)``, except that a batch without any labelled pixel gives 0, not NaN."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)


# --------------------------------------------------------------------------------------------- training data


def _mix(*values: int) -> int:
    """A 31-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(v) % (2 ** 63) for v in values]).generate_state(1)[0] & 0x7FFFFFFF)


class StepSampler(Sampler):
    """Epoch permutations from ``(seed, epoch)``, cut into global batches of ``global_batch`` (incomplete last
    batch dropped, as published); rank ``r`` of ``world`` takes columns ``[r*b, (r+1)*b)`` of each batch.

    Yields ``(dataset index, sample seed)``; :meth:`start` selects the epoch and the first step, so a resumed run
    reads exactly the batches the uninterrupted one would have read.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise WsegError(f"batch_size {global_batch} is not divisible by the {world} processes; pick a multiple")
        if n < global_batch:
            raise WsegError(f"{n} training images, fewer than one batch of {global_batch}; lower batch_size or use "
                            "a longer train_list")
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.per_rank = global_batch // world
        self.steps_per_epoch = n // global_batch
        self.epoch, self.first_step = 0, 0

    def start(self, epoch: int, first_step: int = 0) -> None:
        self.epoch, self.first_step = int(epoch), int(first_step)

    def epoch_plan(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(steps, global_batch)`` arrays of indices and per-sample augmentation seeds of an epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        k = self.steps_per_epoch * self.global_batch
        order = rng.permutation(self.n)[:k].reshape(self.steps_per_epoch, self.global_batch)
        seeds = rng.integers(0, 2 ** 31 - 1, size=k).reshape(self.steps_per_epoch, self.global_batch)
        return order, seeds

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order, seeds = self.epoch_plan(self.epoch)
        cols = slice(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
        idx = order[self.first_step:, cols].reshape(-1)
        sd = seeds[self.first_step:, cols].reshape(-1)
        return iter(zip(idx.tolist(), sd.tolist()))

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.first_step) * self.per_rank


class SeededSamples(Dataset):
    """``dataset[(index, seed)] -> (image, labels)``: the joint transform is reseeded per sample."""

    def __init__(self, base: ImageMaskDataset, transform: SegTrainTransform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        index, seed = item
        self.transform.reseed(seed)
        _, img, labels = self.base[index]
        return img, labels


def check_mask_sizes(voc: VOCRoot, ids: Sequence[str], mask_dir: Optional[str]) -> None:
    """Fail before training when a (pseudo) mask differs in size from its image: reads only the file headers."""
    from PIL import Image

    for i in ids:
        mpath = os.path.join(mask_dir, i + ".png") if mask_dir else voc.mask_path(i)
        if mpath is None:
            raise WsegError(f"{voc.root}: no ground-truth mask for {i}; set pseudo_mask_dir or fix train_list")
        try:
            with Image.open(voc.image_path(i)) as im, Image.open(mpath) as mk:
                isize, msize = im.size, mk.size
        except OSError as exc:
            raise WsegError(f"{mpath}: cannot read image/mask header of {i} ({exc.__class__.__name__}); the file is "
                            "corrupt: regenerate it")
        if isize != msize:
            raise WsegError(f"{mpath}: mask size {msize[1]}x{msize[0]} differs from the image size "
                            f"{isize[1]}x{isize[0]} of {i}; the mask belongs to another image or resolution: "
                            "regenerate the pseudo masks")


def worker_error(exc: BaseException) -> BaseException:
    """A :class:`WsegError` re-raised by a DataLoader worker carries the worker's traceback in its message; keep
    only the original one-line message."""
    if isinstance(exc, WsegError):
        text = str(exc)
        marker = "WsegError: "
        if "\n" in text and marker in text:
            return WsegError(text.rsplit(marker, 1)[1].strip())
    return exc


def train_transform(cfg: Mapping[str, Any]) -> SegTrainTransform:
    return SegTrainTransform(crop=int(cfg["crop_size"]), scale_range=cfg["scale_range"], flip=float(cfg["flip_prob"]),
                             hsv=cfg["hsv_jitter"], mean=cfg["mean"], std=cfg["std"])


# --------------------------------------------------------------------------------------------- inference


class MultiScaleJoint:
    """``joint_transform`` for validation: ``(img, mask) -> (per-scale normalised inputs, labels)``."""

    def __init__(self, scales: Sequence[float], mean: Sequence[float], std: Sequence[float]):
        self.scales, self.mean, self.std = list(scales), list(mean), list(std)

    def __call__(self, img, mask):
        return (multiscale_inputs(np.asarray(img), self.scales, self.mean, self.std),
                torch.from_numpy(np.array(mask, dtype=np.int64)))


class InferenceImages(Dataset):
    """``(id, uint8 HxWx3 image, per-scale normalised (3, h, w) inputs)`` for test-time inference (no labels
    needed: works on unlabelled splits such as VOC test)."""

    def __init__(self, voc: VOCRoot, ids: Sequence[str], scales: Sequence[float], mean: Sequence[float],
                 std: Sequence[float]):
        self.voc, self.ids = voc, list(ids)
        self.scales, self.mean, self.std = list(scales), list(mean), list(std)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        img = np.asarray(open_rgb(self.voc.image_path(self.ids[i])))
        return self.ids[i], img, multiscale_inputs(img, self.scales, self.mean, self.std)


@torch.no_grad()
def ms_flip_logits(model: torch.nn.Module, inputs: Sequence[torch.Tensor], out_size: Tuple[int, int],
                   flip: bool = True, device: Optional[torch.device] = None, amp: bool = False) -> torch.Tensor:
    """Published multi-scale + flip inference: the mean over scales (and mirrors) of the model's logits resized
    bilinearly (``align_corners=True``) to ``out_size`` and un-mirrored. ``inputs``: per-scale ``(3, h, w)``
    normalised images. Returns float32 ``(C, H, W)`` on ``device``. The model must be in eval mode."""
    device = device or next(model.parameters()).device
    total: Optional[torch.Tensor] = None
    count = 0
    for x in inputs:
        x = x.to(device, non_blocking=True)
        batch = torch.stack([x, x.flip(-1)]) if flip else x[None]
        with autocast(device, amp):
            out = model(batch)
        out = F.interpolate(out.float(), out_size, mode="bilinear", align_corners=True)
        if flip:
            out = torch.stack([out[0], out[1].flip(-1)])
        s = out.sum(0)
        total = s if total is None else total + s
        count += out.shape[0]
    if total is None:
        raise WsegError("test_scales is empty; give at least one scale")
    return total / count


def ms_flip_probs(model, inputs, out_size, flip=True, device=None, amp=False) -> torch.Tensor:
    """``softmax`` over classes of :func:`ms_flip_logits` (published: softmax of the mean logits)."""
    return torch.softmax(ms_flip_logits(model, inputs, out_size, flip, device, amp), dim=0)


def crf_params(cfg: Mapping[str, Any]) -> Dict[str, float]:
    """The configured CRF: ``iters`` and the two kernels' weights/stds, checked (:func:`wseg.crf.check_crf_params`)
    before any prediction is made."""
    params = {"iters": int(cfg["crf_iters"]), "pos_w": float(cfg["crf_pos_w"]),
              "pos_xy_std": float(cfg["crf_pos_xy_std"]), "bi_w": float(cfg["crf_bi_w"]),
              "bi_xy_std": float(cfg["crf_bi_xy_std"]), "bi_rgb_std": float(cfg["crf_bi_rgb_std"])}
    from wseg.crf import check_crf_params

    try:
        check_crf_params(params["iters"], **{k: v for k, v in params.items() if k != "iters"})
    except WsegError as exc:
        raise WsegError(f"config crf_*: {exc}") from None
    return params


def crf_refine(img: np.ndarray, probs: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
    """Dense CRF (:func:`wseg.crf.crf_inference`, unary ``-log p``) on ``(C, H, W)`` probabilities with the configured
    iterations and kernels.
    Returns the refined ``(C, H, W)`` probabilities."""
    from wseg.crf import crf_inference

    kernels = {k: float(v) for k, v in params.items() if k != "iters"}
    return crf_inference(img, probs, t=int(params["iters"]), **kernels)


def _crf_save(job) -> None:
    """Worker: CRF, argmax, palette PNG (module level so process pools can pickle it)."""
    img, probs, params, path = job
    save_mask_png(path, np.argmax(crf_refine(img, probs, params), 0).astype(np.uint8))


def _pool_context():
    import multiprocessing

    fork_ok = "fork" in multiprocessing.get_all_start_methods() and not torch.cuda.is_initialized()
    return multiprocessing.get_context("fork" if fork_ok else "spawn")


def _crf_worker_init() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def predict_split(model: torch.nn.Module, voc: VOCRoot, ids: Sequence[str], out_dir: str, scales: Sequence[float],
                  flip: bool = True, crf: Optional[Mapping[str, float]] = None,
                  mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                  device: Optional[torch.device] = None, amp: bool = False, num_workers: int = 0,
                  crf_workers: int = 0, progress: bool = True, plain_dir: Optional[str] = None) -> Dict[str, Any]:
    """MS+flip (+ CRF) predictions of ``ids`` as palette PNGs ``<out_dir>/<id>.png``; finished images are skipped.

    With ``crf``, ``plain_dir`` (optional) also receives the predictions without CRF (the arg-max of the MS+flip
    probabilities), at no extra network cost. The CRF runs in ``crf_workers`` processes while the network goes on
    with the next images. Returns ``{"num_images", "predicted", "seconds", "images_per_s"}``.
    """
    device = device or next(model.parameters()).device
    plain_dir = plain_dir if crf is not None else None
    todo = pending_ids(ids, [(out_dir, ".png"), (plain_dir, ".png")])
    for d in (out_dir, plain_dir):
        if d:
            os.makedirs(d, exist_ok=True)
    model.eval()
    t0 = time.perf_counter()
    if todo:
        loader = DataLoader(InferenceImages(voc, todo, scales, mean, std), batch_size=1, shuffle=False,
                            num_workers=num_workers, collate_fn=unbatch_one)
        pool = None
        if crf is not None and crf_workers > 1:
            pool = ProcessPoolExecutor(max_workers=crf_workers, mp_context=_pool_context(),
                                       initializer=_crf_worker_init)
        pending: List[Future] = []
        try:
            for image_id, img, inputs in tqdm(loader, desc="predict", disable=not progress, dynamic_ncols=True):
                probs = ms_flip_probs(model, inputs, img.shape[:2], flip, device, amp)
                path = os.path.join(out_dir, image_id + ".png")
                if crf is None or plain_dir:
                    plain = probs.argmax(0).to(torch.uint8).cpu().numpy()
                    save_mask_png(path if crf is None else os.path.join(plain_dir, image_id + ".png"), plain)
                if crf is None:
                    continue
                job = (img, probs.cpu().numpy(), dict(crf), path)
                if pool is None:
                    _crf_save(job)
                    continue
                pending.append(pool.submit(_crf_save, job))
                if len(pending) >= 2 * crf_workers:
                    done, rest = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()
                    pending = list(rest)
            for f in pending:
                f.result()
        finally:
            if pool is not None:
                for f in pending:
                    f.cancel()
                pool.shutdown(wait=True, cancel_futures=True)
    seconds = time.perf_counter() - t0
    return {"num_images": len(ids), "predicted": len(todo), "seconds": round(seconds, 3),
            "images_per_s": round(len(todo) / seconds, 3) if todo and seconds > 0 else None}


@torch.no_grad()
def confusion_on(model: torch.nn.Module, loader: DataLoader, num_classes: int, flip: bool = False,
                 device: Optional[torch.device] = None, amp: bool = False) -> np.ndarray:
    """Summed ``(C + 1, C + 1)`` confusion matrix (:func:`wseg.metrics.confusion_matrix`) of MS(+flip) argmax
    predictions over a loader of ``(id, per-scale inputs, labels)``."""
    from wseg.metrics import confusion_matrix

    total = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for _, inputs, labels in loader:
        logits = ms_flip_logits(model, inputs, tuple(labels.shape[-2:]), flip, device, amp)
        total += confusion_matrix(logits.argmax(0).cpu().numpy(), labels.numpy(), num_classes)
    return total


# --------------------------------------------------------------------------------------------- training loop


def final_weights_path(cfg: Mapping[str, Any], out_dir: str, dataset: str) -> str:
    """Published name ``<model>_<backbone>_<dataset>_itr<N>_all.pth`` in ``out_dir``."""
    return os.path.join(out_dir, f"{cfg['model']}_{cfg['backbone']}_{dataset}_itr{int(cfg['max_iters'])}_all.pth")


#: Config keys that must not change between a checkpoint and its resumption.
RESUME_KEYS = ("model", "backbone", "deep_base", "head_dim", "max_iters", "batch_size", "lr", "power", "seed",
               "train_list", "pseudo_mask_dir", "crop_size")


def check_worker_config(cfg: Mapping[str, Any]) -> None:
    """Config values training and testing share: worker counts and the seed."""
    for key in ("num_workers", "crf_workers"):
        if key in cfg and int(cfg[key]) < 0:
            raise WsegError(f"{key} {cfg[key]}: must be >= 0 (0 = in the main process)")
    if "seed" in cfg and not 0 <= int(cfg["seed"]) < 2 ** 32:
        raise WsegError(f"seed {cfg['seed']}: must lie in [0, 2**32)")


def check_scales_config(cfg: Mapping[str, Any], key: str) -> None:
    """``test_scales`` / ``val_scales``: at least one finite factor in ``(0, 4]``."""
    scales = [float(v) for v in cfg[key]]
    if not scales or not all(0 < v <= 4 for v in scales):
        raise WsegError(f"{key} {list(cfg[key])}: need one or more scale factors in (0, 4] (published test "
                        "0.5 0.75 1 1.25 1.5 1.75)")


def check_normalisation_config(cfg: Mapping[str, Any]) -> None:
    """``mean``/``std``: three finite values each (RGB, 0..1), the stds positive."""
    mean, std = [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
    if len(mean) != 3 or len(std) != 3 or not all(np.isfinite(mean)) or not all(0 < v < np.inf for v in std):
        raise WsegError(f"mean {cfg['mean']} / std {cfg['std']}: need three finite RGB values each, the stds > 0 "
                        "(ImageNet: 0.485 0.456 0.406 / 0.229 0.224 0.225)")


def check_train_config(cfg: Mapping[str, Any]) -> None:
    """One-line errors for values that would only fail later."""
    for key in ("max_iters", "batch_size", "ckpt_every", "log_every"):
        if int(cfg[key]) < 1:
            raise WsegError(f"{key} {cfg[key]}: must be at least 1")
    if int(cfg["val_every"]) < 0:
        raise WsegError(f"val_every {cfg['val_every']}: must be 0 (off) or positive")
    if cfg.get("stop_iter") is not None and not 0 < int(cfg["stop_iter"]) <= int(cfg["max_iters"]):
        raise WsegError(f"stop_iter {cfg['stop_iter']}: must lie in [1, max_iters={cfg['max_iters']}]")
    if not float(cfg["lr"]) > 0:
        raise WsegError(f"lr {cfg['lr']}: must be positive")
    for key, low, high in (("momentum", 0, 1), ("weight_decay", 0, 1), ("power", 0, 10)):
        if not low <= float(cfg[key]) < high:
            raise WsegError(f"{key} {cfg[key]}: must lie in [{low}, {high}) (published momentum 0.9, weight_decay "
                            "5e-4, power 0.9)")
    check_worker_config(cfg)
    crop = int(cfg["crop_size"])
    if crop == 0 and int(cfg["batch_size"]) > 1:
        raise WsegError(f"crop_size 0 (no crop) with batch_size {cfg['batch_size']}: images of different sizes cannot "
                        "be batched; set a crop_size (published 448) or batch_size 1")
    if 0 < crop < 8:
        raise WsegError(f"crop_size {crop}: must be 0 (no crop) or at least 8, the network's output stride")
    if cfg.get("head_dim") is not None and int(cfg["head_dim"]) < 1:
        raise WsegError(f"head_dim {cfg['head_dim']}: must be at least 1 (default 512 for v1, 256 for v2)")
    if min(int(r) for r in cfg["aspp_rates"]) < 1:
        raise WsegError(f"aspp_rates {list(cfg['aspp_rates'])}: dilation rates must be at least 1 (published 6 12 18 "
                        "24)")
    if not 0 <= float(cfg["bn_momentum"]) <= 1:
        raise WsegError(f"bn_momentum {cfg['bn_momentum']}: must lie in [0, 1] (published 3e-4)")
    check_normalisation_config(cfg)
    if int(cfg["val_every"]) > 0:
        check_scales_config(cfg, "val_scales")
    _check_root(cfg)


def check_test_config(cfg: Mapping[str, Any]) -> None:
    """One-line errors for test-time values that would only fail later (the CRF's: :func:`crf_params`)."""
    check_worker_config(cfg)
    check_normalisation_config(cfg)
    check_scales_config(cfg, "test_scales")
    _check_root(cfg)


def _check_root(cfg: Mapping[str, Any]) -> None:
    if not cfg.get("voc12_root"):
        raise WsegError("voc12_root: not set; pass --voc12_root <VOC-format root holding JPEGImages/>")


def _val_loader(cfg, voc: VOCRoot, dist: Dist) -> Optional[DataLoader]:
    if int(cfg["val_every"]) <= 0 or not cfg.get("val_list"):
        return None
    ids = voc.ids(cfg["val_list"])
    missing = [i for i in ids if voc.mask_path(i) is None]
    if missing:
        raise WsegError(f"{cfg['val_list']}: {len(missing)} of {len(ids)} validation images have no ground truth "
                        f"(first: {missing[0]}); pass a labelled val_list or --val_every 0")
    ds = ImageMaskDataset(voc, ids[dist.rank::dist.world_size], None,
                          MultiScaleJoint(cfg["val_scales"], cfg["mean"], cfg["std"]))
    return DataLoader(ds, batch_size=1, shuffle=False, num_workers=min(int(cfg["num_workers"]), 2),
                      collate_fn=unbatch_one)


def validate(model: DeepLab, loader: DataLoader, num_classes: int, dist: Dist, cfg: Mapping[str, Any]
             ) -> Dict[str, Any]:
    """Validation mIoU (percent) over all ranks' shards: confusion matrices summed with ``all_reduce``."""
    from wseg.metrics import scores

    was_training = model.training
    model.eval()
    conf = confusion_on(model, loader, num_classes, bool(cfg["val_flip"]), dist.device, bool(cfg["amp"]))
    model.train(was_training)
    if dist.enabled:
        t = torch.from_numpy(conf).to(dist.device)
        torch.distributed.all_reduce(t)
        conf = t.cpu().numpy()
    s = scores(conf)
    return {"miou": s["miou"] * 100, "pixel_acc": s["pixel_acc"] * 100, "iou": (s["iou"] * 100).tolist()}


def train(cfg: Mapping[str, Any], progress: bool = True,
          on_step: Optional[Callable[[int, float], None]] = None) -> Dict[str, Any]:
    """Train a DeepLab on pseudo masks as configured; resumable, DDP-aware (``torchrun``).

    Outputs in ``out_dir``: ``last.pth`` (atomic resume checkpoint every ``ckpt_every`` iterations and at the end),
    the final plain state dict ``<model>_<backbone>_<dataset>_itr<N>_all.pth`` (published name), ``best.pth``
    (best validation mIoU), ``train.log`` and ``scalars.jsonl``. ``on_step(itr, loss)`` is called after each
    iteration (tests use it to simulate crashes). Returns the weights path, iterations, timings and mIoUs.
    """
    from wseg.models.checkpoint import load_checkpoint, save_checkpoint, save_state_dict

    check_train_config(cfg)
    out_dir = cfg.get("out_dir") or os.path.join("runs", "segmentation", cfg["exp_name"])
    dist = Dist(cfg["device"])
    device = dist.device
    try:
        os.makedirs(out_dir, exist_ok=True)
        setup_logging(os.path.join(out_dir, "train.log"), dist.is_main)
        voc = VOCRoot(cfg["voc12_root"], cfg.get("classes"))
        num_classes = voc.spec.num_classes
        max_iters = int(cfg["max_iters"])
        end_iter = int(cfg["stop_iter"] or max_iters)
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
        sampler = StepSampler(len(base), int(cfg["batch_size"]), int(cfg["seed"]), dist.rank, dist.world_size)
        loader = DataLoader(SeededSamples(base, transform), batch_size=sampler.per_rank, sampler=sampler,
                            num_workers=int(cfg["num_workers"]), pin_memory=device.type == "cuda", drop_last=False)
        if cfg["model"] == "deeplabv2" and cfg.get("aspp_global", True) and sampler.per_rank < 2:
            raise WsegError(f"batch_size {cfg['batch_size']} over {dist.world_size} process(es) gives "
                            f"{sampler.per_rank} image per process: the image-pooling BatchNorm of deeplabv2 needs "
                            "at least 2; raise batch_size or set aspp_global=False")
        val_loader = _val_loader(cfg, voc, dist)

        torch.manual_seed(int(cfg["seed"]))  # the heads' random initialisation
        model = build_model(cfg, num_classes).to(device)
        optimizer = make_optimizer(model, float(cfg["lr"]), float(cfg["momentum"]), float(cfg["weight_decay"]))
        scaler = grad_scaler(device, bool(cfg["amp"]))
        start, best = 0, {"miou": None, "iter": None}
        if cfg.get("resume", True) and os.path.isfile(last):
            state = load_checkpoint(last, model, optimizer, scaler)
            old = state.get("args") or {}
            diff = [f"{k} {old.get(k)!r} -> {cfg.get(k)!r}" for k in RESUME_KEYS
                    if k in old and _norm(old.get(k)) != _norm(cfg.get(k))]
            if diff:
                raise WsegError(f"{last}: checkpoint of another configuration ({'; '.join(diff)}); use another "
                                "out_dir, restore those values, or pass --resume False to start over")
            start = int(state["step"])
            best = dict((state.get("meta") or {}).get("best") or best)
            LOG.info("resumed from %s at iteration %d", last, start)
        if start >= max_iters and os.path.isfile(final):
            LOG.info("already trained: %s", final)
            return {"weights": final, "iters": max_iters, "trained_iters": 0, "best_miou": best.get("miou"),
                    "out_dir": out_dir, "checkpoint": last}

        net = dist.wrap(model)
        net.train()
        scalars = ScalarLog(os.path.join(out_dir, "scalars.jsonl") if dist.is_main else None)
        meter = AverageMeter()
        last_val: Optional[Dict[str, Any]] = None

        def checkpoint(itr: int) -> None:
            if dist.is_main:
                save_checkpoint(last, model, optimizer, itr, dict(cfg), scaler=scaler,
                                meta={**model.architecture(), "best": best})
            dist.barrier()

        t0, itr = time.perf_counter(), start
        bar = tqdm(total=max_iters, initial=start, desc="train", disable=not (progress and dist.is_main),
                   dynamic_ncols=True)
        while itr < end_iter:
            epoch, first = divmod(itr, sampler.steps_per_epoch)
            sampler.start(epoch, first)
            batches = iter(loader)
            while True:
                try:
                    images, labels = next(batches)
                except StopIteration:
                    break
                except WsegError as exc:
                    raise worker_error(exc) from None
                torch.manual_seed(_mix(int(cfg["seed"]), itr, dist.rank))  # dropout: a function of the iteration
                now_lr = set_poly_lr(optimizer, float(cfg["lr"]), itr, max_iters, float(cfg["power"]))
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                with autocast(device, bool(cfg["amp"])):
                    logits = net(images)
                loss = seg_loss(logits, labels)
                optimizer_step(loss, optimizer, scaler, f"iteration {itr}", hint="lower lr or disable amp")
                itr += 1
                loss_v = float(loss.detach())
                meter.add(loss=loss_v)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_v:.4f}")
                if on_step is not None:
                    on_step(itr, loss_v)
                if itr % int(cfg["log_every"]) == 0 or itr == end_iter:
                    avg = meter.pop()
                    mean_loss = float(dist.all_reduce_mean(torch.tensor(avg["loss"], device=device)))
                    scalars.write(itr, loss=mean_loss, lr=now_lr)
                    LOG.info("itr %d/%d loss %.4f lr %.6f %.2f it/s", itr, max_iters, mean_loss, now_lr,
                             (itr - start) / max(1e-6, time.perf_counter() - t0))
                if val_loader is not None and (itr % int(cfg["val_every"]) == 0 or itr == max_iters):
                    last_val = validate(model, val_loader, num_classes, dist, cfg)
                    scalars.write(itr, val_miou=last_val["miou"], val_pixel_acc=last_val["pixel_acc"])
                    LOG.info("itr %d val mIoU %.3f%%", itr, last_val["miou"])
                    if best["miou"] is None or last_val["miou"] > best["miou"]:
                        best = {"miou": last_val["miou"], "iter": itr}
                        if dist.is_main:
                            save_state_dict(os.path.join(out_dir, "best.pth"), model,
                                            meta={**model.architecture(), "iter": itr, "val_miou": best["miou"]})
                if itr % int(cfg["ckpt_every"]) == 0 or itr == end_iter:
                    checkpoint(itr)
                if itr >= end_iter:
                    break
        bar.close()
        seconds = time.perf_counter() - t0
        result = {"iters": itr, "trained_iters": itr - start, "seconds": round(seconds, 2),
                  "iters_per_s": round((itr - start) / seconds, 3) if seconds > 0 else None,
                  "val_miou": None if last_val is None else last_val["miou"], "best_miou": best["miou"],
                  "out_dir": out_dir, "checkpoint": last, "weights": None}
        if itr >= max_iters:
            if dist.is_main:
                save_state_dict(final, model, meta={**model.architecture(), "exp_name": cfg["exp_name"],
                                                    "iters": itr})
                LOG.info("saved %s", final)
            result["weights"] = final
        else:
            LOG.info("stopped at iteration %d of %d (stop_iter); re-run to continue", itr, max_iters)
        dist.barrier()
        return result
    finally:
        dist.close()


def _norm(v: Any) -> Any:
    return [float(x) if isinstance(x, (int, float)) else x for x in v] if isinstance(v, (list, tuple)) else v


# --------------------------------------------------------------------------------------------- test-time helpers


def server_layout_dir(out_dir: str) -> str:
    """Official PASCAL VOC evaluation-server layout: ``<out_dir>/results/VOC2012/Segmentation/comp6_test_cls``."""
    return os.path.join(out_dir, "results", "VOC2012", "Segmentation", "comp6_test_cls")


def record_prediction_settings(out_dir: str, pred_dir: str, settings: Mapping[str, Any]) -> None:
    """Refuse to mix predictions made with different settings in one folder (``<out_dir>/predictions.json``)."""
    path = os.path.join(out_dir, "predictions.json")
    table: Dict[str, Any] = {}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                table = json.load(f)
        except (OSError, ValueError):
            table = {}
    key = os.path.abspath(pred_dir)
    old = table.get(key)
    has_pngs = os.path.isdir(pred_dir) and any(n.endswith(".png") for n in os.listdir(pred_dir))
    if old is not None and has_pngs and old != dict(settings):
        diff = [f"{k} {old.get(k)!r} -> {settings.get(k)!r}" for k in settings if old.get(k) != settings.get(k)]
        raise WsegError(f"{pred_dir}: holds predictions made with other settings ({'; '.join(diff)}); pass another "
                        "--pred_dir or delete the folder")
    table[key] = dict(settings)
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True))
