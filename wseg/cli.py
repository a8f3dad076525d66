"""Shared entry point for the stage scripts: parse flags, run, turn :class:`WsegError` into one line."""
import argparse
import sys
from typing import Callable, Optional, Sequence

from wseg.errors import WsegError, one_line


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose errors (an unknown flag, a bad value) are one :class:`WsegError` line, like every other
    bad input, instead of usage + exit."""

    def error(self, message: str):  # type: ignore[override]
        raise WsegError(f"{self.prog}: {message}; see --help")


def str2bool(value) -> bool:
    """Parse the published scripts' ``type=bool`` spellings (``True``/``False``/``1``/``0``) correctly."""
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in ("1", "true", "t", "yes", "y", "on"):
        return True
    if v in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def add_bool_flag(parser: argparse.ArgumentParser, name: str, help: str, default: bool = False) -> None:
    """A flag that works both as ``--name`` and in the published spelling ``--name True|False``."""
    parser.add_argument(name, nargs="?", const=True, default=default, type=str2bool, help=help)


def main(build_parser: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], object],
         argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` with ``build_parser()``, call ``run(args)``, under :func:`guarded`."""
    return guarded(lambda: run(build_parser().parse_args(argv)))


def guarded(call: Callable[[], object]) -> int:
    """Run ``call()`` (a script's whole work, e.g. a benchmark's ``main``) and return its exit status: a
    :class:`WsegError`, a file-system error on a named path (an output folder that is a file, a permission, a full
    disk), or running out of host or GPU memory (:func:`out_of_memory`) becomes ``error: <message>`` on stderr and
    status 2; an integer ``call()`` returns is the status."""
    try:
        status = call()
    except WsegError as exc:
        _end_progress_bars()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:                    # not about a path the user named: a bug, keep the traceback
            raise
        _end_progress_bars()
        print(f"error: {exc.filename}: {exc.strerror or exc}; check the flag that names this path (an output folder "
              "must not be an existing file, nor lie under one)", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):                  # any other runtime error is a bug: keep the traceback
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        _end_progress_bars()
        print(f"error: out of memory ({first}); lower --batch_size or the image sizes (--crop_size, --resize_long, "
              "scales), or use a device with more memory; finished artifacts and checkpoints are kept, re-run to "
              "resume", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_progress_bars()
        print("interrupted; finished artifacts are kept, re-run to resume", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


def _end_progress_bars() -> None:
    """Close the progress bars a failed stage left open, so that its error starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says an allocation failed: Python's ``MemoryError`` (NumPy), ``torch.OutOfMemoryError``
    (CUDA), the CPU allocator's ``RuntimeError``, or a DataLoader worker's re-raised ``MemoryError``."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return any(s in text for s in ("out of memory", "can't allocate memory", "Cannot allocate memory",
                                   "Caught MemoryError"))


def stage_parser(stage_module, description: Optional[str] = None) -> Callable[[], argparse.ArgumentParser]:
    """``build_parser`` for a :mod:`wseg.stages` module: its ``add_arguments`` (and ``extend_arguments``, flags that
    depend on other values such as the chosen method's), ``--config`` and ``--set`` (:mod:`wseg.config`), with its
    docstring as help."""
    from wseg.config import ConfigArgumentParser

    def build_parser() -> argparse.ArgumentParser:
        p = ConfigArgumentParser(description=description or stage_module.__doc__,
                                 extend=getattr(stage_module, "extend_arguments", None))
        stage_module.add_arguments(p)
        return p

    return build_parser
