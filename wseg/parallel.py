"""One process pool for every per-image stage (CRF, evaluation, label preparation).

``imap_pool`` streams results as workers finish (bounded in-flight work, so memory stays flat on COCO-sized
lists); ``map_pool`` collects them in input order. The first worker exception (a :class:`WsegError` keeps its
one-line message) is re-raised in the caller and pending work is cancelled; nothing hangs on shutdown.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from tqdm import tqdm


def _worker_init() -> None:
    """One intra-op thread per worker: the pool already uses all cores, and OpenMP pools do not survive fork."""
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def start_method() -> str:
    """``fork`` where available (cheap, no re-import) unless CUDA is initialised in this process; else ``spawn``."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "spawn"
    return "fork"


def imap_pool(fn: Callable[[Any], Any], items: Iterable[Any], num_workers: int = 0, desc: Optional[str] = None,
              method: Optional[str] = None, progress: bool = True,
              weight: Optional[Callable[[Any], int]] = None) -> Iterator[Tuple[int, Any]]:
    """Yield ``(index, fn(items[index]))`` as they complete, using ``num_workers`` processes (0/1: in-process).

    ``fn`` must be a module-level (picklable) function; keep items light (ids, paths) and let ``fn`` load data.
    ``weight(item)`` is how many units an item adds to the progress bar (e.g. images in a chunk).
    """
    items = list(items)
    total = sum(weight(x) for x in items) if weight else len(items)
    with tqdm(total=total, desc=desc, dynamic_ncols=True, disable=not progress, leave=False) as bar:
        if num_workers <= 1 or len(items) <= 1:
            for i, x in enumerate(items):
                yield i, fn(x)
                bar.update(weight(x) if weight else 1)
            return
        ctx = multiprocessing.get_context(method or start_method())
        workers = min(int(num_workers), len(items))
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
        pending: Dict[Future, int] = {}
        nxt = 0
        try:
            while nxt < len(items) or pending:
                while nxt < len(items) and len(pending) < 2 * workers:
                    pending[pool.submit(fn, items[nxt])] = nxt
                    nxt += 1
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    yield i, fut.result()
                    bar.update(weight(items[i]) if weight else 1)
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def map_pool(fn: Callable[[Any], Any], items: Iterable[Any], num_workers: int = 0, desc: Optional[str] = None,
             start_method: Optional[str] = None, progress: bool = True) -> List[Any]:
    """``[fn(x) for x in items]`` in ``num_workers`` processes, in input order, with a tqdm bar."""
    items = list(items)
    results: List[Any] = [None] * len(items)
    for i, r in imap_pool(fn, items, num_workers, desc, start_method, progress):
        results[i] = r
    return results
