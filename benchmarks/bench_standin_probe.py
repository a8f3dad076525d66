"""What the ImageNet stand-in weights give a downstream task: a linear probe on frozen features.

For each backbone weights file (and random initialisation), the backbone in eval mode (frozen BatchNorm statistics,
as the published recipes fine-tune) turns every image of a synthetic VOC-format dataset into its globally
average-pooled last-level feature; a multi-label logistic regression (standardised features, full-batch Adam) is fit
on the train split's image labels and scored on val: binary cross-entropy against the label prior's (the loss of a
classifier that learned nothing) and per-label accuracy. The images are fed at scale 1 and 2 (the stand-in corpus
is 64-pixel images; the demo's objects are larger).

    python benchmarks/bench_standin_probe.py [--root data/toy_voc] [--weights weights/standin/resnet38_small.pth]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def features(backbone, voc, ids, scale: float) -> torch.Tensor:
    import torch.nn.functional as F

    from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from wseg.io import load_image

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = []
    with torch.no_grad():
        for i in ids:
            x = torch.from_numpy(np.array(load_image(voc.image_path(i)))).permute(2, 0, 1).float() / 255
            x = ((x - mean) / std)[None]
            if scale != 1:
                x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            f = backbone(x)[backbone.levels[-1]]
            out.append(f.mean((2, 3))[0])
    return torch.stack(out)


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
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, REPO)
    from wseg.data.voc import VOCRoot
    from wseg.models.backbones import build_backbone
    from wseg.models.checkpoint import read_state_dict

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
    print(f"linear probe on {args.backbone} features, {root}: {len(split['train'])} train / {len(split['val'])} val")
    print("| weights | image scale | val BCE | prior BCE | val / prior | per-label accuracy (%) |")
    print("|---|---:|---:|---:|---:|---:|")
    for w in ["random"] + list(args.weights):
        for scale in args.scales:
            torch.manual_seed(0)
            bb = build_backbone(args.backbone)
            if w != "random":
                state, _ = read_state_dict(w)
                bb.load_state_dict(state)
            bb.eval()
            r = probe(features(bb, voc, split["train"], scale), target["train"],
                      features(bb, voc, split["val"], scale), target["val"])
            name = "random init" if w == "random" else os.path.relpath(w, REPO)
            print(f"| {name} | {scale:g} | {r['val']:.3f} | {r['prior']:.3f} | {r['val'] / r['prior']:.2f} | "
                  f"{r['acc']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
