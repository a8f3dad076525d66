"""SEAM / PPC networks: outputs, published head names and inits, parameter groups."""
import math

import pytest
import torch
import torchvision
from torch import nn

from wseg.errors import WsegError
from wseg.engine.optim import build_optimizer, published_groups
from wseg.methods import build_cam_net
from wseg.methods.seam import SEAMNet
from wseg.models.backbones import build_backbone
from wseg.models.heads.pcm import one_hot_cam


@pytest.mark.parametrize("backbone", ["resnet38_tiny", "resnet_tiny"])
def test_output_shapes(backbone):
    x = torch.randn(2, 3, 64, 48)
    seam = build_cam_net("seam", backbone, num_classes=6).train()
    out = seam(x)
    assert isinstance(seam, SEAMNet) and out["cam"].shape == out["cam_rv"].shape == (2, 6, 64, 48)
    assert set(out) == {"cam", "cam_rv", "cam_rv_down"}
    ppc = build_cam_net("contrast", backbone, num_classes=6).train()
    out = ppc(x)
    cam, cam_rv, f_proj, cam_rv_down = out["cam"], out["cam_rv"], out["f_proj"], out["cam_rv_down"]
    assert cam.shape == cam_rv.shape == (2, 6, 64, 48)
    assert f_proj.shape == (2, 128, 8, 6) and (f_proj >= 0).all() and cam_rv_down.shape == (2, 6, 8, 6)


def test_published_heads_full_width():
    with torch.device("meta"):
        net = build_cam_net("contrast", "resnet38", num_classes=21)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["fc8.weight"] == (21, 4096, 1, 1) and shapes["fc_proj.weight"] == (128, 4096, 1, 1)
    assert shapes["f8_3.weight"] == (64, 512, 1, 1) and shapes["f8_4.weight"] == (128, 1024, 1, 1)
    assert shapes["f9.weight"] == (192, 195, 1, 1)
    assert all(m.bias is None for m in (net.cam_head.fc8, net.proj.fc_proj, net.pcm.f8_3, net.pcm.f8_4, net.pcm.f9))
    heads = [k for k in shapes if not k.startswith(("conv1a", "b", "bn7"))]
    assert heads == ["fc8.weight", "fc_proj.weight", "f8_3.weight", "f8_4.weight", "f9.weight"]
    assert net.dropout7.p == 0.5 and isinstance(net.dropout7, nn.Dropout2d)
    with torch.device("meta"):
        seam = build_cam_net("seam", "resnet38")
    assert "fc_proj.weight" not in seam.state_dict()


def test_torchvision_layout():
    with torch.device("meta"):
        net = build_backbone("resnet101")
        ref = torchvision.models.resnet101(weights=None, replace_stride_with_dilation=[False, True, True])
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == ref_shapes
    assert net.checkpoint_ignore == ("fc.",) and net.layer4[0].conv2.dilation == (2, 2)
    assert net.layer4[1].conv2.dilation == (4, 4) and net.layer3[0].conv2.dilation == (1, 1)
    feats = build_backbone("resnet_tiny")(torch.randn(1, 3, 32, 32))
    assert list(feats) == ["layer1", "layer2", "layer3", "layer4"] and feats["layer4"].shape == (1, 2048, 4, 4)


def test_initialisation_as_published():
    torch.manual_seed(0)
    net = build_cam_net("contrast", "resnet38_tiny", num_classes=21)
    def xavier_bound(w, gain=1.0):
        return gain * math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
    for m, gain in ((net.cam_head.fc8, 1), (net.proj.fc_proj, 1), (net.pcm.f9, 4)):
        w = m.weight
        assert w.abs().max() <= xavier_bound(w, gain) and w.abs().max() > 0.8 * xavier_bound(w, gain)
    w = net.pcm.f8_4.weight  # kaiming normal, fan_in, gain sqrt(2)
    assert abs(w.std().item() - math.sqrt(2 / w.shape[1])) < 0.15 * math.sqrt(2 / w.shape[1])


@pytest.mark.parametrize("name,backbone", [("seam", "resnet38_tiny"), ("contrast", "resnet38_tiny"),
                                           ("contrast", "resnet_tiny")])
def test_parameter_groups_cover_trainable_once(name, backbone):
    net = build_cam_net(name, backbone, num_classes=5)
    net.train()
    groups = net.get_parameter_groups()
    ids = [id(p) for g in groups for p in g]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    scratch = {id(p) for m in net.scratch_modules() for p in m.parameters()}
    assert {id(p) for p in groups[2] + groups[3]} == scratch
    frozen = ("conv1a", "b2", "b2_1", "b2_2") if backbone.startswith("resnet38") else ("conv1", "bn1", "layer1")
    for m in frozen:
        assert not any(id(p) in trainable for p in getattr(net.backbone, m).parameters())
    bn = [p for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]
    assert not any(id(p) in trainable for p in bn)
    opt = build_optimizer("sgd", published_groups(groups, 0.01, 5e-4), 0.01, 5e-4)
    lrs = [0.01, 0.1]      # no biases: the heads have none and every BatchNorm is frozen, as published
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(lrs)
    assert all(g["momentum"] == 5e-4 for g in opt.param_groups)  # the published momentum slot quirk
    from wseg.models.layout import published_prefixes

    prefixes = published_prefixes(net, net.new_layer_prefixes())
    assert set(prefixes) >= {"fc8.", "f8_3.", "f8_4.", "f9."} and ("fc_proj." in prefixes) == (name == "contrast")


def test_pcm_propagates_normalised_cam():
    net = build_cam_net("seam", "resnet38_tiny", num_classes=4).eval()
    cam = torch.rand(1, 4, 5, 6)
    onehot = one_hot_cam(cam)
    assert torch.allclose(onehot[:, 0], 1 - onehot[:, 1:].amax(1))
    assert ((onehot[:, 1:] > 0).sum(1) <= 1).all()
    last = one_hot_cam(cam.roll(-1, 1), background="last")    # EPS+PPC: background last
    assert torch.allclose(last, onehot.roll(-1, 1))
    mid, high = torch.rand(1, 32, 5, 6), torch.rand(1, 64, 5, 6)
    ones = torch.ones(1, 1, 5, 6)
    rv = net.pcm(ones, mid, high, torch.rand(1, 3, 40, 48))  # columns of the affinity sum to 1: a constant stays
    assert torch.allclose(rv, ones, atol=1e-3)


def test_unknown_names():
    with pytest.raises(WsegError, match="backbone vgg16"):
        build_cam_net("seam", "vgg16")
    with pytest.raises(WsegError, match="--network psa"):
        build_cam_net("psa", "resnet38_tiny")


def test_small_backbone_and_dropout_off():
    """``resnet38_small`` is the 1/8-width ResNet-38 (published names); ``dropout=False`` makes training-mode
    forwards deterministic, while the published net keeps its three Dropout2d layers active."""
    small = build_cam_net("contrast", "resnet38_small", num_classes=4, frozen=(), freeze_bn=False)
    assert small.backbone.feature_channels["conv6"] == 512 and small.backbone.conv1a.out_channels == 8
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    on = build_cam_net("seam", "resnet38_tiny", num_classes=4).train()
    ps = sorted(m.p for m in on.modules() if isinstance(m, nn.Dropout2d))
    assert ps == [0.3, 0.3, 0.5, 0.5, 0.5]
    assert not torch.equal(on(x)["cam"], on(x)["cam"])
    off = build_cam_net("seam", "resnet38_tiny", num_classes=4, dropout=False).train()
    assert all(m.p == 0 for m in off.modules() if isinstance(m, nn.Dropout2d))
    assert torch.equal(off(x)["cam"], off(x)["cam"])
    assert set(off.state_dict()) == set(on.state_dict())  # same checkpoint layout
