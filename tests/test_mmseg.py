"""mmsegmentation's DeepLabV3+ / PSPNet on ResNetV1c-D8 (issue #18): structure, key and parameter counts, an
independent step-by-step reference of mmseg's forward (F.conv2d on the state dict), mmseg checkpoints both ways, the
cross-entropy and PMM's PUS against references written here, mmseg's pipeline and test (sizes, slide windows, TTA),
the schedule, the configs, and a short train + resume + test run on the synthetic dataset.

References follow mmseg 1.2.2 (``mmseg/models/backbones/resnet.py``, ``decode_heads/{sep_aspp_head,aspp_head,
psp_head,fcn_head,decode_head}.py``, ``segmentors/encoder_decoder.py``, ``segmentors/base.py``) and mmcv 2.1.0
(``cnn/bricks/{conv_module,depthwise_separable_conv_module}.py``, ``image/geometric.py``); PUS follows
Eli-YiLi/WSSS_MMSeg ``mmseg/models/losses/cross_entropy_loss.py``. The end-to-end comparison with an mmseg 1.2.2
install is described in docs/segmentation_zoo.md.
"""
import importlib.util
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wseg.errors import WsegError
from wseg.models.segmentors import MMSegEncoderDecoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "segmentation", "configs")
SMALL = dict(base_channels=16, layers=(2, 1, 2, 2))   # two blocks where dilation contracts: both paths run


def _script(name):
    mod_name = f"wseg_test_mmseg_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, os.path.join(REPO, "segmentation", name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[mod_name]


def load_config(path, *argv):
    from wseg.segmentation.config import config_from_args

    return config_from_args(_script("train").build_parser().parse_args(["--config", path, *argv]))


def randomise(net, seed=0):
    """Random weights and non-trivial BN statistics (so eval-mode BN is not the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return net


# ------------------------------------------------------------------ the reference (mmseg, step by step)


def _conv(sd, p, x, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x, sd[p + ".weight"], sd.get(p + ".bias"), stride, padding, dilation, groups)


def _bn(sd, p, x):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        False, 0.0, 1e-5)


def _cm(sd, p, x, **kw):
    """mmcv ConvModule: conv (no bias) -> bn -> ReLU."""
    return F.relu(_bn(sd, p + ".bn", _conv(sd, p + ".conv", x, **kw)))


def _up(x, size):
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def ref_resnet_v1c(sd, x, layers, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)):
    """ResNetV1c: deep stem (3x3/2 32, 3x3 32, 3x3 64, BN-ReLU each), max-pool 3/2/1, pytorch-style bottlenecks
    (stride on conv2, padding = dilation, contract_dilation: first block of a dilated stage at dilation // 2)."""
    p = "backbone.stem."
    x = F.relu(_bn(sd, p + "1", _conv(sd, p + "0", x, stride=2, padding=1)))
    x = F.relu(_bn(sd, p + "4", _conv(sd, p + "3", x, padding=1)))
    x = F.relu(_bn(sd, p + "7", _conv(sd, p + "6", x, padding=1)))
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    for i, n in enumerate(layers):
        for j in range(n):
            p = f"backbone.layer{i + 1}.{j}."
            s = strides[i] if j == 0 else 1
            d = dilations[i] // 2 if (j == 0 and dilations[i] > 1) else dilations[i]
            out = F.relu(_bn(sd, p + "bn1", _conv(sd, p + "conv1", x)))
            out = F.relu(_bn(sd, p + "bn2", _conv(sd, p + "conv2", out, stride=s, padding=d, dilation=d)))
            out = _bn(sd, p + "bn3", _conv(sd, p + "conv3", out))
            identity = (_bn(sd, p + "downsample.1", _conv(sd, p + "downsample.0", x, stride=s))
                        if p + "downsample.0.weight" in sd else x)
            x = F.relu(out + identity)
        outs.append(x)
    return outs


def ref_dlv3plus_head(sd, feats, dilations=(1, 12, 24, 36)):
    """DepthwiseSeparableASPPHead.forward (sep_aspp_head.py)."""
    p, x = "decode_head.", feats[3]
    outs = [_up(_cm(sd, p + "image_pool.1", F.adaptive_avg_pool2d(x, 1)), x.shape[2:]),
            _cm(sd, p + "aspp_modules.0", x)]
    for k, d in enumerate(dilations[1:], start=1):
        y = _cm(sd, f"{p}aspp_modules.{k}.depthwise_conv", x, padding=d, dilation=d, groups=x.shape[1])
        outs.append(_cm(sd, f"{p}aspp_modules.{k}.pointwise_conv", y))
    out = _cm(sd, p + "bottleneck", torch.cat(outs, 1), padding=1)
    c1 = _cm(sd, p + "c1_bottleneck", feats[0])
    out = torch.cat([_up(out, c1.shape[2:]), c1], 1)
    for k in range(2):
        out = _cm(sd, f"{p}sep_bottleneck.{k}.depthwise_conv", out, padding=1, groups=out.shape[1])
        out = _cm(sd, f"{p}sep_bottleneck.{k}.pointwise_conv", out)
    return _conv(sd, p + "conv_seg", out)


def ref_psp_head(sd, feats, scales=(1, 2, 3, 6)):
    """PSPHead.forward (psp_head.py): PPM branches upsampled, concat with the input, bottleneck 3x3, conv_seg."""
    p, x = "decode_head.", feats[3]
    outs = [x] + [_up(_cm(sd, f"{p}psp_modules.{k}.1", F.adaptive_avg_pool2d(x, s)), x.shape[2:])
                  for k, s in enumerate(scales)]
    return _conv(sd, p + "conv_seg", _cm(sd, p + "bottleneck", torch.cat(outs, 1), padding=1))


def ref_fcn_head(sd, feats):
    """FCNHead(num_convs=1, concat_input=False) on level 2."""
    return _conv(sd, "auxiliary_head.conv_seg", _cm(sd, "auxiliary_head.convs.0", feats[2], padding=1))


def _small(decoder, **kw):
    torch.manual_seed(0)
    return randomise(MMSegEncoderDecoder(decoder, num_classes=5, **{**SMALL, **kw})).eval()


# ------------------------------------------------------------------ structure and counts


def test_backbone_is_resnet_v1c_d8():
    with torch.device("meta"):
        net = MMSegEncoderDecoder("deeplabv3plus", depth=50, num_classes=21)
    bb = net.backbone
    sd = net.state_dict()
    assert [tuple(sd[f"backbone.stem.{i}.weight"].shape) for i in (0, 3, 6)] == [(32, 3, 3, 3), (32, 32, 3, 3),
                                                                                 (64, 32, 3, 3)]
    assert [k for k in sd if k.startswith("backbone.stem.")][:6] == [
        "backbone.stem.0.weight", "backbone.stem.1.weight", "backbone.stem.1.bias", "backbone.stem.1.running_mean",
        "backbone.stem.1.running_var", "backbone.stem.1.num_batches_tracked"]
    assert bb.stem[0].stride == (2, 2) and bb.maxpool.kernel_size == 3
    assert [bb.feature_strides[n] for n in bb.levels] == [4, 8, 8, 8]
    assert [bb.feature_channels[n] for n in bb.levels] == [256, 512, 1024, 2048]
    # stride on the 3x3 conv2; padding = dilation; contract dilation; 1x1 downsample with the stage's stride
    assert bb.layer2[0].conv2.stride == (2, 2) and bb.layer2[0].conv1.stride == (1, 1)
    assert [b.conv2.dilation[0] for b in bb.layer3] == [1] + [2] * 5
    assert [b.conv2.dilation[0] for b in bb.layer4] == [2, 4, 4]
    assert all(b.conv2.padding == b.conv2.dilation for layer in (bb.layer3, bb.layer4) for b in layer)
    assert [getattr(bb, f"layer{i}")[0].downsample[0].stride[0] for i in (1, 2, 3, 4)] == [1, 2, 1, 1]
    assert len(bb.layer3) == 6 and all(p.requires_grad for p in bb.parameters())   # trainable BN (norm_eval off)


@pytest.mark.parametrize("decoder,depth,keys,params", [
    ("deeplabv3plus", 50, 424, 43.59), ("deeplabv3plus", 101, 730, 62.58),
    ("pspnet", 50, 370, 48.98), ("pspnet", 101, 676, 67.97)])
def test_key_and_parameter_counts_equal_mmseg(decoder, depth, keys, params):
    with torch.device("meta"):
        net = MMSegEncoderDecoder(decoder, depth=depth, num_classes=21)
    sd = net.state_dict()
    assert len(sd) == keys
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 2) == params
    assert round(sum(p.numel() for p in net.auxiliary_head.parameters()) / 1e6, 2) == 2.37
    assert round(sum(p.numel() for p in net.backbone.parameters()) / 1e6, 2) == (23.53 if depth == 50 else 42.52)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["auxiliary_head.convs.0.conv.weight"] == (256, 1024, 3, 3)
    assert shapes["auxiliary_head.conv_seg.weight"] == (21, 256, 1, 1)
    assert shapes["auxiliary_head.conv_seg.bias"] == (21,)
    assert shapes["decode_head.conv_seg.weight"] == (21, 512, 1, 1)
    assert list(sd)[-1] == "auxiliary_head.convs.0.bn.num_batches_tracked"
    if decoder == "deeplabv3plus":
        assert shapes["decode_head.image_pool.1.conv.weight"] == (512, 2048, 1, 1)
        assert shapes["decode_head.aspp_modules.0.conv.weight"] == (512, 2048, 1, 1)
        assert shapes["decode_head.aspp_modules.2.depthwise_conv.conv.weight"] == (2048, 1, 3, 3)
        assert shapes["decode_head.aspp_modules.3.pointwise_conv.conv.weight"] == (512, 2048, 1, 1)
        assert shapes["decode_head.bottleneck.conv.weight"] == (512, 2560, 3, 3)
        assert shapes["decode_head.c1_bottleneck.conv.weight"] == (48, 256, 1, 1)
        assert shapes["decode_head.sep_bottleneck.0.depthwise_conv.conv.weight"] == (560, 1, 3, 3)
        assert shapes["decode_head.sep_bottleneck.0.pointwise_conv.conv.weight"] == (512, 560, 1, 1)
        assert shapes["decode_head.sep_bottleneck.1.pointwise_conv.conv.weight"] == (512, 512, 1, 1)
        assert net.decode_head.aspp_modules[1].depthwise_conv.conv.dilation == (12, 12)
        assert net.decode_head.dropout.p == 0.1 and isinstance(net.decode_head.dropout, torch.nn.Dropout2d)
    else:
        assert [shapes[f"decode_head.psp_modules.{k}.1.conv.weight"] for k in range(4)] == [(512, 2048, 1, 1)] * 4
        assert shapes["decode_head.bottleneck.conv.weight"] == (512, 4096, 3, 3)
    assert not any(k.endswith("conv.bias") for k in sd if ".bn" not in k and "conv_seg" not in k)
    # mmseg's key order: BaseDecodeHead registers conv_seg first
    head_keys = [k for k in sd if k.startswith("decode_head.")]
    assert head_keys[:2] == ["decode_head.conv_seg.weight", "decode_head.conv_seg.bias"]


@pytest.mark.parametrize("decoder,stride", [("deeplabv3plus", 4), ("pspnet", 8)])
def test_shapes_and_strides_on_odd_inputs(decoder, stride):
    net = _small(decoder)
    x = torch.randn(2, 3, 45, 67)
    with torch.no_grad():
        feats = net.backbone(x)
        logits = net.forward_logits(x)
        assert [tuple(f.shape[-2:]) for f in feats.values()] == [(12, 17), (6, 9), (6, 9), (6, 9)]
        assert tuple(logits.shape) == ((2, 5, 12, 17) if stride == 4 else (2, 5, 6, 9))
        assert tuple(net(x)["out"].shape) == (2, 5, 45, 67) and "aux" not in net(x)
        net.train()
        out = net(x)
    assert tuple(out["aux"].shape) == (2, 5, 45, 67)


@pytest.mark.parametrize("decoder", ["deeplabv3plus", "pspnet"])
def test_forward_equals_reference(decoder):
    """Our forward = mmseg's computation written out with F.conv2d on the state dict (random weights, non-trivial
    BN statistics, odd-sized input), decode and auxiliary head, and mmseg's two-step resize of the test."""
    net = _small(decoder)
    sd = {k: v for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 45, 67, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = ref_resnet_v1c(sd, x, SMALL["layers"])
        ref = ref_dlv3plus_head(sd, feats) if decoder == "deeplabv3plus" else ref_psp_head(sd, feats)
        ours = net.forward_logits(x)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
        aux = net.aux_decode(net.backbone(x))
        torch.testing.assert_close(aux, ref_fcn_head(sd, feats), rtol=1e-4, atol=1e-4)
        # whole_inference + postprocess_result: to the (resized) input, then to the original size
        ref_out = _up(_up(ref, x.shape[2:]), (61, 90))
        from wseg.segmentation.predict import MMSegTest, mmseg_predict

        probs, pred = mmseg_predict(net, [x[0]], (61, 90), MMSegTest(), torch.device("cpu"))
        torch.testing.assert_close(probs, torch.softmax(ref_out[0], 0), rtol=1e-4, atol=1e-5)
        assert (pred == ref_out[0].argmax(0)).float().mean() > 0.999


# ------------------------------------------------------------------ checkpoints


def test_mmseg_checkpoint_round_trip(tmp_path):
    from wseg.data.classes import VOC12
    from wseg.segmentation.models import load_segmentation_weights, save_weights

    net = _small("deeplabv3plus", aux=True)
    path = str(tmp_path / "mm.pth")
    save_weights(path, net, net.architecture(), "mmseg", VOC12)
    obj = torch.load(path, weights_only=True)
    assert sorted(obj) == ["meta", "state_dict"]
    assert list(obj["state_dict"]) == list(net.state_dict())
    assert obj["meta"]["dataset_meta"]["classes"][:2] == ["background", "aeroplane"]
    assert len(obj["meta"]["dataset_meta"]["palette"]) == 21
    other = MMSegEncoderDecoder("deeplabv3plus", num_classes=5, **SMALL)
    load_segmentation_weights(other, path)
    for k, v in net.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    # a foreign mmseg file (no wseg metadata, extra training state) loads strictly too
    foreign = str(tmp_path / "foreign.pth")
    torch.save({"meta": {"mmseg_version": "1.2.2", "iter": 20000, "dataset_meta": {"classes": ("a", "b")}},
                "state_dict": dict(net.state_dict()), "optimizer": {"state": {}, "param_groups": []}}, foreign)
    load_segmentation_weights(MMSegEncoderDecoder("deeplabv3plus", num_classes=5, **SMALL), foreign)
    # mismatched keys are listed
    bad = dict(net.state_dict())
    bad.pop("decode_head.c1_bottleneck.conv.weight")
    bad["decode_head.extra.weight"] = torch.zeros(1)
    torch.save({"meta": {}, "state_dict": bad}, str(tmp_path / "bad.pth"))
    with pytest.raises(WsegError, match=r"1 missing \(decode_head.c1_bottleneck.conv.weight\); 1 unexpected "
                                        r"\(decode_head.extra.weight\)"):
        load_segmentation_weights(other, str(tmp_path / "bad.pth"))
    # PSPNet weights into DeepLabV3+: refused by the saved architecture
    psp = _small("pspnet")
    save_weights(str(tmp_path / "psp.pth"), psp, psp.architecture(), "mmseg", VOC12)
    with pytest.raises(WsegError, match="model='pspnet'"):
        load_segmentation_weights(other, str(tmp_path / "psp.pth"))


class _Unsafe:
    pass


def test_non_tensor_checkpoints_are_refused(tmp_path):
    from wseg.segmentation.models import load_segmentation_weights

    net = _small("pspnet")
    path = str(tmp_path / "obj.pth")
    torch.save({"meta": {"hook": _Unsafe()}, "state_dict": dict(net.state_dict())}, path)
    with pytest.raises(WsegError, match="refuses to unpickle.*weights_only=False"):
        load_segmentation_weights(net, path)


def test_imagenet_backbone_files(tmp_path):
    """open-mmlab://resnet50_v1c layout ({'state_dict'}: no backbone. prefix, fc.* present) and torchvision's."""
    from wseg.segmentation.models import load_backbone_weights

    net = _small("deeplabv3plus")
    src = randomise(MMSegEncoderDecoder("deeplabv3plus", num_classes=5, **SMALL), seed=3).backbone.state_dict()
    v1c = dict(src)
    v1c["fc.weight"], v1c["fc.bias"] = torch.zeros(10, 512), torch.zeros(10)
    torch.save({"meta": {}, "state_dict": v1c}, str(tmp_path / "v1c.pth"))
    load_backbone_weights(net, str(tmp_path / "v1c.pth"))
    assert torch.equal(net.backbone.state_dict()["stem.6.weight"], src["stem.6.weight"])
    tv = MMSegEncoderDecoder("pspnet", num_classes=5, stem="torchvision", **SMALL)
    torch.save({**tv.backbone.state_dict(), "fc.weight": torch.zeros(3, 512)}, str(tmp_path / "tv.pth"))
    with pytest.raises(WsegError, match="'torchvision' stem.*stem='v1c'"):
        load_backbone_weights(net, str(tmp_path / "tv.pth"))
    load_backbone_weights(tv, str(tmp_path / "tv.pth"))     # ResNetV1b (mmseg *_r50b-d8): torchvision's keys
    assert "backbone.conv1.weight" in tv.state_dict() and "backbone.bn1.running_var" in tv.state_dict()


# ------------------------------------------------------------------ losses


def ref_wsss_cross_entropy(pred, label, pus_type="", beta=0.5, k=0.5):
    """WSSS_MMSeg cross_entropy(): per-pixel CE, PUS when loss.mean() < beta, mean over every pixel."""
    loss = F.cross_entropy(pred, label, reduction="none", ignore_index=255)
    if pus_type != "" and loss.mean() < beta:
        if pus_type == "pow":
            loss = torch.pow(loss + 0.000000001, k)
        elif pus_type == "clamp":
            loss = torch.clamp(loss, 0, k)
        elif pus_type == "ignore":
            loss = loss * (loss <= k).float()
    return loss.mean()


def _loss_data(scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (4, 9, 11), generator=g)
    logits = F.one_hot(labels, 4).permute(0, 3, 1, 2).float() * scale + torch.randn(4, 4, 9, 11, generator=g)
    labels[:, :2] = 255
    return logits, labels


def test_mmseg_cross_entropy_semantics():
    from wseg.losses.segmentation import mmseg_cross_entropy

    logits, labels = _loss_data(1.0)
    per_pixel = F.cross_entropy(logits, labels, reduction="none", ignore_index=255)
    torch.testing.assert_close(mmseg_cross_entropy(logits, labels), per_pixel.sum() / labels.numel())
    n = (labels != 255).sum()
    torch.testing.assert_close(mmseg_cross_entropy(logits, labels, avg_non_ignore=True),
                               per_pixel.sum() / (n + torch.finfo(torch.float32).eps))
    torch.testing.assert_close(mmseg_cross_entropy(logits, labels, loss_weight=0.4), 0.4 * per_pixel.mean())
    assert mmseg_cross_entropy(logits, torch.full_like(labels, 255)) == 0   # all ignored: 0, no NaN


@pytest.mark.parametrize("pus_type", ["clamp", "pow", "ignore"])
@pytest.mark.parametrize("scale", [0.0, 6.0])   # a hard batch (no trigger) and an easy one (trigger)
def test_pus_equals_reference(pus_type, scale):
    from wseg.losses.segmentation import mmseg_cross_entropy

    logits, labels = _loss_data(scale)
    for beta, k in ((0.5, 0.5), (0.8, 0.8)):
        ref = ref_wsss_cross_entropy(logits, labels, pus_type, beta, k)
        torch.testing.assert_close(mmseg_cross_entropy(logits, labels, pus_type=pus_type, pus_beta=beta, pus_k=k),
                                   ref)
    plain = ref_wsss_cross_entropy(logits, labels)
    triggered = plain < 0.5
    assert triggered == (scale > 0)
    if triggered:   # the easy batch changes, and clamp stops the gradient of pixels above k
        x = logits.clone().requires_grad_(True)
        mmseg_cross_entropy(x, labels, pus_type="clamp", pus_beta=0.5, pus_k=0.05).backward()
        big = F.cross_entropy(logits, labels, reduction="none", ignore_index=255) > 0.05
        assert x.grad.permute(0, 2, 3, 1)[big].abs().max() == 0 and x.grad.abs().max() > 0


def test_pus_group_is_per_gpu_batch():
    """pus_group=2 on 4 images = two WSSS calls of 2 images each (PMM's 2 per GPU), averaged."""
    from wseg.losses.segmentation import mmseg_cross_entropy

    easy, lab_e = _loss_data(6.0)
    hard, lab_h = _loss_data(0.0, seed=1)
    logits, labels = torch.cat([easy[:2], hard[:2]]), torch.cat([lab_e[:2], lab_h[:2]])
    ref = 0.5 * (ref_wsss_cross_entropy(logits[:2], labels[:2], "clamp", 0.5, 0.05)
                 + ref_wsss_cross_entropy(logits[2:], labels[2:], "clamp", 0.5, 0.05))
    ours = mmseg_cross_entropy(logits, labels, pus_type="clamp", pus_beta=0.5, pus_k=0.05, pus_group=2)
    torch.testing.assert_close(ours, ref)
    assert not torch.allclose(mmseg_cross_entropy(logits, labels, pus_type="clamp", pus_beta=0.5, pus_k=0.05), ref)


# ------------------------------------------------------------------ pipeline and test


def test_mmcv_resize_sizes():
    from wseg.data.mmseg_transforms import rescale_size, test_views

    assert rescale_size(500, 333, (2048, 512)) == (769, 512)          # Resize(2048x512, keep_ratio)
    assert rescale_size(281, 375, (2048, 512)) == (512, 683)          # portrait: short side 512
    img = np.zeros((333, 500, 3), np.uint8)
    sizes = lambda views: [v.shape[:2] for v in views]                       # noqa: E731
    assert sizes(test_views(img, [1.0])) == [(512, 769)]
    # 0.x: the ratio scales the target (1024x256 -> short side 256); 1.x: the original image (short side 167)
    assert sizes(test_views(img, [0.5, 1.75], ratio_of="resized")) == [(256, 384), (896, 1345)]
    assert sizes(test_views(img, [0.5, 1.75], ratio_of="original")) == [(167, 250), (583, 875)]
    assert sizes(test_views(img, [1.0], resize=None)) == [(333, 500)]


def test_to_input_is_mmseg_preprocessor():
    from wseg.data.mmseg_transforms import to_input

    bgr = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    ref = (torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float() - mean) / std
    assert torch.equal(to_input(bgr), ref)


def test_train_transform_is_a_function_of_the_seed():
    from wseg.data.mmseg_transforms import MMSegTrainTransform

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (60, 80, 3)).astype(np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 20:60] = 2
    mask[:, :5] = 255
    t = MMSegTrainTransform(crop=48, img_scale=(160, 40), ratio_range=(0.5, 2.0))
    outs = []
    for seed in (5, 6, 5):
        t.reseed(seed)
        outs.append(t(img, mask))
    assert torch.equal(outs[0][0], outs[2][0]) and torch.equal(outs[0][1], outs[2][1])
    assert not torch.equal(outs[0][0], outs[1][0])
    for seed in range(20):
        t.reseed(seed)
        x, y = t(img, mask)
        assert x.shape == (3, 48, 48) and y.shape == (48, 48) and y.dtype == torch.int64
        assert set(torch.unique(y).tolist()) <= {0, 2, 255}
    # small images: bottom/right padding with 255 labels and black pixels (1.x) or zeros after normalising (0.x)
    small = MMSegTrainTransform(crop=48, img_scale=(40, 10), ratio_range=(1.0, 1.0), photometric=False, flip=0)
    small.reseed(0)
    x, y = small(img, mask)
    assert (y[30:] == 255).all() and (y[:, 40:] == 255).all()
    torch.testing.assert_close(x[:, 40, 40], -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225]))
    small.pad_before_normalize = False
    small.reseed(0)
    assert (small(img, mask)[0][:, 40:, 40:] == 0).all()


def test_random_crop_cat_max_ratio():
    """A window where one class covers >= 75 % of the labelled pixels is redrawn (up to 10 times)."""
    from wseg.data.mmseg_transforms import MMSegTrainTransform

    mask = np.zeros((100, 100), np.uint8)
    mask[:, 80:] = 1          # only windows touching the right fifth have two classes
    t = MMSegTrainTransform(crop=40, cat_max_ratio=0.75)
    ok = 0
    for seed in range(40):
        t.reseed(seed)
        y, x = t.crop_box(mask)
        _, counts = np.unique(mask[y:y + 40, x:x + 40], return_counts=True)
        ok += len(counts) > 1 and counts.max() / counts.sum() < 0.75
    assert ok >= 30           # without the check about 1 in 8 windows qualifies
    t.cat_max_ratio = 1.0     # no check: the first window
    t.reseed(0)
    rng = np.random.default_rng(0)
    assert t.crop_box(mask) == (int(rng.integers(0, 61)), int(rng.integers(0, 61)))


def ref_slide(fn, x, crop, stride, num_classes):
    """EncoderDecoder.slide_inference (mmseg 1.2.2 encoder_decoder.py), F.pad accumulation as written there."""
    b, _, h_img, w_img = x.shape
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    preds = x.new_zeros((b, num_classes, h_img, w_img))
    count = x.new_zeros((b, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * stride, w_idx * stride
            y2, x2 = min(y1 + crop, h_img), min(x1 + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            out = fn(x[:, :, y1:y2, x1:x2])
            preds += F.pad(out, (int(x1), int(w_img - x2), int(y1), int(h_img - y2)))
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


def test_slide_inference_equals_reference():
    from wseg.segmentation.predict import MMSegTest, mmseg_predict, slide_logits

    net = _small("pspnet")
    x = torch.randn(1, 3, 45, 67)
    with torch.no_grad():
        ref = ref_slide(lambda c: net(c)["out"], x, 32, 24, 5)
        torch.testing.assert_close(slide_logits(net, x, 32, 24), ref)
        torch.testing.assert_close(slide_logits(net, x, 80, 60), net(x)["out"])   # one window = whole
        probs, pred = mmseg_predict(net, [x[0]], (45, 67), MMSegTest(mode="slide", crop=32, stride=24))
    torch.testing.assert_close(probs, torch.softmax(ref[0], 0))


def test_tta_averages_softmaxes():
    from wseg.segmentation.predict import MMSegTest, mmseg_predict

    net = _small("deeplabv3plus")
    img = torch.randn(3, 45, 67)
    views = [img, F.interpolate(img[None], (34, 50), mode="bilinear", align_corners=False)[0]]
    with torch.no_grad():
        probs, pred = mmseg_predict(net, views, (45, 67), MMSegTest(scales=(1.0, 0.75), flip=True))
        expected = 0
        for v in views:
            for flip in (False, True):
                inp = v.flip(-1) if flip else v
                out = net(inp[None])["out"]
                out = out.flip(-1) if flip else out
                expected = expected + torch.softmax(_up(out, (45, 67)), 1)[0]
    torch.testing.assert_close(probs, expected / 4, rtol=1e-4, atol=1e-5)
    assert torch.equal(pred, probs.argmax(0))


# ------------------------------------------------------------------ schedule, configs


def test_schedule_and_param_groups():
    from wseg.engine.optim import PolyLR, build_optimizer

    net = _small("pspnet")
    groups = net.param_groups(0.01, 5e-4)
    assert len(groups) == 1 and len(groups[0]["params"]) == len(list(net.parameters()))
    opt = build_optimizer("sgd", groups, 0.01, 5e-4, 0.9)
    sched = PolyLR(20000, 0.9, min_lr=1e-4)
    assert sched.apply(opt, 0) == pytest.approx(0.01)
    assert sched.apply(opt, 10000) == pytest.approx((0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4)
    assert sched.apply(opt, 20000) == pytest.approx(1e-4)
    assert opt.param_groups[0]["weight_decay"] == 5e-4 and opt.param_groups[0]["momentum"] == 0.9


def test_configs():
    for depth in (50, 101):
        for iters in (20, 40):
            cfg = load_config(os.path.join(CONFIGS, f"deeplabv3plus_r{depth}-d8_512x512_{iters}k_voc12aug.py"))
            m = cfg.model
            assert (m["type"], m["backbone"], m["stem"], m["aspp_rates"], m["aux"]) == (
                "deeplabv3plus", f"resnet{depth}_v1c", "v1c", [1, 12, 24, 36], True)
            assert (cfg.lr, cfg.min_lr, cfg.momentum, cfg.weight_decay, cfg.power) == (0.01, 1e-4, 0.9, 5e-4, 0.9)
            assert (cfg.max_iters, cfg.val_every, cfg.batch_size) == (iters * 1000, iters * 100, 16)
            assert (cfg.crop_size, cfg.img_scale, cfg.scale_range, cfg.cat_max_ratio) == (512, [2048, 512],
                                                                                          [0.5, 2.0], 0.75)
            assert (cfg.data_pipeline, cfg.test_mode, cfg.test_scales, cfg.test_flip, cfg.crf) == (
                "mmseg", "whole", [1.0], False, False)
            assert cfg.aux_weight == 0.4 and not cfg.avg_non_ignore and cfg.pus_type == "" and cfg.sync_bn
        psp = load_config(os.path.join(CONFIGS, f"pspnet_r{depth}-d8_512x512_20k_voc12aug.py"))
        assert (psp.model["type"], psp.model["backbone"], psp.model["pool_scales"], psp.lr) == (
            "pspnet", f"resnet{depth}_v1c", [1, 2, 3, 6], 0.01)
        pus = load_config(os.path.join(CONFIGS, f"pspnet_r{depth}-d8_512x512_20k_voc12aug_pus.py"))
        assert (pus.model["type"], pus.model["backbone"], pus.lr, pus.min_lr, pus.max_iters) == (
            "pspnet", f"resnet{depth}_v1c", 0.005, 1e-4, 20000)
        assert (pus.pus_type, pus.pus_beta, pus.pus_k, pus.pus_group) == ("clamp", 0.5, 0.5, 2)
        assert (pus.test_mode, pus.test_crop, pus.test_stride, pus.test_flip, pus.crf, pus.tta_ratio_of) == (
            "slide", 512, 480, True, True, "resized")
        assert pus.test_scales == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and not pus.pad_before_normalize
    over = load_config(os.path.join(CONFIGS, "pspnet_r50-d8_512x512_20k_voc12aug.py"), "--set",
                       "tta_ratio_of=original", "save_format=mmseg", "model.base_channels=16")
    assert (over.tta_ratio_of, over.save_format, over.model["base_channels"]) == ("original", "mmseg", 16)
    from wseg.segmentation.checks import check_test_config

    with pytest.raises(WsegError, match="test_mode tiles: choose whole or slide"):
        check_test_config({**over, "voc12_root": "x", "test_mode": "tiles"})
    with pytest.raises(WsegError, match="data_pipeline deeplab with model.type pspnet"):
        check_test_config({**over, "voc12_root": "x", "data_pipeline": "deeplab"})


# ------------------------------------------------------------------ train, resume, test on the synthetic dataset


def _train_argv(toy_root, out, *extra):
    return ["--config", os.path.join(CONFIGS, "demo_deeplabv3plus_tiny.py"), "--voc12_root", toy_root,
            "--out_dir", out, "--progress", "False", "--set", "max_iters=4", "ckpt_every=2", "val_every=4",
            "crop_size=48", "batch_size=4", "img_scale=[128,32]", "log_every=2", "pus_type=clamp", "pus_beta=5",
            "pus_k=1.5", "save_format=mmseg", *extra]


def test_train_resume_and_test(toy_root, tmp_path):
    from wseg.segmentation import train
    from wseg.segmentation.config import config_from_args

    parser = _script("train").build_parser()
    full = train(config_from_args(parser.parse_args(_train_argv(toy_root, str(tmp_path / "a")))), progress=False)
    assert full["finished"] and np.isfinite(full["val_miou"])
    assert set(full["last_losses"]) == {"loss", "decode", "aux"}
    obj = torch.load(full["weights"], weights_only=True)          # mmseg layout
    assert sorted(obj) == ["meta", "state_dict"] and "decode_head.c1_bottleneck.conv.weight" in obj["state_dict"]
    # stop at 2, resume to 4: the same weights as the uninterrupted run
    part = train(config_from_args(parser.parse_args(_train_argv(toy_root, str(tmp_path / "b"), "stop_iter=2"))),
                 progress=False)
    assert not part["finished"]
    resumed = train(config_from_args(parser.parse_args(_train_argv(toy_root, str(tmp_path / "b")))), progress=False)
    assert resumed["trained_iters"] == 2
    a, b = obj["state_dict"], torch.load(resumed["weights"], weights_only=True)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    # the test script: mmseg's single-scale test and a slide + TTA test
    test = _script("test")
    for sets in (["test_scales=[1.0]", "test_flip=False"],
                 ["test_mode=slide", "test_crop=40", "test_stride=30", "test_scales=[0.75,1.0]", "test_flip=True"]):
        pred = str(tmp_path / ("pred_" + sets[0].split("=")[0]))
        res = test.run(test.build_parser().parse_args([
            "--config", os.path.join(CONFIGS, "demo_deeplabv3plus_tiny.py"), "--voc12_root", toy_root,
            "--ckpt", full["weights"], "--out_dir", str(tmp_path / "t"), "--progress", "False", "--set",
            "img_scale=[128,32]", "crf=False", f"pred_dir={pred}", *sets]))
        assert res["predicted"] == 4 and 0 <= res["miou"] <= 100
        assert len(os.listdir(pred)) == 4
