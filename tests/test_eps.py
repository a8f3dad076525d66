"""EPS and EPS+PPC (issue #20) against references written after the published code, step by step: the networks
and inference here, the losses in ``tests/published_refs.py`` (shared with the benchmarks).

Published sources (read with ``git show``): halbielee/EPS@0c2cdd0 ``eps.py``, ``network/resnet38_eps.py``,
``module/train.py``, ``infer.py``; usr922/wseg branch ``esp``@c62f0d2 ``network/resnet38_contrast.py``,
``network/resnet38d.py``, ``module/train.py``, ``eps.py``, ``util/imutils.py``, ``pseudo_label_gen.py``.
Changes to the published statements in the references, and only these: ``.cuda()`` dropped, the hard-coded
20/21 classes taken from the inputs, ``random.sample`` replaced by "the ``k`` smallest of given random keys" (the
same rule the vectorised loss applies to the same keys), the published CUDA ``topk``'s tie order (first index) made
explicit with a stable sort, and infer.py's ``np.array(cam_list)`` of ``(fg, bg)`` pairs (a ragged array NumPy >=
1.24 refuses) replaced by the sum of the ``fg`` parts it was meant to take.

The training and inference runs go through the real ``scripts/contrast_train.py`` / ``scripts/contrast_infer.py``
stages (no generic stage knows EPS), on the tiny synthetic dataset with saliency maps from
``scripts/make_saliency.py``.
"""
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import wseg.methods.eps  # noqa: F401  (registers --network eps until wseg/methods/__init__.py imports it)
import wseg.methods.eps_ppc  # noqa: F401  (registers --network eps_contrast)
from wseg import io
from wseg.errors import WsegError
from wseg.losses.eps import eps_ppc_losses, saliency_maps
from wseg.methods import build_cam_net
from wseg.models.checkpoint import load_state_dict_strict, read_state_dict

import published_refs as pub  # tests/ is on sys.path under pytest (rootdir-relative, no __init__.py)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------------- published names and shapes

# network/resnet38d.py Net.__init__: ResBlock(in, mid, out, stride, first_dilation, dilation)
BLOCKS = [("b2", 64, 128, 128, 2, None, 1), ("b2_1", 128, 128, 128, 1, None, 1), ("b2_2", 128, 128, 128, 1, None, 1),
          ("b3", 128, 256, 256, 2, None, 1), ("b3_1", 256, 256, 256, 1, None, 1), ("b3_2", 256, 256, 256, 1, None, 1),
          ("b4", 256, 512, 512, 2, None, 1), ("b4_1", 512, 512, 512, 1, None, 1), ("b4_2", 512, 512, 512, 1, None, 1),
          ("b4_3", 512, 512, 512, 1, None, 1), ("b4_4", 512, 512, 512, 1, None, 1),
          ("b4_5", 512, 512, 512, 1, None, 1), ("b5", 512, 512, 1024, 1, 1, 2), ("b5_1", 1024, 512, 1024, 1, None, 2),
          ("b5_2", 1024, 512, 1024, 1, None, 2)]
BOTTLENECKS = [("b6", 1024, 2048, 4), ("b7", 2048, 4096, 4)]     # ResBlock_bot(in, out, dilation)


def published_shapes(num_classes=21, contrast=False, div=1):
    """Key -> shape of resnet38_eps.Net(num_classes) / resnet38_contrast.Net, in their state-dict order; ``div``
    scales the backbone widths (16 = wseg's ``resnet38_tiny``)."""
    c = lambda n: n // div  # noqa: E731
    shapes = {"conv1a.weight": (c(64), 3, 3, 3)}

    def bn(p, ch):
        shapes.update({f"{p}.weight": (ch,), f"{p}.bias": (ch,), f"{p}.running_mean": (ch,),
                       f"{p}.running_var": (ch,), f"{p}.num_batches_tracked": ()})

    for name, cin, mid, cout, stride, _, _ in BLOCKS:
        bn(f"{name}.bn_branch2a", c(cin))
        shapes[f"{name}.conv_branch2a.weight"] = (c(mid), c(cin), 3, 3)
        bn(f"{name}.bn_branch2b1", c(mid))
        shapes[f"{name}.conv_branch2b1.weight"] = (c(cout), c(mid), 3, 3)
        if cin != cout or stride != 1:
            shapes[f"{name}.conv_branch1.weight"] = (c(cout), c(cin), 1, 1)
    for name, cin, cout, _ in BOTTLENECKS:
        bn(f"{name}.bn_branch2a", c(cin))
        shapes[f"{name}.conv_branch2a.weight"] = (c(cout) // 4, c(cin), 1, 1)
        bn(f"{name}.bn_branch2b1", c(cout) // 4)
        shapes[f"{name}.conv_branch2b1.weight"] = (c(cout) // 2, c(cout) // 4, 3, 3)
        bn(f"{name}.bn_branch2b2", c(cout) // 2)
        shapes[f"{name}.conv_branch2b2.weight"] = (c(cout), c(cout) // 2, 1, 1)
        shapes[f"{name}.conv_branch1.weight"] = (c(cout), c(cin), 1, 1)
    bn("bn7", c(4096))
    shapes["fc8.weight"] = (num_classes, c(4096), 1, 1)
    if contrast:
        shapes.update({"proj_fc.weight": (128, c(4096), 1, 1), "f8_3.weight": (64, c(512), 1, 1),
                       "f8_4.weight": (128, c(1024), 1, 1), "f9.weight": (192, 192 + 3, 1, 1)})
    return shapes


def random_state(shapes, seed=0):
    """Random tensors under the published names: He-scaled convolutions, BatchNorm with non-trivial statistics."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(s, generator=g)
        elif k.endswith("running_mean") or (k.endswith(".bias")):
            sd[k] = 0.1 * torch.randn(s, generator=g)
        elif len(s) == 1:
            sd[k] = 0.8 + 0.4 * torch.rand(s, generator=g)
        else:
            gain = 0.5 if "branch2b" in k else 0.1 if k.startswith("fc8") else 1.0   # fc8: soft softmax
            sd[k] = torch.randn(s, generator=g) * gain * (2.0 / (s[1] * s[2] * s[3])) ** 0.5
    return sd


# ---------------------------------------------------------------------------------- reference networks

def ref_bn(sd, p, x):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        False, 0.0, 1e-5)


def ref_resnet38d(sd, x):
    """resnet38d.Net.forward_as_dict in eval mode (dropout off): conv4, conv5, conv6."""
    x = F.conv2d(x, sd["conv1a.weight"], padding=1)
    out = {}
    for name, cin, _, cout, stride, first, dil in BLOCKS:
        first = dil if first is None else first
        branch2 = F.relu(ref_bn(sd, f"{name}.bn_branch2a", x))
        if name == "b5":
            out["conv4"] = branch2
        branch1 = F.conv2d(branch2, sd[f"{name}.conv_branch1.weight"], stride=stride) \
            if (cin != cout or stride != 1) else x
        branch2 = F.conv2d(branch2, sd[f"{name}.conv_branch2a.weight"], stride=stride, padding=first, dilation=first)
        branch2 = F.relu(ref_bn(sd, f"{name}.bn_branch2b1", branch2))
        branch2 = F.conv2d(branch2, sd[f"{name}.conv_branch2b1.weight"], padding=dil, dilation=dil)
        x = branch1 + branch2
    for name, _, _, dil in BOTTLENECKS:
        branch2 = F.relu(ref_bn(sd, f"{name}.bn_branch2a", x))
        if name == "b6":
            out["conv5"] = branch2
        branch1 = F.conv2d(branch2, sd[f"{name}.conv_branch1.weight"])
        branch2 = F.conv2d(branch2, sd[f"{name}.conv_branch2a.weight"])
        branch2 = F.relu(ref_bn(sd, f"{name}.bn_branch2b1", branch2))
        branch2 = F.conv2d(branch2, sd[f"{name}.conv_branch2b1.weight"], padding=dil, dilation=dil)
        branch2 = F.relu(ref_bn(sd, f"{name}.bn_branch2b2", branch2))
        branch2 = F.conv2d(branch2, sd[f"{name}.conv_branch2b2.weight"])
        x = branch1 + branch2
    out["conv6"] = F.relu(ref_bn(sd, "bn7", x))
    return out


def ref_forward_cam(sd, x):
    """resnet38_eps.Net.forward_cam: fc8 on conv6 (also what the authors run for EPS+PPC inference)."""
    return F.conv2d(ref_resnet38d(sd, x)["conv6"], sd["fc8.weight"])


def ref_contrast_forward(sd, img):
    """esp network/resnet38_contrast.py Net.forward: (pred, cam, pred_rv, cam_rv, feats)."""
    d = ref_resnet38d(sd, img)
    x = d["conv6"]
    feats = F.relu(F.conv2d(x, sd["proj_fc.weight"]))
    cam = F.conv2d(x, sd["fc8.weight"])
    n, c, h, w = cam.size()
    with torch.no_grad():
        cam_d = F.relu(cam.detach())
        cam_d_max = torch.max(cam_d.view(n, c, -1), dim=-1)[0].view(n, c, 1, 1) + 1e-5
        cam_d_norm = F.relu(cam_d - 1e-5) / cam_d_max
        cam_d_norm[:, -1, :, :] = 1 - torch.max(cam_d_norm[:, :-1, :, :], dim=1)[0]
        cam_max = torch.max(cam_d_norm[:, :-1, :, :], dim=1, keepdim=True)[0]
        cam_d_norm[:, :-1, :, :][cam_d_norm[:, :-1, :, :] < cam_max] = 0
    f8_3 = F.relu(F.conv2d(d["conv4"].detach(), sd["f8_3.weight"]))
    f8_4 = F.relu(F.conv2d(d["conv5"].detach(), sd["f8_4.weight"]))
    x_s = F.interpolate(img, (h, w), mode="bilinear", align_corners=True)
    f = torch.cat([x_s, f8_3, f8_4], dim=1)
    # PCM
    n, c, h, w = f.size()
    cam_p = F.interpolate(cam_d_norm, (h, w), mode="bilinear", align_corners=True).view(n, -1, h * w)
    f = F.conv2d(f, sd["f9.weight"]).view(n, -1, h * w)
    f = f / (torch.norm(f, dim=1, keepdim=True) + 1e-5)
    aff = F.relu(torch.matmul(f.transpose(1, 2), f))
    aff = aff / (torch.sum(aff, dim=1, keepdim=True) + 1e-5)
    cam_rv = torch.matmul(cam_p, aff).view(n, -1, h, w)
    pred = F.avg_pool2d(cam, kernel_size=(h, w), padding=0).view(n, -1)
    pred_rv = F.avg_pool2d(cam_rv, kernel_size=(h, w), padding=0).view(n, -1)
    return pred, cam, pred_rv, cam_rv, feats


# ---------------------------------------------------------------------------------- reference losses
# The published losses (get_eps_loss, get_er_loss, get_contrast_loss, train_contrast): tests/published_refs.py.


def ref_max_onehot_bg_last(x):
    """What --fix_max_onehot means: background (last) kept, foreground one-hot."""
    x_max = torch.max(x[:, :-1, :, :], dim=1, keepdim=True)[0]
    x[:, :-1, :, :][x[:, :-1, :, :] != x_max] = 0
    return x


def ref_train_contrast(out1, out2, sal1, sal2, label, keys, onehot=pub.max_onehot):
    """esp train_contrast's loss (view 1 resized to 128 // 8 = 16, view 2 at 16x16) with the hard pixel sampling
    drawn from ``keys`` and CUDA's ``topk`` tie order: ``({loss, ...}, (pseudo1, pseudo2))``."""
    return pub.train_contrast(out1, out2, sal1, sal2, label, keys=keys, stable_topk=True, onehot=onehot)


# ---------------------------------------------------------------------------------- inputs


def salient_case(n=2, c=6, h=9, w=11, seed=0):
    """Logits (N, C+1, h, w) and a soft saliency at 4x the size where, per image, labelled class 0 is confidently
    inside the salient region (overlap > tau), labelled class 1 confidently outside it (a labelled object the
    saliency misses: overlap 0 -> background set), labelled class 2 never above 0.5 (overlap 0 / 1e-4 h w), and
    class 3 unlabelled but confident."""
    g = torch.Generator().manual_seed(seed)
    cam = torch.randn(n, c + 1, h, w, generator=g)
    sal = torch.zeros(n, 1, 4 * h, 4 * w)
    sal[:, :, 4:20, 4:24] = 0.6 + 0.4 * torch.rand(n, 1, 16, 20, generator=g)
    sal[:, :, 28:, 30:] = 0.3 * torch.rand(n, 1, 4 * h - 28, 4 * w - 30, generator=g)    # soft, below 0.5
    cam[:, 0, 1:5, 1:6] += 8          # inside the salient box (nearest-sampled rows 1-4, cols 1-5)
    cam[:, 1, 6:, 7:] += 8            # far from it
    cam[:, 3, 0, 8:] += 8
    label = torch.zeros(n, c)
    label[:, :3] = 1
    return cam.requires_grad_(), sal, label


def fake_views(n=2, c=21, d=32, s1=24, s2=16, seed=0):
    """Feature-size outputs of two views (``cam``, ``cam_rv``, ``f_proj``, ``pred``), saliency of both views, labels
    and hard-pixel-sampling keys; the label-masked CAMs peak on present classes so several pseudo classes appear."""
    g = torch.Generator().manual_seed(seed)
    label = (torch.rand(n, c - 1, generator=g) < 0.3).float()
    label[:, 0] = 1
    present = torch.cat([label, torch.zeros(n, 1)], 1)[..., None, None]
    outs = []
    for s in (s1, s2):
        cam = torch.randn(n, c, s, s, generator=g) + 3 * present * torch.rand(n, c, s, s, generator=g)
        rv = torch.randn(n, c, s, s, generator=g) + 3 * present * torch.rand(n, c, s, s, generator=g)
        f = torch.randn(n, d, s, s, generator=g).abs()
        outs.append({"cam": cam.requires_grad_(), "cam_rv": rv.requires_grad_(), "f_proj": f.requires_grad_()})
    for o in outs:
        o["pred"] = F.avg_pool2d(o["cam"], kernel_size=o["cam"].shape[-2:]).view(n, -1)
    noise = F.interpolate(torch.rand(n, 1, 6, 6, generator=g), size=(8 * s1, 8 * s1), mode="bilinear")
    sal1 = torch.sigmoid(12 * (noise - noise.quantile(0.6)))   # soft edges, ~40 % salient: overlaps straddle tau
    sal2 = F.interpolate(sal1, size=(128, 128), mode="bilinear", align_corners=True)
    keys = [torch.rand(n * s2 * s2, generator=g) for _ in range(2)]
    return outs[0], outs[1], sal1, sal2, label, keys


def leaves(*outs):
    return [o[k] for o in outs for k in ("cam", "cam_rv", "f_proj")]


# ---------------------------------------------------------------------------------- saliency loss


@pytest.mark.parametrize("tau,lam", [(0.4, 0.5), (0.5, 0.5), (0.4, 0.9), (0.0, 0.3)])
def test_saliency_loss_equals_published(tau, lam):
    cam, sal, label = salient_case()
    ours = saliency_maps(cam, sal, label, tau, lam)
    loss, fg_map, bg_map, sal_pred, iou = pub.get_eps_loss(cam, sal, label, tau, lam)
    torch.testing.assert_close(ours["loss"], loss, rtol=1e-6, atol=1e-7)
    for k, v in (("fg_map", fg_map), ("bg_map", bg_map), ("sal_pred", sal_pred)):
        torch.testing.assert_close(ours[k], v, rtol=1e-6, atol=1e-6)
    g_ours, = torch.autograd.grad(ours["loss"], cam)
    g_ref, = torch.autograd.grad(loss, cam)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-9)
    # the case exercises both sets: class 0 is salient, labelled class 1 (missed by the saliency) and labelled
    # class 2 (never above 0.5) fall below tau and join the background; unlabelled class 3 is in neither
    if tau == 0.4:
        assert (iou[:, 0] > tau).all() and (iou[:, 1] <= tau).all() and (iou[:, 2] == 0).all()
        from wseg.losses.eps import saliency_selection

        _, _, fg_mask, bg_mask = saliency_selection(cam, sal, label, tau)
        assert fg_mask[0, :, 0, 0].tolist() == [1, 0, 0, 0, 0, 0, 0]
        assert bg_mask[0, :, 0, 0].tolist() == [0, 1, 1, 0, 0, 0, 1]


def test_saliency_loss_random_logits_odd_sizes():
    g = torch.Generator().manual_seed(3)
    for (h, w), (sh, sw) in (((7, 13), (53, 97)), ((5, 5), (37, 41))):
        cam = (2 * torch.randn(3, 5, h, w, generator=g)).requires_grad_()
        sal = torch.rand(3, 1, sh, sw, generator=g)
        label = (torch.rand(3, 4, generator=g) < 0.6).float()
        ours = saliency_maps(cam, sal, label, 0.3, 0.7)["loss"]
        ref = pub.get_eps_loss(cam, sal, label, 0.3, 0.7)[0]
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(torch.autograd.grad(ours, cam)[0], torch.autograd.grad(ref, cam)[0],
                                   rtol=1e-5, atol=1e-9)


def test_overlap_denominator_adds_1e4_per_pixel():
    """overlap = hit / sum(round(p) + 1e-4): with 2 confident pixels, 1 of them salient, on a 10x10 map the ratio is
    1 / 2.01 = 0.4975, so tau 0.499 puts the class in the background set (1 / (2 + 1e-4) would not)."""
    from wseg.losses.eps import saliency_selection

    cam = torch.zeros(1, 3, 10, 10)
    cam[0, 0, 0, :2] = 10
    sal = torch.zeros(1, 1, 10, 10)
    sal[0, 0, 0, 0] = 0.9
    label = torch.tensor([[1.0, 1.0]])
    iou = pub.get_eps_loss(cam, sal, label, 0.499, 0.5)[4]
    assert abs(iou[0, 0].item() - 1 / 2.01) < 1e-6
    _, _, fg_mask, bg_mask = saliency_selection(cam, sal, label, 0.499)
    assert fg_mask.flatten().tolist() == [0, 0, 0] and bg_mask.flatten().tolist() == [1, 1, 1]
    _, _, fg_mask, _ = saliency_selection(cam, sal, label, 0.497)
    assert fg_mask.flatten().tolist() == [1, 0, 0]


# ---------------------------------------------------------------------------------- EPS+PPC losses


@pytest.mark.parametrize("fix", [False, True])
def test_eps_ppc_losses_equal_published(fix):
    out1, out2, sal1, sal2, label, keys = fake_views(seed=int(fix))
    ours = eps_ppc_losses(out1, out2, sal1, sal2, label, tau=0.4, lam=0.5, fix_max_onehot=fix, random_keys=keys)
    ref, _ = ref_train_contrast(out1, out2, sal1, sal2, label, keys,
                                onehot=ref_max_onehot_bg_last if fix else pub.max_onehot)
    iou = pub.get_eps_loss(out1["cam"], sal1, label, 0.4, 0.5)[4]
    assert ((iou > 0.4) & (label > 0)).any() and ((iou <= 0.4) & (label > 0)).any()    # both sets in play
    for k, v in ref.items():
        torch.testing.assert_close(ours[k].reshape(()), v.reshape(()), rtol=2e-5, atol=2e-6, msg=k)
    params = leaves(out1, out2)
    g_ours = torch.autograd.grad(ours["loss"], params, allow_unused=True)
    g_ref = torch.autograd.grad(ref["loss"], params, allow_unused=True)
    for name, a, b in zip(["cam1", "cam_rv1", "f1", "cam2", "cam_rv2", "f2"], g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("network", ["eps", "eps_contrast"])
def test_training_step_equals_published(network):
    """The method's training step (views, saliency of view 2, losses) = train_eps / train_contrast on the same
    weights and batch (eval mode: no dropout draws; the contrast's random keys from the step's generator)."""
    import argparse

    from wseg.engine.trainer import StepContext
    from wseg.methods import get_method

    contrast = network == "eps_contrast"
    sd = random_state(published_shapes(21, contrast, div=16), seed=2)
    g = torch.Generator().manual_seed(4)
    img = torch.randn(2, 3, 160, 152, generator=g)
    box = torch.zeros(2, 1, 160, 152)
    box[:, :, 30:110, 40:120] = 1
    sal = F.avg_pool2d(box, 9, stride=1, padding=4) * (0.7 + 0.3 * torch.rand(2, 1, 160, 152, generator=g))
    label = torch.zeros(2, 20)
    label[0, [0, 4]] = 1
    label[1, [2, 4, 7]] = 1
    args = argparse.Namespace(tau=0.4, lam=0.5, view2_size=128, bg_threshold=0.10, proto_div=16,
                              fix_max_onehot=False)
    method = get_method(network)(args)
    net = method.build_network("resnet38_tiny", 21)
    load_state_dict_strict(net, sd, "published.pth")
    ctx = StepContext(generator=torch.Generator().manual_seed(0))
    ours = method.training_step(net.eval(), {"image": img, "saliency": sal, "label": label}, ctx)
    if not contrast:     # EPS module/train.py train_eps
        pred, cam = ref_forward_cam(sd, img).mean((2, 3)), ref_forward_cam(sd, img)
        loss_cls = F.multilabel_soft_margin_loss(pred[:, :-1], label)
        loss_sal = pub.get_eps_loss(cam, sal, label, 0.4, 0.5)[0]
        ref = {"loss": loss_cls + loss_sal, "loss_cls": loss_cls, "loss_sal": loss_sal}
    else:
        img2 = F.interpolate(img, size=(128, 128), mode="bilinear", align_corners=True)
        sal2 = F.interpolate(sal, size=(128, 128), mode="bilinear", align_corners=True)
        outs = []
        for x in (img, img2):
            pred, cam, _, cam_rv, feats = ref_contrast_forward(sd, x)
            outs.append({"pred": pred, "cam": cam, "cam_rv": cam_rv, "f_proj": feats})
        keys = torch.rand(2, 2 * 16 * 16, generator=torch.Generator().manual_seed(0))
        ref, _ = ref_train_contrast(outs[0], outs[1], sal, sal2, label, [keys[0], keys[1]])
    for k, v in ref.items():
        torch.testing.assert_close(ours[k].reshape(()), v.detach().reshape(()), rtol=1e-5, atol=1e-7, msg=k)


def test_published_max_onehot_quirk_changes_ecr():
    """The branch's one-hot keeps channel 0 (the first class) and lets the background compete; the fix differs."""
    out1, out2, sal1, sal2, label, keys = fake_views(seed=2)
    a = eps_ppc_losses(out1, out2, sal1, sal2, label, random_keys=keys)
    b = eps_ppc_losses(out1, out2, sal1, sal2, label, fix_max_onehot=True, random_keys=keys)
    assert abs(a["loss_ecr"].item() - b["loss_ecr"].item()) > 1e-4
    for k in ("loss_cls", "loss_sal", "loss_er", "loss_nce"):
        torch.testing.assert_close(a[k], b[k], msg=k)


# ---------------------------------------------------------------------------------- networks and checkpoints


@pytest.mark.parametrize("network,contrast", [("eps", False), ("eps_contrast", True)])
def test_published_checkpoints_load_full_size(network, contrast):
    """A published EPS (resnet38_eps, fc8 4096->21) / EPS+PPC (resnet38_contrast: + proj_fc, f8_3, f8_4, f9)
    state dict, names and shapes as saved by the published scripts, loads strictly; ours saves the same keys in the
    same order."""
    shapes = published_shapes(21, contrast)
    with torch.device("meta"):
        net = build_cam_net(network, "resnet38", num_classes=21)
        state = {k: torch.empty(s, dtype=torch.long if k.endswith("tracked") else torch.float32)
                 for k, s in shapes.items()}
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == list(shapes.items())
    load_state_dict_strict(net, state, "published.pth")
    if not contrast:    # an EPS+PPC checkpoint is not an EPS network (extra heads): a one-line error
        extra = {**state, "proj_fc.weight": torch.empty(128, 4096, 1, 1, device="meta")}
        with pytest.raises(WsegError, match="unexpected.*proj_fc"):
            load_state_dict_strict(net, extra, "esp.pth")


def test_contrast_network_forward_equals_published():
    sd = random_state(published_shapes(21, True, div=16), seed=1)
    net = build_cam_net("eps_contrast", "resnet38_tiny", num_classes=21)
    load_state_dict_strict(net, sd, "esp.pth")
    net.eval()
    x = torch.randn(2, 3, 45, 61, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x)
        pred, cam, _, cam_rv, feats = ref_contrast_forward(sd, x)
        cam_only = net.forward_cam(x)
    torch.testing.assert_close(out["cam"], cam, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["cam_rv"], cam_rv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["f_proj"], feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["cam"].mean((2, 3)), pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cam_only, cam, rtol=0, atol=0)
    assert cam.shape == (2, 21, 6, 8)
    # EPS (resnet38_eps): the same fc8 on the same backbone
    eps = build_cam_net("eps", "resnet38_tiny", num_classes=21)
    load_state_dict_strict(eps, {k: v for k, v in sd.items() if k in published_shapes(21, False, 16)}, "eps.pth")
    with torch.no_grad():
        torch.testing.assert_close(eps.eval()(x)["cam"], cam, rtol=1e-5, atol=1e-5)


def test_heads_initialised_in_published_order():
    """esp resnet38_contrast.py: fc8, proj_fc, f8_3, f8_4, f9 created, then initialised in that order."""
    from torch import nn

    from wseg.models.backbones import build_backbone

    torch.manual_seed(7)
    net = build_cam_net("eps_contrast", "resnet38_tiny", num_classes=21)
    torch.manual_seed(7)
    build_backbone("resnet38_tiny")                          # the backbone draws first, then the heads
    fc8, proj_fc = nn.Conv2d(256, 21, 1, bias=False), nn.Conv2d(256, 128, 1, bias=False)
    f8_3, f8_4, f9 = nn.Conv2d(32, 64, 1, bias=False), nn.Conv2d(64, 128, 1, bias=False), nn.Conv2d(195, 192, 1,
                                                                                                     bias=False)
    nn.init.xavier_uniform_(fc8.weight)
    nn.init.xavier_uniform_(proj_fc.weight)
    nn.init.kaiming_normal_(f8_3.weight)
    nn.init.kaiming_normal_(f8_4.weight)
    nn.init.xavier_uniform_(f9.weight, gain=4)
    sd = net.state_dict()
    for name, m in (("fc8", fc8), ("proj_fc", proj_fc), ("f8_3", f8_3), ("f8_4", f8_4), ("f9", f9)):
        torch.testing.assert_close(sd[name + ".weight"], m.weight, rtol=0, atol=0, msg=name)
    scratch = {id(p) for m in net.scratch_modules() for p in m.parameters()}
    groups = net.get_parameter_groups()
    assert {id(p) for p in groups[2]} == scratch and not groups[3]


# ---------------------------------------------------------------------------------- synthetic saliency


def test_synthetic_saliency_behaves_like_a_detector():
    from wseg.data.saliency import image_rng, synthetic_saliency

    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 8:30] = 1
    mask[35:55, 45:75] = 2
    mask[9, 8:30] = 255
    a = synthetic_saliency(mask, image_rng(0, "x"), miss_rate=0, blob_rate=0)
    assert a.shape == mask.shape and a.dtype == np.uint8
    assert a[mask > 0].mean() > 0.7 * 255 and a[:, :4].max() < 10          # objects salient, far background not
    assert ((a > 20) & (a < 235)).sum() > 50                                # soft edges, continuous values
    np.testing.assert_array_equal(a, synthetic_saliency(mask, image_rng(0, "x"), miss_rate=0, blob_rate=0))
    assert not np.array_equal(a, synthetic_saliency(mask, image_rng(1, "x"), miss_rate=0, blob_rate=0))
    assert synthetic_saliency(mask, image_rng(0, "x"), miss_rate=1, blob_rate=0).max() == 0
    missed = [synthetic_saliency(mask, image_rng(s, "x"), miss_rate=0.5, blob_rate=0) for s in range(12)]
    kinds = {(m[mask == 1].mean() > 128, m[mask == 2].mean() > 128) for m in missed}
    assert len(kinds) >= 3                                                  # objects missed independently
    blobs = [synthetic_saliency(mask, image_rng(s, "x"), miss_rate=0, blob_rate=1) for s in range(4)]
    assert all((b[mask == 0] > 128).sum() > 30 for b in blobs)              # salient background blobs


# ---------------------------------------------------------------------------------- stages end to end


def load_script(name):
    from wseg.pipeline import load_script as ls

    return ls(f"scripts/{name}.py")


def run_script(name, argv):
    mod = load_script(name)
    return mod.run(mod.build_parser().parse_args(argv))


@pytest.fixture(scope="module")
def eps_root(toy_root, tmp_path_factory):
    """A copy of the toy dataset (the session's is shared) with synthetic saliency maps in <root>/SALImages (the
    published default folder name)."""
    import shutil

    root = str(tmp_path_factory.mktemp("eps") / "toy_voc")
    shutil.copytree(toy_root, root)
    out = run_script("make_saliency", ["--voc12_root", root, "--seed", "0", "--miss_rate", "0.2"])
    assert out["saliency_root"] == os.path.join(root, "SALImages") and out["done"] == 16
    again = run_script("make_saliency", ["--voc12_root", root, "--seed", "0", "--miss_rate", "0.2"])
    assert again["written"] == 0
    with pytest.raises(WsegError, match="other settings.*seed 0 -> 1"):
        run_script("make_saliency", ["--voc12_root", root, "--seed", "1", "--miss_rate", "0.2"])
    return root


def train_argv(root, prefix, network, extra=()):
    return ["--voc12_root", root, "--train_list", os.path.join(root, "ImageSets/Segmentation/train.txt"),
            "--session_name", prefix, "--network", network, "--backbone", "resnet38_tiny", "--batch_size", "4",
            "--max_epoches", "1", "--crop_size", "48", "--resize_long", "48", "64", "--num_workers", "0",
            "--seed", "3", "--log_every", "1", *extra]


def test_saliency_is_augmented_with_the_image(eps_root, tmp_path):
    """``data_maps`` through CamTrainTransform: maps equal to the image's own grey level stay aligned with it through
    the joint resize, flip and crop (colour jitter off)."""
    from wseg.data.datasets import ClsDataset
    from wseg.data.transforms import CamTrainTransform
    from wseg.data.voc import VOCRoot
    from wseg.methods import get_method

    voc = VOCRoot(eps_root)
    ids = voc.ids("train")[:4]
    for i in ids:
        grey = np.asarray(Image.open(voc.image_path(i)).convert("RGB"), np.float32).mean(-1)
        Image.fromarray(np.rint(grey).astype(np.uint8)).save(tmp_path / f"{i}.png")
    args = type("A", (), {"saliency_root": str(tmp_path), "voc12_root": eps_root})()
    maps = get_method("eps")(args).data_maps(voc, args)
    data = ClsDataset(voc, ids, CamTrainTransform(40, (64, 64), jitter=False), maps=maps)
    random.seed(0)
    for k in range(4):
        s = data[k]
        img = torch.tensor(STD).view(3, 1, 1) * s["image"] + torch.tensor(MEAN).view(3, 1, 1)
        inside = s["saliency"][0] > 0
        assert s["saliency"].shape == (1, 40, 40)
        assert (img.mean(0)[inside] - s["saliency"][0][inside]).abs().max() < 0.01


def test_bad_saliency_maps_are_one_line_errors(eps_root, tmp_path):
    from wseg.data.saliency import SaliencyLoader
    from wseg.data.voc import VOCRoot

    prefix = str(tmp_path / "run" / "x")
    with pytest.raises(WsegError, match="nowhere.*no such folder"):
        run_script("contrast_train", train_argv(eps_root, prefix, "eps",
                                                ["--saliency_root", str(tmp_path / "nowhere")]))
    part = tmp_path / "part"
    part.mkdir()
    ids = VOCRoot(eps_root).ids("train")
    for i in ids[1:]:
        (part / f"{i}.png").write_bytes(open(os.path.join(eps_root, "SALImages", i + ".png"), "rb").read())
    with pytest.raises(WsegError, match=rf"1 of 12 .*{ids[0]}\.png.*make_saliency"):
        run_script("contrast_train", train_argv(eps_root, prefix, "eps_contrast", ["--saliency_root", str(part)]))
    assert not os.path.exists(tmp_path / "run")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(part / f"{ids[0]}.png")
    with pytest.raises(WsegError, match=rf"{ids[0]}\.png: saliency map is 12x10 but image .* is 64x48 \(1 of 12"):
        run_script("contrast_train", train_argv(eps_root, prefix, "eps", ["--saliency_root", str(part)]))
    assert not os.path.exists(tmp_path / "run")
    with pytest.raises(WsegError, match=rf"{ids[0]}\.png: saliency map is 12x10 but image .* is 64x48"):
        SaliencyLoader(str(part), VOCRoot(eps_root))(ids[0])


def published_infer(sd, img_path, label, thr, scales=(0.5, 1.0, 1.5, 2.0)):
    """EPS infer.py (= esp contrast_infer.py for eps networks) for one image: (cam_dict, png)."""
    img = Image.open(img_path).convert("RGB")
    original_image_size = np.asarray(img).shape[:2]
    ms = []
    for s in scales:
        target_size = (round(img.size[0] * s), round(img.size[1] * s))
        arr = np.asarray(img.resize(target_size, resample=Image.BICUBIC))
        norm = np.empty_like(arr, np.float32)
        for ch in range(3):
            norm[..., ch] = (arr[..., ch] / 255. - MEAN[ch]) / STD[ch]
        ms.append(np.ascontiguousarray(norm.transpose(2, 0, 1)))
    inputs = []
    for x in ms:
        inputs += [x, np.flip(x, -1).copy()]
    num_classes = len(label)
    cam_list = []
    with torch.no_grad():
        for i, image in enumerate(inputs):
            cam = ref_forward_cam(sd, torch.from_numpy(image).unsqueeze(0))
            cam = F.softmax(cam, dim=1)
            cam = F.interpolate(cam, original_image_size, mode="bilinear", align_corners=False)[0]
            cam_fg = cam[:-1].numpy() * label.reshape(num_classes, 1, 1)
            if i % 2 == 1:
                cam_fg = np.flip(cam_fg, axis=-1)
            cam_list.append(cam_fg)
    sum_cam = np.sum(cam_list, axis=0)
    norm_cam = sum_cam / (np.max(sum_cam, (1, 2), keepdims=True) + 1e-5)
    cam_dict = {j: norm_cam[j] for j in range(num_classes) if label[j] > 1e-5}
    h, w = list(cam_dict.values())[0].shape
    tensor = np.zeros((num_classes + 1, h, w), np.float32)
    for key in cam_dict:
        tensor[key + 1] = cam_dict[key]
    tensor[0, :, :] = thr
    return cam_dict, np.argmax(tensor, axis=0).astype(np.uint8)


def published_crf_pseudo_mask(img_path, cam_dict, alpha=8, t=5):
    """esp contrast_infer.py _crf_with_alpha + util/imutils.crf_inference, then pseudo_label_gen.py's argmax."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    image = np.asarray(Image.open(img_path).convert("RGB"))
    v = np.array(list(cam_dict.values()))
    bg_score = np.power(1 - np.max(v, axis=0, keepdims=True), alpha)
    probs = np.concatenate((bg_score, v), axis=0)
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, probs.shape[0])
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.copy(image), compat=10)
    crf = np.array(d.inference(t)).reshape((probs.shape[0], h, w))
    n_crf = {0: crf[0], **{key + 1: crf[i + 1] for i, key in enumerate(cam_dict)}}
    tensor = np.zeros((len(v) + 30, h, w), np.float32)
    for key, p in n_crf.items():
        tensor[key] = p
    return np.argmax(tensor, axis=0).astype(np.uint8)


def check_inference(root, weights, out, sd, thr, network, ids):
    from wseg.data.voc import VOCRoot, write_list

    lst = str(out / "list.txt")
    write_list(lst, ids)
    res = run_script("contrast_infer", ["--weights", weights, "--network", network, "--backbone", "resnet38_tiny",
                                        "--voc12_root", root, "--infer_list", lst, "--out_cam", str(out / "cam"),
                                        "--out_cam_pred", str(out / "png"), "--out_cam_pred_alpha", str(thr),
                                        "--num_workers", "0"])
    assert res["inferred"] == len(ids) and res["network"] == network
    voc = VOCRoot(root)
    labels = voc.cls_labels(ids)
    for i in ids:
        ref_cams, ref_png = published_infer(sd, voc.image_path(i), labels[i], thr)
        cams = io.load_cam_dict(str(out / "cam" / f"{i}.npy"), num_fg=3, shape=(48, 64))
        assert sorted(cams) == sorted(ref_cams)
        for k in cams:
            np.testing.assert_allclose(cams[k], ref_cams[k], rtol=1e-4, atol=1e-5)
        png = io.load_mask_png(str(out / "png" / f"{i}.png"))
        assert (png != ref_png).mean() < 0.002
    return lst, labels


def test_eps_published_checkpoint_inference(eps_root, tmp_path):
    """A published EPS checkpoint (plain torch.save of resnet38_eps.Net, no wseg metadata) through
    contrast_infer.py --network eps: the CAM dicts and the CAM PNG (background 0.20) of EPS infer.py."""
    sd = random_state(published_shapes(4, False, div=16), seed=5)
    weights = str(tmp_path / "checkpoint_cls.pth")
    torch.save(sd, weights)
    from wseg.data.voc import VOCRoot

    check_inference(eps_root, weights, tmp_path, sd, 0.20, "eps", VOCRoot(eps_root).ids("train")[:3])


@pytest.mark.parametrize("network", ["eps", "eps_contrast"])
def test_train_through_the_generic_stage(eps_root, tmp_path, network):
    """scripts/contrast_train.py trains each method on the toy dataset with its saliency maps (no generic stage
    names EPS), writing published-layout weights and the method's loss terms."""
    import json

    prefix = str(tmp_path / network)
    extra = ["--view2_size", "32"] if network == "eps_contrast" else []
    out = run_script("contrast_train", train_argv(eps_root, prefix, network, extra))
    state, meta = read_state_dict(out["weights"])
    assert meta["network"] == network and out["steps"] == 3
    assert ("proj_fc.weight" in state) == (network == "eps_contrast") and state["fc8.weight"].shape[0] == 4
    rows = [json.loads(line) for line in open(prefix + "_scalars.jsonl")]
    terms = {"loss", "loss_mlsm", "loss_sal"} | ({"loss_er", "loss_ecr", "loss_nce", "loss_rvmin"}
                                                 if network == "eps_contrast" else set())
    assert all(terms <= set(r) and np.isfinite(r["loss"]) for r in rows)
    if network == "eps_contrast":
        # inference as the authors did (fc8 alone, background 0.22), then the pseudo masks: CRF with alpha 8, t=5,
        # argmax (aff_prepare with one alpha writes only these masks)
        from wseg.data.voc import VOCRoot

        ids = VOCRoot(eps_root).ids("train")[:3]
        lst, _ = check_inference(eps_root, out["weights"], tmp_path, state, 0.22, network, ids)
        run_script("aff_prepare", ["--voc12_root", eps_root, "--infer_list", lst, "--cam_dir", str(tmp_path / "cam"),
                                   "--la_crf_dir", str(tmp_path / "pseudo"), "--alphas", "8", "--crf_iters", "5",
                                   "--num_workers", "0"])
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("crf")) == []
        voc = VOCRoot(eps_root)
        for i in ids:
            cams = io.load_cam_dict(str(tmp_path / "cam" / f"{i}.npy"))
            ref = published_crf_pseudo_mask(voc.image_path(i), cams)
            np.testing.assert_array_equal(io.load_mask_png(str(tmp_path / "pseudo" / f"{i}.png")), ref)
