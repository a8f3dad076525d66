"""MXNet NDArray .params reader/writer (no mxnet) and the ResNet-38 name conversion."""
import struct

import numpy as np
import pytest
import torch
from torch import nn

from wseg.errors import WsegError
from wseg.models import mxnet_params as mx
from wseg.methods import build_cam_net
from wseg.models.checkpoint import load_weights
from wseg.models.backbones.resnet38 import resnet38_tiny




def _v2(arr, flag):
    shape = struct.pack(f"<I{arr.ndim}q", arr.ndim, *arr.shape)
    return struct.pack("<Ii", 0xF993FAC9, 0) + shape + struct.pack("<iii", 1, 0, flag) + arr.tobytes()


def _v1(arr, flag):
    shape = struct.pack(f"<I{arr.ndim}q", arr.ndim, *arr.shape)
    return struct.pack("<I", 0xF993FAC8) + shape + struct.pack("<iii", 2, 1, flag) + arr.tobytes()


def _legacy(arr, flag):
    return struct.pack(f"<I{arr.ndim}I", arr.ndim, *arr.shape) + struct.pack("<iii", 1, 0, flag) + arr.tobytes()


def _pack(entries, names):
    out = struct.pack("<QQQ", 0x112, 0, len(entries)) + b"".join(entries) + struct.pack("<Q", len(names))
    for n in names:
        out += struct.pack("<Q", len(n)) + n.encode()
    return out


def test_hand_packed_bytes_all_versions(tmp_path):
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    b = np.array([1, -2, 3, 2 ** 40], dtype="<i8")
    c = np.array([[7, 8]], dtype="u1")
    d = np.array([0.5, -1.5], dtype="<f2")
    e = np.array([1.25], dtype="<f8")
    path = tmp_path / "hand.params"
    path.write_bytes(_pack([_v2(a, 0), _v1(b, 6), _legacy(c, 3), _v2(d, 2), _legacy(e, 1)],
                           ["arg:a", "aux:b", "c", "d", "e"]))
    got = mx.load_params(str(path))
    assert list(got) == ["arg:a", "aux:b", "c", "d", "e"]
    for k, ref in zip(got, (a, b, c, d, e)):
        assert got[k].dtype == ref.dtype and np.array_equal(got[k], ref)


def test_v3_scalar_and_empty_array(tmp_path):
    scalar = struct.pack("<IiI", 0xF993FACA, 0, 0) + struct.pack("<iii", 1, 0, 4) + struct.pack("<i", 42)
    empty = struct.pack("<IiI", 0xF993FAC9, 0, 0)  # V2 with ndim 0: a "none" array, no context/data follow
    path = tmp_path / "v3.params"
    path.write_bytes(_pack([scalar, empty], ["s", "none"]))
    names, arrays = mx.read_params(str(path))
    assert names == ["s", "none"] and arrays[0].shape == () and int(arrays[0]) == 42 and arrays[1] is None


@pytest.mark.parametrize("version", [0, 1, 2])
def test_writer_round_trip(tmp_path, version):
    rng = np.random.default_rng(0)
    arrays = {"arg:w": rng.standard_normal((3, 2, 1, 1)).astype(np.float32),
              "aux:m": rng.integers(0, 9, (5,)).astype(np.int32),
              "h": rng.standard_normal((4,)).astype(np.float16)}
    path = str(tmp_path / f"w{version}.params")
    mx.save_params(path, arrays, version=version)
    got = mx.load_params(path)
    assert list(got) == list(arrays)
    for k in arrays:
        assert got[k].dtype == arrays[k].dtype and np.array_equal(got[k], arrays[k])
    if version == 2:  # identical to hand-packed bytes
        hand = _pack([_v2(arrays["arg:w"], 0), _v2(arrays["aux:m"], 4), _v2(arrays["h"], 2)], list(arrays))
        assert open(path, "rb").read() == hand


@pytest.mark.parametrize("name,key", [
    ("arg:conv1a_weight", "conv1a.weight"),
    ("arg:res2a_branch1_weight", "b2.conv_branch1.weight"),
    ("arg:res4b3_branch2a_weight", "b4_3.conv_branch2a.weight"),
    ("arg:bn5a_branch2b1_gamma", "b5.bn_branch2b1.weight"),
    ("arg:bn5b2_branch2a_beta", "b5_2.bn_branch2a.bias"),
    ("aux:bn6a_branch2b2_moving_mean", "b6.bn_branch2b2.running_mean"),
    ("aux:bn7a_branch2a_moving_var", "b7.bn_branch2a.running_var"),
    ("arg:res7a_branch2b2_weight", "b7.conv_branch2b2.weight"),
    ("arg:bn7_gamma", "bn7.weight"),
    ("aux:bn7_moving_var", "bn7.running_var"),
    ("arg:linear1000_weight", None),
])
def test_published_name_conversion(name, key):
    assert mx.resnet38_key(name) == key
    if key is not None:
        assert mx.resnet38_to_mxnet_name(key) == name


def _random_resnet38_tiny():
    torch.manual_seed(1)
    net = resnet38_tiny()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.uniform_(-1, 1)
            m.running_var.data.uniform_(0.5, 2)
    return net


def test_convert_and_load_into_resnet38(tmp_path):
    src = _random_resnet38_tiny()
    arrays = {mx.resnet38_to_mxnet_name(k): v.numpy() for k, v in src.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    assert len(arrays) == 191 and "aux:bn4b5_branch2b1_moving_mean" in arrays
    arrays["arg:linear1000_weight"] = np.zeros((1000, 256), np.float32)
    arrays["arg:linear1000_bias"] = np.zeros((1000,), np.float32)
    path = str(tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params")
    mx.save_params(path, arrays)
    dst = resnet38_tiny()
    load_weights(dst, path)
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, dst.state_dict()[k]), k
    # into SEAM: the new layers must be named explicitly
    seam = build_cam_net("seam", "resnet38_tiny", num_classes=21)
    with pytest.raises(WsegError, match="missing.*fc8"):
        load_weights(seam, path)
    from wseg.models.layout import published_prefixes

    load_weights(seam, path, allow_missing=published_prefixes(seam, seam.new_layer_prefixes()))
    assert torch.equal(seam.backbone.b7.conv_branch2b2.weight, src.b7.conv_branch2b2.weight)


def test_wrong_files_raise(tmp_path):
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(WsegError, match="bad.params.*magic"):
        mx.load_params(str(bad))
    good = mx.params_bytes({"arg:conv1a_weight": np.zeros((4, 3, 3, 3), np.float32)})
    trunc = tmp_path / "trunc.params"
    trunc.write_bytes(good[:-10])
    with pytest.raises(WsegError, match="trunc.params.*truncated"):
        mx.load_params(str(trunc))
    other = tmp_path / "other.params"
    mx.save_params(str(other), {"arg:fc1_weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(WsegError, match="other.params.*not a ResNet-38 name"):
        load_weights(resnet38_tiny(), str(other))
    ctx = tmp_path / "ctx.params"
    ctx.write_bytes(_pack([struct.pack("<Ii", 0xF993FAC9, 0) + struct.pack("<Iq", 1, 2) + struct.pack("<iii", 9, 0, 0)
                           + b"\x00" * 8], ["x"]))
    with pytest.raises(WsegError, match="ctx.params.*context"):
        mx.load_params(str(ctx))
    with pytest.raises(WsegError, match="missing.params"):
        load_weights(resnet38_tiny(), str(tmp_path / "missing.params"))
