"""LOC-BE pieces against independent references that follow the published computation step by step
(whn786/LOC-BE utils/camutils.py, model/losses.py, model/model_seg_neg.py), and the published crashes made
well-behaved (no labels, no confident pixel, one image per GPU)."""
import pytest
import torch
import torch.nn.functional as F

from wseg.errors import WsegError
from wseg.locbe import (LocBeConfig, ViTSegNet, be_input, cam_to_label, denormalize_01, locbe_losses, loc_crops,
                        multiscale_cams, multiscale_seg_logits, roi_partition, seg_pseudo_labels, token_aff_mask,
                        toco_local_crops)
from wseg.losses.dense_energy import DenseEnergyLoss
from wseg.losses.locbe import loc_loss
from wseg.models.heads.par import PAR


# ------------------------------------------------------------------------------------------------ references

def ref_roi_mask2(cam, cls_label, hig_thre, low_thre):
    b, c, h, w = cam.shape
    valid = cls_label.unsqueeze(-1).unsqueeze(-1).repeat([1, 1, h, w]) * cam
    v, _ = valid.max(dim=1, keepdim=False)
    roi = torch.ones_like(v, dtype=torch.int16)
    roi[v <= low_thre] = 0
    roi[v >= hig_thre] = 2
    return roi


def ref_contrastive(feat1, feat2, y, margin=1.0):
    """``ContrastiveLoss.forward`` with the published broadcasting (D taken from the features, not 768)."""
    d = feat1.shape[1]
    dist = F.pairwise_distance(feat1.unsqueeze(-1), feat2.unsqueeze(-1).transpose(0, 2)).squeeze()
    y = y.unsqueeze(2).repeat(1, 1, d)
    return torch.mean((y.unsqueeze(1).unsqueeze(2) * torch.pow(dist.unsqueeze(1), 2))
                      + ((1 - y.unsqueeze(1).unsqueeze(2))
                         * torch.pow(torch.clamp(margin - dist.unsqueeze(1), min=0.), 2)))


def ref_cam_to_label(cam, cls_label, img_box, bkg_thre, high_thre, low_thre, ignore_index=255):
    b, c, h, w = cam.shape
    valid = cls_label.unsqueeze(-1).unsqueeze(-1).repeat([1, 1, h, w]) * cam
    v, lab = valid.max(dim=1, keepdim=False)
    lab += 1
    lab[v <= bkg_thre] = 0
    lab[v <= high_thre] = ignore_index
    lab[v <= low_thre] = 0
    out = torch.ones_like(lab) * ignore_index
    for i, co in enumerate(img_box):
        out[i, co[0]:co[1], co[2]:co[3]] = lab[i, co[0]:co[1], co[2]:co[3]]
    return valid, out


def ref_refine(par, images, cams, cls_labels, high, low, img_box, down=2, ignore=255):
    """``refine_cams_with_bkg_v2`` + ``_refine_cams``: the per-image loop with the present classes only."""
    b, _, h, w = images.shape
    imgs = F.interpolate(images, size=[h // down, w // down], mode="bilinear", align_corners=False)
    cls_labels = torch.cat((torch.ones(b, 1), cls_labels), dim=1)
    lab_h = torch.ones(b, h, w) * ignore
    lab_l = lab_h.clone()
    ch = F.interpolate(torch.cat((torch.ones(b, 1, h, w) * high, cams), 1), size=[h // down, w // down],
                       mode="bilinear", align_corners=False)
    cl = F.interpolate(torch.cat((torch.ones(b, 1, h, w) * low, cams), 1), size=[h // down, w // down],
                       mode="bilinear", align_corners=False)
    for i, co in enumerate(img_box):
        key = torch.nonzero(cls_labels[i])[:, 0]
        for src, dst in ((ch, lab_h), (cl, lab_l)):
            r = par(imgs[[i]], src[i, key].unsqueeze(0).softmax(dim=1))
            r = key[F.interpolate(r, size=(h, w), mode="bilinear", align_corners=False).argmax(dim=1)]
            dst[i, co[0]:co[1], co[2]:co[3]] = r[0, co[0]:co[1], co[2]:co[3]].float()
    out = lab_h.clone()
    out[lab_h == 0] = ignore
    out[(lab_h + lab_l) == 0] = 0
    return out


def ref_multi_scale_cam2(model, inputs, scales):
    b, c, h, w = inputs.shape
    cams, auxs = [], []
    for s in [1.0] + [s for s in scales if s != 1.0]:
        x = inputs if s == 1.0 else F.interpolate(inputs, size=(int(s * h), int(s * w)), mode="bilinear",
                                                  align_corners=False)
        out = model(torch.cat([x, x.flip(-1)], dim=0), cam_only=True)
        for key, lst in (("cam", cams), ("cam_aux", auxs)):
            cc = F.interpolate(out[key], size=(h, w), mode="bilinear", align_corners=False)
            lst.append(F.relu(torch.max(cc[:b, ...], cc[b:, ...].flip(-1))))
    res = []
    for lst in (cams, auxs):
        cam = torch.sum(torch.stack(lst, dim=0), dim=0)
        cam = cam + F.adaptive_max_pool2d(-cam, (1, 1))
        cam /= F.adaptive_max_pool2d(cam, (1, 1)) + 1e-5
        res.append(cam)
    return res


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ViTSegNet("vit_test", num_classes=5, attn_proj=True)


# --------------------------------------------------------------------------------------------------- tests

def test_roi_partition_and_be_input():
    g = torch.Generator().manual_seed(0)
    cam = torch.rand(3, 4, 9, 11, generator=g)
    y = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]]).float()
    roi = roi_partition(cam, y, 0.25, 0.7)
    assert roi.dtype == torch.int16 and torch.equal(roi, ref_roi_mask2(cam, y, 0.7, 0.25))
    assert (roi[1] == 0).all()                                   # no label: everything is "background"
    edge = torch.tensor([0.25, 0.2500001, 0.6999999, 0.7]).view(1, 1, 1, 4)
    assert roi_partition(edge, torch.ones(1, 1), 0.25, 0.7).tolist() == [[[0, 1, 1, 2]]]
    x = torch.randn(3, 3, 9, 11, generator=g)
    ref = x.clone()
    ref[((roi == 2) | (roi == 0)).unsqueeze(1).repeat(1, 3, 1, 1)] = 0
    assert torch.equal(be_input(x, roi), ref)


def test_loc_loss_as_coded_any_batch():
    g = torch.Generator().manual_seed(1)
    gt, lt = torch.randn(3, 24, generator=g), torch.randn(3, 24, generator=g)
    y = (torch.rand(3, 6, generator=g) > 0.6).float()
    ours = loc_loss(gt, [lt, lt * 0.5], y, num_crops=2)
    ref = (ref_contrastive(gt, lt, y) + ref_contrastive(gt, lt * 0.5, y)) / 2
    assert torch.allclose(ours, ref, atol=1e-6)
    # one image per GPU: the published code crashes, ours is the same formula
    with pytest.raises(RuntimeError):
        ref_contrastive(gt[:1], lt[:1], y[:1])
    one = loc_loss(gt[:1], [lt[:1]], y[:1], num_crops=1)
    d = (gt[:1] - lt[:1] + 1e-6).abs()
    assert torch.allclose(one, y[:1].mean() * (d ** 2).mean() + (1 - y[:1].mean()) * F.relu(1 - d).pow(2).mean())
    # no crops: 0 with a graph; stop-gradient on G (the paper's figure)
    g_req = gt.clone().requires_grad_()
    zero = loc_loss(g_req, [], y)
    zero.backward()
    assert float(zero.detach()) == 0.0 and torch.equal(g_req.grad, torch.zeros_like(gt))
    l_req = lt.clone().requires_grad_()
    loc_loss(g_req, [l_req], y, stop_grad_global=True).backward()
    assert torch.equal(g_req.grad, torch.zeros_like(gt)) and l_req.grad.abs().sum() > 0


def test_cam_to_label_and_token_box():
    g = torch.Generator().manual_seed(2)
    cam = torch.rand(2, 4, 12, 14, generator=g)
    y = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]]).float()
    box = torch.tensor([[0, 12, 0, 14], [3, 10, 2, 9]])
    _, ref = ref_cam_to_label(cam, y, box, 0.5, 0.7, 0.25)
    assert torch.equal(cam_to_label(cam, y, 0.5, 0.7, 0.25, ignore_mid=True, img_box=box), ref)
    # the published pixel box on a token map vs the scaled one
    box_px = torch.tensor([[0, 448, 0, 448], [64, 448, 0, 448]])
    small = torch.rand(2, 4, 28, 28, generator=g)
    pub = cam_to_label(small, y, 0.5, 0.7, 0.25, ignore_mid=True, img_box=box_px)
    fixed = cam_to_label(small, y, 0.5, 0.7, 0.25, ignore_mid=True, img_box=box_px, box_stride=16)
    assert (pub[1] == 255).all()                 # a box starting at pixel 64 > 28 ignores every token
    assert (fixed[1, :4] == 255).all() and not (fixed[1, 4:] == 255).all()
    aff = token_aff_mask(F.interpolate(small, size=(56, 56)), y, (28, 28), box_px)
    assert aff.shape == (2, 784, 784) and (aff[1] == 255).all()


def test_seg_pseudo_labels_match_published():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, 20, 24, generator=g)
    cams = torch.rand(3, 4, 20, 24, generator=g)
    y = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]).float()
    valid = cams * y[:, :, None, None]
    box = torch.tensor([[0, 20, 0, 24], [2, 18, 0, 20], [5, 20, 3, 24]])
    par = PAR(num_iter=3)
    ours = seg_pseudo_labels(par, images, valid, y, 0.7, 0.25, box)
    ref = ref_refine(par, images, valid, y, 0.7, 0.25, box)
    assert torch.equal(ours.float(), ref)
    assert set(ours[1].unique().tolist()) <= {0, 255}           # no label: background or ignored
    # de-normalisation truncates like the uint8 cast
    x = torch.randn(1, 3, 4, 4)
    m = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    s = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    ref01 = (x * s + m).clamp(0, 255).type(torch.uint8) / 255.0
    assert torch.allclose(denormalize_01(x), ref01)


def test_multiscale_cams_and_inference_match_published(net):
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        cam, aux = multiscale_cams(net, x, (1.0, 0.5, 1.5))
        rcam, raux = ref_multi_scale_cam2(net, x, (1.0, 0.5, 1.5))
    assert torch.allclose(cam, rcam, atol=1e-5) and torch.allclose(aux, raux, atol=1e-5)
    assert cam.shape == (2, 4, 48, 64) and float(cam.max()) <= 1.0
    seg = multiscale_seg_logits(net, x, (50, 70))
    with torch.no_grad():
        ref = None
        for s in (1.0, 1.5, 1.25):
            xs = F.interpolate(x[:1], size=(int(48 * s), int(64 * s)), mode="bilinear", align_corners=False)
            out = F.interpolate(net(torch.cat([xs, xs.flip(-1)]))["seg"], size=(50, 70), mode="bilinear",
                                align_corners=False)
            out = out[:1] + out[1:].flip(-1)
            ref = out if ref is None else torch.max(ref, out)
    assert torch.allclose(seg[:1], ref, atol=1e-5)


def test_crops():
    x = torch.randn(2, 3, 40, 50)
    roi = torch.ones(2, 40, 50, dtype=torch.int16)
    assert loc_crops(x, roi, 20, 4) == []                       # published: ValueError
    roi[1, 5, 45] = 2
    crops = loc_crops(x, roi, 20, 4, torch.Generator().manual_seed(0), min_size=1)
    assert len(crops) == 4
    for c in crops:                                              # the window [c-10, c+10) clipped, all images
        assert c.shape == (2, 3, 15, 15) and torch.equal(c, x[:, :, 0:15, 35:50])
    with pytest.raises(WsegError):
        loc_crops(x, roi, 64, 4)
    # ToCo's local crops: positions from roi <= 1 inside the margin, flags from the roi sum
    g = torch.Generator().manual_seed(2)
    roi = (torch.rand(2, 40, 50, generator=g) < torch.linspace(0, 0.6, 50)).to(torch.int16)   # ratios 0..0.6
    roi[0, 12:, 15:] = 2
    crops, flags = toco_local_crops(x, roi, crop_num=5, crop_size=16, generator=torch.Generator().manual_seed(1))
    assert len(crops) == 5 and crops[0].shape == (2, 3, 16, 16) and flags.shape == (2, 7)
    assert (flags[:, :2] == 1).all()
    for j, c in enumerate(crops):
        for i in range(2):
            hits = [(h0, w0) for h0 in range(40 - 16) for w0 in range(50 - 16)
                    if torch.equal(x[i, :, h0:h0 + 16, w0:w0 + 16], c[i])]
            h0, w0 = hits[0]
            assert roi[i, h0 + 8, w0 + 8] <= 1
            ratio = roi[i, h0:h0 + 16, w0:w0 + 16].float().sum() / 256
            assert flags[i, j + 2] == float(ratio > 0.2)


def test_network_layout_and_param_groups(net):
    keys = list(net.state_dict())
    assert keys[0].startswith("encoder.") and "encoder.blocks.0.attn.qkv.weight" in keys
    assert {"classifier.weight", "aux_classifier.weight", "decoder.conv8.weight", "attn_proj.weight"} <= set(keys)
    fresh = ViTSegNet("vit_test", num_classes=5, attn_proj=True)
    fresh.load_state_dict(net.state_dict(), strict=True)
    groups = net.param_groups()
    names = {id(p): n for n, p in net.named_parameters()}
    assert all("norm" in names[id(p)] for p in groups[1])
    assert len(groups[2]) == 2 and len(groups[3]) == 3
    trained = {id(p) for g in groups for p in g}
    assert trained == {id(p) for p in net.parameters() if p.requires_grad}
    assert id(net.backbone.pos_embed) not in trained and id(net.attn_proj.weight) not in trained
    opt = net.optimizer_groups()
    assert [g["lr"] for g in opt] == pytest.approx([6e-5, 6e-5, 6e-4, 6e-4])
    out = net(torch.randn(1, 3, 48, 48), hp=True)
    assert out["cls"].shape == (1, 4) and out["seg"].shape == (1, 5, 3, 3) and out["cls_token"].shape == (1, 48)


@pytest.mark.parametrize("case", ["no_labels_one_image", "labels_two_images"])
def test_locbe_iteration_is_finite(net, case):
    torch.manual_seed(0)
    if case == "no_labels_one_image":
        x, y, box = torch.randn(1, 3, 64, 64), torch.zeros(1, 4), torch.tensor([[0, 64, 0, 64]])
    else:
        x, y = torch.randn(2, 3, 64, 64), torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]]).float()
        box = torch.tensor([[0, 64, 0, 64], [8, 60, 0, 50]])
    cfg = LocBeConfig(local_crop_size=40, high=0.0 if case == "labels_two_images" else 0.7)
    net.zero_grad()
    out = locbe_losses(net, x, y, box, iteration=2001, cfg=cfg, par=PAR(num_iter=2),
                       energy=DenseEnergyLoss(method="grid"), generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v).all() for v in out.values()), out
    out["loss"].backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if case == "no_labels_one_image":
        assert float(out["loc"]) == 0.0                          # no confident pixel: no crop
    else:
        assert float(out["loc"]) > 0.0
