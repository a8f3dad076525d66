"""One weight loader for every stage, strict key checking, and atomic resume checkpoints.

- :func:`load_weights` reads MXNet ``.params`` (the ResNet-38 ImageNet checkpoint, converted to ResNet-38 keys) or
  torch ``.pth``/``.pt`` files (``weights_only=True``: plain tensors only, never arbitrary pickles), unwraps
  ``{'state_dict': ...}`` / ``{'model': ...}`` and a DDP ``module.`` prefix, and loads strictly: one
  :class:`WsegError` lists missing, unexpected and shape-mismatched keys. Layers that start fresh (e.g. SEAM's
  ``fc8``/PCM on ImageNet weights) are named explicitly with ``allow_missing`` prefixes.
- :func:`save_state_dict` writes a plain state dict (what the published scripts save and load), with wseg's
  metadata tucked into the state dict's ``_metadata`` (invisible to ``load_state_dict``).
- :func:`save_checkpoint` / :func:`load_checkpoint`: model + optimizer (+ AMP scaler) + step/epoch + config +
  ``wseg.__version__``, written atomically (temp file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import collections
import os
import pickle
import warnings
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

import wseg
from wseg.errors import WsegError
from wseg.io import atomic_path

META_KEY = "__wseg__"
CHECKPOINT_FORMAT = "wseg-checkpoint"
ALWAYS_OPTIONAL = ("num_batches_tracked",)  # BatchNorm counters: absent in MXNet and very old torch files
_SHOWN = 8


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _torch_load(path: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WsegError(f"{path}: weights file not found; check --weights")
    except pickle.UnpicklingError:
        raise WsegError(f"{path}: not a plain torch state dict (it pickles objects other than tensors and "
                        "containers, which wseg refuses to unpickle); save weights with "
                        "torch.save(model.state_dict(), path)")
    except (RuntimeError, EOFError, ValueError, AttributeError, TypeError, OSError, IndexError, KeyError) as exc:
        raise WsegError(f"{path}: cannot read torch weights ({exc.__class__.__name__}: "
                        f"{str(exc).strip()[:120]}); the file is corrupt or not a torch .pth")


def read_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(state_dict, meta)`` from a ``.params`` (ResNet-38 MXNet) or torch weights file.

    ``meta`` carries what wseg stored (network, backbone, num_classes, ...) or ``{}`` for foreign files.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WsegError(f"{path}: weights file not found; check --weights")
    if path.endswith(".params"):
        from wseg.models.mxnet_params import load_resnet38_params

        return load_resnet38_params(path), {"format": "mxnet", "backbone": "resnet38"}
    obj = _torch_load(path)
    meta: Dict[str, Any] = {}
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        if obj.get("format") == CHECKPOINT_FORMAT and isinstance(obj.get("meta"), Mapping):
            meta = dict(obj["meta"])
        for key in ("state_dict", "model"):
            if _is_state_dict(obj.get(key)):
                obj = obj[key]
                break
    if not _is_state_dict(obj):
        kind = type(obj).__name__
        raise WsegError(f"{path}: holds a {kind}, not a state dict of named tensors; pass a weights file saved "
                        "with torch.save(model.state_dict(), path) (or a {{'state_dict': ...}} wrapper)")
    extra = getattr(obj, "_metadata", None)
    if isinstance(extra, Mapping) and isinstance(extra.get(META_KEY), Mapping):
        meta = {**dict(extra[META_KEY]), **meta}
    keys = list(obj)
    if all(k.startswith("module.") for k in keys):
        sd = collections.OrderedDict((k[len("module."):], v) for k, v in obj.items())
        if extra is not None:
            sd._metadata = type(extra)((k[len("module."):] if k.startswith("module.") else k, v)  # type: ignore
                                       for k, v in extra.items())
        obj = sd
    return obj, meta


def read_meta(path: str) -> Dict[str, Any]:
    """The wseg metadata of a weights file (``{}`` when it has none)."""
    return read_state_dict(path)[1]


def _matches(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p.rstrip(".") + ".") for p in prefixes)


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<state dict>",
                           allow_missing: Sequence[str] = (), ignore_unexpected: Sequence[str] = ()) -> list:
    """Load ``state`` into ``model``; raise one :class:`WsegError` listing every mismatch.

    ``allow_missing``: key prefixes (``"fc8"``, ``"f9."``) that may be absent and keep their initialisation.
    ``ignore_unexpected``: key prefixes in the file that are dropped (e.g. torchvision's ``fc.``).
    Returns the missing keys that were allowed.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    allowed = [k for k in missing if _matches(k, allow_missing) or k.rsplit(".", 1)[-1] in ALWAYS_OPTIONAL]
    missing = [k for k in missing if k not in allowed]
    unexpected = [k for k in state if k not in own and not _matches(k, ignore_unexpected)]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
              if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_listing(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_listing(unexpected)})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches, file vs model ({_listing(shapes)})")
        required = {k: v for k, v in own.items() if k not in allowed and not _matches(k, allow_missing)}
        none_as_named = not any(k in state for k in required)
        wrapped = _wrapping_prefix(required, state) if none_as_named else None
        if wrapped:  # none of this network's keys as they are, all of them under one prefix
            raise WsegError(f"{source}: holds a larger network (e.g. a segmentation network) whose '{wrapped}*' keys "
                            f"name this {type(model).__name__}'s, not {type(model).__name__} weights; pass the weights "
                            "this stage starts from (ImageNet or stand-in backbone, or a network of this stage)")
        inner = _inner_prefix(required, state) if none_as_named else None
        if inner:  # none of this network's keys as they are, but all of its '<inner>*' part without the prefix
            raise WsegError(f"{source}: holds only the '{inner}*' part of a {type(model).__name__} (e.g. ImageNet, "
                            f"stand-in or another stage's weights for its backbone), not a whole one; pass it as "
                            "backbone weights (segmentation: backbone_weights) or pass a trained "
                            f"{type(model).__name__} file")
        raise WsegError(f"{source}: weights do not fit the {type(model).__name__} network: " + "; ".join(parts)
                        + "; pass the --network/--backbone/--classes the file was trained with, or other weights")
    model.load_state_dict(collections.OrderedDict((k, v) for k, v in state.items() if k in own), strict=False)
    return allowed


def _wrapping_prefix(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The key prefix (``"backbone."``) under which ``state`` holds every key of ``own``, if any."""
    for prefix in sorted({k.split(".", 1)[0] + "." for k in state if "." in k and k not in own}):
        if own and all(prefix + k in state for k in own):
            return prefix
    return None


def _inner_prefix(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> Optional[str]:
    """The key prefix (``"backbone."``) of at least half of ``own``'s keys whose keys ``state`` holds without it."""
    for prefix in sorted({k.split(".", 1)[0] + "." for k in own if "." in k}):
        inside = [k[len(prefix):] for k in own if k.startswith(prefix)]
        if 2 * len(inside) >= len(own) and all(k in state for k in inside):
            return prefix
    return None


def load_weights(model: nn.Module, path: str, allow_missing: Sequence[str] = (),
                 ignore_unexpected: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Load ``.params`` (MXNet ResNet-38) or ``.pth``/``.pt`` weights into ``model`` strictly; returns the meta.

    ``ignore_unexpected`` defaults to the model's ``checkpoint_ignore`` (e.g. ``("fc.",)`` for torchvision).
    """
    state, meta = read_state_dict(path)
    if ignore_unexpected is None:
        ignore_unexpected = tuple(getattr(model, "checkpoint_ignore", ()))
    load_state_dict_strict(model, state, path, allow_missing, ignore_unexpected)
    return meta


def _cpu_state(model: nn.Module) -> "collections.OrderedDict[str, torch.Tensor]":
    sd = model.state_dict()
    out = collections.OrderedDict((k, v.detach().cpu()) for k, v in sd.items())
    out._metadata = dict(getattr(sd, "_metadata", {}))  # type: ignore[attr-defined]
    return out


def _plain(obj: Any) -> Any:
    """Config values reduced to what ``weights_only`` loading accepts (primitives, lists, dicts)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return str(obj)


def save_state_dict(path: str, model: nn.Module, meta: Optional[Mapping[str, Any]] = None) -> None:
    """Save a plain state dict (loadable by the published scripts) with wseg ``meta``, atomically."""
    sd = _cpu_state(model)
    sd._metadata[META_KEY] = _plain({**(meta or {}), "wseg_version": wseg.__version__})  # type: ignore
    with atomic_path(path) as tmp:
        torch.save(sd, tmp)


def save_checkpoint(path: str, model: nn.Module, optimizer: Optional[torch.optim.Optimizer], step: int,
                    args: Any = None, epoch: Optional[int] = None, scaler: Any = None,
                    meta: Optional[Mapping[str, Any]] = None, ema: Any = None) -> None:
    """Resume checkpoint: model, optimizer (with the poly step), AMP scaler, step, epoch, config and version (and
    the weights' moving average, ``ema``: a :class:`wseg.engine.ema.ModelEMA`)."""
    if args is not None and not isinstance(args, Mapping):
        args = vars(args)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "version": wseg.__version__,
        "step": int(step),
        "epoch": None if epoch is None else int(epoch),
        "args": _plain(args or {}),
        "meta": _plain(dict(meta or {})),
        "model": _cpu_state(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    if ema is not None:
        ckpt["ema"] = ema.state_dict()
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    scaler: Any = None, ema: Any = None,
                    check_args: Optional[Callable[[Mapping[str, Any]], None]] = None) -> Dict[str, Any]:
    """Restore a :func:`save_checkpoint` file into ``model`` (strictly), ``optimizer``, ``scaler`` and ``ema``.
    ``check_args(saved settings)`` runs before anything is restored, so a checkpoint of another configuration is
    refused for its settings rather than for the shapes they give.

    Returns ``{"step", "epoch", "args", "version", "meta"}``.
    """
    if not os.path.isfile(path):
        raise WsegError(f"{path}: resume checkpoint not found; start without --resume")
    obj = _torch_load(path)
    if not (isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT and _is_state_dict(obj.get("model"))):
        raise WsegError(f"{path}: not a wseg resume checkpoint (plain weights?); pass it as --weights instead, "
                        "or delete it to start over")
    if check_args is not None:
        check_args(obj.get("args") or {})
    load_state_dict_strict(model, obj["model"], path)
    if optimizer is not None and obj.get("optimizer") is not None:
        try:
            optimizer.load_state_dict(obj["optimizer"])
        except (ValueError, KeyError) as exc:
            raise WsegError(f"{path}: optimizer state does not fit ({exc}); the checkpoint is from another "
                            "configuration: delete it to start over")
    if scaler is not None and obj.get("scaler") is not None and scaler.is_enabled():
        scaler.load_state_dict(obj["scaler"])
    if ema is not None:
        if obj.get("ema") is None:
            raise WsegError(f"{path}: written without a weights average (EMA) but this run keeps one; use the same "
                            "EMA setting, or delete it to start over")
        ema.load_state_dict(obj["ema"])
    return {k: obj.get(k) for k in ("step", "epoch", "args", "version", "meta")}
