"""Run every benchmark with the settings the README reports and print their tables.

    python benchmarks/run_all.py            # CPU settings for a 2-core machine (about 25 minutes)
    python benchmarks/run_all.py --gpu      # adds the full-size GPU settings (fp32 vs AMP) when CUDA is present

Each benchmark runs in its own process; its Markdown table is printed as it comes.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

CPU = [
    ("eval: --curve (60 thresholds, one pass) vs one threshold, 1,000 500x375 predictions",
     ["bench_eval.py", "--num_images", "1000", "--workers", "2", "--keep", "--repeat", "2"]),
    ("random walk: sparse vs dense matrix power, 512x384 image (64x48 nodes)",
     ["bench_randomwalk.py", "--logt", "6", "8"]),
    ("aff_prepare images/s, 1 vs 2 workers", ["bench_aff_prepare.py"]),
    ("PPC loss vectorised vs published loop (five fresh processes); training step",
     ["bench_ppc_loss.py", "--threads", "1", "--processes", "5", "--backbone", "resnet38_tiny", "--batch", "8",
      "--crop", "448"]),
    ("CAM inference images/s per scale set", ["bench_cam_infer.py", "--backbone", "resnet38_tiny"]),
    ("DeepLab training iterations/s and test images/s", ["bench_segmentation.py", "--device", "cpu"]),
    ("COCO: masks written per second (1 and 2 workers); eval over 81 classes vs 21",
     ["bench_coco.py", "--num_images", "200", "--eval_images", "200", "--workers", "1", "2"]),
    ("PMM: PPMG images/s, 1 and 2 workers, vs the published per-class loop", ["bench_ppmg.py", "--workers", "1", "2"]),
    ("EPS+PPC losses and training step vs the published code", ["bench_eps_ppc.py", "--threads", "1"]),
    ("single-stage RS+EPM / ToCo / LOC-BE: training s/iteration and inference images/s, reduced and full size",
     ["bench_single_stage.py", "--iters", "2"]),
]
GPU = [
    ("single-stage methods at full size (ResNet-50 512, ViT-B/16 448), batch 4, fp32 vs AMP",
     ["bench_single_stage.py", "--device", "cuda", "--sizes", "full", "--full_batch", "4", "--amp", "both",
      "--iters", "5", "--infer_images", "8"]),
    ("PPC loss on GPU; training step, full ResNet-38, batch 8, crop 448, fp32",
     ["bench_ppc_loss.py", "--device", "cuda", "--backbone", "resnet38", "--batch", "8", "--crop", "448"]),
    ("PPC training step, full ResNet-38, batch 8, crop 448, AMP",
     ["bench_ppc_loss.py", "--device", "cuda", "--backbone", "resnet38", "--batch", "8", "--crop", "448", "--amp",
      "--skip_loss"]),
    ("CAM inference, full ResNet-38", ["bench_cam_infer.py", "--backbone", "resnet38", "--device", "cuda"]),
    ("DeepLab on GPU, fp32 vs AMP", ["bench_segmentation.py", "--device", "cuda"]),
    ("EPS+PPC training step, full ResNet-38, fp32 and AMP", ["bench_eps_ppc.py", "--device", "cuda", "--backbone",
                                                             "resnet38", "--gpu_rows"]),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="also run the GPU settings")
    p.add_argument("--only", nargs="+", default=None, help="benchmark files to run (e.g. bench_eval.py)")
    args = p.parse_args()
    jobs = CPU + (GPU if args.gpu else [])
    failed = 0
    for title, cmd in jobs:
        if args.only and cmd[0] not in args.only:
            continue
        print(f"\n### {title}\n\n`python benchmarks/{' '.join(cmd)}`\n", flush=True)
        t0 = time.time()
        res = subprocess.run([sys.executable, os.path.join(HERE, cmd[0]), *cmd[1:]], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        print(res.stdout.strip())
        if res.returncode:
            failed += 1
            print(f"(failed with exit code {res.returncode}: {res.stderr.strip().splitlines()[-1:]})")
        print(f"\n({time.time() - t0:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
