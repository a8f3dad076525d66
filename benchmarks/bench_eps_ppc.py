"""Benchmark EPS+PPC's losses and training step: wseg (``wseg.losses.eps.eps_ppc_losses``) vs a port of the published
loss code (usr922/wseg branch ``esp`` ``eps.py`` ``get_eps_loss`` and ``module/train.py`` ``get_er_loss``,
``adaptive_min_pooling_loss``, ``max_onehot``, ``get_contrast_loss``: Python loops over classes, ``random.sample``
lists per pixel, boolean-mask assignments), statement for statement with ``.cuda()`` replaced by the inputs' device.

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
import time

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from wseg.cli import add_bool_flag  # noqa: E402
from wseg.engine import autocast, grad_scaler, resolve_device  # noqa: E402
from wseg.losses.eps import eps_ppc_losses  # noqa: E402

# ----------------------------------------------------------------------------------- the published losses, ported


def pub_eps_loss(cam, saliency, label, tau, alpha):
    dev = cam.device
    b, c, h, w = cam.size()
    k = c - 1
    saliency = F.interpolate(saliency, size=(h, w))
    label_map = label.view(b, k, 1, 1).expand(size=(b, k, h, w)).bool()
    label_map_fg = torch.zeros(size=(b, k + 1, h, w), device=dev).bool()
    label_map_bg = torch.zeros(size=(b, k + 1, h, w), device=dev).bool()
    label_map_bg[:, k] = True
    label_map_fg[:, :-1] = label_map.clone()
    sal_pred = F.softmax(cam, dim=1)
    iou_saliency = (torch.round(sal_pred[:, :-1].detach()) * torch.round(saliency)).view(b, k, -1).sum(-1) / \
        (torch.round(sal_pred[:, :-1].detach()) + 1e-04).view(b, k, -1).sum(-1)
    valid_channel = (iou_saliency > tau).view(b, k, 1, 1).expand(size=(b, k, h, w))
    label_map_fg[:, :-1] = label_map & valid_channel
    label_map_bg[:, :-1] = label_map & (~valid_channel)
    fg_map = torch.zeros_like(sal_pred)
    bg_map = torch.zeros_like(sal_pred)
    fg_map[label_map_fg] = sal_pred[label_map_fg]
    bg_map[label_map_bg] = sal_pred[label_map_bg]
    fg_map = torch.sum(fg_map, dim=1, keepdim=True)
    bg_map = 1 - torch.sum(bg_map, dim=1, keepdim=True)
    return F.mse_loss(fg_map * alpha + bg_map * (1 - alpha), saliency)


def pub_max_norm(p, e=1e-5):
    n, c, h, w = p.size()
    p = F.relu(p)
    max_v = torch.max(p.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
    min_v = torch.min(p.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
    return F.relu(p - min_v - e) / (max_v - min_v + e)


def pub_max_onehot(x):
    x_max = torch.max(x[:, 1:, :, :], dim=1, keepdim=True)[0]
    x[:, 1:, :, :][x[:, 1:, :, :] != x_max] = 0
    return x


def pub_er_loss(cam1, cam2, cam_rv1, cam_rv2, label):
    ns, cs, hs, ws = cam2.size()
    cam1 = F.interpolate(pub_max_norm(cam1), size=(hs, ws), mode="bilinear", align_corners=True) * label
    cam2 = pub_max_norm(cam2) * label
    loss_er = torch.mean(torch.abs(cam1[:, :-1, :, :] - cam2[:, :-1, :, :]))
    cam1[:, -1, :, :] = 1 - torch.max(cam1[:, :-1, :, :], dim=1)[0]
    cam2[:, -1, :, :] = 1 - torch.max(cam2[:, :-1, :, :], dim=1)[0]
    cam_rv1 = F.interpolate(pub_max_norm(cam_rv1), size=(hs, ws), mode="bilinear", align_corners=True) * label
    cam_rv2 = pub_max_norm(cam_rv2) * label
    t1 = torch.abs(pub_max_onehot(cam2.detach()) - cam_rv1)
    t2 = torch.abs(pub_max_onehot(cam1.detach()) - cam_rv2)
    k = int(cs * hs * ws * 0.2)
    return loss_er, torch.mean(torch.topk(t1.view(ns, -1), k=k, dim=-1)[0]) + \
        torch.mean(torch.topk(t2.view(ns, -1), k=k, dim=-1)[0])


def pub_amp(x):
    n, c, h, w = x.size()
    k = h * w // 4
    y = torch.topk(torch.max(x, dim=1)[0].view(n, -1), k=k, dim=-1, largest=False)[0]
    return torch.sum(F.relu(y)) / (k * n)


def pub_contrast(cam1, cam2, f_proj1, f_proj2, label, gamma=0.10, bg_thres=0.10):
    dev = cam1.device
    n1 = cam1.shape[0]
    size = f_proj2.shape[-2:]                      # published: (128 // 8, 128 // 8)
    label = torch.cat((label, torch.ones((n1, 1), device=dev)), dim=1).unsqueeze(2).unsqueeze(3)
    f_proj1 = F.interpolate(f_proj1, size=size, mode="bilinear", align_corners=True)
    cam1 = F.interpolate(cam1, size=size, mode="bilinear", align_corners=True)

    def view(cam, fea):
        with torch.no_grad():
            fea = fea.detach()
            c_fea = fea.shape[1]
            cam = F.relu(cam.detach())
            n, c, h, w = cam.shape
            mx = torch.max(cam.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
            mn = torch.min(cam.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1)
            cam[cam < mn + 1e-5] = 0.
            cam = (cam - mn - 1e-5) / (mx - mn + 1e-5)
            cam[:, -1, :, :] = bg_thres
            scores = F.softmax(cam * label, dim=1)
            pseudo = scores.argmax(dim=1, keepdim=True)
            fea = fea.permute(0, 2, 3, 1).reshape(-1, c_fea)
            top_values, top_indices = torch.topk(cam.transpose(0, 1).reshape(c, -1), k=h * w // 16, dim=-1)
            protos = torch.zeros(c, c_fea, device=dev)
            for i in range(c):
                protos[i] = torch.sum(top_values[i].unsqueeze(-1) * fea[top_indices[i]], dim=0) / \
                    torch.sum(top_values[i])
            return F.normalize(protos, dim=-1), pseudo.reshape(-1)

    p1, y1 = view(cam1, f_proj1)
    p2, y2 = view(cam2, f_proj2)
    f1 = F.normalize(f_proj1.permute(0, 2, 3, 1).reshape(-1, f_proj1.shape[1]), dim=-1)
    f2 = F.normalize(f_proj2.permute(0, 2, 3, 1).reshape(-1, f_proj2.shape[1]), dim=-1)

    def nce(f, pos, neg):
        a = torch.exp(torch.sum(f * pos, dim=-1) / 0.1)
        b = torch.sum(torch.exp(torch.matmul(f, neg.transpose(0, 1)) / 0.1), dim=-1)
        return torch.mean(-1 * torch.log(a / b))

    def intra(f, protos, pseudo):
        m, c = f.shape[0], protos.shape[0]
        pos = protos[pseudo]
        similarity = (torch.sum(f * pos, dim=-1) + 1) / 2.
        a1 = torch.exp(torch.sum(f * pos, dim=-1) / 0.1)
        neg_scores = torch.matmul(f, protos.transpose(0, 1))
        with torch.no_grad():
            random_indices = torch.tensor([random.sample(range(c), 10) for _ in range(m)]).long()
            lower = torch.topk(neg_scores, k=13, largest=True, dim=-1)[1][:, 3:]
        negs = protos.unsqueeze(0).repeat(m, 1, 1)
        random_negs = negs[torch.arange(m).unsqueeze(1), random_indices]  # noqa: F841  (published, unused)
        lower_negs = negs[torch.arange(m).unsqueeze(1), lower]
        negs = torch.cat([pos.unsqueeze(1), lower_negs], dim=1)
        a2 = torch.sum(torch.exp(torch.matmul(f.unsqueeze(1), negs.transpose(1, 2)).squeeze(1) / 0.1), dim=-1)
        loss, count = torch.zeros(1, device=dev), 0
        exists = np.unique(pseudo.cpu().numpy()).tolist()
        for i_ in range(c):
            if i_ not in exists:
                continue
            count += 1
            a1c, a2c, simc = a1[pseudo == i_], a2[pseudo == i_], similarity[pseudo == i_]
            length = a1c.shape[0]
            if length < 2:
                continue
            with torch.no_grad():
                rand = torch.tensor(random.sample(range(length), length // 2)).long()
                low = torch.topk(simc, k=int(length * 0.6), largest=False)[1][int(length * 0.6) - length // 2:]
            a1s = torch.cat([a1c[rand], a1c[low]], dim=0)
            a2s = torch.cat([a2c[rand], a2c[low]], dim=0)
            loss += torch.mean(-1 * torch.log(a1s / a2s))
        return loss / count

    cross = gamma * (nce(f1, p2[y1], p2) + nce(f2, p1[y2], p1)) / 2
    cross2 = gamma * (nce(f1, p1[y2], p1) + nce(f2, p2[y1], p2)) / 2
    return cross + cross2 + gamma * (intra(f1, p1, y1) + intra(f2, p2, y2)) / 2


def published_losses(out1, out2, sal1, sal2, label, tau=0.4, alpha=0.5):
    """train_contrast's loss (esp module/train.py:403-428) from the two views' outputs."""
    cam1, cam_rv1, feat1 = out1["cam"], out1["cam_rv"], out1["f_proj"]
    cam2, cam_rv2, feat2 = out2["cam"], out2["cam_rv"], out2["f_proj"]
    pred1 = F.avg_pool2d(cam1, kernel_size=cam1.shape[-2:]).flatten(1)
    pred2 = F.avg_pool2d(cam2, kernel_size=cam2.shape[-2:]).flatten(1)
    loss_cls = (F.multilabel_soft_margin_loss(pred1[:, :-1], label)
                + F.multilabel_soft_margin_loss(pred2[:, :-1], label)) / 2.
    loss_sal = (pub_eps_loss(cam1, sal1, label, tau, alpha) + pub_eps_loss(cam2, sal2, label, tau, alpha)) / 2. + \
        (pub_eps_loss(cam_rv1, sal1, label, tau, alpha) + pub_eps_loss(cam_rv2, sal2, label, tau, alpha)) / 2.
    lab = torch.cat((label, torch.ones((label.shape[0], 1), device=label.device)), dim=1).unsqueeze(2).unsqueeze(3)
    loss_cls = loss_cls + (pub_amp((cam_rv1 * lab)[:, :-1]) + pub_amp((cam_rv2 * lab)[:, :-1])) / 2.
    loss_er, loss_ecr = pub_er_loss(cam1, cam2, cam_rv1, cam_rv2, lab)
    loss_nce = pub_contrast(cam_rv1, cam_rv2, feat1, feat2, label)
    return loss_cls + loss_sal + loss_nce + loss_er + loss_ecr


# ----------------------------------------------------------------------------------- timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats, min_seconds=0.0):
    """Best time over ``repeats`` calls (and at least ``min_seconds``), after one untimed warm-up call."""
    fn()
    _sync(device)
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeats or spent < min_seconds:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        took = time.perf_counter() - t0
        best, spent, calls = min(best, took), spent + took, calls + 1
    return best


def timed_pair(fn_a, fn_b, device, rounds, block_s):
    """Best times of two functions in alternating blocks of about equal time (drifting load weighs on both)."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((fn_a, fn_b)):
            best[i] = min(best[i], timed(fn, device, 2, block_s))
    return best


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
    return timed_pair(ours, pub, device, args.repeats, args.block_s)


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

    return timed_pair(step(False), step(True), device, args.steps, 0.0)


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
