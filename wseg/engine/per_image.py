"""The per-image inference runner shared by every per-image stage (CAM inference, affinity labels, the random walk,
segmentation prediction, pseudo-mask refiners).

- **Resume**: only images whose outputs are missing are processed (outputs are written atomically).
- **Shards**: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) rank ``r`` of ``w`` takes every ``w``-th pending image,
  as IRN's multi-GPU CAM step does; the files are the same as one process writes.
- **Bad images**: one unreadable image among thousands does not throw the run away. With ``on_error="skip"`` (the
  default) a :class:`~wseg.errors.WsegError` of one image (unreadable image, corrupt CAM file, a failed CRF) is
  logged, the image skipped, and the skipped images are listed at the end in one error (exit status 2); a re-run
  picks them up once fixed. ``on_error="stop"`` stops at the first, as before.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wseg.engine.runtime import LOG
from wseg.errors import WsegError
from wseg.io import pending_ids

ON_ERROR = ("skip", "stop")


def rank_world() -> Tuple[int, int]:
    """``(rank, world size)`` of a ``torchrun`` launch (``(0, 1)`` otherwise)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def shard(ids: Sequence[str]) -> List[str]:
    rank, world = rank_world()
    return list(ids)[rank::world]


def pending_shard(ids: Sequence[str], outputs: Iterable[Tuple[Optional[str], str]]) -> List[str]:
    """This process' share of the images whose outputs are not all written yet."""
    return shard(pending_ids(ids, outputs))


def add_on_error_flag(parser) -> None:
    parser.add_argument("--on_error", choices=ON_ERROR, default="skip",
                        help="skip: log an image that fails (unreadable file...), go on, list the skipped images at "
                             "the end and exit with status 2; stop: stop at the first (default skip)")


class Failures:
    """The images a stage skipped (see the module docstring)."""

    def __init__(self, stage: str, on_error: str = "skip"):
        if on_error not in ON_ERROR:
            raise WsegError(f"--on_error {on_error}: choose skip or stop")
        self.stage, self.on_error = stage, on_error
        self.items: List[Tuple[str, str]] = []

    def record(self, image_id: Any, exc: BaseException | str) -> None:
        message = str(exc)
        if self.on_error == "stop":
            raise exc if isinstance(exc, WsegError) else WsegError(message)
        LOG.warning("%s: skipped %s: %s", self.stage, image_id, message)
        self.items.append((str(image_id), message))

    def check(self, total: int) -> None:
        """Raise one :class:`WsegError` listing the skipped images (nothing when none was skipped)."""
        if not self.items:
            return
        shown = ", ".join(i for i, _ in self.items[:5]) + (", ..." if len(self.items) > 5 else "")
        raise WsegError(f"{self.stage}: {len(self.items)} of {total} images skipped ({shown}); first: "
                        f"{self.items[0][1]}; fix them and re-run (finished images are kept and skipped)")


class Guarded(Dataset):
    """``(id, sample, None)`` or ``(id, None, error message)``: a worker's :class:`WsegError` on one image becomes a
    record instead of ending the loader."""

    def __init__(self, base: Dataset, ids: Sequence[str]):
        self.base, self.ids = base, list(ids)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        try:
            return self.ids[i], self.base[i], None
        except WsegError as exc:
            return self.ids[i], None, str(exc)


def _as_is(sample):
    return sample


def run_images(dataset: Dataset, ids: Sequence[str], process: Callable[[str, Any], None], failures: Failures,
               num_workers: int = 0, desc: str = "images") -> int:
    """Call ``process(id, dataset[i])`` for every image (loading in ``num_workers`` processes); a
    :class:`WsegError` of one image, in loading or in ``process``, goes to ``failures``. Returns the count done."""
    loader = DataLoader(Guarded(dataset, ids), batch_size=None, shuffle=False, num_workers=num_workers,
                        collate_fn=_as_is)
    done = 0
    for image_id, sample, err in tqdm(loader, desc=desc, dynamic_ncols=True, leave=False, disable=not desc):
        if err is not None:
            failures.record(image_id, err)
            continue
        try:
            process(image_id, sample)
            done += 1
        except WsegError as exc:
            failures.record(image_id, exc)
    return done
