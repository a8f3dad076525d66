"""Read and write MXNet NDArray ``.params`` files with numpy only (no mxnet install needed).

Byte layout (little endian), from MXNet ``src/ndarray/ndarray.cc`` (``NDArray::Save/Load``, ``MXNDArraySave``):

- list header: ``uint64 0x112`` (kMXAPINDArrayListMagic), ``uint64 0`` (reserved);
  ``uint64 count`` then ``count`` NDArrays; ``uint64 count`` then ``count`` names (``uint64 length`` + bytes).
  Names are empty or one per array (``arg:conv1a_weight``, ``aux:bn7_moving_mean``, ...).
- NDArray V2 (``uint32 0xF993FAC9``) / V3 (``0xF993FACA``, numpy shape semantics): ``int32 storage type``
  (0 = dense; sparse types carry a storage shape first), shape, and unless the shape is empty:
  ``int32 dev_type, int32 dev_id`` (context), ``int32 type_flag``, then the raw data.
- NDArray V1 (``uint32 0xF993FAC8``): shape, context, type flag, data (no storage type).
- Legacy (no magic): the first ``uint32`` is ``ndim`` and the dims are ``uint32``; then context, type, data.
- Shape (V1-V3): ``uint32 ndim`` + ``ndim x int64``.

:func:`convert_resnet38` renames the ImageNet ResNet-38 checkpoint (``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``)
to :class:`wseg.models.resnet38.ResNet38` state-dict keys, as the published ``convert_mxnet_to_torch`` does.
"""
from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Tuple

import numpy as np

from wseg.errors import WsegError

if TYPE_CHECKING:                                  # torch is imported where tensors are made
    import torch

LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA

#: mshadow type flags -> numpy dtypes (12 = bfloat16 is widened to float32 on read).
TYPE_FLAGS: Dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("<f8"), 2: np.dtype("<f2"), 3: np.dtype("u1"), 4: np.dtype("<i4"),
    5: np.dtype("i1"), 6: np.dtype("<i8"), 7: np.dtype("?"), 8: np.dtype("<i2"), 9: np.dtype("<u2"),
    10: np.dtype("<u4"), 11: np.dtype("<u8"), 12: np.dtype("<u2"),
}
_CPU = 1


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise WsegError(f"{self.path}: truncated MXNet .params file (needs {n} bytes at offset {self.pos}, "
                            f"file has {len(self.data)}); download the checkpoint again")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        vals = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return vals if len(vals) > 1 else vals[0]


def _read_shape(r: _Reader, ndim: Optional[int] = None, legacy: bool = False) -> Optional[Tuple[int, ...]]:
    if ndim is None:
        ndim = r.unpack("I")
    if ndim == 0xFFFFFFFF:  # unknown shape (np semantics): a "none" array
        return None
    if ndim > 32:
        raise WsegError(f"{r.path}: implausible NDArray rank {ndim} at offset {r.pos}; not an MXNet .params file")
    dims = struct.unpack(f"<{ndim}{'I' if legacy else 'q'}", r.take(ndim * (4 if legacy else 8)))
    return tuple(int(d) for d in dims)


def _read_ndarray(r: _Reader) -> Optional[np.ndarray]:
    magic = r.unpack("I")
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        stype = r.unpack("i")
        if stype != 0:
            raise WsegError(f"{r.path}: sparse NDArray (storage type {stype}) is not supported; save dense arrays")
        shape = _read_shape(r)
        if shape is None or (magic == NDARRAY_V2_MAGIC and len(shape) == 0):
            return None
    elif magic == NDARRAY_V1_MAGIC:
        shape = _read_shape(r)
        if shape is None or len(shape) == 0:
            return None
    else:  # legacy: the magic is ndim, dims are uint32
        shape = _read_shape(r, ndim=magic, legacy=True)
        if shape is None or len(shape) == 0:
            return None
    if any(d < 0 for d in shape):
        return None
    dev_type, _dev_id = r.unpack("ii")
    if dev_type not in (1, 2, 3, 5):
        raise WsegError(f"{r.path}: bad NDArray context (device type {dev_type}) at offset {r.pos - 8}; "
                        "not an MXNet .params file or a corrupt one")
    flag = r.unpack("i")
    if flag not in TYPE_FLAGS:
        raise WsegError(f"{r.path}: unsupported NDArray type flag {flag}")
    dtype = TYPE_FLAGS[flag]
    count = int(np.prod(shape, dtype=np.int64))
    arr = np.frombuffer(r.take(count * dtype.itemsize), dtype=dtype).reshape(shape)
    if flag == 12:  # bfloat16: the high half of a float32
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr if flag == 12 else arr.astype(dtype.newbyteorder("="), copy=True)


def read_params(path: str) -> Tuple[List[str], List[Optional[np.ndarray]]]:
    """Names (possibly empty) and arrays of an MXNet NDArray list file, in file order."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise WsegError(f"{path}: cannot read MXNet .params file ({exc.strerror}); check --weights")
    r = _Reader(data, path)
    if len(data) < 16 or struct.unpack_from("<Q", data, 0)[0] != LIST_MAGIC:
        raise WsegError(f"{path}: not an MXNet NDArray .params file (missing list magic 0x112); pass the "
                        "ImageNet ilsvrc-cls_rna-a1_cls1000_ep-0001.params or a torch .pth")
    r.take(16)
    n = r.unpack("Q")
    if n > len(data):
        raise WsegError(f"{path}: corrupt MXNet .params file (array count {n})")
    arrays = [_read_ndarray(r) for _ in range(n)]
    m = r.unpack("Q")
    if m not in (0, n):
        raise WsegError(f"{path}: corrupt MXNet .params file ({n} arrays but {m} names)")
    names = []
    for _ in range(m):
        length = r.unpack("Q")
        names.append(r.take(length).decode("utf-8", errors="replace"))
    return names, arrays


def load_params(path: str) -> Dict[str, np.ndarray]:
    """``{name: array}`` of a named ``.params`` file (names as stored, e.g. ``arg:conv1a_weight``)."""
    names, arrays = read_params(path)
    if len(names) != len(arrays):
        raise WsegError(f"{path}: the .params file stores unnamed arrays; a checkpoint needs parameter names")
    return {k: v for k, v in zip(names, arrays) if v is not None}


def _ndarray_bytes(arr: np.ndarray, version: int) -> bytes:
    arr = np.ascontiguousarray(arr)
    flags = [k for k, dt in TYPE_FLAGS.items()
             if k != 12 and dt.kind == arr.dtype.kind and dt.itemsize == arr.dtype.itemsize]
    if not flags:
        raise WsegError(f"cannot write dtype {arr.dtype} to an MXNet .params file")
    flag = flags[0]
    data = arr.astype(TYPE_FLAGS[flag], copy=False).tobytes()
    if version == 0:
        head = struct.pack(f"<I{arr.ndim}I", arr.ndim, *arr.shape)
    else:
        shape = struct.pack(f"<I{arr.ndim}q", arr.ndim, *arr.shape)
        head = struct.pack("<I", NDARRAY_V1_MAGIC) + shape if version == 1 else \
            struct.pack("<Ii", NDARRAY_V2_MAGIC, 0) + shape
    return head + struct.pack("<iii", _CPU, 0, flag) + data


def params_bytes(arrays: Mapping[str, np.ndarray], version: int = 2) -> bytes:
    """The bytes of an NDArray list file holding ``arrays`` (``version`` 2 = current MXNet, 1, or 0 = legacy)."""
    if version not in (0, 1, 2):
        raise ValueError("version must be 0 (legacy), 1 or 2")
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    parts += [_ndarray_bytes(np.asarray(v), version) for v in arrays.values()]
    parts.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode("utf-8")
        parts.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(parts)


def save_params(path: str, arrays: Mapping[str, np.ndarray], version: int = 2) -> None:
    """Write ``arrays`` as an MXNet ``.params`` file (what ``mx.nd.save`` writes), atomically."""
    from wseg.io import atomic_path

    blob = params_bytes(arrays, version)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(blob)


# --------------------------------------------------------------------------------------------- ResNet-38 names

_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var",
       "mean": "running_mean", "var": "running_var"}
_BRANCH = re.compile(r"^(res|bn)(\d)(a|b(\d+))_(branch\w+?)_(weight|gamma|beta|moving_mean|moving_var)$")
_BN7 = re.compile(r"^bn7_(gamma|beta|moving_mean|moving_var)$")


def resnet38_key(mx_name: str) -> Optional[str]:
    """ResNet-38 state-dict key of an MXNet parameter name (``None`` for the ImageNet classifier ``linear1000``).

    ``res4b3_branch2a_weight`` -> ``b4_3.conv_branch2a.weight``; ``bn5a_branch2b1_moving_var`` ->
    ``b5.bn_branch2b1.running_var``; ``bn7_gamma`` -> ``bn7.weight``; ``conv1a_weight`` -> ``conv1a.weight``.
    """
    name = mx_name.split(":", 1)[1] if mx_name[:4] in ("arg:", "aux:") else mx_name
    if name.startswith("linear1000"):
        return None
    if name == "conv1a_weight":
        return "conv1a.weight"
    m = _BRANCH.match(name)
    if m:
        kind, stage, _, idx, branch, leaf = m.groups()
        block = f"b{stage}" + (f"_{idx}" if idx else "")
        if kind == "res":
            return f"{block}.conv_{branch}.weight" if leaf == "weight" else None
        return f"{block}.bn_{branch}.{_BN[leaf]}" if leaf in _BN else None
    m = _BN7.match(name)
    if m:
        return f"bn7.{_BN[m.group(1)]}"
    return None


def convert_resnet38(params: Mapping[str, np.ndarray], path: str = "<params>") -> Dict[str, "torch.Tensor"]:
    """Published ``convert_mxnet_to_torch``: MXNet names -> ResNet-38 keys, ``linear1000`` dropped.

    Unknown names raise :class:`WsegError` (the published code would file them under ``bn7``)."""
    import torch

    out: Dict[str, torch.Tensor] = {}
    for k, v in params.items():
        key = resnet38_key(k)
        if key is None:
            if k.split(":", 1)[-1].startswith("linear1000"):
                continue
            raise WsegError(f"{path}: parameter {k!r} is not a ResNet-38 name; this .params file is not the "
                            "ResNet-38 ImageNet checkpoint (ilsvrc-cls_rna-a1_cls1000_ep-0001.params)")
        out[key] = torch.from_numpy(np.array(v, dtype=np.float32, copy=True))
    return out


def resnet38_to_mxnet_name(key: str) -> str:
    """Inverse of :func:`resnet38_key` with the ``arg:``/``aux:`` prefixes of a Module checkpoint."""
    if key == "conv1a.weight":
        return "arg:conv1a_weight"
    inv = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_var"}
    parts = key.split(".")
    if parts[0] == "bn7":
        leaf = inv[parts[1]]
        return ("aux:" if leaf.startswith("moving") else "arg:") + f"bn7_{leaf}"
    block, layer, leaf = parts
    stage, _, idx = block[1:].partition("_")
    unit = f"{stage}b{idx}" if idx else f"{stage}a"
    kind, branch = layer.split("_", 1)
    if kind == "conv":
        return f"arg:res{unit}_{branch}_weight"
    leaf = inv[leaf]
    return ("aux:" if leaf.startswith("moving") else "arg:") + f"bn{unit}_{branch}_{leaf}"


def load_resnet38_params(path: str) -> Dict[str, "torch.Tensor"]:
    """Read an MXNet ResNet-38 checkpoint and return a ResNet-38 state dict (float32 tensors)."""
    return convert_resnet38(load_params(path), path)
