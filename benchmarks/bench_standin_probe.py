"""What the ImageNet stand-in weights give a downstream task: a linear probe on frozen features.

For each backbone weights file (and random initialisation), the backbone in eval mode (frozen BatchNorm statistics,
as the published recipes fine-tune) turns every image of a synthetic VOC-format dataset into its globally
average-pooled last-level feature; a multi-label logistic regression (standardised features, full-batch Adam) is fit
on the train split's image labels and scored on val: binary cross-entropy against the label prior's (the loss of a
classifier that learned nothing) and per-label accuracy. The images are fed at scale 1 and 2 (the stand-in corpus
is 64-pixel images; the demo's objects are larger).

With ``--finetune_steps N`` the backbone is fine-tuned instead, as the CAM stage fine-tunes it but for classification
alone: a 1x1 class layer on the last level, average-pooled (the CAM network's classifier), multi-label soft margin
loss, SGD with momentum 0.9 and weight decay 5e-4, poly lr (``--lr`` for the backbone, x``--head_lr_mult`` for the
class layer), BatchNorm frozen, batches of 8 whole images with random flips, N steps; scored the same way on val.
It says whether the backbone can learn to *recognise* the dataset's classes at an image scale, and prints the
share of last-level channels that are dead (zero on every val image) before and after the fine-tuning: a step too
large for frozen BatchNorm pushes ReLU inputs below zero for good, and a classifier on dead features can only
answer the label prior. ``--weights`` also takes a trained network of the same backbone (e.g. a CAM network's
``models/cam.pth``; its heads are ignored, as ``segmentation/train.py --backbone_weights`` ignores them), and
``--save`` writes the fine-tuned backbone where ``--backbone_weights`` reads it (one weights file, one scale).

    python benchmarks/bench_standin_probe.py [--root data/toy_voc] [--weights weights/standin/resnet38_small.pth]
    python benchmarks/bench_standin_probe.py --root runs/demo/data --finetune_steps 300 --scales 1 1.5 2
    python benchmarks/bench_standin_probe.py --root runs/demo/data --finetune_steps 300 --scales 1 --skip_random \
        --weights runs/demo/models/cam.pth --save cls_from_cam.pth
"""
import argparse
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image(voc, i: str, scale: float) -> torch.Tensor:
    """The normalised ``(3, h, w)`` image ``i``, resized by ``scale``."""
    import torch.nn.functional as F

    from wseg.data.transforms import hwc_to_chw, normalize
    from wseg.io import load_image

    x = torch.from_numpy(hwc_to_chw(normalize(load_image(voc.image_path(i)))))[None]
    if scale != 1:
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return x[0]


def features(backbone, voc, ids, scale: float) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in ids:
            f = backbone(image(voc, i, scale)[None])[backbone.levels[-1]]
            out.append(f.mean((2, 3))[0])
    return torch.stack(out)


def last_level(backbone, xs) -> list:
    """``backbone``'s last-level feature map of each image ``xs`` (no gradient)."""
    with torch.no_grad():
        return [backbone(x[None])[backbone.levels[-1]] for x in xs]


def dead_share(feats) -> float:
    """Share (%) of the channels that are zero at every position of every feature map ``feats``."""
    peak = torch.stack([f.amax((0, 2, 3)) for f in feats]).amax(0)
    return float((peak <= 0).float().mean()) * 100


def dead_channels(backbone, xs) -> float:
    """Share (%) of ``backbone``'s last-level channels that are zero at every position of every image ``xs``."""
    return dead_share(last_level(backbone, xs))


def finetune(backbone, xtr, ytr, xva, yva, steps: int, lr: float, head_lr_mult: float, seed: int = 0,
             batch: int = 8) -> dict:
    """Fine-tune ``backbone`` + a 1x1 class layer, average-pooled, on the images ``xtr`` (module docstring); the
    val loss, the prior's, per-label accuracy and the dead last-level channels before / after."""
    import torch.nn.functional as F

    dead_before = dead_channels(backbone.eval(), xva)

    torch.manual_seed(seed)
    head = torch.nn.Conv2d(backbone.out_channels, ytr.shape[1], 1, bias=False)
    opt = torch.optim.SGD([{"params": [p for p in backbone.parameters() if p.requires_grad], "lr": lr},
                           {"params": head.parameters(), "lr": lr * head_lr_mult}], momentum=0.9, weight_decay=5e-4)
    base = [g["lr"] for g in opt.param_groups]

    def pooled(f):
        return F.adaptive_avg_pool2d(head(f), 1).flatten(1)

    g = torch.Generator().manual_seed(seed)
    backbone.train()                    # BatchNorm stays frozen (the backbones' published train() override)
    for step in range(steps):
        for group, b in zip(opt.param_groups, base):
            group["lr"] = b * (1 - step / steps) ** 0.9
        idx = torch.randint(len(xtr), (batch,), generator=g).tolist()
        flips = torch.rand(batch, generator=g) < 0.5
        views = [xtr[i].flip(-1) if f else xtr[i] for i, f in zip(idx, flips.tolist())]
        h, w = max(v.shape[1] for v in views), max(v.shape[2] for v in views)
        x = torch.stack([F.pad(v, (0, w - v.shape[2], 0, h - v.shape[1])) for v in views])
        loss = F.multilabel_soft_margin_loss(pooled(backbone(x)[backbone.levels[-1]]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    backbone.eval()
    feats = last_level(backbone, xva)          # one val pass for the scores and the dead channels
    with torch.no_grad():
        out = torch.cat([pooled(f) for f in feats])
        p = ytr.mean(0).clamp(1e-3, 1 - 1e-3)
        prior = float(F.binary_cross_entropy(p.expand_as(yva), yva))
        return {"train": float(loss), "val": float(F.binary_cross_entropy_with_logits(out, yva)), "prior": prior,
                "acc": float(((out > 0).float() == yva).float().mean()) * 100,
                "dead": (dead_before, dead_share(feats))}


def probe(xtr, ytr, xva, yva, steps: int = 500) -> dict:
    """Logistic regression on standardised features; val BCE, the prior's BCE and per-label accuracy."""
    torch.manual_seed(0)
    m, s = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva = (xtr - m) / s, (xva - m) / s
    lin = torch.nn.Linear(xtr.shape[1], ytr.shape[1])
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(steps):
        loss = bce(lin(xtr), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        p = ytr.mean(0).clamp(1e-3, 1 - 1e-3)
        prior = float(torch.nn.functional.binary_cross_entropy(p.expand_as(yva), yva))
        return {"train": float(loss), "val": float(bce(lin(xva), yva)), "prior": prior,
                "acc": float(((lin(xva) > 0).float() == yva).float().mean()) * 100}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="synthetic VOC-format root (default: the demo's data, made here)")
    p.add_argument("--backbone", default="resnet38_small")
    p.add_argument("--weights", nargs="+", default=[os.path.join(REPO, "weights/standin/resnet38_small.pth")])
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--finetune_steps", type=int, default=0,
                   help="fine-tune the backbone for classification this many steps instead of the linear probe")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning: backbone lr (the demo's CAM stage: 0.01)")
    p.add_argument("--head_lr_mult", type=float, default=80.0, help="fine-tuning: class layer lr multiplier (x80)")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning: class layer initialisation, batches, flips")
    p.add_argument("--skip_random", action="store_true", help="no random-initialisation rows")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save", default=None, help="write the fine-tuned backbone here (--finetune_steps, one weights "
                                                "file, one scale, --skip_random)")
    args = p.parse_args()
    if args.save and not (args.finetune_steps and args.skip_random and len(args.weights) == 1
                          and len(args.scales) == 1):
        p.error("--save needs --finetune_steps, --skip_random, one --weights file and one --scales value")
    torch.set_num_threads(args.threads)
    sys.path.insert(0, REPO)
    from wseg.data.voc import VOCRoot
    from wseg.models.backbones import build_backbone
    from wseg.models.checkpoint import save_state_dict
    from wseg.segmentation.models import load_backbone_weights

    root = args.root
    if root is None:
        root = os.path.join(tempfile.mkdtemp(prefix="wseg_probe_"), "toy_voc")
        subprocess.run([sys.executable, os.path.join(REPO, "scripts/make_toy_voc.py"), "--out", root, "--preset",
                        "demo", "--num_train", "300", "--num_val", "60", "--seed", "0"], check=True,
                       stdout=subprocess.DEVNULL)
    voc = VOCRoot(root)
    labels = np.load(os.path.join(root, "cls_labels.npy"), allow_pickle=True).item()
    split = {s: voc.ids(s) for s in ("train", "val")}
    target = {s: torch.from_numpy(np.stack([np.asarray(labels[i], np.float32) for i in ids]))
              for s, ids in split.items()}
    how = (f"fine-tuned {args.finetune_steps} steps" if args.finetune_steps else "linear probe on")
    print(f"{how} {args.backbone} features, {root}: {len(split['train'])} train / {len(split['val'])} val")
    dead = " dead last-level channels (%) before / after |" if args.finetune_steps else ""
    print(f"| weights | image scale | val BCE | prior BCE | val / prior | per-label accuracy (%) |{dead}")
    print("|---|---:|---:|---:|---:|---:|" + ("---:|" if dead else ""))
    for w in ([] if args.skip_random else ["random"]) + list(args.weights):
        for scale in args.scales:
            torch.manual_seed(0)
            bb = build_backbone(args.backbone)
            if w != "random":
                load_backbone_weights(SimpleNamespace(backbone=bb), w)
            bb.eval()
            if args.finetune_steps:
                r = finetune(bb, [image(voc, i, scale) for i in split["train"]], target["train"],
                             [image(voc, i, scale) for i in split["val"]], target["val"], args.finetune_steps,
                             args.lr, args.head_lr_mult, args.seed)
            else:
                r = probe(features(bb, voc, split["train"], scale), target["train"],
                          features(bb, voc, split["val"], scale), target["val"])
            name = "random init" if w == "random" else os.path.relpath(w, REPO)
            print(f"| {name} | {scale:g} | {r['val']:.3f} | {r['prior']:.3f} | {r['val'] / r['prior']:.2f} | "
                  f"{r['acc']:.1f} |" + (" {:.1f} / {:.1f} |".format(*r["dead"]) if "dead" in r else ""), flush=True)
    if args.save:
        save_state_dict(args.save, bb, {"finetuned_from": w, "finetune_steps": args.finetune_steps, "scale": scale})
        print(f"saved the fine-tuned backbone: {args.save}")
    return 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
