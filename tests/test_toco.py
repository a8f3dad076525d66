"""ToCo pieces against independent references that follow the published computation step by step
(rulixiang/ToCo model/PAR.py, model/losses.py, model/backbone/vit.py, model/model_seg_neg.py)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wseg.errors import WsegError
from wseg.losses.toco import aff_mask_from_labels, ctc_loss, ema_update, ptc_loss, seg_loss
from wseg.models.backbones.vit import VIT_BACKBONES, ViT, load_vit_weights
from wseg.models.heads.par import PAR
from wseg.models.heads.vit_heads import CTCHead, LargeFOVDecoder, WeightNormLinear, hybrid_pool


# ------------------------------------------------------------------------------------------------ references

def ref_par(imgs, masks, dilations=(1, 2, 4, 8, 12, 24), num_iter=10, w1=0.3, w2=0.01):
    """PAR as published: per-dilation replicate pad + a one-hot 3x3 kernel convolution, stacked neighbours."""
    kernel = torch.zeros(8, 1, 3, 3)
    for i, (r, c) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]):
        kernel[i, 0, r, c] = 1

    def neighbours(x):
        b, c, h, w = x.shape
        outs = []
        for d in dilations:
            xp = F.pad(x, [d] * 4, mode="replicate").reshape(b * c, 1, h + 2 * d, w + 2 * d)
            outs.append(F.conv2d(xp, kernel, dilation=d).view(b, c, -1, h, w))
        return torch.cat(outs, dim=2)

    ker = torch.ones(1, 1, 8, 1, 1)
    for i in (0, 2, 5, 7):
        ker[0, 0, i] = math.sqrt(2)
    pos = torch.cat([ker * d for d in dilations], dim=2)
    masks = F.interpolate(masks, size=imgs.shape[-2:], mode="bilinear", align_corners=True)
    b, c, h, w = imgs.shape
    n = neighbours(imgs)
    rep = imgs.unsqueeze(2).repeat(1, 1, n.shape[2], 1, 1)
    pos_rep = pos.repeat(b, 1, 1, h, w)
    aff = -((n - rep).abs() / (torch.std(n, dim=2, keepdim=True) + 1e-8) / w1) ** 2
    aff = aff.mean(dim=1, keepdim=True)
    pos_aff = -(pos_rep / (torch.std(pos_rep, dim=2, keepdim=True) + 1e-8) / w1) ** 2
    aff = F.softmax(aff, dim=2) + w2 * F.softmax(pos_aff, dim=2)
    for _ in range(num_iter):
        masks = (neighbours(masks) * aff).sum(2)
    return masks


def ref_aff_mask(label, ignore=255):
    b, h, w = label.shape
    lab = label.reshape(b, 1, -1)
    rep = lab.repeat([1, lab.shape[-1], 1])
    aff = (rep == rep.permute(0, 2, 1)).long()
    for i in range(b):
        aff[i, :, rep[i, 0, :] == ignore] = ignore
        aff[i, rep[i, 0, :] == ignore, :] = ignore
    aff[:, range(h * w), range(h * w)] = ignore
    return aff


def ref_ptc(inputs, mask):
    b, c, h, w = inputs.shape
    x = F.normalize(inputs.reshape(b, c, h * w), p=2, dim=1, eps=1e-8)
    cos = torch.matmul(x.transpose(1, 2), x).abs()
    pos, neg = mask == 1, mask == 0
    return 0.5 * (1 - torch.sum(pos * cos) / (pos.sum() + 1)) + 0.5 * torch.sum(neg * cos) / (neg.sum() + 1)


def ref_ctc(student, teacher, flags, ncrops, temp):
    b = flags.shape[0]
    s = student.reshape(ncrops, b, -1).permute(1, 0, 2)
    t = teacher.reshape(2, b, -1).permute(1, 0, 2)
    logits = torch.exp(torch.matmul(t, s.permute(0, 2, 1)) / temp)
    total = 0
    for i in range(b):
        neg = logits[i, :, flags[i] == 0]
        pos_inds = torch.nonzero(flags[i])[:, 0]
        loss = 0
        for j in pos_inds:
            p = logits[i, :, j]
            loss = loss - torch.log(p / (p + neg.sum(dim=1) + 1e-4))
        loss = loss - torch.log(1 / (1 + neg.sum(dim=1) + 1e-4))   # the published for-else: always runs
        total = total + loss.sum() / 2 / (pos_inds.shape[0] + 1e-4)
    return total / b


def ref_seg_loss(pred, label, ignore=255):
    bg = label.clone()
    bg[label != 0] = ignore
    fg = label.clone()
    fg[label == 0] = ignore
    return 0.5 * (F.cross_entropy(pred, bg, ignore_index=ignore) + F.cross_entropy(pred, fg, ignore_index=ignore))


def ref_hybrid_pool(x, levels=(1, 2, 8), gamma=2):
    h, w = x.shape[-2:]
    out = gamma * F.adaptive_max_pool2d(x, (1, 1))
    for i in levels:
        out = out + F.adaptive_avg_pool2d(F.avg_pool2d(x, kernel_size=(h // i, w // i), padding=0), (1, 1))
    return out / (gamma + len(levels))


def ref_vit_tokens(vit, x, aux_layer=-3):
    """The published ``prepare_tokens`` + ``forward_features`` on the same weights (no antialias)."""
    b, _, h, w = x.shape
    h, w = h // 16, w // 16
    t = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
    g = int(math.sqrt(vit.pos_embed.shape[1] - 1))
    pp = vit.pos_embed[:, 1:, :].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    pp = F.interpolate(pp, size=(h, w), mode="bicubic", align_corners=False).reshape(1, -1, h * w).permute(0, 2, 1)
    t = torch.cat((vit.cls_token.expand(b, -1, -1), t), dim=1) + torch.cat((vit.pos_embed[:, :1, :], pp), dim=1)
    embeds = []
    for blk in vit.blocks:
        t = blk(t)
        embeds.append(t)
    t = vit.norm(t)
    embeds[-1] = t
    return t[:, 0], t[:, 1:], embeds[aux_layer][:, 1:]


# --------------------------------------------------------------------------------------------------- tests

def test_par_matches_published():
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(2, 3, 30, 26, generator=g)
    masks = torch.rand(2, 4, 15, 13, generator=g).softmax(1)
    ours = PAR()(imgs, masks)
    ref = ref_par(imgs, masks)
    assert ours.shape == (2, 4, 30, 26)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4)
    # the affinity of every pixel sums to 1 + w2
    assert torch.allclose(PAR().affinity(imgs).sum(1), torch.full((2, 30, 26), 1.01), atol=1e-5)


def test_aff_mask_and_ptc_match_published():
    g = torch.Generator().manual_seed(1)
    lab = torch.randint(0, 4, (2, 5, 6), generator=g)
    lab[lab == 3] = 255
    ours = aff_mask_from_labels(lab)
    assert torch.equal(ours, ref_aff_mask(lab))
    tokens = torch.randn(2, 8, 5, 6, generator=g, requires_grad=True)
    loss = ptc_loss(tokens, ours)
    assert torch.allclose(loss, ref_ptc(tokens, ours), atol=1e-6)
    loss.backward()
    assert torch.isfinite(tokens.grad).all()
    # everything ignored: the published +1 keeps it finite (0.5), no gradient
    assert float(ptc_loss(tokens.detach(), torch.full_like(ours, 255))) == pytest.approx(0.5)


def test_ctc_matches_published():
    g = torch.Generator().manual_seed(2)
    b, ncrops = 3, 10
    student = torch.randn(ncrops * b, 16, generator=g)
    teacher = torch.randn(2 * b, 16, generator=g)
    flags = torch.ones(b, ncrops)
    flags[0, 4:7] = 0
    flags[1, 2:] = 0          # every local crop negative
    ours = ctc_loss(student, teacher, flags, temp=0.5)
    assert torch.allclose(ours, ref_ctc(student, teacher, flags, ncrops, 0.5), rtol=1e-5)
    # large logits: the published exp overflows, the log-space version stays finite
    assert torch.isfinite(ctc_loss(student * 30, teacher * 30, flags, temp=0.5))


def test_seg_loss_matches_published_and_is_nan_free():
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 5, 8, 8, generator=g)
    label = torch.randint(0, 5, (2, 8, 8), generator=g)
    label[0, :2] = 255
    assert torch.allclose(seg_loss(pred, label), ref_seg_loss(pred, label), atol=1e-6)
    no_fg = torch.zeros_like(label)
    assert torch.isnan(ref_seg_loss(pred, no_fg))         # the published NaN (ToCo issues #3/#6/#8)
    assert torch.allclose(seg_loss(pred, no_fg), 0.5 * F.cross_entropy(pred, no_fg))
    assert float(seg_loss(pred, torch.full_like(label, 255))) == 0.0


def test_hybrid_pool_and_heads():
    x = torch.randn(2, 6, 28, 28)
    assert torch.allclose(hybrid_pool(x), ref_hybrid_pool(x))
    small = torch.randn(2, 6, 3, 5)                        # published: "stride should not be zero"
    with pytest.raises(RuntimeError):
        ref_hybrid_pool(small)
    assert torch.isfinite(hybrid_pool(small)).all()
    dec = LargeFOVDecoder(6, 4)
    assert [k for k in dec.state_dict()] == ["conv6.weight", "conv7.weight", "conv8.weight"]
    assert dec.conv6.dilation == (5, 5) and dec(x).shape == (2, 4, 28, 28)


def test_weight_norm_head_equals_torch_weight_norm():
    lin = WeightNormLinear(8, 5)
    with pytest.warns(FutureWarning):
        ref = nn.utils.weight_norm(nn.Linear(8, 5, bias=False))
    ref.weight_g.data.fill_(1)
    ref.weight_v.data.copy_(lin.weight_v.data)
    x = torch.randn(3, 8)
    assert torch.allclose(lin(x), ref(x), atol=1e-6)
    assert set(lin.state_dict()) == set(ref.state_dict()) == {"weight_g", "weight_v"}
    head = CTCHead(12, out_dim=7, hidden_dim=10, bottleneck_dim=4)
    assert list(head.state_dict()) == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight",
                                       "mlp.4.bias", "last_layer.weight_g", "last_layer.weight_v"]
    assert not head.last_layer.weight_g.requires_grad
    teacher = CTCHead(12, out_dim=7, hidden_dim=10, bottleneck_dim=4)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(head, teacher, 0.9)
    for b, p, s in zip(before, teacher.parameters(), head.parameters()):
        assert torch.allclose(p, 0.9 * b + 0.1 * s)


def test_vit_matches_published_forward(tmp_path):
    torch.manual_seed(0)
    vit = ViT(**VIT_BACKBONES["vit_test"]).eval()
    x = torch.randn(2, 3, 75, 101)                       # not multiples of 16: cut to 64 x 96
    out = vit(x)
    cls, patch, aux = ref_vit_tokens(vit, x[..., :64, :96])
    assert out["out"].shape == (2, 48, 4, 6) and out["aux"].shape == (2, 48, 4, 6)
    assert torch.allclose(out["cls"], cls, atol=1e-5)
    assert torch.allclose(out["out"].flatten(2).transpose(1, 2), patch, atol=1e-5)
    assert torch.allclose(out["aux"].flatten(2).transpose(1, 2), aux, atol=1e-5)
    # antialias=True is timm's own resampling
    import timm
    vit_aa = ViT(**VIT_BACKBONES["vit_test"], antialias=True).eval()
    vit_aa.load_state_dict(vit.state_dict())
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, dynamic_img_size=True, embed_dim=48, depth=4,
                            num_heads=3).eval()
    ref.load_state_dict(vit.state_dict())
    fin = ref.forward_features(x[..., :64, :96])
    assert torch.allclose(vit_aa(x)["out"].flatten(2).transpose(1, 2), fin[:, 1:], atol=1e-5)
    assert not vit.pos_embed.requires_grad and vit.patch_embed.proj.weight.requires_grad
    # weights through the strict loader, timm key names
    path = tmp_path / "vit.pth"
    torch.save(ref.state_dict(), path)
    fresh = ViT(**VIT_BACKBONES["vit_test"])
    load_vit_weights(fresh, str(path))
    assert torch.equal(fresh.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    sd = ref.state_dict()
    sd.pop("norm.weight")
    torch.save(sd, path)
    with pytest.raises(WsegError, match="1 missing"):
        load_vit_weights(fresh, str(path))
    with pytest.raises(WsegError, match="smaller than one"):
        vit(torch.randn(1, 3, 10, 40))


def test_conv_stem_vit_keeps_the_token_grid_and_the_forward():
    """``conv_stem``: four stride-2 3x3 convolutions + a 1x1 projection replace ``patch_embed.proj``; the tokens
    are still 16-pixel cells (same grid as the patch ViT), everything after the embedding is the published forward."""
    from wseg.models.backbones.vit import build_conv_stem

    torch.manual_seed(0)
    vit = ViT(**VIT_BACKBONES["vit_test"], conv_stem=(8, 8, 16, 16)).eval()
    plain = ViT(**VIT_BACKBONES["vit_test"]).eval()
    x = torch.randn(2, 3, 75, 101)
    out = vit(x)
    assert out["out"].shape == plain(x)["out"].shape == (2, 48, 4, 6)
    cls, patch, _ = ref_vit_tokens(vit, x[..., :64, :96])
    assert torch.allclose(out["out"].flatten(2).transpose(1, 2), patch, atol=1e-5)
    assert torch.allclose(out["cls"], cls, atol=1e-5)
    assert "patch_embed.proj.0.weight" in vit.state_dict() and "patch_embed.proj.weight" not in vit.state_dict()
    with pytest.raises(WsegError, match="four widths"):
        build_conv_stem((8, 16), 48)


@pytest.mark.parametrize("seed", range(4))
def test_toco_augment_photometric_options(seed):
    """Grayscale p 0 never removes colour; hue 0 keeps the hue; the blur radius range is the flag's."""
    import colorsys

    from PIL import Image

    from wseg.methods.toco import ToCoAugment

    aug = ToCoAugment(32, (1.0, 1.0), views=False, jitter=(0.4, 0.4, 0.2, 0.0), grayscale_p=0.0,
                      blur_radius=(0.0, 0.0))
    aug.reseed(seed)
    out = aug({"image": Image.new("RGB", (32, 32), (200, 40, 40))})["image"]
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    rgb = (out[:, 16, 16] * std + mean).clamp(0, 1).tolist()
    h, _, s = colorsys.rgb_to_hls(*rgb)
    assert s > 0.3 and min(h, 1 - h) < 0.02, (h, s)        # still saturated red: no grayscale, no hue shift
