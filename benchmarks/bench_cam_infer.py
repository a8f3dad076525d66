"""CAM inference speed (multi-scale + flip, PCM output, min-max normalisation) in images/s per scale set.

    python benchmarks/bench_cam_infer.py [--backbone resnet38_tiny] [--size 500x375] [--images 4] [--device auto]

Random weights and images (speed does not depend on them); one warm-up image per scale set, then the mean.
On CUDA it also times fp16 autocast (--amp). Prints a Markdown table.
"""
import argparse
import sys
import time

import numpy as np
import torch
from PIL import Image

from wseg.cam import multiscale_cam
from wseg.data.transforms import multiscale_flip_inputs
from wseg.engine import resolve_device
from wseg.methods import build_cam_net, get_method

SCALE_SETS = {"1.0": [1.0], "0.5-1.5": [0.5, 1.0, 1.5], "0.5-2.0 (published)": [0.5, 1.0, 1.5, 2.0]}


def time_set(model, imgs, scales, device, amp):
    label = torch.ones(20)
    method = get_method("contrast")()
    cam_fn = lambda x: method.cams(model, x)  # noqa: E731
    times = []
    for i, img in enumerate([imgs[0]] + imgs):
        batches = multiscale_flip_inputs(img, scales, flip=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        multiscale_cam(cam_fn, batches, label, (img.size[1], img.size[0]), device, amp=amp).cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:  # skip the warm-up
            times.append(time.perf_counter() - t0)
    return len(times) / sum(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", nargs="+", default=["resnet38_tiny"])
    p.add_argument("--size", default="500x375")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    w, h = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for _ in range(args.images)]
    print(f"CAM inference on {device} ({torch.get_num_threads()} threads), {args.size} images, with flips\n")
    print("| backbone | scales | precision | images/s |\n|---|---|---|---:|")
    for bb in args.backbone:
        model = build_cam_net("contrast", bb, 21).to(device).eval()
        for name, scales in SCALE_SETS.items():
            for amp in ([False, True] if device.type == "cuda" else [False]):
                ips = time_set(model, imgs, scales, device, amp)
                print(f"| {bb} | {name} | {'fp16 AMP' if amp else 'fp32'} | {ips:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
