"""Single-stage methods (RS+EPM, ToCo, LOC-BE): training iteration time and inference images/s.

Each row runs the real code path: ``scripts/wsss_train.py``'s stage (the method's augmentation, training step,
optimiser and schedule on the one engine, data loading included) for ``--iters`` iterations on a small synthetic
VOC-format dataset, timed by the trainer after the first iteration's warm-up; then the method's published
inference (its multi-scale + flip procedure, no CRF) on ``--infer_images`` images of the dataset's size.

Two sizes per method:
- ``reduced``: the synthetic demo's networks and crops (``demo_rsepm`` / ``demo_locbe``: ``resnet_tiny`` at 96 px,
  ``vit_tiny_patch16`` at 96 px), images of 128x96;
- ``full``: the published networks and crops (ResNet-50 at 512 for RS+EPM, ViT-B/16 at 448 for ToCo / LOC-BE)
  with ``--full_batch`` images per iteration, images of 500x375 (VOC's typical size).

    python benchmarks/bench_single_stage.py                                  # CPU, both sizes
    python benchmarks/bench_single_stage.py --device cuda --sizes full --full_batch 4 --amp both   # a GPU

Absolute times depend on the machine; on CPU compare rows of one run. Random initialisation (speed does not depend
on the weights).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

#: Method -> (reduced flags, full flags) of scripts/wsss_train.py (the demo configs' and the published values).
SETTINGS = {
    "rsepm": ({"backbone": "resnet_tiny", "base_channels": 16, "feature_size": 64, "crop_size": 96,
               "resize_long": [80, 160], "batch_size": 8, "rs_start": 0, "mix_start": 0},
              {"backbone": "resnet50", "crop_size": 512, "rs_start": 0, "mix_start": 0}),
    "toco": ({"backbone": "vit_tiny_patch16", "crop_size": 96, "local_crop_size": 48, "batch_size": 4,
              "seg_start": 0, "warmup_iters": 0},
             {"backbone": "vit_base_patch16_224", "crop_size": 448, "seg_start": 0, "warmup_iters": 0}),
    "locbe": ({"backbone": "vit_tiny_patch16", "crop_size": 96, "local_crop_size": 48, "batch_size": 4,
               "seg_start": 0, "warmup_iters": 0},
              {"backbone": "vit_base_patch16_224", "crop_size": 448, "seg_start": 0, "warmup_iters": 0}),
}
#: Flags that make every loss term run from the first iteration (the later phases of each schedule).
PHASES = {"rsepm": "RecurSeed and EdgePredictMix from iteration 0", "toco": "seg/reg from iteration 0",
          "locbe": "seg/reg/LOC from iteration 0"}


def make_data(root: str, size: str, n: int) -> None:
    subprocess.run([sys.executable, os.path.join(REPO, "scripts/make_toy_voc.py"), "--out", root, "--preset",
                    "demo", "--num_train", str(n), "--num_val", "2", "--size", size, "--seed", "0"], check=True,
                   stdout=subprocess.DEVNULL)


def argv_of(flags: dict) -> list:
    out = []
    for k, v in flags.items():
        out.append("--" + k)
        out.extend(str(x) for x in v) if isinstance(v, (list, tuple)) else out.append(str(v))
    return out


def train_row(method: str, flags: dict, root: str, work: str, iters: int, device: str, amp: bool) -> dict:
    from wseg.cli import stage_parser
    from wseg.stages import wsss_train

    flags = dict(flags, network=method, voc12_root=root, train_list="train", max_iters=iters + 1,
                 session_name=os.path.join(work, f"{method}_{flags['backbone']}_{int(amp)}"), num_workers=0,
                 device=device, log_every=1000, ckpt_every=10 ** 6, resume=False, amp=amp)
    args = stage_parser(wsss_train)().parse_args(argv_of(flags))
    res = wsss_train.run(args)
    # the trainer's own clock covers every iteration; take the first out with a second, one-iteration run's time
    args1 = stage_parser(wsss_train)().parse_args(argv_of(dict(flags, max_iters=1,
                                                                session_name=flags["session_name"] + "_1")))
    one = wsss_train.run(args1)
    sec = (res["seconds"] - one["seconds"]) / iters
    return {"s_per_iter": sec, "img_per_s": args.batch_size / sec, "batch": args.batch_size,
            "crop": args.crop_size, "weights": res["weights"]}


def infer_row(weights: str, root: str, n: int, device: str, amp: bool) -> dict:
    import numpy as np
    import torch

    from wseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from wseg.data.voc import VOCRoot
    from wseg.io import load_image
    from wseg.stages.wsss_infer import load_trained

    voc = VOCRoot(root)
    method, model, _ = load_trained(weights)
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(dev).eval()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ids = voc.ids("train")[:n]
    xs = [((torch.from_numpy(np.array(load_image(voc.image_path(i)))).permute(2, 0, 1)[None].float() / 255 - mean)
           / std).to(dev) for i in ids]
    with torch.no_grad(), torch.autocast(dev.type, enabled=amp and dev.type == "cuda"):
        method.predict(model, xs[0], tuple(xs[0].shape[-2:]))          # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for x in xs:
            method.predict(model, x, tuple(x.shape[-2:]))
        if dev.type == "cuda":
            torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    return {"img_per_s": len(xs) / sec, "scales": method.infer_scales()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--sizes", nargs="+", default=["reduced", "full"], choices=["reduced", "full"])
    p.add_argument("--iters", type=int, default=3, help="timed training iterations (after one warm-up)")
    p.add_argument("--full_batch", type=int, default=2, help="images per iteration at full size")
    p.add_argument("--infer_images", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["off", "on", "both"], default="off", help="fp16 autocast (GPU only)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    amps = {"off": [False], "on": [True], "both": [False, True]}[args.amp]
    tmp = tempfile.mkdtemp(prefix="wseg_bench_ss_")
    roots = {}
    print(f"single-stage methods on {args.device} ({torch.get_num_threads()} threads); {args.iters} timed "
          f"iterations after one; inference of {args.infer_images} images, no CRF", flush=True)
    print("| method | size | backbone | crop x batch | precision | train s/iter | train img/s | "
          "inference scales (+flip) | inference img/s |")
    print("|---|---|---|---|---|---:|---:|---|---:|", flush=True)
    for size in args.sizes:
        img = "128x96" if size == "reduced" else "500x375"
        if size not in roots:
            roots[size] = os.path.join(tmp, size)
            make_data(roots[size], img, max(8, args.full_batch, args.infer_images))
        for method in args.methods:
            flags = dict(SETTINGS[method][0 if size == "reduced" else 1])
            if size == "full":
                flags["batch_size"] = args.full_batch
            for amp in amps:
                tr = train_row(method, flags, roots[size], tmp, args.iters, args.device, amp)
                inf = infer_row(tr["weights"], roots[size], args.infer_images, args.device, amp)
                print(f"| {method} | {size} ({img}) | {flags['backbone']} | {tr['crop']} x {tr['batch']} | "
                      f"{'AMP' if amp else 'fp32'} | {tr['s_per_iter']:.3f} | {tr['img_per_s']:.2f} | "
                      f"{', '.join(f'{s:g}' for s in inf['scales'])} | {inf['img_per_s']:.2f} |", flush=True)
    print("Every loss term runs in the timed iterations: " + "; ".join(f"{m}: {PHASES[m]}" for m in args.methods))
    return 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
