"""Data plans: which batches a trainer reads, in which order, with which random draws.

Both plans make the data order and every random draw (augmentation, dropout, a method's sampling generator) a
pure function of ``(seed, iteration)``, so a run resumed from a checkpoint equals an uninterrupted one:

- :class:`EpochPlan` is the published loader (PSA / SEAM / PPC ``train_*.py``): a shuffling ``DataLoader`` whose
  generator and the process-wide RNGs are re-seeded at each epoch start. Its augmentation draws run on in the
  loader's workers through the epoch, so it resumes at epoch boundaries; trainers using it checkpoint there.
- :class:`StepPlan` gives every sample its own augmentation seed (:class:`StepSampler`) and re-seeds the
  process-wide RNG before every iteration, so it resumes at any iteration (the segmentation trainers).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from wseg.errors import WsegError


def seeded(seed: Optional[int]) -> None:
    """Seed Python's ``random``, NumPy and torch (augmentations use all three)."""
    import random

    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def mix(*values: int) -> int:
    """A 31-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(v) % (2 ** 63) for v in values]).generate_state(1)[0] & 0x7FFFFFFF)


class EpochPlan:
    """The published epoch loader (see the module docstring): ``batch_size`` images per process, whole batches only,
    shuffled by a generator seeded with ``seed + epoch`` (one process) or a seeded :class:`DistributedSampler`
    (torchrun)."""

    resumable_mid_epoch = False

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int, dist, list_name: str = "",
                 collate_fn: Optional[Callable] = None):
        per_step = batch_size * dist.world_size
        if len(dataset) < per_step:
            raise WsegError(f"{list_name or 'training list'}: {len(dataset)} images, fewer than one batch of "
                            f"{per_step}; lower --batch_size or use a longer list")
        self.seed, self.rank = int(seed), dist.rank
        self.sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if dist.enabled else None
        self.gen = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=self.sampler is None, sampler=self.sampler,
                                 num_workers=num_workers, drop_last=True, generator=self.gen,
                                 pin_memory=dist.device.type == "cuda", collate_fn=collate_fn)
        self.steps_per_epoch = len(dataset) // per_step

    def epoch_seed(self, epoch: int) -> int:
        return self.seed * 7919 + epoch * 104729 + self.rank

    def begin_epoch(self, epoch: int) -> int:
        """Re-seed every random source for ``epoch`` (data order, augmentation, dropout); returns the epoch's seed
        (the trainer seeds the step generator with it)."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        seeded(self.epoch_seed(epoch))
        self.gen.manual_seed(self.seed + epoch)
        return self.epoch_seed(epoch)

    def epoch_batches(self, epoch: int, first_step: int = 0) -> Iterator[Any]:
        if first_step:
            raise WsegError("the published epoch loader resumes at epoch boundaries only")
        return iter(self.loader)

    def before_step(self, itr: int) -> Optional[int]:
        """Nothing per step (the epoch re-seed covers it); see :meth:`StepPlan.before_step`."""
        return None


class StepSampler(Sampler):
    """Epoch permutations from ``(seed, epoch)``, cut into global batches of ``global_batch`` (incomplete last
    batch dropped, as published); rank ``r`` of ``world`` takes columns ``[r*b, (r+1)*b)`` of each batch.

    Yields ``(dataset index, sample seed)``; :meth:`start` selects the epoch and the first step, so a resumed run
    reads exactly the batches the uninterrupted one would have read.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise WsegError(f"batch_size {global_batch} is not divisible by the {world} processes; pick a multiple")
        if n < global_batch:
            raise WsegError(f"{n} training images, fewer than one batch of {global_batch}; lower batch_size or use "
                            "a longer train_list")
        self.n, self.global_batch, self.seed, self.rank, self.world = n, global_batch, seed, rank, world
        self.per_rank = global_batch // world
        self.steps_per_epoch = n // global_batch
        self.epoch, self.first_step = 0, 0

    def start(self, epoch: int, first_step: int = 0) -> None:
        self.epoch, self.first_step = int(epoch), int(first_step)

    def epoch_plan(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(steps, global_batch)`` arrays of indices and per-sample augmentation seeds of an epoch."""
        rng = np.random.default_rng([self.seed, epoch])
        k = self.steps_per_epoch * self.global_batch
        order = rng.permutation(self.n)[:k].reshape(self.steps_per_epoch, self.global_batch)
        seeds = rng.integers(0, 2 ** 31 - 1, size=k).reshape(self.steps_per_epoch, self.global_batch)
        return order, seeds

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        order, seeds = self.epoch_plan(self.epoch)
        cols = slice(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
        idx = order[self.first_step:, cols].reshape(-1)
        sd = seeds[self.first_step:, cols].reshape(-1)
        return iter(zip(idx.tolist(), sd.tolist()))

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.first_step) * self.per_rank


class SeededSamples(Dataset):
    """``dataset[(index, seed)]``: the transform is reseeded (``transform.reseed(seed)``) before each sample; with no
    transform (data without random draws, e.g. the stand-in corpus, cached features) the seed is unused."""

    def __init__(self, base: Dataset, transform: Any = None):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        index, seed = item
        if self.transform is not None:
            self.transform.reseed(seed)
        return self.base[index]


class StepPlan:
    """Per-sample seeds (:class:`StepSampler`) and a per-iteration re-seed of the process-wide RNG (dropout).
    ``transform``: the dataset's augmentation, reseeded per sample, or None (:class:`SeededSamples`)."""

    resumable_mid_epoch = True

    def __init__(self, dataset: Dataset, transform: Any, batch_size: int, seed: int, num_workers: int, dist,
                 collate_fn: Optional[Callable] = None):
        self.seed, self.rank = int(seed), dist.rank
        self.sampler = StepSampler(len(dataset), batch_size, seed, dist.rank, dist.world_size)
        self.loader = DataLoader(SeededSamples(dataset, transform), batch_size=self.sampler.per_rank,
                                 sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=dist.device.type == "cuda", drop_last=False, collate_fn=collate_fn)
        self.steps_per_epoch = self.sampler.steps_per_epoch

    def begin_epoch(self, epoch: int) -> int:
        return mix(self.seed, epoch, self.rank)

    def epoch_batches(self, epoch: int, first_step: int = 0) -> Iterator[Any]:
        self.sampler.start(epoch, first_step)
        return iter(self.loader)

    def before_step(self, itr: int) -> int:
        """Re-seed torch for iteration ``itr`` (dropout: a function of the iteration); returns the seed."""
        seed = mix(self.seed, itr, self.rank)
        torch.manual_seed(seed)
        return seed
