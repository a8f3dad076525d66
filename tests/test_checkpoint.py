"""Weight loading (strict, wrappers, refusal of non-state-dict pickles) and atomic resume checkpoints."""
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

import wseg
from wseg.errors import WsegError
from wseg.engine.optim import PolyLR, build_optimizer, published_groups
from wseg.engine.trainer import StepContext
from wseg.methods import build_cam_net, get_method
from wseg.models.checkpoint import (load_checkpoint, load_weights, read_meta, read_state_dict, save_checkpoint,
                                    save_state_dict)


def _net(name="seam", seed=0, num_classes=5):
    torch.manual_seed(seed)
    return build_cam_net(name, "resnet38_tiny", num_classes=num_classes)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pth_round_trip_with_meta(tmp_path):
    a, b = _net(seed=0), _net(seed=1)
    assert not _same(a, b)
    path = str(tmp_path / "w.pth")
    save_state_dict(path, a, meta={"network": "seam", "backbone": "resnet38_tiny", "num_classes": 5})
    assert not [f for f in os.listdir(tmp_path) if f != "w.pth"]  # no temp file left behind
    # a plain state dict: loadable by the published scripts' model.load_state_dict(torch.load(path))
    plain = torch.load(path, weights_only=True)
    b.load_state_dict(plain, strict=True)
    assert _same(a, b)
    meta = load_weights(_net(seed=2), path)
    assert meta["network"] == "seam" and meta["num_classes"] == 5 and meta["wseg_version"] == wseg.__version__
    assert read_meta(path)["backbone"] == "resnet38_tiny"


def test_wrappers_and_ddp_prefix(tmp_path):
    a = _net(seed=0)
    sd = {"module." + k: v for k, v in a.state_dict().items()}
    for i, obj in enumerate([{"state_dict": sd}, {"model": a.state_dict(), "epoch": 3}, sd]):
        path = str(tmp_path / f"w{i}.pt")
        torch.save(obj, path)
        b = _net(seed=1)
        load_weights(b, path)
        assert _same(a, b)


def test_mismatch_message_lists_everything(tmp_path):
    a = _net("seam", num_classes=5)
    sd = a.state_dict()
    del sd["f9.weight"]
    sd["extra.weight"] = torch.zeros(1)
    sd["fc8.weight"] = torch.zeros(7, 256, 1, 1)
    path = str(tmp_path / "bad.pth")
    torch.save(sd, path)
    with pytest.raises(WsegError) as e:
        load_weights(_net("seam", num_classes=5), path)
    msg = str(e.value)
    assert "bad.pth" in msg and "1 missing (f9.weight)" in msg and "1 unexpected (extra.weight)" in msg
    assert "fc8.weight (7, 256, 1, 1) vs (5, 256, 1, 1)" in msg and "\n" not in msg
    # SEAM weights into PPC: fc_proj is new -> must be allowed explicitly
    good = str(tmp_path / "seam.pth")
    save_state_dict(good, a)
    ppc = _net("contrast", num_classes=5)
    with pytest.raises(WsegError, match="missing \\(fc_proj.weight\\)"):
        load_weights(ppc, good)
    load_weights(ppc, good, allow_missing=("fc_proj",))
    assert torch.equal(ppc.cam_head.fc8.weight, a.cam_head.fc8.weight)


def test_a_larger_network_around_this_one_is_named_as_such(tmp_path):
    inner = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    outer = {**{"backbone." + k: v for k, v in inner.state_dict().items()}, "head.weight": torch.zeros(2, 4, 1, 1)}
    path = str(tmp_path / "seg.pth")
    torch.save(outer, path)
    with pytest.raises(WsegError, match="seg.pth: holds a larger network .* 'backbone.\\*' keys name this "
                                        "Sequential's, not Sequential weights"):
        load_weights(inner, path)
    torch.save({"backbone.0.weight": outer["backbone.0.weight"]}, path)   # only part of it: the usual listing
    with pytest.raises(WsegError, match="weights do not fit the Sequential network: 6 missing"):
        load_weights(inner, path)
    whole = torch.nn.Module()                                # the other way round: a backbone file for a whole net
    whole.backbone, whole.head = inner, torch.nn.Conv2d(4, 2, 1)
    torch.save(inner.state_dict(), path)
    with pytest.raises(WsegError, match="seg.pth: holds only the 'backbone.\\*' part of a Module .*backbone_weights"):
        load_weights(whole, path)
    own = {k: v.clone() for k, v in inner.state_dict().items()}
    own["0.weight"] = torch.zeros(5, 3, 1, 1)                          # its own keys, one of the wrong shape,
    torch.save({**own, **{"ema." + k: v for k, v in inner.state_dict().items()}}, path)   # + a prefixed copy
    with pytest.raises(WsegError, match="weights do not fit .*0.weight \\(5, 3, 1, 1\\) vs \\(4, 3, 1, 1\\)"):
        load_weights(inner, path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ.get("WSEG_PWNED", "/nonexistent/pwned"),))


def test_non_state_dict_files_are_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("WSEG_PWNED", str(marker))
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"conv1a.weight": Exploit()}, f)
    with pytest.raises(WsegError, match="evil.pth.*not a plain torch state dict"):
        load_weights(_net(), str(evil))
    assert not marker.exists()
    zipped = tmp_path / "zipped.pth"
    torch.save({"a": torch.zeros(1), "obj": Exploit()}, str(zipped))
    with pytest.raises(WsegError, match="zipped.pth"):
        read_state_dict(str(zipped))
    assert not marker.exists()
    for name, obj in [("list.pth", [torch.zeros(1)]), ("empty.pth", {}), ("nested.pth", {"x": {"y": 1}})]:
        torch.save(obj, str(tmp_path / name))
        with pytest.raises(WsegError, match=name):
            load_weights(_net(), str(tmp_path / name))
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(WsegError, match="junk.pth"):
        load_weights(_net(), str(tmp_path / "junk.pth"))
    with pytest.raises(WsegError, match="nothere.pth.*not found"):
        load_weights(_net(), str(tmp_path / "nothere.pth"))


def _steps(net, opt, first, n):
    torch.manual_seed(123)
    x = torch.randn(2, 3, 32, 32)
    label = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    for step in range(first, first + n):
        PolyLR(6).apply(opt, step)
        x2 = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=True)
        ctx = StepContext(generator=torch.Generator().manual_seed(step))
        loss = get_method("contrast")().losses(net(x), net(x2), label, ctx)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_resume_gives_the_same_model_and_optimizer(tmp_path):
    def make():
        net = _net("contrast", seed=0).eval()  # dropout off: deterministic steps
        return net, build_optimizer("sgd", published_groups(net.get_parameter_groups(), 0.01, 5e-4), 0.01, 5e-4, 0.9)
    net_a, opt_a = make()
    _steps(net_a, opt_a, 0, 2)
    path = str(tmp_path / "run_last.pth")
    save_checkpoint(path, net_a, opt_a, 2, {"lr": 0.01, "classes": ("a", "b")}, epoch=0)
    _steps(net_a, opt_a, 2, 2)

    net_b, opt_b = make()
    state = load_checkpoint(path, net_b, opt_b)
    assert state["step"] == 2 and state["epoch"] == 0 and state["version"] == wseg.__version__
    assert state["args"] == {"lr": 0.01, "classes": ["a", "b"]}
    assert opt_b.param_groups[1]["initial_lr"] == pytest.approx(0.1)
    _steps(net_b, opt_b, 2, 2)
    assert _same(net_a, net_b)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]
    for k in sa["state"]:
        assert torch.equal(sa["state"][k]["momentum_buffer"], sb["state"][k]["momentum_buffer"])
    # a plain weights file is not a resume checkpoint; the checkpoint itself works as --weights
    plain = str(tmp_path / "plain.pth")
    save_state_dict(plain, net_a)
    with pytest.raises(WsegError, match="plain.pth.*not a wseg resume checkpoint"):
        load_checkpoint(plain, net_b, opt_b)
    load_weights(_net("contrast", seed=5), path)
