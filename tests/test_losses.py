"""SEAM and PPC losses vs straightforward loop references written in the published style (same sampled indices):
SEAM's here, PPC's contrast in ``tests/published_refs.py`` (shared with the benchmarks)."""
import pytest
import torch
import torch.nn.functional as F

from wseg.losses.ppc import ppc_losses
from wseg.losses.seam import seam_losses
from wseg.engine.optim import PolyLR, build_optimizer, published_groups
from wseg.engine.trainer import StepContext
from wseg.methods import build_cam_net, get_method

import published_refs as pub  # tests/ is on sys.path under pytest (rootdir-relative, no __init__.py)


# ----------------------------------------------------------------------------------------------- references


def ref_seam(cam1, cam_rv1, cam2, cam_rv2, label):
    """train_SEAM.py / contrast_train.py, line by line (view 2 size from cam2)."""
    n = label.shape[0]
    label = torch.cat((torch.ones((n, 1)), label), dim=1).unsqueeze(2).unsqueeze(3)
    size = cam2.shape[-2:]
    label1 = F.adaptive_avg_pool2d(cam1, (1, 1))
    loss_rvmin1 = pub.adaptive_min_pooling_loss((cam_rv1 * label)[:, 1:, :, :])
    cam1 = F.interpolate(pub.max_norm(cam1), size=size, mode="bilinear", align_corners=True) * label
    cam_rv1 = F.interpolate(pub.max_norm(cam_rv1), size=size, mode="bilinear", align_corners=True) * label
    label2 = F.adaptive_avg_pool2d(cam2, (1, 1))
    loss_rvmin2 = pub.adaptive_min_pooling_loss((cam_rv2 * label)[:, 1:, :, :])
    cam2 = pub.max_norm(cam2) * label
    cam_rv2 = pub.max_norm(cam_rv2) * label
    loss_cls1 = F.multilabel_soft_margin_loss(label1[:, 1:, :, :], label[:, 1:, :, :])
    loss_cls2 = F.multilabel_soft_margin_loss(label2[:, 1:, :, :], label[:, 1:, :, :])
    ns, cs, hs, ws = cam2.size()
    loss_er = torch.mean(torch.abs(cam1[:, 1:, :, :] - cam2[:, 1:, :, :]))
    cam1[:, 0, :, :] = 1 - torch.max(cam1[:, 1:, :, :], dim=1)[0]
    cam2[:, 0, :, :] = 1 - torch.max(cam2[:, 1:, :, :], dim=1)[0]
    tensor_ecr1 = torch.abs(pub.max_onehot(cam2.detach().clone()) - cam_rv1)
    tensor_ecr2 = torch.abs(pub.max_onehot(cam1.detach().clone()) - cam_rv2)
    k = int(cs * hs * ws * 0.2)
    loss_ecr = (torch.mean(torch.topk(tensor_ecr1.view(ns, -1), k=k, dim=-1)[0])
                + torch.mean(torch.topk(tensor_ecr2.view(ns, -1), k=k, dim=-1)[0]))
    loss_cls = (loss_cls1 + loss_cls2) / 2 + (loss_rvmin1 + loss_rvmin2) / 2
    return {"loss": loss_cls + loss_er + loss_ecr, "loss_cls": loss_cls, "loss_er": loss_er, "loss_ecr": loss_ecr}


def ref_ppc(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, keys1, keys2):
    """contrast_train.py's contrast block (tests/published_refs.py) with the hard pixel sampling drawn from the keys
    and CUDA's ``topk`` tie order: ``({loss_nce, loss_cross_nce, loss_cross_nce2, loss_intra_nce}, (y1, y2))``."""
    return pub.ppc_contrast(f_proj1, cam_rv1_down, f_proj2, cam_rv2_down, label, keys=(keys1, keys2),
                            stable_topk=True)


# ----------------------------------------------------------------------------------------------- inputs


def fake_outputs(n=2, c=21, size1=32, size2=16, feat2=8, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    def t(*shape, positive=False):
        x = torch.randn(*shape, generator=g)
        return (x.abs() if positive else x).requires_grad_()
    label = (torch.rand(n, c - 1, generator=g) < 0.3).float()
    label[:, 0] = 1
    out1 = (t(n, c, size1, size1), t(n, c, size1, size1), t(n, d, 2 * feat2, 2 * feat2, positive=True),
            t(n, c, 2 * feat2, 2 * feat2))
    out2 = (t(n, c, size2, size2), t(n, c, size2, size2), t(n, d, feat2, feat2, positive=True),
            t(n, c, feat2, feat2))
    # make the label-masked CAM peak on present classes so several pseudo classes appear
    present = torch.cat([torch.zeros(n, 1), label], 1)[..., None, None]
    for o in (out1[3], out2[3]):
        o.data += 3 * present * torch.rand(o.shape, generator=g)
    keys = [torch.rand(n * feat2 * feat2, generator=g) for _ in range(2)]
    return out1, out2, label, keys


def _grads(loss, tensors):
    return torch.autograd.grad(loss, [t for t in tensors if t.requires_grad], allow_unused=True)


# ----------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("c", [21, 5])
def test_seam_losses_match_reference(c):
    out1, out2, label, _ = fake_outputs(c=c)
    got = seam_losses(out1[0], out1[1], out2[0], out2[1], label)
    ref = ref_seam(out1[0], out1[1], out2[0], out2[1], label)
    for k in ref:
        assert torch.allclose(got[k], ref[k], atol=1e-5, rtol=1e-5), k
    ins = [out1[0], out1[1], out2[0], out2[1]]
    for a, b in zip(_grads(got["loss"], ins), _grads(ref["loss"], ins)):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("c,seed", [(21, 0), (21, 1), (5, 2)])
def test_ppc_losses_match_reference(c, seed):
    out1, out2, label, keys = fake_outputs(c=c, seed=seed)
    args = (out1[2], out1[3], out2[2], out2[3], label)
    got = ppc_losses(*args, random_keys=keys)
    ref, (y1, y2) = ref_ppc(*args, *keys)
    counts = torch.bincount(y2, minlength=c)
    assert (counts > 0).sum() >= 3  # the inputs exercise several classes (and usually a singleton one)
    for k in ref:
        assert torch.allclose(got[k], ref[k], atol=1e-5, rtol=1e-5), (k, got[k], ref[k])
    ins = [out1[2], out2[2]]
    for a, b in zip(_grads(got["loss_nce"], ins), _grads(ref["loss_nce"], ins)):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_singleton_classes_count_but_add_nothing():
    from wseg.losses.ppc import intra_view_nce
    f = F.normalize(torch.randn(7, 4), dim=-1)
    protos = F.normalize(torch.randn(16, 4), dim=-1)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 2])  # class 2 has one pixel: counted in the mean, adds no term
    keys = torch.rand(7)
    got = intra_view_nce(f, protos, y, keys)
    assert got > 0 and torch.allclose(got, pub.intra_view_nce(f, protos, y, keys), atol=1e-6)


def test_sampling_uses_the_generator():
    out1, out2, label, _ = fake_outputs()
    args = (out1[2], out1[3], out2[2], out2[3], label)
    a = ppc_losses(*args, generator=torch.Generator().manual_seed(3))["loss_intra_nce"]
    b = ppc_losses(*args, generator=torch.Generator().manual_seed(3))["loss_intra_nce"]
    assert torch.equal(a, b)


def named(out):
    """Positional fake outputs -> the named outputs of the SEAM/PPC networks."""
    return dict(zip(("cam", "cam_rv", "f_proj", "cam_rv_down"), out))


def test_method_losses_compose_published_total():
    out1, out2, label, _ = fake_outputs()
    n, hw = label.shape[0], out2[3][0, 0].numel()
    keys = torch.rand(2, n * hw, generator=torch.Generator().manual_seed(7))        # what PPC draws from its generator
    ctx = StepContext(generator=torch.Generator().manual_seed(7))
    full = get_method("contrast")().losses(named(out1), named(out2), label, ctx)
    ref_s = ref_seam(out1[0], out1[1], out2[0], out2[1], label)
    ref_p, _ = ref_ppc(out1[2], out1[3], out2[2], out2[3], label, keys[0], keys[1])
    assert torch.allclose(full["loss"], ref_s["loss"] + ref_p["loss_nce"], atol=1e-5)
    assert set(full) >= {"loss", "loss_cls", "loss_er", "loss_ecr", "loss_nce", "loss_intra_nce", "loss_cross_nce",
                         "loss_cross_nce2"}
    seam = get_method("seam")().losses(named(out1[:2]), named(out2[:2]), label, StepContext())
    assert torch.allclose(seam["loss"], ref_s["loss"], atol=1e-5) and "loss_nce" not in seam


def test_a_few_sgd_steps_lower_the_total_loss():
    torch.manual_seed(0)
    net = build_cam_net("contrast", "resnet38_tiny", num_classes=5).eval()  # dropout off: same loss surface
    x = torch.randn(2, 3, 64, 64)
    x2 = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=True)
    label = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    opt = build_optimizer("sgd", published_groups(net.get_parameter_groups(), 0.01, 5e-4), 0.01, 5e-4)
    losses = []
    ppc = get_method("contrast")()
    for step in range(6):
        PolyLR(50).apply(opt, step)
        out = ppc.losses(net(x), net(x2), label, StepContext(generator=torch.Generator().manual_seed(0)))
        loss = out["loss"]
        assert all(torch.isfinite(v) for v in out.values())
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for g in opt.param_groups for p in g["params"] if p.grad is not None)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], losses


# ----------------------------------------------------------------------------------------------- PPC building blocks


def test_semi_hard_mask_picks_the_published_topk_ranks_even_with_ties():
    from wseg.losses.ppc import semi_hard_mask
    g = torch.Generator().manual_seed(0)
    distinct = torch.randn(3, 21, 7, generator=g)
    ref = torch.zeros_like(distinct).scatter_(1, torch.topk(distinct, 13, dim=1).indices[:, 3:], 1.0)
    assert torch.equal(semi_hard_mask(distinct, 1).float(), ref)
    assert torch.equal(semi_hard_mask(distinct, 1, dtype=torch.float32), ref)          # the 0/1 form the loss uses
    tied = torch.randint(-3, 3, (50, 21), generator=g).float() * 0.5
    tied[0] = 0.0
    tied[1, :5] = -0.0
    for top, skip in ((13, 3), (21, 0), (5, 5), (1, 0)):
        mask = semi_hard_mask(tied, 1, top, skip)
        assert mask.dtype == torch.bool and (mask.sum(1) == top - skip).all()
        got = torch.where(mask, tied, torch.inf).sort(1).values[:, :top - skip]
        want = torch.topk(tied, top, dim=1).values[:, skip:].sort(1).values
        assert torch.equal(got, want)                       # the same ranked values, ties in any order
    few = torch.randn(4, 5, generator=g)                    # fewer classes than neg_top: ranks 3.. of 5
    ref = torch.zeros_like(few).scatter_(1, torch.topk(few, 5, dim=1).indices[:, 3:], 1.0)
    assert torch.equal(semi_hard_mask(few, 1).float(), ref)


def test_first_argmax_and_normalize_cam_match_published_ops():
    from wseg.losses.ppc import first_argmax, normalize_cam
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (4, 6, 5, 5), generator=g).float()
    assert torch.equal(first_argmax(x, 1), x.argmax(1))
    cam = torch.randn(2, 5, 4, 4, generator=g)
    cam[0, 1] = 0.0                                  # a constant map
    cam[1, 2, 0, :2] = cam[1, 2].min() + 5e-6        # values within eps of the minimum
    ref = F.relu(cam.clone())
    mn = ref.flatten(2).min(-1)[0][..., None, None]
    mx = ref.flatten(2).max(-1)[0][..., None, None]
    ref[ref < mn + 1e-5] = 0.
    ref = (ref - mn - 1e-5) / (mx - mn + 1e-5)
    ref[:, 0] = 0.2
    assert torch.equal(normalize_cam(cam), ref)
    class_major = cam.flatten(2).transpose(0, 1).unsqueeze(0)                         # (1, C, N, h*w), as in training
    assert torch.equal(normalize_cam(class_major, map_dims=3), ref.flatten(2).transpose(0, 1).unsqueeze(0))


def test_sorted_rows_equal_torch_sort():
    from wseg.losses.ppc import sorted_rows
    g = torch.Generator().manual_seed(0)
    for x in (torch.randint(-2 ** 62, 2 ** 62, (2, 2, 2049), generator=g), torch.randint(0, 5, (3, 100), generator=g),
              torch.randn(4, 333, generator=g), torch.randn(5, generator=g).half()):
        assert torch.equal(sorted_rows(x), torch.sort(x, dim=-1).values)


def test_top_k_rows_take_ties_in_index_order():
    from wseg.losses.ppc import top_k_rows
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 2049, generator=g)
    x[1] = 0.2                                                   # PPC's constant background row
    x[2, ::3] = x[2, 0].abs()                                    # ties straddling the cut, >= 0
    x[3] = -x[3].abs()
    x[4, ::2] = -0.5                                             # ties straddling the cut, < 0
    x[5] = -1.0
    for k in (1, 32, 700, 2049):
        vals, idx = top_k_rows(x, k)
        ref = torch.sort(x, dim=-1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(idx.sort(-1).values, ref.sort(-1).values), k
        assert torch.equal(vals, x.gather(1, idx))
    assert torch.equal(top_k_rows(x.half(), 32)[1].sort(-1).values,
                       torch.sort(x.half(), dim=-1, descending=True, stable=True).indices[:, :32].sort(-1).values)


def test_hard_pixel_weights_match_a_class_loop():
    from wseg.losses.ppc import hard_pixel_weights
    g = torch.Generator().manual_seed(0)
    v, m, c = 2, 300, 6
    y = torch.randint(0, c - 1, (v, m), generator=g)
    y[1, :1] = c - 1                                          # a singleton class in view 1
    sim = torch.randint(0, 20, (v, m), generator=g).float() / 19   # many ties: ranked by pixel index
    keys = torch.rand(v, m, generator=g)
    ref = torch.zeros(v, m)
    for i in range(v):
        present = y[i].unique()
        for cls in present.tolist():
            pix = (y[i] == cls).nonzero()[:, 0]
            length = len(pix)
            if length < 2:
                continue
            h, k0 = length // 2, int(length * 0.6)
            rand = pix[torch.argsort(keys[i, pix], stable=True)[:h]]
            hard = pix[torch.argsort(sim[i, pix], stable=True)[k0 - h:k0]]
            for p in torch.cat([rand, hard]).tolist():
                ref[i, p] += 1 / (2 * h) / len(present)
    got = hard_pixel_weights(y, sim, keys, c)
    assert torch.allclose(got, ref, atol=1e-7)
    # each weight is exactly 0, or once or twice its class's float32 1 / (2 (L//2)) / classes: the running sum over
    # the windows' edges adds no rounding
    counts = F.one_hot(y, c).sum(1)
    half = counts // 2
    coef = ((half > 0) / (2 * half).clamp_min(1) / (counts > 0).sum(1, keepdim=True)).gather(1, y)
    assert ((got == 0) | (got == coef) | (got == 2 * coef)).all() and (got > 0).any()


def test_ppc_tiny_embedding_pixel_matches_reference():
    out1, out2, label, keys = fake_outputs(seed=3)
    f2 = out2[2].detach().clone()
    f2[0, :, 1, 2] = 1e-14 * torch.randn(f2.shape[1], generator=torch.Generator().manual_seed(0))
    f2.requires_grad_()                                       # |x| < 1e-12: F.normalize's clamp_min branch
    args = (out1[2], out1[3], f2, out2[3], label)
    got = ppc_losses(*args, random_keys=keys)["loss_nce"]
    ref = ref_ppc(*args, *keys)[0]["loss_nce"]
    assert torch.allclose(got, ref, atol=1e-5)
    for a, b in zip(_grads(got, [out1[2], f2]), _grads(ref, [out1[2], f2])):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_ppc_contrast_needs_views_of_one_size():
    from wseg.losses.ppc import ppc_contrast
    out1, out2, label, _ = fake_outputs()
    with pytest.raises(ValueError, match="resize view 1 first"):
        ppc_contrast(out1[2], out1[3], out2[2], out2[3], label)


def test_cls_only_is_the_classification_term_of_both_views():
    """Classification warm-up: ``cls_only`` gives the published multilabel soft margin of both views, and its
    gradient reaches the CAM head but not the PCM (whose ECR term is not computed)."""
    torch.manual_seed(0)
    net = build_cam_net("contrast", "resnet38_tiny", num_classes=4, frozen=(), freeze_bn=False).train()
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout2d):
            m.p = 0.0
    x1 = torch.randn(2, 3, 32, 32)
    x2 = F.interpolate(x1, size=(16, 16), mode="bilinear", align_corners=True)
    label = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out1, out2 = net(x1), net(x2)
    ppc = get_method("contrast")()
    warm = ppc.losses(out1, out2, label, StepContext(cls_only=True))
    full = ppc.losses(out1, out2, label, StepContext(generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(warm["loss"], full["loss_mlsm"]) and set(warm) == {"loss", "loss_mlsm"}
    lab = torch.cat([torch.ones(2, 1), label], 1)
    ref = sum(F.multilabel_soft_margin_loss(o["cam"].mean((2, 3))[:, 1:], lab[:, 1:]) for o in (out1, out2)) / 2
    assert torch.allclose(warm["loss"], ref)
    warm["loss"].backward()
    assert net.cam_head.fc8.weight.grad is not None and net.cam_head.fc8.weight.grad.abs().sum() > 0
    assert net.pcm.f9.weight.grad is None and net.proj.fc_proj.weight.grad is None
