"""RS+EPM network, seeds and pseudo masks (wseg/models/rsepm.py, wseg/rsepm.py, the two stages) against an
independent step-by-step re-statement of the released code (OFRIN/RecurSeed_and_EdgePredictMix HEAD df538e2:
core/backbones/resnet/model.py + __init__.py, core/layers.py, core/networks.py RSEPM + forward_with_scales,
infer_rsepm.py main, convert_seed_to_pseudo_masks.py postprocess, core/refinements/densecrf.py, evaluate.py +
tools/ai/evaluators.py Evaluator_For_CAM / _For_Semantic_Segmentation), with its quirks: truncated scale sizes,
nearest-resized logits (twice), the first scale fixing the averaged size, conf_th == -1 exactly meaning labels, the
float32 -> float64 de-normalised CRF image, keys[argmax]. Random published-named weights with non-trivial BatchNorm
statistics, odd image sizes, a reduced ResNet (one class of checks uses the full ResNet-50 layout)."""
import os
import pickle
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from wseg import rsepm
from wseg.cli import main, stage_parser
from wseg.errors import WsegError
from wseg.io import load_mask_png, save_mask_png
from wseg.models.checkpoint import load_state_dict_strict
from wseg.models.rsepm import RSEPMNet, build_rsepm, save_rsepm
from wseg.stages import eval as eval_stage
from wseg.stages import rsepm_infer, rsepm_pseudo

TINY_LAYERS, TINY_BASE, TINY_FEAT = (1, 1, 2, 2), 8, 16


# ============================================================================ the released code, re-stated

class RefBottleneck(nn.Module):
    """model.py Bottleneck: 1x1, 3x3 (stride, padding = dilation), 1x1 x4, three ReLU modules."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=dilation, bias=False,
                               dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu3(out)


class RefResNet(nn.Module):
    """model.py ResNet: conv1 stride strides[0], maxpool, layer1 stride 1, layer2..4 strides[1..3]; the first block
    of a layer always has dilation 1; returns [C1 (maxpool), C2, C3, C4, C5]. ``base`` = 64 released."""

    def __init__(self, layers, strides, dilations, base=64):
        super().__init__()
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=strides[0], padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(base, layers[0], stride=1, dilation=dilations[0])
        self.layer2 = self._make_layer(base * 2, layers[1], stride=strides[1], dilation=dilations[1])
        self.layer3 = self._make_layer(base * 4, layers[2], stride=strides[2], dilation=dilations[2])
        self.layer4 = self._make_layer(base * 8, layers[3], stride=strides[3], dilation=dilations[3])

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [RefBottleneck(self.inplanes, planes, stride, downsample, dilation=1)]
        self.inplanes = planes * 4
        for _ in range(1, blocks):
            layers.append(RefBottleneck(self.inplanes, planes, dilation=dilation))
        return nn.Sequential(*layers)

    def forward(self, x):
        xs = []
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        xs.append(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            xs.append(x)
        return xs


def ref_build_resnet(layers, output_stride, base, last_stride=1):
    """backbones/resnet/__init__.py build_resnet."""
    if output_stride == 16:
        strides, dilations = (2, 2, 2, last_stride), (1, 1, 1, 1)
    elif output_stride == 8:
        strides, dilations = (2, 2, 1, last_stride), (1, 1, 2, 4)
    return RefResNet(layers, strides, dilations, base)


def ref_resize(tensors, size=None, scale=1.0, mode="bilinear", align_corners=False):
    """tools/ai/torch_utils.resize."""
    without_batch = len(tensors.size()) == 3
    if without_batch:
        tensors = tensors.unsqueeze(0)
    if size is None:
        size = tensors.size()[2:]
    size = list(size)
    size[0] = int(size[0] * scale)
    size[1] = int(size[1] * scale)
    if mode == "nearest":
        align_corners = None
    _, _, h, w = tensors.size()
    if size[0] != h or size[1] != w:
        tensors = F.interpolate(tensors, size, mode=mode, align_corners=align_corners)
    if without_batch:
        tensors = tensors[0]
    return tensors


def ref_normalize_max(x, eps=1e-5):
    """torch_utils.normalize."""
    c, h, w = x.size()
    max_x = x.view(c, h * w).max(dim=1)[0].view(c, 1, 1)
    return x / (max_x + eps)


class RefConvBlock(nn.Module):
    def __init__(self, inplanes, planes, kernel_size, padding=0, dilation=1, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(inplanes, planes, kernel_size=kernel_size, stride=1, padding=padding, dilation=dilation,
                              bias=bias)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class RefDecoder(nn.Module):
    def __init__(self, in_channels, out_channels, num_classes, low_channels=48):
        super().__init__()
        self.low_block = RefConvBlock(in_channels, low_channels, 1)
        self.classifier = nn.Sequential(
            RefConvBlock(out_channels + low_channels, out_channels, kernel_size=3, padding=1), nn.Dropout(0.5),
            RefConvBlock(out_channels, out_channels, kernel_size=3, padding=1), nn.Dropout(0.1),
            nn.Conv2d(out_channels, num_classes, kernel_size=3, stride=1, padding=1, bias=False))

    def forward(self, x, x_low):
        x_low = self.low_block(x_low)
        x = ref_resize(x, size=x_low.size()[2:])
        return self.classifier(torch.cat((x, x_low), dim=1))


class RefASPP(nn.Module):
    def __init__(self, in_channels, out_channels, output_stride):
        super().__init__()
        dilations = [1, 6, 12, 18] if output_stride == 16 else [1, 12, 24, 36]
        self.aspp1 = RefConvBlock(in_channels, out_channels, 1, padding=0, dilation=dilations[0])
        self.aspp2 = RefConvBlock(in_channels, out_channels, 3, padding=dilations[1], dilation=dilations[1])
        self.aspp3 = RefConvBlock(in_channels, out_channels, 3, padding=dilations[2], dilation=dilations[2])
        self.aspp4 = RefConvBlock(in_channels, out_channels, 3, padding=dilations[3], dilation=dilations[3])
        self.global_avg_pool = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), RefConvBlock(in_channels, out_channels, 1))
        self.block = nn.Sequential(RefConvBlock(out_channels * 5, out_channels, 1), nn.Dropout(0.5))

    def forward(self, x):
        x1, x2, x3, x4 = self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)
        x5 = ref_resize(self.global_avg_pool(x), size=x4.size()[2:])
        return self.block(torch.cat((x1, x2, x3, x4, x5), dim=1))


class RefRSEPM(nn.Module):
    """networks.py RSEPM (feature_size = the decoder's low channels, as released)."""

    def __init__(self, layers=(3, 4, 6, 3), num_classes=20, output_stride=16, feature_size=256, base=64):
        super().__init__()
        self.model = ref_build_resnet(layers, output_stride, base)
        in_channels = [base, base * 4, base * 8, base * 16, base * 32]
        self.global_pooling_layer = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Conv2d(in_channels[-1], num_classes, kernel_size=1, bias=False)
        self.aspp = RefASPP(in_channels[-1], feature_size, output_stride)
        self.decoder = RefDecoder(in_channels[1], feature_size, num_classes + 1, feature_size)

    def forward(self, x, same=False, with_decoder=False, interpolation="bilinear"):
        out = {}
        c1, c2, c3, c4, c5 = self.model(x)
        out["cams"] = self.classifier(c5)
        out["cls_logits"] = self.global_pooling_layer(out["cams"])[:, :, 0, 0]
        out["C2"], out["C3"], out["C5"] = c2, c3, c5
        if with_decoder:
            out["seg_logits"] = self.decoder(self.aspp(c5), c2)
            if same:
                out["seg_logits"] = ref_resize(out["seg_logits"], x.size()[2:], mode=interpolation)
        return out


def ref_forward_with_scales(model, image, image_size, scales, hflip=True, same=True, interpolation="nearest"):
    """RSEPM.forward_with_scales, the parts infer_rsepm uses (the CAM / SCG feature resizes are unused there)."""
    seg_h = seg_w = 0
    pred_masks, pred_classes = [], []
    images = image.unsqueeze(0)
    for scale in scales:
        scaled = ref_resize(images, image_size, scale=scale)
        if hflip:
            scaled = torch.cat([scaled, scaled.flip(-1)], dim=0)
        with torch.no_grad():
            od = model(scaled, same=same, with_decoder=True, interpolation=interpolation)
        pred_class = torch.sigmoid(od["cls_logits"])
        pred_classes.append(pred_class[0])
        if hflip:
            pred_classes.append(pred_class[1])
        if seg_h == 0 or seg_w == 0:
            _, _, seg_h, seg_w = od["seg_logits"].size()
        pred_mask = torch.softmax(od["seg_logits"], dim=1)
        pred_mask = ref_resize(pred_mask, (seg_h, seg_w), mode=interpolation)
        pred_masks.append(pred_mask[0])
        if hflip:
            pred_masks.append(pred_mask[1].flip(-1))
    return {"pred_class": torch.mean(torch.stack(pred_classes), dim=0),
            "pred_mask": torch.mean(torch.stack(pred_masks), dim=0)}


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def ref_normalize_image(pil_image):
    """augment_utils.Normalize + Transpose."""
    image = np.asarray(pil_image, dtype=np.float32)
    norm = np.empty_like(image, np.float32)
    for c in range(3):
        norm[..., c] = (image[..., c] / 255. - MEAN[c]) / STD[c]
    return norm.transpose((2, 0, 1))


def ref_denormalize(image_chw):
    """augment_utils.Denormalize."""
    image = image_chw.transpose((1, 2, 0))
    image = (image * STD) + MEAN
    return (image * 255).astype(np.uint8)


def ref_infer(model, image_chw, label, conf_th=-1, same=True, interpolation="nearest", scales=(1.0, 0.5, 1.5, 2.0)):
    """infer_rsepm.py main loop body for one image -> {'keys', 'seed'} (and the raw outputs)."""
    _, h, w = image_chw.shape
    image = torch.from_numpy(image_chw)
    class_mask = torch.from_numpy(label)
    od = ref_forward_with_scales(model, image, (h, w), list(scales), True, same, interpolation)
    if conf_th != -1:
        class_mask = (od["pred_class"] >= conf_th).float()
    od["pred_mask"] = ref_resize(od["pred_mask"], (h, w), mode="bilinear")
    seed = ref_normalize_max(od["pred_mask"][1:])
    class_mask = class_mask.numpy()
    seed = seed[class_mask == 1].numpy()
    keys = np.pad(np.nonzero(class_mask)[0] + 1, (1, 0), "constant")
    return {"keys": keys, "seed": seed}, od


def ref_crf(image, probmap, bg_th=None, gamma=None, iter_max=10, pos_w=3, pos_xy_std=1, bi_w=4, bi_xy_std=67,
            bi_rgb_std=3):
    """core/refinements/densecrf.py DenseCRF.__call__ with crf_dict['deeplab']."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probmap.shape
    if bg_th is not None:
        probmap = np.concatenate([np.ones((1, h, w), dtype=np.float32) * bg_th, probmap], axis=0)
        c += 1
    elif gamma is not None:
        probmap = np.concatenate([np.power(1 - np.max(probmap, axis=0, keepdims=True), gamma), probmap], axis=0)
        c += 1
    u = np.ascontiguousarray(unary_from_softmax(probmap))
    image = np.ascontiguousarray(image)
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(u)
    d.addPairwiseGaussian(sxy=pos_xy_std, compat=pos_w)
    d.addPairwiseBilateral(sxy=bi_xy_std, srgb=bi_rgb_std, rgbim=image, compat=bi_w)
    return np.array(d.inference(iter_max)).reshape((c, h, w))


def ref_postprocess(image_chw, infer_dict, tag="ResNet50@x", mode="crf", bg_th=None, bg_gamma=2.0):
    """convert_seed_to_pseudo_masks.py postprocess for one image (image as Normalize + Transpose returns it)."""
    if "MS" in tag:
        bg_gamma = None
    _, h, w = image_chw.shape
    class_keys = infer_dict["keys"]
    if len(class_keys) > 1:
        image = ref_denormalize(image_chw).copy()
        ih, iw = image.shape[:2]
        sh, sw = infer_dict["seed"].shape[-2:]          # (the released code reads shape[:2] of a (K, H, W) seed)
        if ih != sh or iw != sw:
            infer_dict["seed"] = ref_resize(torch.from_numpy(infer_dict["seed"]), (ih, iw)).numpy()
        if mode == "crf":
            pseudo = ref_crf(image, infer_dict["seed"], bg_th, bg_gamma)
        else:
            pseudo = np.concatenate([np.ones((1, h, w), dtype=np.float32) * bg_th, infer_dict["seed"]], axis=0)
        pseudo = class_keys[np.argmax(pseudo, axis=0)]
    else:
        pseudo = np.zeros((h, w), dtype=np.uint8)
    return pseudo.astype(np.uint8)


def ref_eval_cam(preds, gts, num_classes, st=0.10, end=0.80, step=0.05):
    """evaluate.py 'predictions' (domain != train: label None) with Evaluator_For_CAM: best (th, mIoU), curve."""
    ths = list(np.arange(st, end + 1e-10, step))
    meters = {th: {k: np.zeros(num_classes, np.float32) for k in ("P", "T", "TP")} for th in ths}
    for d, gt in zip(preds, gts):
        h, w = gt.shape
        pred = np.zeros((num_classes - 1, h, w), dtype=np.float32)
        if len(d["keys"][1:]) > 0:
            pred[d["keys"][1:] - 1] = d["seed"]
        for th in ths:
            pm = np.argmax(np.pad(pred, ((1, 0), (0, 0), (0, 0)), mode="constant", constant_values=th), axis=0)
            obj = gt != 255
            correct = (pm == gt) * obj
            for i in range(num_classes):
                meters[th]["P"][i] += np.sum((pm == i) * obj)
                meters[th]["T"][i] += np.sum((gt == i) * obj)
                meters[th]["TP"][i] += np.sum((gt == i) * correct)
    curve = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for th in ths:
            m = meters[th]
            curve.append(np.nanmean(m["TP"] / (m["T"] + m["P"] - m["TP"]) * 100))
    best = int(np.argmax(curve))
    return ths[best], curve[best], curve


def ref_eval_png(preds, gts, num_classes):
    """Evaluator_For_Semantic_Segmentation.get: mIoU = nanmean over classes."""
    P, T, TP = (np.zeros(num_classes, np.float32) for _ in range(3))
    for pm, gt in zip(preds, gts):
        obj = gt != 255
        correct = (pm == gt) * obj
        for i in range(num_classes):
            P[i] += np.sum((pm == i) * obj)
            T[i] += np.sum((gt == i) * obj)
            TP[i] += np.sum((gt == i) * correct)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(TP / (T + P - TP) * 100)


# ============================================================================ helpers

def randomize(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters (everything else keeps PyTorch's random init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
    return model


def tiny_pair(output_stride=16, num_fg=5, seed=0):
    """(released-code network, ours with its weights loaded strictly), both in eval mode."""
    torch.manual_seed(seed)
    ref = randomize(RefRSEPM(TINY_LAYERS, num_fg, output_stride, TINY_FEAT, TINY_BASE), seed).eval()
    ours = RSEPMNet("resnet_tiny", num_fg + 1, output_stride, TINY_FEAT, TINY_FEAT, layers=TINY_LAYERS,
                    base_channels=TINY_BASE, width_per_group=64)
    load_state_dict_strict(ours, ref.state_dict(), "reference")
    return ref, ours.eval()


def random_rgb(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = 100 + 80 * np.sin(yy[..., None] / 5.0 + np.arange(3)) * np.cos(xx[..., None] / 7.0)
    return np.clip(img + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


# ============================================================================ network

def test_released_r50_layout_loads_strictly_and_counts():
    """The full released RSEPM (ResNet-50, VOC) state dict: same keys and shapes, strict load, 40,969,024
    parameters; a missing or a foreign key is a one-line error."""
    torch.manual_seed(0)
    ref_sd = RefRSEPM().state_dict()
    ours = RSEPMNet("resnet50", 21)
    sd = ours.state_dict()
    assert list(sd) == list(ref_sd)
    assert all(sd[k].shape == ref_sd[k].shape for k in sd)
    assert sum(p.numel() for p in ours.parameters()) == 40_969_024
    load_state_dict_strict(ours, ref_sd, "last.pth")
    assert torch.equal(ours.seg_head.decoder.classifier[4].weight, ref_sd["decoder.classifier.4.weight"])
    bad = dict(ref_sd)
    bad.pop("decoder.low_block.bn.running_var")
    bad["aspp.extra.weight"] = torch.zeros(1)
    with pytest.raises(WsegError, match="1 missing.*1 unexpected"):
        load_state_dict_strict(ours, bad, "last.pth")


@pytest.mark.parametrize("os_", [16, 8])
def test_shapes_match_released(os_):
    """OS16 keeps layer4 at stride 1 without dilation; OS8 dilates 2/4 (first blocks 1); stride-4 logits."""
    ref, ours = tiny_pair(os_)
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        r = ref(x, with_decoder=True)
        o = ours(x, with_features=True)
    assert o["features"]["layer1"].shape == r["C2"].shape == (2, 4 * TINY_BASE, 12, 16)
    assert o["features"]["layer4"].shape == r["C5"].shape
    assert r["C5"].shape[-2:] == ((3, 4) if os_ == 16 else (6, 8))
    assert o["cams"].shape == (2, 5) + r["C5"].shape[-2:]
    assert o["seg_logits"].shape == r["seg_logits"].shape == (2, 6, 12, 16)
    b4 = ours.backbone.layer4
    assert b4[0].conv2.stride == (1, 1) and b4[0].conv2.dilation == (1, 1)
    assert b4[1].conv2.dilation == ((1, 1) if os_ == 16 else (4, 4))
    assert ours.seg_head.aspp.dilations == ((1, 6, 12, 18) if os_ == 16 else (1, 12, 24, 36))


@pytest.mark.parametrize("os_", [16, 8])
def test_forward_matches_released(os_):
    ref, ours = tiny_pair(os_, seed=1)
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        for same, mode in ((False, "bilinear"), (True, "nearest"), (True, "bilinear")):
            r = ref(x, same=same, with_decoder=True, interpolation=mode)
            o = ours(x, same=same, interpolation=mode)
            for k in ("cams", "cls_logits", "seg_logits"):
                assert o[k].shape == r[k].shape
                assert torch.allclose(o[k], r[k], atol=1e-5, rtol=1e-5), (k, same, mode)


# ============================================================================ seeds

@pytest.mark.parametrize("same,mode", [(True, "nearest"), (False, "bilinear")])
def test_infer_matches_released(same, mode):
    ref, ours = tiny_pair(16, seed=2)
    pil = Image.fromarray(random_rgb(37, 53, 3))
    image = ref_normalize_image(pil)
    assert np.array_equal(rsepm.normalize_image(np.asarray(pil)), image)
    label = np.array([0, 1, 0, 1, 0], np.float32)
    want, od = ref_infer(ref, image, label, -1, same, mode)
    pred_class, pred_mask = rsepm.infer_image(ours, torch.from_numpy(image), same=same, interpolation=mode)
    assert torch.allclose(pred_class, od["pred_class"], atol=1e-6)
    assert pred_mask.shape == od["pred_mask"].shape == (6, 37, 53)
    assert torch.allclose(pred_mask, od["pred_mask"], atol=1e-6)
    keys, seed = rsepm.make_seed(pred_mask, rsepm.select_classes(pred_class, label, -1))
    assert keys.dtype == want["keys"].dtype and np.array_equal(keys, want["keys"]) and keys.tolist() == [0, 2, 4]
    assert seed.dtype == np.float32 and np.allclose(seed, want["seed"], atol=1e-6)
    # conf_th between two predicted scores: the classes come from the network
    probs = np.sort(od["pred_class"].numpy())
    th = float((probs[2] + probs[3]) / 2)
    want, _ = ref_infer(ref, image, label, th, same, mode)
    keys, seed = rsepm.make_seed(pred_mask, rsepm.select_classes(pred_class, label, th))
    assert np.array_equal(keys, want["keys"]) and len(keys) == 3 and np.allclose(seed, want["seed"], atol=1e-6)
    # any other negative threshold selects every class, as released
    assert rsepm.select_classes(pred_class, None, -0.5).all()
    with pytest.raises(WsegError, match="conf_th"):
        rsepm.select_classes(pred_class, None, -1)


def test_seed_files_released_pickle_and_cam_dict(tmp_path):
    rng = np.random.default_rng(0)
    keys, seed = np.array([0, 3, 7], np.int64), rng.random((2, 9, 11)).astype(np.float32)
    ours = str(tmp_path / "a.pkl")
    rsepm.save_seed(ours, keys, seed)
    with open(ours, "rb") as f:
        d = pickle.load(f)                               # what the released convert / evaluate read
    assert set(d) == {"keys", "seed"} and np.array_equal(d["keys"], keys) and np.array_equal(d["seed"], seed)
    theirs = str(tmp_path / "b.pkl")
    with open(theirs, "wb") as f:                        # pickle_utils.dump_pickle
        pickle.dump({"keys": np.pad(np.array([2, 6]) + 1, (1, 0), "constant"), "seed": seed}, f)
    k, s = rsepm.load_seed(theirs, 21)
    assert k.tolist() == [0, 3, 7] and np.array_equal(s, seed)
    rsepm.save_seed(str(tmp_path / "c.npy"), keys, seed)
    k, s = rsepm.load_seed(str(tmp_path / "c.npy"), 21)
    assert k.tolist() == [0, 3, 7] and np.array_equal(s, seed)
    assert rsepm.find_seed(str(tmp_path), "c").endswith("c.npy")

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"keys": Evil(), "seed": seed}, f)
    with pytest.raises(WsegError, match="cannot read the seed pickle"):
        rsepm.load_seed(str(tmp_path / "evil.pkl"))
    with pytest.raises(WsegError, match="outside"):
        rsepm.load_seed(ours, 5)


# ============================================================================ pseudo masks

def test_crf_image_is_the_released_round_trip():
    img = random_rgb(41, 57, 5)
    got = rsepm.released_crf_image(img)
    assert np.array_equal(got, ref_denormalize(ref_normalize_image(Image.fromarray(img))))
    assert (got != img).any() and (np.abs(got.astype(int) - img) <= 1).all()


@pytest.mark.parametrize("case", ["gamma", "bg_th", "no_crf", "ms", "resize", "empty"])
def test_pseudo_matches_released(case):
    h, w = 37, 53
    rgb = random_rgb(h, w, 7)
    image = ref_normalize_image(Image.fromarray(rgb))
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:h, :w]
    blobs = [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 150.0) for cy, cx in ((10, 12), (25, 40))]
    seed = np.stack(blobs).astype(np.float32) + 0.05 * rng.random((2, h, w), dtype=np.float32)
    keys = np.array([0, 4, 9], np.int64)
    tag, mode, bg_th, bg_gamma = "ResNet50@x", "crf", None, 2.0
    if case == "bg_th":
        bg_th = 0.4
    elif case == "no_crf":
        mode, bg_th = "argmax", 0.4
    elif case == "ms":
        tag, keys = "ResNet101@MS@x", np.array([0, 4, 9], np.int64)
        seed = np.concatenate([1 - seed.max(0, keepdims=True), seed]).astype(np.float32)
    elif case == "resize":
        seed = F.interpolate(torch.from_numpy(seed)[None], (19, 27), mode="bilinear")[0].numpy()
    elif case == "empty":
        keys, seed = np.array([0], np.int64), np.zeros((0, h, w), np.float32)
    want = ref_postprocess(image, {"keys": keys, "seed": seed.copy()}, tag, mode, bg_th, bg_gamma)
    bg, value = rsepm.resolve_bg(tag, bg_th, None)
    got = rsepm.seed_to_pseudo(rgb, keys, seed, mode, bg, value)
    assert got.dtype == np.uint8 and got.shape == (h, w)
    assert np.array_equal(got, want)
    if case in ("gamma", "bg_th", "ms"):
        assert set(np.unique(got)) <= {0, 4, 9} and len(np.unique(got)) >= 2


def test_resolve_bg_rules():
    assert rsepm.resolve_bg(rsepm.TAG, None, None) == ("gamma", 2.0)
    assert rsepm.resolve_bg("R101@VOC@RS+EPM@MS@Official", None, None) == ("none", None)
    assert rsepm.resolve_bg("x", 0.3, 2.0) == ("th", 0.3)
    assert rsepm.resolve_bg("x", None, "none") == ("none", None)
    with pytest.raises(WsegError, match="bg_th"):
        rsepm.seed_to_pseudo(np.zeros((4, 4, 3), np.uint8), np.array([0, 1]), np.ones((1, 4, 4), np.float32),
                             "argmax", "gamma", 2.0)


# ============================================================================ stages on a tiny RS+EPM root

FG = ("cat", "dog", "car", "bus", "cow")
SIZES = {"img_a": (45, 61), "img_b": (38, 50), "img_c": (50, 37)}
TAGS = {"img_a": ["cat", "car"], "img_b": ["dog"], "img_c": ["bus", "cat", "cow"]}


def write_xml(path, tags, h, w, degenerate=None):
    """VOC-style annotation; ``degenerate``: one more object whose box has zero width (xmin == xmax)."""
    root = ET.Element("annotation")
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text, ET.SubElement(size, "height").text = str(w), str(h)
    boxes = [(t, (2, 3, w - 2, h - 1)) for t in tags] + ([(degenerate, (7, 3, 7, h - 1))] if degenerate else [])
    for tag, coords in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = tag
        ET.SubElement(obj, "difficult").text = "0"
        box = ET.SubElement(obj, "bndbox")
        for k, v in zip(("xmin", "ymin", "xmax", "ymax"), coords):
            ET.SubElement(box, k).text = str(v)
    ET.ElementTree(root).write(path)


@pytest.fixture(scope="module")
def rs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rsepm") / "VOC2012"
    for sub in ("image", "mask", "xml"):
        os.makedirs(root / "validation" / sub)
    os.makedirs(root / "test" / "image")
    (root / "classes.txt").write_text("\n".join(("background",) + FG) + "\n")
    rng = np.random.default_rng(0)
    for k, (i, (h, w)) in enumerate(SIZES.items()):
        Image.fromarray(random_rgb(h, w, 10 + k)).save(root / "validation" / "image" / f"{i}.jpg", quality=95)
        Image.fromarray(random_rgb(h, w, 20 + k)).save(root / "test" / "image" / f"t{i}.jpg", quality=95)
        write_xml(root / "validation" / "xml" / f"{i}.xml", TAGS[i], h, w, degenerate="cow" if i == "img_b" else None)
        gt = np.zeros((h, w), np.uint8)
        for j, t in enumerate(TAGS[i]):
            gt[j * h // 4:(j + 2) * h // 4, j * w // 5:(j + 3) * w // 5] = FG.index(t) + 1
        gt[rng.random((h, w)) < 0.03] = 255
        save_mask_png(str(root / "validation" / "mask" / f"{i}.png"), gt)
    _, ours = tiny_pair(16, seed=4)
    save_rsepm(str(root.parent / "models" / "T" / "last.pth"), ours)
    return root


def run_stage(stage, argv):
    return main(stage_parser(stage), stage.run, argv)


def test_stages_match_released_pipeline(rs_root, tmp_path):
    """infer_rsepm (GT classes, pkl) -> convert (CRF) and the evaluation sweep, against the re-stated released
    scripts on the same weights; resume; the npy seeds score through scripts/eval.py as evaluate.py does."""
    pred = str(tmp_path / "exp") + "/"
    weights = str(rs_root.parent / "models" / "T" / "last.pth")
    base = ["--root_dir", str(rs_root), "--domain", "validation", "--tag", "T", "--pred_dir", pred,
            "--num_workers", "0"]
    assert run_stage(rsepm_infer, base + ["--weights", weights, "--released_xml"]) == 0
    ref = build_rsepm(weights).eval()                     # the same weights in the released-layout net
    refnet = RefRSEPM(TINY_LAYERS, 5, 16, TINY_FEAT, TINY_BASE).eval()
    refnet.load_state_dict(ref.state_dict())
    seeds, gts = [], []
    for i in SIZES:
        pil = Image.open(rs_root / "validation" / "image" / f"{i}.jpg").convert("RGB")
        image = ref_normalize_image(pil)
        label = np.zeros(5, np.float32)
        label[[FG.index(t) for t in TAGS[i]]] = 1
        want, _ = ref_infer(refnet, image, label, -1)
        k, s = rsepm.load_seed(os.path.join(pred, "predictions", "T", "validation", i + ".pkl"), 6)
        assert np.array_equal(k, want["keys"]) and np.allclose(s, want["seed"], atol=1e-6)
        pseudo = ref_postprocess(image, {"keys": k, "seed": s.copy()})
        seeds.append(want)
        gts.append(np.asarray(Image.open(rs_root / "validation" / "mask" / f"{i}.png")))
        seeds[-1]["pseudo"] = pseudo
    assert run_stage(rsepm_pseudo, base) == 0
    for i, d in zip(SIZES, seeds):
        assert np.array_equal(load_mask_png(os.path.join(pred, "pseudo-labels", "T", "validation", i + ".png")),
                              d["pseudo"])
    again = base + ["--weights", weights, "--released_xml"]
    assert rsepm_infer.run(stage_parser(rsepm_infer)().parse_args(again))["inferred"] == 0
    assert rsepm_pseudo.run(stage_parser(rsepm_pseudo)().parse_args(base))["processed"] == 0
    # wseg CAM-dict seeds + scripts/eval.py = evaluate.py's sweep 0.10..0.80 and its nan-mean
    npy_dir = str(tmp_path / "npy")
    assert run_stage(rsepm_infer, again + ["--seed_format", "npy", "--out_dir", npy_dir]) == 0
    ev = stage_parser(eval_stage)()
    res = eval_stage.run(ev.parse_args([
        "--list", "validation", "--data_root", str(rs_root), "--predict_dir", npy_dir, "--type", "npy", "--curve",
        "--start", "0.10", "--end", "0.80", "--step", "0.05", "--absent", "nan", "--logfile", "", "--num_workers",
        "0", "--progress", "False", "--out_dir", str(tmp_path)]))
    th, miou, curve = ref_eval_cam(seeds, gts, 6)
    assert len(res["curve"]) == len(curve) == 15
    assert np.allclose([c["miou"] for c in res["curve"]], curve, atol=1e-3)
    assert res["best_threshold"] == pytest.approx(th) and res["miou"] == pytest.approx(miou, abs=1e-3)
    res = eval_stage.run(ev.parse_args([
        "--list", "validation", "--data_root", str(rs_root), "--type", "png", "--absent", "nan", "--logfile", "",
        "--predict_dir", os.path.join(pred, "pseudo-labels", "T", "validation"), "--num_workers", "0",
        "--progress", "False"]))
    assert res["miou"] == pytest.approx(ref_eval_png([d["pseudo"] for d in seeds], gts, 6), abs=1e-3)


def test_stage_errors_and_labels(rs_root, tmp_path, capsys):
    pred = str(tmp_path / "exp") + "/"
    base = ["--root_dir", str(rs_root), "--tag", "T", "--pred_dir", pred, "--num_workers", "0"]
    weights = str(rs_root.parent / "models" / "T" / "last.pth")
    # the released default weights path, missing
    assert run_stage(rsepm_infer, base + ["--domain", "validation"]) == 2
    assert "weights file not found" in capsys.readouterr().err
    # the test split has no labels: --conf_th -1 cannot work, a threshold can
    assert run_stage(rsepm_infer, base + ["--domain", "test", "--weights", weights]) == 2
    assert "--conf_th 0.34" in capsys.readouterr().err
    assert run_stage(rsepm_infer, base + ["--domain", "test", "--weights", weights, "--conf_th", "0.34",
                                          "--seed_format", "npy"]) == 0
    assert len(os.listdir(os.path.join(pred, "predictions", "T", "test"))) == 4      # 3 seeds + settings record
    # other settings into the same folder are refused
    assert run_stage(rsepm_infer, base + ["--domain", "test", "--weights", weights, "--conf_th", "0.5",
                                          "--seed_format", "npy"]) == 2
    assert "other settings" in capsys.readouterr().err
    # a broken seed is skipped and listed
    os.makedirs(os.path.join(pred, "predictions", "T", "validation"), exist_ok=True)
    with open(os.path.join(pred, "predictions", "T", "validation", "img_a.pkl"), "wb") as f:
        f.write(b"not a pickle")
    assert run_stage(rsepm_pseudo, base + ["--domain", "validation"]) == 2
    err = capsys.readouterr().err
    assert "3 of 3 images skipped" in err and "img_a" in err
    # labels: the released XML reader drops the zero-width 'cow' box of img_b, wseg's keeps it
    from wseg.data.voc import VOCRoot

    voc = VOCRoot(str(rs_root))
    assert rsepm.domain_ids(voc, "val") == sorted(SIZES)
    ours = rsepm.image_labels(voc, ["img_b"])["img_b"]
    theirs = rsepm.image_labels(voc, ["img_b"], released_xml=True)["img_b"]
    assert ours[FG.index("cow")] == 1 and theirs[FG.index("cow")] == 0 and theirs[FG.index("dog")] == 1
    assert rsepm.domain_folder("train_aug") == "train" and rsepm.domain_folder("lists/val.txt") == "val"
