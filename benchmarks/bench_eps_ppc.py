"""Benchmark EPS+PPC's losses and training step: wseg (``wseg.losses.eps.eps_ppc_losses``) vs a port of the published
loss code (usr922/wseg branch ``esp`` ``eps.py`` ``get_eps_loss`` and ``module/train.py`` ``get_er_loss``,
``adaptive_min_pooling_loss``, ``max_onehot``, ``get_contrast_loss``: Python loops over classes, ``random.sample``
lists per pixel, boolean-mask assignments), statement for statement with ``.cuda()`` replaced by the inputs' device
(``tests/published_refs.py``, the tests' references).

1. Losses alone, forward + backward, on random feature-size outputs of the published shapes (batch 8, 21 classes,
   128-d, view 1 ``crop/8``, view 2 ``view/8``), both sides timed in alternating blocks of equal time.
2. One training step (both views through the network, the losses, backward, SGD step) with each loss; ``--amp``
   fp16 autocast on CUDA; with CUDA present and ``--gpu_rows``, fp32 and AMP rows are both printed.

    python benchmarks/bench_eps_ppc.py [--device auto] [--backbone resnet38_tiny --batch 2 --crop 224]

Prints Markdown table rows.
"""
import argparse
import os
import random
import sys

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.timing import timed_pair  # noqa: E402
from tests import published_refs as pub  # noqa: E402  (the published losses, ported; shared with the tests)
from wseg.cli import add_bool_flag  # noqa: E402
from wseg.engine import autocast, grad_scaler, resolve_device  # noqa: E402
from wseg.losses.eps import eps_ppc_losses  # noqa: E402


def published_losses(out1, out2, sal1, sal2, label):
    """train_contrast's loss (esp module/train.py:403-428) from the two views' outputs: classification scores pooled
    from ``cam``, view 1 resized to view 2's feature size (published 128 // 8), ``random.sample`` as published."""
    size = out2["f_proj"].shape[-2:]
    return pub.train_contrast(out1, out2, sal1, sal2, label, size=size, pool_pred=True)[0]["loss"]


def fake_outputs(args, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, c = args.batch, args.classes
    label = (torch.rand(n, c - 1, generator=g) < 0.15).float()
    label[:, 0] = 1
    present = torch.cat([label, torch.zeros(n, 1)], 1)[..., None, None]
    outs = []
    for s in (args.crop // 8, args.view // 8):
        o = {k: torch.randn(n, c, s, s, generator=g) + 3 * present * torch.rand(n, c, s, s, generator=g)
             for k in ("cam", "cam_rv")}
        o["f_proj"] = torch.randn(n, 128, s, s, generator=g).abs()
        outs.append({k: v.to(device).requires_grad_() for k, v in o.items()})
    noise = F.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=(args.crop, args.crop), mode="bilinear")
    sal1 = torch.sigmoid(12 * (noise - noise.quantile(0.6))).to(device)
    sal2 = F.interpolate(sal1, size=(args.view, args.view), mode="bilinear", align_corners=True)
    return outs[0], outs[1], sal1, sal2, label.to(device)


def bench_losses(args, device):
    out1, out2, sal1, sal2, label = fake_outputs(args, device)
    gen = torch.Generator(device=device).manual_seed(0)
    random.seed(0)
    params = [t for o in (out1, out2) for t in o.values()]

    def run(loss_fn):
        def fn():
            for t in params:
                t.grad = None
            loss_fn().sum().backward()
        return fn

    ours = run(lambda: eps_ppc_losses(out1, out2, sal1, sal2, label, generator=gen)["loss"])
    pub = run(lambda: published_losses(out1, out2, sal1, sal2, label))
    return timed_pair(ours, pub, device, args.repeats, block=2, block_s=args.block_s)


def bench_step(args, device, amp):
    from wseg.engine.optim import build_optimizer, published_groups
    from wseg.engine.trainer import StepContext
    from wseg.methods import get_method
    import wseg.methods.eps_ppc  # noqa: F401  (registration)

    torch.manual_seed(0)
    method = get_method("eps_contrast")()
    net = method.build_network(args.backbone, args.classes).to(device).train()
    opt = build_optimizer("sgd", published_groups(net.get_parameter_groups(), 0.01, 5e-4), 0.01, 5e-4)
    scaler = grad_scaler(device, amp)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.crop, args.crop, generator=g).to(device)
    _, _, sal, _, label = fake_outputs(args, device)
    ctx = StepContext(generator=torch.Generator(device=device).manual_seed(0), autocast=lambda: autocast(device, amp))
    random.seed(0)

    def step(published):
        def fn():
            if published:
                x2 = F.interpolate(x, size=(args.view, args.view), mode="bilinear", align_corners=True)
                s2 = F.interpolate(sal, size=(args.view, args.view), mode="bilinear", align_corners=True)
                with ctx.autocast():
                    out1, out2 = net(x), net(x2)
                out1, out2 = ({k: v.float() for k, v in o.items()} for o in (out1, out2))
                loss = published_losses(out1, out2, sal, s2, label)
            else:
                loss = method.training_step(net, {"image": x, "saliency": sal, "label": label}, ctx)["loss"]
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss.sum()).backward()
            scaler.step(opt)
            scaler.update()
        return fn

    return timed_pair(step(False), step(True), device, args.steps, block=2, block_s=0.0)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU intra-op threads (0 = torch default)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--view", type=int, default=128, help="view-2 size (published 128)")
    p.add_argument("--classes", type=int, default=21, help="classes including background (>= 14)")
    p.add_argument("--backbone", default="resnet38_tiny", help="training-step backbone (published resnet38)")
    p.add_argument("--repeats", type=int, default=4, help="alternating blocks per side for the loss rows")
    p.add_argument("--block_s", type=float, default=0.5, help="seconds of timed runs per block")
    p.add_argument("--steps", type=int, default=2,
                   help="alternating rounds of training steps (each: a warm-up and two timed steps per side; best "
                        "reported)")
    add_bool_flag(p, "--amp", "fp16 autocast + gradient scaling for the training step (CUDA only)")
    add_bool_flag(p, "--gpu_rows", "on CUDA: training-step rows in fp32 and in AMP", default=True)
    add_bool_flag(p, "--skip_loss", "skip the loss rows")
    add_bool_flag(p, "--skip_step", "skip the training-step rows")
    return p


def run(args):
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.classes < 14:
        raise SystemExit("--classes: the published loss needs >= 14 classes (top-13 semi-hard mining)")
    print(f"torch {torch.__version__}, {device.type}, {torch.get_num_threads()} threads; batch {args.batch}, "
          f"{args.classes} classes, view 1 {args.crop}px ({args.crop // 8}x{args.crop // 8} features), view 2 "
          f"{args.view}px ({args.view // 8}x{args.view // 8})\n")
    print("| EPS+PPC | device | precision | wseg ms | published ms | speed-up |")
    print("|---|---|---|---:|---:|---:|")
    if not args.skip_loss:
        ours, pub = bench_losses(args, device)
        print(f"| losses alone (cls, 4x saliency, ER, ECR, contrast), fwd+bwd | {device.type} | fp32 | "
              f"{1e3 * ours:.1f} | {1e3 * pub:.1f} | {pub / ours:.1f}x |")
    if not args.skip_step:
        precisions = [False, True] if device.type == "cuda" and args.gpu_rows else [args.amp and device.type == "cuda"]
        for amp in precisions:
            ours, pub = bench_step(args, device, amp)
            print(f"| training step, {args.backbone} crop {args.crop} | {device.type} | {'fp16' if amp else 'fp32'} "
                  f"| {1e3 * ours:.1f} | {1e3 * pub:.1f} | {pub / ours:.2f}x |")


if __name__ == "__main__":
    from wseg.cli import main

    sys.exit(main(build_parser, run))
