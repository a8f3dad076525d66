"""Benchmark PPC's pixel-to-prototype contrast loss and one CAM training step.

1. ``wseg.losses.ppc`` (vectorised) vs a port of the published contrast block (usr922/wseg
   ``contrast_train.py``: a ``random.sample`` list per pixel, Python loops over classes for the prototypes and
   the hard pixel sampling) on random view outputs of the published size (batch 8, 21 classes, 128-d
   embeddings, 56x56 view-1 features resized to view 2's 16x16 as published), timed three ways: resize + loss
   forward+backward (``ppc_losses``); the loss alone (``ppc_contrast``: prototype estimation and the
   pixel-to-prototype contrast with its sampling/mining, on view 1 already resized) forward+backward and forward
   only; and the shared resize alone (the same ``F.interpolate`` calls in both). The two sides of a row are
   timed in alternating blocks of equal time (:func:`timed_pair`), so load drifting on a shared machine weighs on
   both alike and each side is timed in its steady state.
2. One training step of SEAM+PPC (both views forward, the method's ``losses``, backward, optimiser step) with
   ``--backbone/--batch/--crop/--view`` (default: the published ResNet-38, batch 8, crop 448, view 128 - slow on
   a CPU; ``--backbone resnet38_tiny --batch 2 --crop 128`` is a quick run). ``--amp`` uses fp16 on CUDA.

    python benchmarks/bench_ppc_loss.py [--device auto] [--skip_step] [--processes 5]
                                        [--backbone resnet38_tiny --batch 2 --crop 128]

Prints Markdown table rows.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from wseg.cli import add_bool_flag  # noqa: E402
from wseg.engine import autocast, grad_scaler, resolve_device  # noqa: E402
from wseg.losses.ppc import ppc_contrast, ppc_losses  # noqa: E402


def published_ppc(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, bg_threshold=0.2):
    """The published contrast block (usr922/wseg ``contrast_train.py``), device-agnostic: view 1 resized to view
    2's feature size (the shared part), then :func:`published_contrast`."""
    size = f_proj2.shape[-2:]
    f_proj1 = F.interpolate(f_proj1, size=size, mode="bilinear", align_corners=True)
    cam_rv1_down = F.interpolate(cam_rv1_down, size=size, mode="bilinear", align_corners=True)
    return published_contrast(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, bg_threshold)


def published_contrast(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, bg_threshold=0.2):
    """The published contrast block after the resize, statement for statement: per-class prototype loop,
    per-pixel ``random.sample`` negative lists (built and gathered, then unused, as published), top-13 semi-hard
    mining over a per-pixel repeated prototype tensor, per-class hard pixel sampling with ``random.sample``.
    Only ``.cuda()`` is replaced by the inputs' device and the hard-coded 21 by the number of classes."""
    dev = f_proj1.device
    n = label.shape[0]
    label = torch.cat((torch.ones((n, 1), device=dev), label), dim=1).unsqueeze(2).unsqueeze(3)

    def view(fea, cam):
        with torch.no_grad():
            fea = fea.detach()
            c_fea = fea.shape[1]
            cam = F.relu(cam.detach())
            n1, c1, h1, w1 = cam.shape
            mx = torch.max(cam.view(n1, c1, -1), dim=-1)[0].view(n1, c1, 1, 1)
            mn = torch.min(cam.view(n1, c1, -1), dim=-1)[0].view(n1, c1, 1, 1)
            cam[cam < mn + 1e-5] = 0.
            cam = (cam - mn - 1e-5) / (mx - mn + 1e-5)
            cam[:, 0, :, :] = bg_threshold
            scores = F.softmax(cam * label, dim=1)
            pseudo = scores.argmax(dim=1, keepdim=True)
            n_sc, c_sc, h_sc, w_sc = scores.shape
            scores = scores.transpose(0, 1)  # noqa: F841  (published, unused)
            fea = fea.permute(0, 2, 3, 1).reshape(-1, c_fea)
            top_values, top_indices = torch.topk(cam.transpose(0, 1).reshape(c_sc, -1), k=h_sc * w_sc // 8, dim=-1)
            protos = torch.zeros(c_sc, c_fea, device=dev)
            for i in range(c_sc):
                top_fea = fea[top_indices[i]]
                protos[i] = torch.sum(top_values[i].unsqueeze(-1) * top_fea, dim=0) / torch.sum(top_values[i])
            return F.normalize(protos, dim=-1), pseudo

    p1, y1 = view(f_proj1, cam_rv1_down)
    p2, y2 = view(f_proj2, cam_rv2_down)
    c = p1.shape[0]
    n_f, c_f, h_f, w_f = f_proj1.shape
    f1 = F.normalize(f_proj1.permute(0, 2, 3, 1).reshape(n_f * h_f * w_f, c_f), dim=-1)
    y1 = y1.reshape(-1)
    n_f, c_f, h_f, w_f = f_proj2.shape
    f2 = F.normalize(f_proj2.permute(0, 2, 3, 1).reshape(n_f * h_f * w_f, c_f), dim=-1)
    y2 = y2.reshape(-1)
    m = n_f * h_f * w_f

    def nce(f, pos, neg):
        a = torch.exp(torch.sum(f * pos, dim=-1) / 0.1)
        b = torch.sum(torch.exp(torch.matmul(f, neg.transpose(0, 1)) / 0.1), dim=-1)
        return torch.mean(-1 * torch.log(a / b))

    positives1, positives2 = p2[y1], p1[y2]   # published: indexed once, used by both cross-view terms
    cross = 0.1 * (nce(f1, positives1, p2) + nce(f2, positives2, p1)) / 2
    cross2 = 0.1 * (nce(f1, positives2, p1) + nce(f2, positives1, p2)) / 2

    def intra(f, protos, pseudo):
        pos = protos[pseudo]
        negs = protos
        sim = (torch.sum(f * pos, dim=-1) + 1) / 2.
        a1 = torch.exp(torch.sum(f * pos, dim=-1) / 0.1)
        neg_scores = torch.matmul(f, negs.transpose(0, 1))
        with torch.no_grad():  # random 50%
            random_indices = torch.tensor([random.sample(range(c), 10) for _ in range(m)]).long()
        with torch.no_grad():
            lower = torch.topk(neg_scores, k=13, largest=True, dim=-1)[1][:, 3:]
        negs = negs.unsqueeze(0).repeat(m, 1, 1)
        random_negs = negs[torch.arange(m).unsqueeze(1), random_indices]  # noqa: F841  (published, unused)
        lower_negs = negs[torch.arange(m).unsqueeze(1), lower]
        negs = torch.cat([pos.unsqueeze(1), lower_negs], dim=1)
        a2 = torch.sum(torch.exp(torch.matmul(f.unsqueeze(1), negs.transpose(1, 2)).squeeze(1) / 0.1), dim=-1)
        loss, n_cls = torch.zeros(1, device=dev), 0
        exists = np.unique(pseudo.cpu().numpy()).tolist()
        for i in range(c):  # hard pixel sampling, for each class
            if i not in exists:
                continue
            n_cls += 1
            a1c, a2c, simc = a1[pseudo == i], a2[pseudo == i], sim[pseudo == i]
            length = a1c.shape[0]
            if length < 2:
                continue
            with torch.no_grad():
                rand = torch.tensor(random.sample(range(length), length // 2)).long()
            a1r, a2r = a1c[rand], a2c[rand]
            with torch.no_grad():
                low = torch.topk(simc, k=int(length * 0.6), largest=False)[1][int(length * 0.6) - length // 2:]
            a1l, a2l = a1c[low], a2c[low]
            a1s, a2s = torch.cat([a1r, a1l], dim=0).reshape(-1), torch.cat([a2r, a2l], dim=0).reshape(-1)
            loss += torch.mean(-1 * torch.log(a1s / a2s))
        return loss / n_cls

    intra_loss = 0.1 * (intra(f1, p1, y1) + intra(f2, p2, y2)) / 2
    return cross + cross2 + intra_loss


def fake_views(batch, classes, dim, feat1, feat2, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = (torch.rand(batch, classes - 1, generator=g) < 0.15).float()
    label[:, 0] = 1
    present = torch.cat([torch.zeros(batch, 1), label], 1)[..., None, None]

    def t(c, s, positive=False, boost=False):
        x = torch.randn(batch, c, s, s, generator=g)
        x = x.abs() if positive else x
        if boost:
            x = x + 3 * present * torch.rand(x.shape, generator=g)
        return x.to(device).requires_grad_()

    return (t(dim, feat1, positive=True), t(classes, feat1, boost=True), t(dim, feat2, positive=True),
            t(classes, feat2, boost=True), label.to(device))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats, min_seconds=0.0):
    """Best time of ``fn`` over one untimed warm-up call and then timed calls, at least ``repeats`` of them and, with
    ``min_seconds``, until they add up to that long."""
    fn()  # warm-up
    _sync(device)
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeats or spent < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        took = time.perf_counter() - t0
        best, spent, calls = min(best, took), spent + took, calls + 1
    return best


def timed_pair(fn_a, fn_b, device, rounds, block=3, block_s=0.25):
    """Best times of two functions measured in alternating blocks: each round runs ``fn_a`` then ``fn_b``, each as
    one untimed warm-up call and then timed calls, at least ``block`` of them and for at least ``block_s`` seconds,
    so both sides get about the same time per block. A fast function then reaches its steady state (caches, heap)
    within each block, as in a plain timing loop, instead of being timed only in its first calls after the slow
    one ran, which find its caches and heap in the slow one's state. Alternating the blocks spreads drifting load
    on a shared machine over both alike. Returns ``(seconds of fn_a, seconds of fn_b)``."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((fn_a, fn_b)):
            best[i] = min(best[i], timed(fn, device, block, block_s))
    return tuple(best)


def bench_loss(args, device):
    f1, c1, f2, c2, label = fake_views(args.batch, args.classes, 128, args.crop // 8, args.view // 8, device)
    size = f2.shape[-2:]
    with torch.no_grad():  # view 1 already at view 2's feature size: the inputs of the loss alone
        r1 = F.interpolate(f1, size=size, mode="bilinear", align_corners=True).requires_grad_()
        rc1 = F.interpolate(c1, size=size, mode="bilinear", align_corners=True).requires_grad_()
    leaves = (f1, c1, f2, c2, r1, rc1)
    gen = torch.Generator(device=device).manual_seed(0)
    random.seed(0)

    def run(loss_fn, backward=True):
        def fn():
            for t in leaves:
                t.grad = None
            if backward:
                loss_fn().sum().backward()
            else:
                with torch.no_grad():
                    loss_fn()
        return fn

    vec_full = run(lambda: ppc_losses(f1, c1, f2, c2, label, generator=gen)["loss_nce"])
    pub_full = run(lambda: published_ppc(f1, c1, f2, c2, label))
    vec_alone = lambda: ppc_contrast(r1, rc1, f2, c2, label, generator=gen)["loss_nce"]  # noqa: E731
    pub_alone = lambda: published_contrast(r1, rc1, f2, c2, label)  # noqa: E731
    grad1 = torch.randn(f2.shape, generator=torch.Generator().manual_seed(1)).to(device)

    def resize():  # the shared part, identical in both: view 1 features (with backward) and CAM to view 2's size
        for t in leaves:
            t.grad = None
        a = F.interpolate(f1, size=size, mode="bilinear", align_corners=True)
        F.interpolate(c1.detach(), size=size, mode="bilinear", align_corners=True)
        a.backward(grad1)

    def pair(fn_a, fn_b):
        return timed_pair(fn_a, fn_b, device, args.repeats, block_s=args.block_s)

    rows = [("resize + loss, fwd+bwd", *pair(vec_full, pub_full)),
            (LOSS_ROW, *pair(run(vec_alone), run(pub_alone))),
            ("loss alone, fwd only", *pair(run(vec_alone, False), run(pub_alone, False)))]
    return rows, timed(resize, device, args.repeats)


LOSS_ROW = "loss alone (prototypes + contrast + sampling/mining), fwd+bwd"


def print_loss(args, device, runs):
    """The loss table of one run, or per-row ranges and the median speed-up over several fresh processes."""
    m = args.batch * (args.view // 8) ** 2
    print(f"PPC loss, batch {args.batch}, {args.classes} classes, 128-d, view-1 features {args.crop // 8}x"
          f"{args.crop // 8} resized to view 2's {args.view // 8}x{args.view // 8}: {m} pixels/view"
          + (f"; {len(runs)} fresh processes, one after another" if len(runs) > 1 else ""))
    print("| PPC part | device | vectorised ms | published loop ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    for i, name in enumerate(r[0] for r in runs[0][0]):
        tv, tl = [r[0][i][1] for r in runs], [r[0][i][2] for r in runs]
        ratios = sorted(b / a for a, b in zip(tv, tl))
        if len(runs) == 1:
            print(f"| {name} | {device.type} | {1e3 * tv[0]:.2f} | {1e3 * tl[0]:.2f} | {ratios[0]:.1f}x |")
        else:
            print(f"| {name} | {device.type} | {1e3 * min(tv):.2f}-{1e3 * max(tv):.2f} | {1e3 * min(tl):.2f}-"
                  f"{1e3 * max(tl):.2f} | {', '.join(f'{x:.1f}x' for x in ratios)} (median "
                  f"{statistics.median(ratios):.1f}x) |")
    tr = [r[1] for r in runs]
    print(f"| shared resize alone (same ops in both), fwd+bwd | {device.type} | {1e3 * min(tr):.2f}"
          + (f"-{1e3 * max(tr):.2f}" if len(runs) > 1 else "") + " | same | 1.0x |")
    i = [r[0] for r in runs[0][0]].index(LOSS_ROW)
    ratios = sorted(r[0][i][2] / r[0][i][1] for r in runs)
    low, median = ratios[0], statistics.median(ratios)
    print(f"\nissue #3 target, loss alone fwd+bwd >= 20x: {'reached' if low >= 20 else 'not reached'} in every run "
          f"(lowest {low:.2f}x, median {median:.2f}x; each side's best over {args.repeats} blocks of >= "
          f"{args.block_s} s per process)")


def loss_in_fresh_processes(args):
    """``--processes N``: the loss benchmark in N fresh processes, one after another (the published loop's best time
    varies from process to process by more than within one), each printing its measurements as one JSON line."""
    cmd = [sys.executable, os.path.abspath(__file__), "--skip_step", "--processes", "1", "--json", "--device",
           args.device, "--threads", str(args.threads), "--batch", str(args.batch), "--crop", str(args.crop),
           "--view", str(args.view), "--classes", str(args.classes), "--repeats", str(args.repeats),
           "--block_s", str(args.block_s)]
    runs = []
    for _ in range(args.processes):
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows, resize = json.loads(out.strip().splitlines()[-1])
        runs.append(([tuple(r) for r in rows], resize))
    return runs


def bench_step(args, device):
    from wseg.engine.optim import build_optimizer, published_groups
    from wseg.engine.trainer import StepContext
    from wseg.methods import build_cam_net, get_method

    torch.manual_seed(0)
    net = build_cam_net(args.network, args.backbone, num_classes=args.classes).to(device).train()
    opt = build_optimizer("sgd", published_groups(net.get_parameter_groups(), 0.01, 5e-4), 0.01, 5e-4)
    method = get_method(args.network)()
    scaler = grad_scaler(device, args.amp)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.crop, args.crop, generator=g).to(device)
    label = (torch.rand(args.batch, args.classes - 1, generator=g) < 0.15).float()
    label[:, 0] = 1
    label = label.to(device)
    ctx = StepContext(generator=torch.Generator(device=device).manual_seed(0),
                      autocast=lambda: autocast(device, args.amp))

    def step():
        x2 = F.interpolate(x, size=(args.view, args.view), mode="bilinear", align_corners=True)
        with ctx.autocast():
            out1, out2 = net(x), net(x2)
        out1, out2 = ({k: v.float() for k, v in o.items()} for o in (out1, out2))
        loss = method.losses(out1, out2, label, ctx)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    sec = timed(step, device, args.steps)
    amp = "fp16" if args.amp and device.type == "cuda" else "fp32"
    print("| training step | device | precision | seconds/step | images/s |")
    print("|---|---|---|---:|---:|")
    print(f"| {args.network} {args.backbone} batch {args.batch} crop {args.crop} view {args.view} | {device.type} "
          f"| {amp} | {sec:.3f} | {args.batch / sec:.2f} |")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU intra-op threads (0 = torch default; 1 is far faster on a busy 2-core machine)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=448)
    p.add_argument("--view", type=int, default=128, help="view-2 size (published 128)")
    p.add_argument("--classes", type=int, default=21, help="classes including background")
    p.add_argument("--backbone", default="resnet38")
    p.add_argument("--network", choices=["seam", "contrast"], default="contrast")
    p.add_argument("--repeats", type=int, default=8,
                   help="rounds of each loss measurement: one block of timed runs of each side, vectorised and loop "
                        "alternately (best reported)")
    p.add_argument("--block_s", type=float, default=0.25,
                   help="seconds of timed runs per block (at least 3 runs): both sides get the same time per block")
    p.add_argument("--steps", type=int, default=2, help="timed training steps (best reported)")
    p.add_argument("--processes", type=int, default=1,
                   help="run the loss benchmark in this many fresh processes, one after another, and report each "
                        "run's speed-up and the median (the published loop's best time varies between processes)")
    add_bool_flag(p, "--amp", "fp16 autocast + gradient scaling (CUDA only)")
    add_bool_flag(p, "--skip_loss", "skip the loss benchmark")
    add_bool_flag(p, "--skip_step", "skip the training-step benchmark")
    add_bool_flag(p, "--json", "print the loss measurements as one JSON line (used by --processes)")
    return p


def run(args):
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.classes < 14:
        print("note: the published loop needs >= 14 classes (top-13 semi-hard mining); skipping the loss benchmark")
        args.skip_loss = True
    if args.json:
        print(json.dumps(bench_loss(args, device)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if not args.skip_loss:
        runs = loss_in_fresh_processes(args) if args.processes > 1 else [bench_loss(args, device)]
        print_loss(args, device, runs)
        print()
    if not args.skip_step:
        bench_step(args, device)


if __name__ == "__main__":
    from wseg.cli import main

    sys.exit(main(build_parser, run))
