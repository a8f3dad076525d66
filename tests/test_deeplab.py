"""DeepLab v1 / v2 networks: output shape and stride, the published state-dict layout, parameter groups, BN
handling, weight loading, and that a few SGD iterations lower the loss."""

import pytest
import torch
import torchvision
from torch import nn

from wseg.errors import WsegError
from wseg.models.checkpoint import load_state_dict_strict
from wseg.engine.optim import PolyLR, build_optimizer, published_groups
from wseg.losses.segmentation import seg_loss
from wseg.models.deeplab import build_deeplab
from wseg.segmentation import load_backbone_weights, load_segmentation_weights


def make_optimizer(net, lr, momentum, weight_decay):
    """The published DeepLab SGD (groups x1/x2/x10/x20 as multipliers of the poly lr)."""
    return build_optimizer("sgd", published_groups(net.get_parameter_groups(), lr, weight_decay, split_mult=True), lr,
                           weight_decay, momentum)


def set_poly_lr(opt, base, itr, max_iters):
    """The published ``adjust_lr``: poly over ``max_iters + 1``."""
    return PolyLR(max_iters + 1).apply(opt, itr)

TINY = [("deeplabv1", "resnet38_tiny", {}), ("deeplabv1", "resnet_tiny", {}), ("deeplabv2", "resnet_tiny", {}),
        ("deeplabv2", "resnet_tiny", {"deep_base": True})]


@pytest.mark.parametrize("model,backbone,kw", TINY)
def test_output_shape_and_stride(model, backbone, kw):
    net = build_deeplab(model, backbone, num_classes=5, head_dim=16, **kw).eval()
    assert net.backbone.output_stride == 8
    with torch.no_grad():
        for h, w in ((64, 48), (65, 47)):
            x = torch.randn(2, 3, h, w)
            assert net(x)["out"].shape == (2, 5, h, w)                 # logits upsampled to the input
            assert net.forward_logits(x).shape == (2, 5, -(-h // 8), -(-w // 8))  # stride 8 (ceil)


# ------------------------------------------------------------------ published layout, written from the published
# modules' definitions (usr922/wseg segmentation/lib/net/{deeplabv1,deeplabv2}.py, operators/ASPP.py,
# backbone/resnet38d.py, backbone/resnet.py with deep_base=True)

def _bn(prefix, c):
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | \
        {f"{prefix}.num_batches_tracked": ()}


def published_resnet38():
    sd = {"backbone.conv1a.weight": (64, 3, 3, 3)}
    blocks = [("b2", 64, 128, 128, 2), ("b2_1", 128, 128, 128, 1), ("b2_2", 128, 128, 128, 1),
              ("b3", 128, 256, 256, 2), ("b3_1", 256, 256, 256, 1), ("b3_2", 256, 256, 256, 1),
              ("b4", 256, 512, 512, 2)] + [(f"b4_{i}", 512, 512, 512, 1) for i in range(1, 6)] + \
        [("b5", 512, 512, 1024, 1), ("b5_1", 1024, 512, 1024, 1), ("b5_2", 1024, 512, 1024, 1)]
    for name, cin, mid, cout, stride in blocks:                       # ResBlock
        p = f"backbone.{name}"
        sd |= _bn(f"{p}.bn_branch2a", cin)
        sd[f"{p}.conv_branch2a.weight"] = (mid, cin, 3, 3)
        sd |= _bn(f"{p}.bn_branch2b1", mid)
        sd[f"{p}.conv_branch2b1.weight"] = (cout, mid, 3, 3)
        if cin != cout or stride != 1:
            sd[f"{p}.conv_branch1.weight"] = (cout, cin, 1, 1)
    for name, cin, cout in (("b6", 1024, 2048), ("b7", 2048, 4096)):  # ResBlock_bot
        p = f"backbone.{name}"
        sd |= _bn(f"{p}.bn_branch2a", cin)
        sd[f"{p}.conv_branch2a.weight"] = (cout // 4, cin, 1, 1)
        sd |= _bn(f"{p}.bn_branch2b1", cout // 4)
        sd[f"{p}.conv_branch2b1.weight"] = (cout // 2, cout // 4, 3, 3)
        sd |= _bn(f"{p}.bn_branch2b2", cout // 2)
        sd[f"{p}.conv_branch2b2.weight"] = (cout, cout // 2, 1, 1)
        sd[f"{p}.conv_branch1.weight"] = (cout, cin, 1, 1)
    return sd | _bn("backbone.bn7", 4096)


def published_resnet101_deep_base():
    sd = {"backbone.conv1.0.weight": (64, 3, 3, 3), "backbone.conv1.3.weight": (64, 64, 3, 3),
          "backbone.conv1.6.weight": (128, 64, 3, 3)}
    sd |= _bn("backbone.conv1.1", 64) | _bn("backbone.conv1.4", 64) | _bn("backbone.bn1", 128)
    inplanes = 128
    for li, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 23, 3)), start=1):
        for b in range(blocks):
            p = f"backbone.layer{li}.{b}"
            sd[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            sd[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            sd[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            sd |= _bn(f"{p}.bn1", planes) | _bn(f"{p}.bn2", planes) | _bn(f"{p}.bn3", planes * 4)
            if b == 0:
                sd[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                sd |= _bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    return sd


def published_v1_head(cin, classes=21):
    return ({"conv_fov.weight": (512, cin, 3, 3), "conv_fov2.weight": (512, 512, 1, 1),
             "cls_conv.weight": (classes, 512, 1, 1), "cls_conv.bias": (classes,)}
            | _bn("bn_fov", 512) | _bn("bn_fov2", 512))


def published_v2_head(cin, classes=21, dim=256):
    sd = {f"aspp.branch{i}.0.weight": (dim, cin, 3, 3) for i in range(1, 5)}
    for i in range(1, 5):
        sd |= _bn(f"aspp.branch{i}.1", dim)
    sd |= {"aspp.branch5_conv.weight": (dim, cin, 1, 1), "aspp.conv_cat.0.weight": (dim, dim * 5, 1, 1),
           "cls_conv.weight": (classes, dim, 1, 1), "cls_conv.bias": (classes,)}
    return sd | _bn("aspp.branch5_bn", dim) | _bn("aspp.conv_cat.1", dim)


@pytest.mark.parametrize("model,backbone,expected", [
    ("deeplabv1", "resnet38", lambda: published_resnet38() | published_v1_head(4096)),
    ("deeplabv1", "resnet101", lambda: published_resnet101_deep_base() | published_v1_head(2048)),
    ("deeplabv2", "resnet101", lambda: published_resnet101_deep_base() | published_v2_head(2048)),
])
def test_published_state_dict_loads(model, backbone, expected):
    shapes = expected()
    with torch.device("meta"):
        net = build_deeplab(model, backbone, 21, deep_base=backbone == "resnet101")
        state = {k: torch.empty(s) for k, s in shapes.items()}
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert own == shapes                      # same names and shapes, nothing missing or extra
    assert load_state_dict_strict(net, state, "published.pth") == []


def test_torchvision_resnet101_weights_fit_backbone():
    with torch.device("meta"):
        net = build_deeplab("deeplabv2", "resnet101", 21)
        tv = torchvision.models.resnet101(weights=None).state_dict()
    load_state_dict_strict(net.backbone, tv, "resnet101-5d3b4d8f.pth", ignore_unexpected=("fc.",))


def test_fov_dilation_is_kept_with_the_weights(tmp_path):
    """LargeFOV's dilation (published 12) is a model key; weights trained with another one are refused."""
    from wseg.segmentation.models import build_model, save_weights

    cfg = {"model": {"type": "deeplabv1", "backbone": "resnet_tiny", "head_dim": 8, "bn_momentum": 0.1,
                     "fov_dilation": 3}}
    net = build_model(cfg, 4, weights=False)
    assert net.decode_head.conv_fov.dilation == (3, 3) and net.decode_head.conv_fov.padding == (3, 3)
    assert build_deeplab("deeplabv1", "resnet_tiny", 4, head_dim=8).decode_head.conv_fov.dilation == (12, 12)
    path = str(tmp_path / "fov3.pth")
    save_weights(path, net, net.architecture())
    load_segmentation_weights(build_model(cfg, 4, weights=False), path)
    other = build_model({"model": dict(cfg["model"], fov_dilation=12)}, 4, weights=False)
    with pytest.raises(WsegError, match="fov_dilation=3 network"):
        load_segmentation_weights(other, path)
    with pytest.raises(WsegError, match="fov_dilation 0"):
        build_deeplab("deeplabv1", "resnet_tiny", 4, head_dim=8, fov_dilation=0)


def test_weight_files_round_trip(tmp_path):
    torch.manual_seed(0)
    src = build_deeplab("deeplabv2", "resnet_tiny", 4, head_dim=8, deep_base=True)
    path = str(tmp_path / "published.pth")
    torch.save(src.state_dict(), path)  # a plain published-style state dict
    dst = build_deeplab("deeplabv2", "resnet_tiny", 4, head_dim=8, deep_base=True)
    load_segmentation_weights(dst, path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    with pytest.raises(WsegError, match="'resnet101s' stem.*stem='torchvision'"):
        load_segmentation_weights(build_deeplab("deeplabv2", "resnet_tiny", 4, head_dim=8), path)
    # ImageNet backbone weights: torchvision layout (fc.* ignored), not into a deep-base network
    bb = str(tmp_path / "resnet_tiny.pth")
    sd = build_deeplab("deeplabv1", "resnet_tiny", 4, head_dim=8).backbone.state_dict()
    torch.save({**sd, "fc.weight": torch.zeros(10, 2048), "fc.bias": torch.zeros(10)}, bb)
    net = build_deeplab("deeplabv1", "resnet_tiny", 4, head_dim=8)
    load_backbone_weights(net, bb)
    assert torch.equal(net.backbone.conv1.weight, sd["conv1.weight"])
    with pytest.raises(WsegError, match="'torchvision' stem.*stem='resnet101s'"):
        load_backbone_weights(build_deeplab("deeplabv1", "resnet_tiny", 4, head_dim=8, deep_base=True), bb)
    # a trained CAM network (SEAM/PPC) of the same backbone: its heads are dropped
    from wseg.methods import build_cam_net

    cam = build_cam_net("contrast", "resnet38_tiny", num_classes=4)
    cam_path = str(tmp_path / "cam.pth")
    torch.save(cam.state_dict(), cam_path)
    net = build_deeplab("deeplabv1", "resnet38_tiny", 4, head_dim=8)
    load_backbone_weights(net, cam_path)
    assert torch.equal(net.backbone.b7.conv_branch2b2.weight, cam.backbone.b7.conv_branch2b2.weight)


def test_parameter_groups_and_bn():
    v1 = build_deeplab("deeplabv1", "resnet38_tiny", 5, head_dim=16)
    g = v1.get_parameter_groups()
    head = v1.decode_head
    assert [id(p) for p in g[2]] == [id(head.conv_fov.weight), id(head.conv_fov2.weight), id(head.cls_conv.weight)]
    assert [id(p) for p in g[3]] == [id(head.cls_conv.bias)] and g[1] == []
    convs = [m for m in v1.modules() if isinstance(m, nn.Conv2d)]
    assert len(g[0]) == len(convs) - 3 - 1                     # every backbone conv but the frozen conv1a
    assert not v1.backbone.conv1a.weight.requires_grad
    bn_params = {id(p) for m in v1.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert not bn_params & {id(p) for grp in g for p in grp}   # published: BN scale/shift never optimised
    v1.train()
    assert not v1.backbone.bn7.training and head.bn_fov.training  # ResNet-38 BN frozen, head BN trains
    assert head.bn_fov.momentum == pytest.approx(0.0003)

    v2 = build_deeplab("deeplabv2", "resnet_tiny", 5, head_dim=16).train()
    g = v2.get_parameter_groups()
    aspp_convs = [m.weight for m in v2.decode_head.aspp.modules() if isinstance(m, nn.Conv2d)]
    assert len(g[2]) == 1 + len(aspp_convs) and len(g[3]) == 1
    assert v2.backbone.bn1.training and v2.backbone.conv1.weight.requires_grad  # published ResNet: nothing frozen

    opt = make_optimizer(v2, 0.001, 0.9, 5e-4)
    assert [grp["lr_mult"] for grp in opt.param_groups] == [1, 10, 20]  # empty bias group left out
    assert [grp["weight_decay"] for grp in opt.param_groups] == [5e-4, 5e-4, 0.0]
    assert set_poly_lr(opt, 0.001, 0, 100) == pytest.approx(0.001)
    now = set_poly_lr(opt, 0.001, 50, 100)
    assert now == pytest.approx(0.001 * (1 - 50 / 101) ** 0.9)
    assert [grp["lr"] for grp in opt.param_groups] == pytest.approx([now, 10 * now, 20 * now])


@pytest.mark.parametrize("model,backbone", [("deeplabv1", "resnet38_tiny"), ("deeplabv2", "resnet_tiny")])
def test_few_iterations_lower_the_loss(model, backbone):
    torch.manual_seed(0)
    net = build_deeplab(model, backbone, 3, head_dim=16, bn_momentum=0.1).train()
    x = torch.randn(4, 3, 32, 32)
    y = torch.zeros(4, 32, 32, dtype=torch.long)
    y[:, 8:24, 8:24] = 1
    y[:, :, :4] = 255                                         # ignored band
    y[2:, 20:, 20:] = 2
    opt = make_optimizer(net, 0.01, 0.9, 5e-4)
    losses = []
    for itr in range(8):
        set_poly_lr(opt, 0.01, itr, 8)
        torch.manual_seed(itr)
        loss = seg_loss(net(x)["out"], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    labels[0] = 255
    ref = torch.nn.CrossEntropyLoss(ignore_index=255)(logits, labels)
    assert torch.allclose(seg_loss(logits, labels), ref)      # the published loss
    assert seg_loss(logits, torch.full((2, 4, 4), 255)) == 0  # nothing labelled: 0, not NaN


def test_bad_arguments():
    with pytest.raises(WsegError, match="unknown segmentation network"):
        build_deeplab("deeplabv3", "resnet_tiny", 3)
    with pytest.raises(WsegError, match="unknown"):
        build_deeplab("deeplabv1", "vgg16", 3)
    with pytest.raises(WsegError, match="stem"):
        build_deeplab("deeplabv1", "resnet38_tiny", 3, deep_base=True)
    with pytest.raises(WsegError, match="four branches"):
        build_deeplab("deeplabv2", "resnet_tiny", 3, aspp_rates=(6, 12))
