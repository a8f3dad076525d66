"""One process pool for every per-image stage (CRF, evaluation, label preparation, pseudo-mask refiners).

- :class:`WorkerPool`: work submitted beside the network (a CRF per image while the network goes on), bounded in
  flight so memory stays flat; a :class:`WsegError` of one image goes to its ``failures`` (the per-image runner's
  skip list, :mod:`wseg.engine.per_image`) instead of ending the run;
- :func:`imap_pool` streams results of a list of jobs as workers finish; :func:`map_pool` collects them in input
  order. The first worker exception (a :class:`WsegError` keeps its one-line message) is re-raised in the caller
  and pending work is cancelled; nothing hangs on shutdown.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from tqdm import tqdm

from wseg.errors import WsegError


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


def executor(num_workers: int, method: Optional[str] = None) -> ProcessPoolExecutor:
    """The process pool of every stage: ``num_workers`` processes, one intra-op thread each."""
    ctx = multiprocessing.get_context(method or start_method())
    return ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx, initializer=_worker_init)


class WorkerPool:
    """Jobs beside the main loop: ``num_workers`` processes (0: run each job at once, in this process), at most
    ``2 * num_workers`` in flight. ``submit(key, fn, *args)``; ``drain()`` waits for the rest. A job's
    :class:`WsegError` is handed to ``failures.record(key, exc)`` when given, else re-raised."""

    def __init__(self, num_workers: int, failures: Any = None):
        self.num_workers, self.failures = int(num_workers), failures
        self.pool = executor(self.num_workers) if self.num_workers > 0 else None
        self.pending: Dict[Future, Any] = {}

    def _collect(self, fut: Future, key: Any) -> None:
        try:
            fut.result()
        except WsegError as exc:
            if self.failures is None:
                raise
            self.failures.record(key, exc)

    def submit(self, key: Any, fn: Callable, *args: Any) -> None:
        if self.pool is None:
            try:
                fn(*args)
            except WsegError as exc:
                if self.failures is None:
                    raise
                self.failures.record(key, exc)
            return
        self.pending[self.pool.submit(fn, *args)] = key
        while len(self.pending) > 2 * self.num_workers:
            done, _ = wait(list(self.pending), return_when=FIRST_COMPLETED)
            for fut in done:
                self._collect(fut, self.pending.pop(fut))

    def drain(self, desc: Optional[str] = None) -> None:
        futures = list(self.pending)
        for fut in tqdm(futures, desc=desc, dynamic_ncols=True, disable=not (desc and futures), leave=False):
            self._collect(fut, self.pending.pop(fut))

    def close(self) -> None:
        if self.pool is not None:
            for fut in self.pending:
                fut.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
        workers = min(int(num_workers), len(items))
        pool = executor(workers, method)
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
