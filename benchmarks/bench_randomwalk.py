"""AffinityNet random walk: sparse ``2^logt`` steps (wseg.randomwalk.random_walk) vs the published dense matrix power.

A 512x384 image gives a 64x48 AffinityNet feature map (N = 3072 nodes, K = 34 offsets at radius 5). Both methods
start from the same pair affinities and CAMs (21 channels: constant background 0.27 + the CAMs of two present
classes; the rest zero, as in ``infer_aff.py``) and include building their matrix.

Peak memory: every (method, logt) runs in a fresh ``spawn`` process. On CPU the figure is the growth of the process's
peak resident set (``resource.getrusage(...).ru_maxrss``, which counts torch's and numpy's allocations alike, unlike
``tracemalloc`` that sees only Python/numpy allocations) over the resident set just before the run. On CUDA it is
``torch.cuda.max_memory_allocated`` (reset before the run). Times are the best of ``--repeats`` runs (after a warm-up
run on a tiny map, which also keeps library loading out of the memory figure).

    python benchmarks/bench_randomwalk.py [--device cpu|cuda] [--repeats 3] [--all_channels]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import time

WIDTH, HEIGHT = 512, 384


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs(device, all_channels: bool):
    import torch

    from wseg.affinity import get_indices_of_pairs
    from wseg.randomwalk import feature_size

    h, w = feature_size(HEIGHT, WIDTH)
    g = torch.Generator().manual_seed(0)
    # AffinityNet-like affinities: exp(-mean|f_i - f_j|) of piecewise-constant 16-d features plus noise
    seg = (torch.arange(h)[:, None] // 12 * 7 + torch.arange(w)[None, :] // 16) % 5
    feats = torch.randn(5, 16, generator=g)[seg].reshape(h * w, 16) + 0.1 * torch.randn(h * w, 16, generator=g)
    ind_from, ind_to = (torch.from_numpy(a) for a in get_indices_of_pairs(5, (h, w)))
    k = ind_to.numel() // ind_from.numel()
    aff = torch.exp(-(feats[ind_from.repeat(k)] - feats[ind_to]).abs().mean(1)).reshape(k, -1)
    cams = torch.zeros(21, h, w)
    cams[0] = 0.27
    cams[8] = (seg == 2).float() * torch.rand(h, w, generator=g)
    cams[15] = (seg == 4).float() * torch.rand(h, w, generator=g)
    if all_channels:
        cams[1:] = torch.rand(20, h, w, generator=g)
    return aff.to(device), cams.to(device), h, w


def _case(method: str, logt: int, device_name: str, repeats: int, all_channels: bool, queue) -> None:
    import torch

    from wseg.affinity import num_pairs
    from wseg.randomwalk import build_transition, random_walk, random_walk_dense

    device = torch.device(device_name)
    aff, cams, h, w = _inputs(device, all_channels)

    def once():
        if method == "dense":
            out = random_walk_dense(cams, aff, beta=8, logt=logt)
        else:
            out = random_walk(cams, build_transition(aff, h, w, beta=8), logt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    # warm-up on a tiny map: loads the sparse/BLAS kernels (their code pages would otherwise count as "memory")
    tiny_aff = torch.rand(num_pairs(8, 12), device=device)
    if method == "dense":
        random_walk_dense(cams[:, :8, :12], tiny_aff, logt=2)
    else:
        random_walk(cams[:, :8, :12], build_transition(tiny_aff, 8, 12), 2)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = once()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    queue.put((min(times), max(peak, 0), out.cpu().numpy()))  # numpy: no shared-memory handle to outlive us


def run_case(method, logt, device, repeats, all_channels):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_case, args=(method, logt, device, repeats, all_channels, q))
    p.start()
    res = q.get()
    p.join()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense_repeats", type=int, default=1, help="repeats of the (slow) dense reference")
    ap.add_argument("--all_channels", action="store_true", help="make all 21 channels non-zero (worst case)")
    ap.add_argument("--logt", type=int, nargs="+", default=[6, 8])
    args = ap.parse_args(argv)
    import torch

    n_threads = torch.get_num_threads()
    h, w = -(-HEIGHT // 8), -(-WIDTH // 8)
    rows = []
    for logt in args.logt:
        td, md, od = run_case("dense", logt, args.device, args.dense_repeats, args.all_channels)
        ts, ms, os_ = run_case("sparse", logt, args.device, args.repeats, args.all_channels)
        err = float(abs(od.astype("float64") - os_.astype("float64")).max())
        rows.append((logt, td, ts, md, ms, err))
    live = 21 if args.all_channels else 3
    print(f"\nRandom walk on a {WIDTH}x{HEIGHT} image ({w}x{h} = {h * w} nodes, radius 5, beta 8, 21 channels, "
          f"{live} non-zero), device {args.device}, torch {torch.__version__}, {n_threads} CPU threads\n")
    print("| logt | steps | dense time (s) | sparse time (s) | speed-up | dense peak (MiB) | sparse peak (MiB) "
          "| memory ratio | max abs diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for logt, td, ts, md, ms, err in rows:
        print(f"| {logt} | {2 ** logt} | {td:.3f} | {ts:.4f} | {td / ts:.1f}x | {md / 2 ** 20:.1f} | "
              f"{ms / 2 ** 20:.1f} | {md / max(ms, 1):.0f}x | {err:.1e} |")
    return 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
