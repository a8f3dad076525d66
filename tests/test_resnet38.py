"""ResNet-38 backbone: published names/shapes, output stride 8, frozen parts, reduced-width round trip."""
import pytest
import torch
from torch import nn

from wseg.models.backbones.resnet38 import ResNet38, resnet38, resnet38_tiny

# Published resnet38d.Net, written out: (block, in, mid, out, has conv_branch1). b6/b7 are bottlenecks.
TABLE = [
    ("b2", 64, 128, 128, True), ("b2_1", 128, 128, 128, False), ("b2_2", 128, 128, 128, False),
    ("b3", 128, 256, 256, True), ("b3_1", 256, 256, 256, False), ("b3_2", 256, 256, 256, False),
    ("b4", 256, 512, 512, True), ("b4_1", 512, 512, 512, False), ("b4_2", 512, 512, 512, False),
    ("b4_3", 512, 512, 512, False), ("b4_4", 512, 512, 512, False), ("b4_5", 512, 512, 512, False),
    ("b5", 512, 512, 1024, True), ("b5_1", 1024, 512, 1024, False), ("b5_2", 1024, 512, 1024, False),
]
BOTTLENECKS = [("b6", 1024, 2048), ("b7", 2048, 4096)]




def _bn(name, c):
    return {f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,),
            f"{name}.running_var": (c,), f"{name}.num_batches_tracked": ()}


def published_shapes():
    exp = {"conv1a.weight": (64, 3, 3, 3)}
    for b, cin, mid, cout, proj in TABLE:
        exp.update(_bn(f"{b}.bn_branch2a", cin))
        exp[f"{b}.conv_branch2a.weight"] = (mid, cin, 3, 3)
        exp.update(_bn(f"{b}.bn_branch2b1", mid))
        exp[f"{b}.conv_branch2b1.weight"] = (cout, mid, 3, 3)
        if proj:
            exp[f"{b}.conv_branch1.weight"] = (cout, cin, 1, 1)
    for b, cin, cout in BOTTLENECKS:
        exp.update(_bn(f"{b}.bn_branch2a", cin))
        exp[f"{b}.conv_branch2a.weight"] = (cout // 4, cin, 1, 1)
        exp.update(_bn(f"{b}.bn_branch2b1", cout // 4))
        exp[f"{b}.conv_branch2b1.weight"] = (cout // 2, cout // 4, 3, 3)
        exp.update(_bn(f"{b}.bn_branch2b2", cout // 2))
        exp[f"{b}.conv_branch2b2.weight"] = (cout, cout // 2, 1, 1)
        exp[f"{b}.conv_branch1.weight"] = (cout, cin, 1, 1)
    exp.update(_bn("bn7", 4096))
    return exp


def test_published_names_and_shapes():
    with torch.device("meta"):
        net = resnet38()
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    exp = published_shapes()
    assert sorted(got) == sorted(exp)
    assert got == exp
    # dilations / strides / dropout as published
    assert net.b5.conv_branch2a.dilation == (1, 1) and net.b5.conv_branch2b1.dilation == (2, 2)
    assert net.b5_1.conv_branch2a.dilation == (2, 2)
    assert net.b6.conv_branch2b1.dilation == (4, 4) and net.b7.conv_branch2b1.dilation == (4, 4)
    assert [net.b2.conv_branch2a.stride, net.b3.conv_branch2a.stride, net.b4.conv_branch2a.stride] == [(2, 2)] * 3
    assert net.b6.dropout_2b1.p == 0.3 and net.b6.dropout_2b2.p == 0.3
    assert net.b7.dropout_2b1.p == 0.5 and isinstance(net.b7.dropout_2b2, nn.Dropout2d)


def test_features_output_stride_8():
    net = resnet38_tiny().eval()
    with torch.no_grad():
        d = net(torch.randn(2, 3, 64, 48))
    ch = net.feature_channels
    assert d["conv3"].shape == (2, ch["conv3"], 16, 12)
    for k in ("conv4", "conv5", "conv6"):
        assert d[k].shape == (2, ch[k], 8, 6)
    assert (d["conv6"] >= 0).all()
    assert net(torch.randn(1, 3, 65, 65))["conv6"].shape[-2:] == (9, 9)  # ceil(65 / 8) like the published padding


def test_frozen_parts_and_bn_eval():
    net = ResNet38(width=1 / 16)  # psa base: conv1a fixed
    assert not net.conv1a.weight.requires_grad
    assert net.b2.conv_branch2a.weight.requires_grad
    net = ResNet38(width=1 / 16, frozen=("conv1a", "b2", "b2_1", "b2_2"))
    net.train()
    for name in ("conv1a", "b2", "b2_1", "b2_2"):
        assert all(not p.requires_grad for p in getattr(net, name).parameters())
    assert net.b3.conv_branch2a.weight.requires_grad
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training and not m.weight.requires_grad and not m.bias.requires_grad for m in bns)
    assert net.b6.dropout_2b1.training  # dropout still trains
    before = net.b4.bn_branch2a.running_mean.clone()
    net(torch.randn(2, 3, 32, 32))
    assert torch.equal(before, net.b4.bn_branch2a.running_mean)


def test_reduced_width_round_trip():
    torch.manual_seed(0)
    a = resnet38_tiny().eval()
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    b = resnet38_tiny().eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert all(torch.equal(a(x)[k], b(x)[k]) for k in a.levels)
    assert set(a.state_dict()) == set(published_shapes())
    assert a.feature_channels == {"conv3": 16, "conv4": 32, "conv5": 64, "conv6": 256}


@pytest.mark.parametrize("width", [0.125, 0.25])
def test_width_scales_every_channel(width):
    with torch.device("meta"):
        net = ResNet38(width=width)
    full = published_shapes()
    for k, v in net.state_dict().items():
        if v.ndim == 4:
            cin = 3 if k == "conv1a.weight" else full[k][1] * width
            assert v.shape[0] == full[k][0] * width and v.shape[1] == cin
