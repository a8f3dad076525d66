"""Segmentation stage throughput: DeepLab training iterations/s and test images/s at 321 and 513 pixels.

Training: ``batch`` random ``size x size`` crops with random labels (10 % ignored) through forward, the published
cross-entropy, backward and the SGD step (four lr groups), timed over ``--iters`` iterations after a warm-up.
Test: a ``size x size`` image through the published multi-scale + flip inference (``wseg.segmentation
.ms_flip_probs``; input preparation included, CRF excluded), timed over ``--test_images`` images. The dense CRF
(21 classes, 10 iterations, CPU) is timed separately per image size. On CUDA every case runs in fp32 and with AMP.

Networks (``--networks``): the reduced CPU variants (DeepLab v1 on ResNet-38 at 1/16 width, DeepLab v2 on the
one-block-per-stage ResNet, head width 64) and, by default on CUDA, the published ones (v1 ResNet-38,
v1 ResNet-101, v2 ResNet-101). Full networks on CPU: one training iteration and one test image per size.

The mmsegmentation zoo (``--zoo``, docs/segmentation_zoo.md): DeepLabV3+ and PSPNet on ResNetV1c-D8 with the
auxiliary head, trained as mmseg does (mmseg's cross-entropy on both heads, one SGD group, poly to ``min_lr``) on
random ``crop x crop`` batches, and tested as mmseg does on a 500x375 image (resized to fit 2048x512, i.e.
683x512; one view, ``whole`` and ``slide`` 512/480). CPU: the reduced variants (ResNetV1c, ``base_channels`` 16,
one block per stage, ``tiny``, or the demo's two, ``small``) at ``--zoo_crop`` 256, and briefly the full R-50
ones at 512 (one iteration, one image); CUDA: R-50 and R-101 at 512, batch 8, fp32 and AMP.

    python benchmarks/bench_segmentation.py [--device cpu|cuda] [--networks deeplabv1/resnet101 ...]
        [--sizes 321 513] [--batch 2] [--iters 3] [--test_images 2] [--test_scales 0.5 0.75 1 1.25 1.5 1.75]
        [--threads 1] [--deeplab False] [--zoo True] [--zoo_networks deeplabv3plus/r50 pspnet/tiny ...]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Sequence

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.timing import calls_per_second  # noqa: E402

REDUCED = ["deeplabv1/resnet38_tiny", "deeplabv2/resnet_tiny"]
FULL = ["deeplabv1/resnet38", "deeplabv1/resnet101", "deeplabv2/resnet101"]
TINY_HEAD = 64  # head width of the reduced variants (the demo config's)
NUM_CLASSES = 21
#: dense-CRF parameters of the published DeepLab configs (segmentation/configs/deeplabv*.py)
CRF_PARAMS = {"iters": 10, "pos_w": 3, "pos_xy_std": 1, "bi_w": 4, "bi_xy_std": 67, "bi_rgb_std": 3}


def bench_train(net, device, size: int, batch: int, iters: int, amp: bool) -> float:
    """Training iterations per second."""
    from wseg.engine import autocast, grad_scaler
    from wseg.engine.optim import PolyLR, build_optimizer, published_groups
    from wseg.losses.segmentation import seg_loss

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=g)
    y[torch.rand(batch, size, size, generator=g) < 0.1] = 255
    y = y.to(device)
    net.train()
    opt = build_optimizer("sgd", published_groups(net.get_parameter_groups(), 0.001, 5e-4, split_mult=True), 0.001,
                          5e-4, 0.9)
    schedule = PolyLR(20001)
    scaler = grad_scaler(device, amp)

    def step(i: int) -> None:
        schedule.apply(opt, i)
        with autocast(device, amp):
            logits = net(x)["out"]
        loss = seg_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return calls_per_second(step, 0, range(1, iters + 1), device)


def bench_test(net, device, size: int, images: int, scales: Sequence[float], flip: bool, amp: bool) -> float:
    """Test images per second (input preparation + MS+flip inference + argmax, no CRF)."""
    from wseg.data.seg_transforms import multiscale_inputs
    from wseg.segmentation import ms_flip_probs

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(images + 1)]
    net.eval()

    def one(img):
        probs = ms_flip_probs(net, multiscale_inputs(img, scales), img.shape[:2], flip, device, amp)
        return probs.argmax(0).cpu()

    return calls_per_second(one, imgs[0], imgs[1:], device)


def bench_crf(size: int, repeats: int = 1) -> float:
    """Milliseconds per image of the dense CRF (21 classes, 10 iterations, DeepLab kernels)."""
    from wseg.segmentation.predict import crf_refine

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    probs = rng.random((NUM_CLASSES, size, size), dtype=np.float32)
    probs /= probs.sum(0, keepdims=True)
    crf_refine(img, probs, CRF_PARAMS)
    t0 = time.perf_counter()
    for _ in range(repeats):
        crf_refine(img, probs, CRF_PARAMS)
    return (time.perf_counter() - t0) / repeats * 1000


#: mmseg zoo cases: name -> MMSegEncoderDecoder keywords (``tiny``: the tests' reduced network, one block per stage;
#: ``small``: the demo's, two blocks per stage, ``resnet_v1c_small`` of the stand-in weights)
ZOO_BACKBONES = {"tiny": dict(layers=(1, 1, 1, 1), base_channels=16),
                 "small": dict(layers=(2, 2, 2, 2), base_channels=16), "r50": dict(depth=50),
                 "r101": dict(depth=101)}
ZOO_CPU = ["deeplabv3plus/tiny", "pspnet/tiny", "deeplabv3plus/small", "pspnet/small", "deeplabv3plus/r50",
           "pspnet/r50"]
ZOO_CUDA = ["deeplabv3plus/r50", "pspnet/r50", "deeplabv3plus/r101", "pspnet/r101"]
VOC_IMAGE = (375, 500)   # a typical VOC image (h, w)


def bench_zoo_train(net, device, crop: int, batch: int, iters: int, amp: bool) -> float:
    """mmseg training iterations per second: decode + 0.4 x auxiliary cross-entropy, SGD (one group), poly."""
    from wseg.engine import autocast, grad_scaler
    from wseg.engine.optim import PolyLR, build_optimizer
    from wseg.losses.segmentation import mmseg_cross_entropy

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, crop, crop, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch, crop, crop), generator=g)
    y[torch.rand(batch, crop, crop, generator=g) < 0.1] = 255
    y = y.to(device)
    net.train()
    opt = build_optimizer("sgd", net.param_groups(0.01, 5e-4), 0.01, 5e-4, 0.9)
    schedule = PolyLR(20000, 0.9, min_lr=1e-4)
    scaler = grad_scaler(device, amp)

    def step(i: int) -> None:
        schedule.apply(opt, i)
        with autocast(device, amp):
            out = net(x)
        loss = mmseg_cross_entropy(out["out"], y) + mmseg_cross_entropy(out["aux"], y, loss_weight=0.4)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return calls_per_second(step, 0, range(1, iters + 1), device)


def bench_zoo_test(net, device, mode: str, images: int, amp: bool) -> float:
    """mmseg test images per second (resize to fit 2048x512, normalisation, one view, arg-max; ``mode`` whole or
    slide 512/480)."""
    from wseg.data.mmseg_transforms import test_views, to_input
    from wseg.segmentation.predict import MMSegTest, mmseg_predict

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, VOC_IMAGE + (3,), dtype=np.uint8) for _ in range(images + 1)]
    test = MMSegTest(mode=mode)
    net.eval()

    def one(img):
        inputs = [to_input(v) for v in test_views(img, test.scales, test.resize, test.ratio_of)]
        return mmseg_predict(net, inputs, img.shape[:2], test, device, amp)[1].cpu()

    return calls_per_second(one, imgs[0], imgs[1:], device)


def run_zoo(args, device) -> List[Dict[str, object]]:
    from wseg.models.segmentors import MMSegEncoderDecoder

    cases = args.zoo_networks or (ZOO_CUDA if device.type == "cuda" else ZOO_CPU)
    precisions = [False, True] if device.type == "cuda" else [False]
    rows: List[Dict[str, object]] = []
    for case in cases:
        decoder, _, bb = case.partition("/")
        tiny = bb in ("tiny", "small")         # the reduced networks
        torch.manual_seed(0)
        net = MMSegEncoderDecoder(decoder, num_classes=NUM_CLASSES, **ZOO_BACKBONES[bb]).to(device)
        cuda = device.type == "cuda"
        crop = 512 if (cuda or not tiny) else args.zoo_crop
        batch = 8 if cuda else 2          # the image-pooling BN needs 2 images
        iters = args.iters if (cuda or tiny) else 1
        n_test = args.test_images if (cuda or tiny) else 1
        for amp in precisions:
            row = {"network": decoder, "backbone": "ResNetV1c-" + (bb if tiny else bb[1:]) + "-D8",
                   "device": device.type, "precision": "AMP fp16" if amp else "fp32", "crop": crop, "batch": batch}
            try:
                it_s = bench_zoo_train(net, device, crop, batch, iters, amp)
                row.update(train_it_s=it_s, train_img_s=it_s * batch)
            except torch.OutOfMemoryError:
                row.update(train_it_s=None, train_img_s=None)
            if cuda:
                torch.cuda.empty_cache()
            for mode in ("whole", "slide"):
                row[f"{mode}_img_s"] = bench_zoo_test(net, device, mode, n_test, amp)
            rows.append(row)
            print(f"  {decoder}/{bb} crop {crop} {row['precision']}: train {row.get('train_it_s') or 0:.3f} it/s, "
                  f"test whole {row['whole_img_s']:.3f} img/s, slide {row['slide_img_s']:.3f} img/s",
                  file=sys.stderr, flush=True)
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(zoo_table(rows, device))
    return rows


def zoo_table(rows, device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [f"mmseg zoo throughput on {name} (torch {torch.__version__}); train = decode + 0.4 aux CE, SGD; "
             f"test = one {VOC_IMAGE[1]}x{VOC_IMAGE[0]} image resized to fit 2048x512, no flip, no CRF", "",
             "| network | backbone | precision | crop | batch | train it/s | train img/s | test whole img/s | "
             "test slide img/s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['backbone']} | {r['precision']} | {r['crop']} | {r['batch']} | "
                     f"{_f(r['train_it_s'])} | {_f(r['train_img_s'])} | {_f(r['whole_img_s'])} | "
                     f"{_f(r['slide_img_s'])} |")
    return "\n".join(lines)


def run(args) -> List[Dict[str, object]]:
    from wseg.engine import resolve_device
    from wseg.models.deeplab import build_deeplab

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    cases = (args.networks or (REDUCED + FULL if device.type == "cuda" else REDUCED)) if args.deeplab else []
    precisions = [False, True] if device.type == "cuda" else [False]
    rows: List[Dict[str, object]] = []
    for case in cases:
        model, _, backbone = case.partition("/")
        kw = {"head_dim": TINY_HEAD} if "tiny" in backbone else {}
        torch.manual_seed(0)
        net = build_deeplab(model, backbone, NUM_CLASSES, **kw).to(device)
        tiny = "tiny" in backbone
        # CPU: 2 images for the reduced nets, 1 for the full ones (2 for deeplabv2: its image-pooling BN needs 2)
        batch = args.batch if args.batch else (10 if device.type == "cuda" else (2 if tiny or model == "deeplabv2"
                                                                                  else 1))
        for size in args.sizes:
            for amp in precisions:
                iters = args.iters if tiny or device.type == "cuda" else max(1, args.iters // 2)
                n_test = args.test_images if tiny or device.type == "cuda" else 1
                row = {"network": model, "backbone": backbone, "device": device.type,
                       "precision": "AMP fp16" if amp else "fp32", "size": size, "batch": batch}
                try:
                    it_s = bench_train(net, device, size, batch, iters, amp)
                    row.update(train_it_s=it_s, train_img_s=it_s * batch)
                except torch.OutOfMemoryError:
                    row.update(train_it_s=None, train_img_s=None)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                row["test_img_s"] = bench_test(net, device, size, n_test, args.test_scales, True, amp)
                rows.append(row)
                print(f"  {model}/{backbone} {size} {row['precision']}: train {row.get('train_it_s') or 0:.3f} it/s, "
                      f"test {row['test_img_s']:.3f} img/s", file=sys.stderr, flush=True)
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    crf = {size: bench_crf(size) for size in args.sizes} if args.crf and args.deeplab else {}
    if crf:
        print("  CRF " + ", ".join(f"{k}: {v:.0f} ms" for k, v in crf.items()), file=sys.stderr, flush=True)
    if args.deeplab:
        print(table(rows, args, crf, device))
    if args.zoo:
        rows += run_zoo(args, device)
    return rows


def _f(v, digits=3) -> str:
    return "OOM" if v is None else f"{v:.{digits}f}"


def table(rows, args, crf: Dict[int, float], device) -> str:
    scales = "+".join(f"{s:g}" for s in args.test_scales)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [f"DeepLab throughput on {name} (torch {torch.__version__}); test = scales {scales} with flip, "
             "no CRF", "",
             "| network | backbone | precision | size | batch | train it/s | train img/s | test img/s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['backbone']} | {r['precision']} | {r['size']} | {r['batch']} | "
                     f"{_f(r['train_it_s'])} | {_f(r['train_img_s'])} | {_f(r['test_img_s'])} |")
    if crf:
        c = CRF_PARAMS
        kernels = (f"DeepLab v2 kernels of the published configs (pos {c['pos_w']}/{c['pos_xy_std']}, bilateral "
                   f"{c['bi_w']}/{c['bi_xy_std']}/{c['bi_rgb_std']})")
        lines += ["", "| dense CRF, 21 classes, 10 iterations, CPU | size | ms/image |", "|---|---:|---:|"]
        lines += [f"| {kernels} | {s} | {ms:.0f} |" for s, ms in crf.items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from wseg.cli import add_bool_flag

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--sizes", type=int, nargs="+", default=[321, 513], help="crop / image sides")
    p.add_argument("--batch", type=int, default=None,
                   help="training batch (default: 10 on CUDA; on CPU 2 for reduced, 1 for full networks, 2 for "
                        "deeplabv2)")
    p.add_argument("--iters", type=int, default=2, help="timed training iterations (halved for full nets on CPU)")
    p.add_argument("--test_images", type=int, default=1, help="timed test images (1 for full nets on CPU)")
    p.add_argument("--test_scales", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    p.add_argument("--networks", nargs="+", default=None, metavar="MODEL/BACKBONE",
                   help=f"networks to time (default: {' '.join(REDUCED)} on CPU, plus {' '.join(FULL)} on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_bool_flag(p, "--crf", "time the dense CRF per image size", default=True)
    add_bool_flag(p, "--deeplab", "time the published DeepLab networks", default=True)
    add_bool_flag(p, "--zoo", "time the mmseg zoo (DeepLabV3+ / PSPNet on ResNetV1c-D8)", default=True)
    p.add_argument("--zoo_networks", nargs="+", default=None, metavar="DECODER/BACKBONE",
                   help=f"zoo cases (backbones {', '.join(ZOO_BACKBONES)}; default {' '.join(ZOO_CPU)} on CPU, "
                        f"{' '.join(ZOO_CUDA)} on CUDA)")
    p.add_argument("--zoo_crop", type=int, default=256, help="training crop of the reduced zoo networks on CPU")
    return p


if __name__ == "__main__":
    from wseg.cli import main

    sys.exit(main(build_parser, run))
