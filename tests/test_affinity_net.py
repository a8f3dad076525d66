"""AffinityNet: published names/shapes, affinities == a direct reference, full border pairs, groups, training."""
import math

import numpy as np
import pytest
import torch

from wseg.affinity import extract_affinity_labels, num_pairs
from wseg.errors import WsegError
from wseg.affinity import crop_scores, full_pair_affinities, pad_scores, pair_affinities
from wseg.engine.optim import PolyLR, build_optimizer, published_groups
from wseg.losses.affinity import affinity_loss
from wseg.methods.affinitynet import build_affinity_net, build_affinity_net_for_training, build_affinity_net_from_weights
from wseg.models.checkpoint import load_state_dict_strict, save_state_dict


# --------------------------------------------------------------------------------------------- published layout


def _bn(prefix, c):
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _resblock(name, cin, mid, cout, stride=1):
    """psa network/resnet38d.py ResBlock(in, mid, out, stride, first_dilation, dilation)."""
    d = {**_bn(f"{name}.bn_branch2a", cin), f"{name}.conv_branch2a.weight": (mid, cin, 3, 3),
         **_bn(f"{name}.bn_branch2b1", mid), f"{name}.conv_branch2b1.weight": (cout, mid, 3, 3)}
    if cin != cout or stride != 1:
        d[f"{name}.conv_branch1.weight"] = (cout, cin, 1, 1)
    return d


def _resblock_bot(name, cin, cout):
    """psa network/resnet38d.py ResBlock_bot(in, out, stride, dilation, dropout)."""
    return {**_bn(f"{name}.bn_branch2a", cin), f"{name}.conv_branch2a.weight": (cout // 4, cin, 1, 1),
            **_bn(f"{name}.bn_branch2b1", cout // 4), f"{name}.conv_branch2b1.weight": (cout // 2, cout // 4, 3, 3),
            **_bn(f"{name}.bn_branch2b2", cout // 2), f"{name}.conv_branch2b2.weight": (cout, cout // 2, 1, 1),
            f"{name}.conv_branch1.weight": (cout, cin, 1, 1)}


def published_resnet38_aff_shapes():
    """The state dict of psa / usr922 ``network/resnet38_aff.Net`` (resnet38d.Net + the affinity heads)."""
    d = {"conv1a.weight": (64, 3, 3, 3)}
    d.update(_resblock("b2", 64, 128, 128, 2))
    d.update(_resblock("b2_1", 128, 128, 128))
    d.update(_resblock("b2_2", 128, 128, 128))
    d.update(_resblock("b3", 128, 256, 256, 2))
    d.update(_resblock("b3_1", 256, 256, 256))
    d.update(_resblock("b3_2", 256, 256, 256))
    d.update(_resblock("b4", 256, 512, 512, 2))
    for i in range(1, 6):
        d.update(_resblock(f"b4_{i}", 512, 512, 512))
    d.update(_resblock("b5", 512, 512, 1024))
    d.update(_resblock("b5_1", 1024, 512, 1024))
    d.update(_resblock("b5_2", 1024, 512, 1024))
    d.update(_resblock_bot("b6", 1024, 2048))
    d.update(_resblock_bot("b7", 2048, 4096))
    d.update(_bn("bn7", 4096))
    # resnet38_aff.Net.__init__
    d["f8_3.weight"] = (64, 512, 1, 1)
    d["f8_4.weight"] = (128, 1024, 1, 1)
    d["f8_5.weight"] = (256, 4096, 1, 1)
    d["f9.weight"] = (448, 448, 1, 1)
    return d


def test_published_names_and_shapes_load():
    with torch.device("meta"):
        net = build_affinity_net("resnet38")
    published = published_resnet38_aff_shapes()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == published
    state = {k: torch.empty(s, device="meta") for k, s in published.items()}
    assert load_state_dict_strict(net, state, "resnet38_aff.pth") == []     # no missing, no unexpected
    assert all(getattr(net.head, n).bias is None for n in ("f8_3", "f8_4", "f8_5", "f9"))


def test_reduced_width_scales_heads():
    net = build_affinity_net("resnet38_tiny")
    assert (net.head.f8_3.out_channels, net.head.f8_4.out_channels, net.head.f8_5.out_channels) == (4, 8, 16)
    assert net.head.f9.weight.shape == (28, 28, 1, 1) and net.embed_dim == 28
    with torch.device("meta"):
        rn = build_affinity_net("resnet101")
    assert rn.head.f8_5.weight.shape == (256, 2048, 1, 1) and rn.head.f9.weight.shape == (448, 448, 1, 1)


# --------------------------------------------------------------------------------------------- affinities


def reference_affinities(f: np.ndarray, radius: int) -> np.ndarray:
    """psa ``resnet38_aff.forward`` + ``get_indices_of_pairs`` written out with explicit loops (f: (D, h, w))."""
    search = [(0, x) for x in range(1, radius)]
    search += [(y, x) for y in range(1, radius) for x in range(-radius + 1, radius) if x * x + y * y < radius * radius]
    _, h, w = f.shape
    rf = radius - 1
    out = []
    for dy, dx in search:
        row = []
        for y in range(0, h - rf):
            for x in range(rf, w - rf):
                row.append(np.exp(-np.mean(np.abs(f[:, y, x] - f[:, y + dy, x + dx]))))
        out.append(row)
    return np.array(out)


@pytest.mark.parametrize("backbone", ["resnet38_tiny", "resnet_tiny"])
def test_affinities_equal_direct_reference(backbone):
    torch.manual_seed(0)
    net = build_affinity_net(backbone).eval()
    x = torch.randn(2, 3, 72, 96)
    with torch.no_grad():
        aff = net(x)
        f = net.embed(x)
    k, m = num_pairs(9, 12, 5)
    assert aff.shape == (2, k, m) and aff.dtype == torch.float32 and f.shape == (2, net.embed_dim, 9, 12)
    for b in range(2):
        ref = reference_affinities(f[b].double().numpy(), 5)
        np.testing.assert_allclose(aff[b].numpy(), ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        a3 = net(x[:1], radius=3)
        dense = net(x[:1], to_dense=True)
    np.testing.assert_allclose(a3[0].numpy(), reference_affinities(f[0].double().numpy(), 3), rtol=1e-5, atol=1e-6)
    n = 9 * 12
    assert dense.shape == (n, n) and torch.allclose(dense, dense.t()) and torch.all(dense.diagonal() == 1)


def test_full_pairs_cover_every_in_radius_pair():
    torch.manual_seed(1)
    h, w, r = 5, 7, 3
    f = torch.randn(1, 6, h, w, dtype=torch.float64)
    aff, (hp, wp) = full_pair_affinities(f, r)
    assert (hp, wp) == (h + r - 1, w + 2 * (r - 1))
    from wseg.affinity import get_indices_of_pairs

    ind_from, ind_to = get_indices_of_pairs(r, (hp, wp))
    src = np.tile(ind_from, len(ind_to) // len(ind_from))
    vals = aff.reshape(-1).numpy()
    got = {}
    for a, b, v in zip(src, ind_to, vals):
        if v > 0:
            (ya, xa), (yb, xb) = divmod(int(a), wp), divmod(int(b), wp)
            key = tuple(sorted([(ya, xa - (r - 1)), (yb, xb - (r - 1))]))
            assert key not in got
            got[key] = v
    fn = f[0].numpy()
    want = {}
    for y in range(h):
        for x in range(w):
            for y2 in range(h):
                for x2 in range(w):
                    if (y, x) < (y2, x2) and (y2 - y) ** 2 + (x2 - x) ** 2 < r * r:
                        want[((y, x), (y2, x2))] = np.exp(-np.abs(fn[:, y, x] - fn[:, y2, x2]).mean())
    assert set(got) == set(want)
    assert all(abs(got[k] - want[k]) < 1e-6 for k in want)   # float32 affinities
    # scores padding and cropping are inverse, and the published pairs are a subset with the same values
    s = torch.rand(3, h, w)
    assert torch.equal(crop_scores(pad_scores(s, r), r, (h, w)), s)
    pub = pair_affinities(f, r)[0].reshape(-1).numpy()
    assert set(np.round(pub, 6)) <= set(np.round(vals[vals > 0], 6))


# --------------------------------------------------------------------------------------------- optimisation


def test_parameter_groups_and_init():
    torch.manual_seed(0)
    net = build_affinity_net("resnet38_tiny")
    net.train()
    groups = net.get_parameter_groups()
    ids = [id(p) for g in groups for p in g]
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    assert {id(p) for p in groups[2]} == {id(getattr(net.head, n).weight) for n in ("f8_3", "f8_4", "f8_5", "f9")}
    assert not any(p.requires_grad for n in ("conv1a", "b2", "b2_1", "b2_2") for p in getattr(net.backbone, n).parameters())
    assert not any(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    w = net.head.f9.weight  # xavier uniform, gain 4
    bound = 4 * math.sqrt(6.0 / (w.shape[0] + w.shape[1]))
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    big = build_affinity_net("resnet_tiny").head.f8_5.weight    # kaiming normal, fan_in
    assert abs(big.std().item() - math.sqrt(2 / big.shape[1])) < 0.1 * math.sqrt(2 / big.shape[1])


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    net = build_affinity_net("resnet38_tiny").train()
    x = torch.randn(2, 3, 96, 96)
    lab = torch.zeros(2, 12, 12, dtype=torch.long)
    lab[:, 2:8, 3:9] = 1
    lab[1, 6:11, 6:12] = 2
    lab[:, 0, :] = 255
    bg, fg, neg = extract_affinity_labels(lab)
    opt = build_optimizer("sgd", published_groups(net.get_parameter_groups(), 0.05, 5e-4), 0.05, 5e-4)
    losses = []
    for step in range(12):
        PolyLR(20).apply(opt, step)
        loss = affinity_loss(net(x), bg, fg, neg)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0] and all(np.diff(losses) < 0)


# --------------------------------------------------------------------------------------------- weights


def test_weights_loading(tmp_path):
    from wseg.methods import build_cam_net
    from wseg.models.backbones import build_backbone

    bb = build_backbone("resnet38_tiny")
    torch.save(bb.state_dict(), tmp_path / "imagenet.pth")
    net = build_affinity_net_for_training("resnet38_tiny", str(tmp_path / "imagenet.pth"))
    assert torch.equal(net.backbone.conv1a.weight, bb.conv1a.weight)
    torch.save(build_cam_net("contrast", "resnet38_tiny", 4).state_dict(), tmp_path / "cam.pth")
    with pytest.raises(WsegError, match="CAM network checkpoint.*ImageNet"):
        build_affinity_net_for_training("resnet38_tiny", str(tmp_path / "cam.pth"))
    save_state_dict(str(tmp_path / "aff.pth"), net, meta={"network": "affinity", "backbone": "resnet38_tiny"})
    loaded, meta = build_affinity_net_from_weights(str(tmp_path / "aff.pth"))
    assert meta["backbone"] == "resnet38_tiny" and torch.equal(loaded.head.f9.weight, net.head.f9.weight)
    with pytest.raises(WsegError, match="do not fit"):
        build_affinity_net_from_weights(str(tmp_path / "aff.pth"), backbone="resnet_tiny")
    with pytest.raises(WsegError, match="not an AffinityNet"):
        build_affinity_net_from_weights(str(tmp_path / "cam.pth"), backbone="resnet38_tiny")
