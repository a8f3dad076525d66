"""Segmentation inference: published multi-scale + flip (:func:`wseg.tta.multiscale_flip`, mean of the logits, then
softmax), the configured dense CRF in the shared worker pool, palette PNGs, confusion matrices for validation.

mmsegmentation's test (:class:`MMSegTest`, :func:`mmseg_predict`), as mmseg 1.2.2 runs it for these configs
(``EncoderDecoder.inference``/``whole_inference``/``slide_inference`` and ``BaseDecodeHead.predict_by_feat`` in
``mmseg/models/segmentors/encoder_decoder.py`` and ``decode_heads/decode_head.py``, ``BaseSegmentor
.postprocess_result`` in ``segmentors/base.py``, ``SegTTAModel.merge_preds`` in ``segmentors/seg_tta.py``):

1. each view is the OpenCV-decoded image resized (:func:`wseg.data.mmseg_transforms.test_views`; ``Resize(2048,
   512, keep_ratio)`` for a plain test) and normalised, not padded;
2. ``whole``: the decode head's logits resized (bilinear, ``align_corners=False``) to the *resized* image;
   ``slide``: windows of ``crop`` every ``stride`` (the last window aligned to the border; a window larger than
   the image is the image), each window's logits resized to the window and summed, divided by the window count;
3. mirrored views' logits are un-mirrored, then resized to the original image (a second bilinear resize);
4. one view: arg-max of the logits (mmseg's ``predict``); several (TTA): the mean of their softmaxes, arg-max
   (``SegTTAModel``; mmseg 0.x ``aug_test`` also averages softmaxes). The CRF refines the softmax (mean).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from wseg.data.voc import VOCRoot
from wseg.engine.per_image import Failures, pending_shard, run_images
from wseg.errors import WsegError
from wseg.io import load_mask_png, save_mask_png
from wseg.segmentation.data import InferenceImages, MMSegInferenceImages
from wseg.tta import multiscale_flip


def ms_flip_logits(model: torch.nn.Module, inputs: Sequence[torch.Tensor], out_size: Tuple[int, int],
                   flip: bool = True, device: Optional[torch.device] = None, amp: bool = False) -> torch.Tensor:
    """Published multi-scale + flip inference: the mean over scales (and mirrors) of the model's logits resized
    bilinearly (``align_corners=True``) to ``out_size`` and un-mirrored. ``inputs``: per-scale ``(3, h, w)``
    normalised images. Returns float32 ``(C, H, W)`` on ``device``. The model must be in eval mode."""
    device = device or next(model.parameters()).device
    return multiscale_flip(lambda x: model(x)["out"], inputs, out_size, flip=flip, align_corners=True,
                           reduce="mean", device=device, amp=amp)


def ms_flip_probs(model, inputs, out_size, flip=True, device=None, amp=False) -> torch.Tensor:
    """``softmax`` over classes of :func:`ms_flip_logits` (published: softmax of the mean logits)."""
    return torch.softmax(ms_flip_logits(model, inputs, out_size, flip, device, amp), dim=0)


@dataclass(frozen=True)
class MMSegTest:
    """mmseg's test settings (module docstring): ``scales`` (TTA ratios), ``flip``, ``mode`` (whole | slide),
    slide ``crop``/``stride``, the test ``resize`` target (``None``: none) and what a ratio multiplies
    (``ratio_of``: resized = mmseg 0.x, original = 1.x)."""

    scales: Tuple[float, ...] = (1.0,)
    flip: bool = False
    mode: str = "whole"
    crop: int = 512
    stride: int = 480
    resize: Optional[Tuple[int, int]] = (2048, 512)
    ratio_of: str = "resized"

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], val: bool = False) -> "MMSegTest":
        scales, flip = (cfg["val_scales"], cfg["val_flip"]) if val else (cfg["test_scales"], cfg["test_flip"])
        resize = tuple(int(v) for v in cfg["img_scale"]) if cfg.get("test_resize", True) else None
        return cls(tuple(float(v) for v in scales), bool(flip), str(cfg.get("test_mode", "whole")),
                   int(cfg.get("test_crop", 512)), int(cfg.get("test_stride", 480)), resize,  # type: ignore[arg-type]
                   str(cfg.get("tta_ratio_of", "resized")))


def slide_logits(model: torch.nn.Module, x: torch.Tensor, crop: int, stride: int) -> torch.Tensor:
    """mmseg ``EncoderDecoder.slide_inference``: the mean over overlapping ``crop`` windows (every ``stride``
    pixels, the last aligned to the border) of each window's logits at the window size."""
    n, _, h, w = x.shape
    rows = max(h - crop + stride - 1, 0) // stride + 1
    cols = max(w - crop + stride - 1, 0) // stride + 1
    total: Optional[torch.Tensor] = None
    count = x.new_zeros((n, 1, h, w))
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, h), min(c * stride + crop, w)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out = model(x[:, :, y1:y2, x1:x2])["out"]
            if total is None:
                total = out.new_zeros((n, out.shape[1], h, w))
            total[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    assert total is not None
    return total / count.to(total.dtype)


def mmseg_predict(model: torch.nn.Module, inputs: Sequence[torch.Tensor], out_size: Tuple[int, int],
                  test: MMSegTest, device: Optional[torch.device] = None, amp: bool = False
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """mmseg's test of one image (module docstring): ``inputs`` are the normalised views of
    :func:`wseg.data.mmseg_transforms.test_views`. Returns ``(probs (C, H, W) float32, prediction (H, W) int64)``:
    one view, the softmax of its logits and their arg-max; several, the mean softmax and its arg-max."""
    device = device or next(model.parameters()).device
    if test.mode not in ("whole", "slide"):
        raise WsegError(f"test_mode {test.mode}: choose whole or slide")

    def fn(x: torch.Tensor) -> torch.Tensor:
        return slide_logits(model, x, test.crop, test.stride) if test.mode == "slide" else model(x)["out"]

    if len(inputs) == 1 and not test.flip:
        logits = multiscale_flip(fn, inputs, out_size, flip=False, align_corners=False, reduce="mean",
                                 device=device, amp=amp)
        return torch.softmax(logits, 0), logits.argmax(0)
    probs = multiscale_flip(fn, inputs, out_size, flip=test.flip, align_corners=False, reduce="mean",
                            per_scale=lambda o: torch.softmax(o, 1), device=device, amp=amp)
    return probs, probs.argmax(0)


def crf_params(cfg: Mapping[str, Any]) -> Dict[str, float]:
    """The configured CRF: ``iters`` and the two kernels' weights/stds, checked (:func:`wseg.crf.check_crf_params`)
    before any prediction is made."""
    from wseg.crf import check_crf_params

    params = {"iters": int(cfg["crf_iters"]), "pos_w": float(cfg["crf_pos_w"]),
              "pos_xy_std": float(cfg["crf_pos_xy_std"]), "bi_w": float(cfg["crf_bi_w"]),
              "bi_xy_std": float(cfg["crf_bi_xy_std"]), "bi_rgb_std": float(cfg["crf_bi_rgb_std"])}
    try:
        check_crf_params(params["iters"], **{k: v for k, v in params.items() if k != "iters"})
    except WsegError as exc:
        raise WsegError(f"config crf_*: {exc}") from None
    return params


def crf_refine(img: np.ndarray, probs: np.ndarray, params: Mapping[str, float]) -> np.ndarray:
    """Dense CRF (:func:`wseg.crf.crf_inference`, unary ``-log p``) on ``(C, H, W)`` probabilities with the configured
    iterations and kernels; returns the refined ``(C, H, W)`` probabilities."""
    from wseg.crf import crf_inference

    kernels = {k: float(v) for k, v in params.items() if k != "iters"}
    return crf_inference(img, probs, t=int(params["iters"]), **kernels)


def _crf_save(img: np.ndarray, probs: np.ndarray, params: Mapping[str, float], path: str) -> None:
    """Worker: CRF, argmax, palette PNG (module level so process pools can pickle it)."""
    save_mask_png(path, np.argmax(crf_refine(img, probs, params), 0).astype(np.uint8))


def _test_images(voc: VOCRoot, ids: Sequence[str], scales: Sequence[float], mean: Sequence[float],
                 std: Sequence[float], long_side: Optional[int], mmseg: Optional[MMSegTest]):
    """The test's ``(image, inputs)`` dataset: mmseg's views with ``mmseg``, else the published multi-scale ones."""
    if mmseg is not None:
        return MMSegInferenceImages(voc, ids, mmseg, mean, std)
    return InferenceImages(voc, ids, scales, mean, std, long_side)


def _probs_and_pred(model: torch.nn.Module, inputs, size: Tuple[int, int], flip: bool, device, amp: bool,
                    mmseg: Optional[MMSegTest]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(C, H, W)`` probabilities at ``size`` and their arg-max: mmseg's test with ``mmseg``, else MS+flip."""
    if mmseg is not None:
        return mmseg_predict(model, inputs, size, mmseg, device, amp)
    probs = ms_flip_probs(model, inputs, size, flip, device, amp)
    return probs, probs.argmax(0)


def predict_split(model: torch.nn.Module, voc: VOCRoot, ids: Sequence[str], out_dir: str, scales: Sequence[float],
                  flip: bool = True, crf: Optional[Mapping[str, float]] = None,
                  mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                  device: Optional[torch.device] = None, amp: bool = False, num_workers: int = 0,
                  crf_workers: int = 0, progress: bool = True, plain_dir: Optional[str] = None,
                  on_error: str = "skip", mmseg: Optional[MMSegTest] = None,
                  long_side: Optional[int] = None, true_label_dir: Optional[str] = None,
                  class_filter: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None, bg_scale: float = 1.0,
                  published_dir: Optional[str] = None) -> Dict[str, Any]:
    """MS+flip (+ CRF) predictions of ``ids`` as palette PNGs ``<out_dir>/<id>.png``; finished images are skipped,
    and under ``torchrun`` every process takes its share (:mod:`wseg.engine.per_image`). With ``mmseg``, mmseg's
    test instead (:func:`mmseg_predict`; ``scales``/``flip`` are then ``mmseg``'s). ``long_side``: the scales
    multiply the size that brings each image to this long side (config ``long_side``, as in training).

    With ``crf``, ``plain_dir`` (optional) also receives the predictions without CRF (the arg-max of the MS+flip
    probabilities), at no extra network cost. The CRF runs in ``crf_workers`` processes (0 or 1: in this one)
    while the network goes on. ``true_label_dir`` (optional, labelled splits) also receives the arg-max over only
    the classes of each image's ground truth (:func:`true_label_argmax`, after ``bg_scale``). ``bg_scale``
    multiplies the background probability and ``class_filter`` (a :class:`wseg.label_filter.ClassGate`: the other
    classes zeroed, or each class weighted by the classifier's score to a power) adjusts the foreground classes,
    before the arg-max and the CRF (wseg additions, :mod:`wseg.segmentation.calibration`); ``published_dir`` then
    receives the arg-max without either.
    Returns ``{"num_images", "predicted", "seconds", "images_per_s"}``.
    """
    from wseg.parallel import WorkerPool
    from wseg.segmentation.calibration import scale_background

    device = device or next(model.parameters()).device
    plain_dir = plain_dir if crf is not None else None
    published_dir = published_dir if class_filter is not None or bg_scale != 1 else None
    todo = pending_shard(ids, [(out_dir, ".png"), (plain_dir, ".png"), (true_label_dir, ".png"),
                               (published_dir, ".png")])
    for d in (out_dir, plain_dir, true_label_dir, published_dir):
        if d:
            os.makedirs(d, exist_ok=True)
    model.eval()
    t0 = time.perf_counter()
    failures = Failures("segmentation test", on_error)
    done = 0
    if todo:
        def process(image_id: str, sample) -> None:
            img, inputs = sample
            probs, pred = _probs_and_pred(model, inputs, img.shape[:2], flip, device, amp, mmseg)
            if published_dir:
                save_mask_png(os.path.join(published_dir, image_id + ".png"), pred.to(torch.uint8).cpu().numpy())
            if bg_scale != 1:
                probs = scale_background(probs, bg_scale)
                pred = probs.argmax(0)
            if true_label_dir:
                save_mask_png(os.path.join(true_label_dir, image_id + ".png"),
                              true_label_argmax(probs, load_mask_png(voc.mask_path(image_id))))
            if class_filter is not None:
                probs = class_filter(image_id, probs)
                pred = probs.argmax(0)
            path = os.path.join(out_dir, image_id + ".png")
            if crf is None or plain_dir:
                plain = pred.to(torch.uint8).cpu().numpy()
                save_mask_png(path if crf is None else os.path.join(plain_dir, image_id + ".png"), plain)
            if crf is not None:
                pool.submit(image_id, _crf_save, img, probs.cpu().numpy(), dict(crf), path)

        with WorkerPool(crf_workers if crf is not None and crf_workers > 1 else 0, failures) as pool:
            data = _test_images(voc, todo, scales, mean, std, long_side, mmseg)
            done = run_images(data, todo, process, failures, num_workers, desc="predict" if progress else "")
            pool.drain("crf" if progress else None)
    failures.check(len(todo))
    seconds = time.perf_counter() - t0
    return {"num_images": len(ids), "predicted": done, "seconds": round(seconds, 3),
            "images_per_s": round(done / seconds, 3) if done and seconds > 0 else None}


@torch.no_grad()
def training_image_confusions(model: torch.nn.Module, voc: VOCRoot, ids: Sequence[str], masks: Mapping[str, str],
                              candidates: Mapping[str, Optional[Callable[[str, torch.Tensor], torch.Tensor]]],
                              factors: Sequence[float],
                              scales: Sequence[float], flip: bool = True,
                              mean: Sequence[float] = (0.485, 0.456, 0.406),
                              std: Sequence[float] = (0.229, 0.224, 0.225), device: Optional[torch.device] = None,
                              amp: bool = False, num_workers: int = 0, progress: bool = True,
                              mmseg: Optional[MMSegTest] = None, long_side: Optional[int] = None
                              ) -> Dict[str, np.ndarray]:
    """``{candidate: (n, C + 1, C + 1) confusions}``: the test's prediction of ``ids`` (MS+flip or mmseg's) against
    ``masks`` (``{id: mask PNG path}``), for each candidate (``None``: unfiltered; else the label filter's
    :class:`wseg.label_filter.ClassGate`) at each background factor (ascending), from one pass
    (:mod:`wseg.segmentation.calibration`).
    """
    from wseg.metrics import histogram_to_confusions
    from wseg.segmentation.calibration import factor_histogram

    device = device or next(model.parameters()).device
    model.eval()
    grid = np.asarray(factors, np.float32)
    k = voc.spec.num_classes
    hist = {name: np.zeros((len(grid) + 1, k + 1, k + 1), np.int64) for name in candidates}
    failures = Failures("background scale / label filter check", "stop")

    def process(image_id: str, sample) -> None:
        img, inputs = sample
        probs = _probs_and_pred(model, inputs, img.shape[:2], flip, device, amp, mmseg)[0]
        mask = load_mask_png(masks[image_id])
        if mask.shape != img.shape[:2]:
            raise WsegError(f"{masks[image_id]}: mask {mask.shape[1]}x{mask.shape[0]} for an image of "
                            f"{img.shape[1]}x{img.shape[0]}; pass the masks made for this dataset")
        for name, gate in candidates.items():
            p = probs if gate is None else gate(image_id, probs)
            hist[name] += factor_histogram(p, mask, grid, k)

    data = _test_images(voc, ids, scales, mean, std, long_side, mmseg)
    run_images(data, list(ids), process, failures, num_workers, desc="training images" if progress else "")
    failures.check(len(ids))
    return {name: histogram_to_confusions(h) for name, h in hist.items()}


def true_label_argmax(probs: torch.Tensor, gt: np.ndarray) -> np.ndarray:
    """The arg-max of ``probs (C, H, W)`` over background and the classes present in the ground-truth mask ``gt``
    only (uint8 ``(H, W)``): the prediction with recognition solved and its localisation as it is, the way the
    pseudo-mask stages are scored (they drop the CAMs of the classes absent from the image's labels)."""
    from wseg.data.classes import present_classes
    from wseg.label_filter import restrict_to_classes

    present = present_classes(gt, probs.shape[0] - 1)
    return restrict_to_classes(probs, present, float("-inf")).argmax(0).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def confusion_on(model: torch.nn.Module, loader: DataLoader, num_classes: int, flip: bool = False,
                 device: Optional[torch.device] = None, amp: bool = False,
                 mmseg: Optional[MMSegTest] = None) -> np.ndarray:
    """Summed ``(C + 1, C + 1)`` confusion matrix (:func:`wseg.metrics.confusion_matrix`) of MS(+flip) argmax
    predictions over a loader of ``(id, per-scale inputs, labels)`` (mmseg's test with ``mmseg``)."""
    from wseg.metrics import confusion_matrix

    total = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for _, inputs, labels in loader:
        if mmseg is not None:
            pred = mmseg_predict(model, inputs, tuple(labels.shape[-2:]), mmseg, device, amp)[1]
        else:
            pred = ms_flip_logits(model, inputs, tuple(labels.shape[-2:]), flip, device, amp).argmax(0)
        total += confusion_matrix(pred.cpu().numpy(), labels.numpy(), num_classes)
    return total


def server_layout_dir(out_dir: str) -> str:
    """Official PASCAL VOC evaluation-server layout: ``<out_dir>/results/VOC2012/Segmentation/comp6_test_cls``."""
    return os.path.join(out_dir, "results", "VOC2012", "Segmentation", "comp6_test_cls")
