"""Timing helpers shared by the benchmarks: device synchronisation, calls per second, best-of-N timing, and
alternating-block timing of two functions (``from benchmarks.timing import ...``; each benchmark puts the
repository root on ``sys.path``)."""
import time

import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op elsewhere), so a timer measures work done, not work launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def calls_per_second(fn, warmup, args, device) -> float:
    """``len(args)`` calls ``fn(a)`` per second, timed after one untimed ``fn(warmup)`` (allocator, cuDNN
    autotuning)."""
    fn(warmup)
    sync(device)
    t0 = time.perf_counter()
    for a in args:
        fn(a)
    sync(device)
    return len(args) / (time.perf_counter() - t0)


def timed(fn, device, repeats, min_seconds=0.0):
    """Best time of ``fn`` over one untimed warm-up call and then timed calls, at least ``repeats`` of them and, with
    ``min_seconds``, until they add up to that long."""
    fn()  # warm-up
    sync(device)
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeats or spent < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
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
