"""Optimisers and the one poly schedule: the published PolyOptimizer (four groups, momentum quirk), the DeepLab
``adjust_lr`` (multiplier applied after the poly factor), warm-up and eta_min, AdamW groups."""
import pytest
import torch
from torch import nn

from wseg.engine.optim import PolyLR, adamw_groups, build_optimizer, poly_lr, published_groups


def groups():
    torch.manual_seed(0)
    return ([nn.Parameter(torch.randn(3, 3))], [], [nn.Parameter(torch.randn(2))], [nn.Parameter(torch.randn(1))])


def steps(opt, schedule, n):
    lrs = []
    for s in range(n):
        schedule.apply(opt, s)
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad = torch.ones_like(p)
        opt.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    return lrs


def test_published_poly_optimizer_groups_schedule_and_momentum_quirk():
    opt = build_optimizer("sgd", published_groups(groups(), 0.01, 5e-4), 0.01, 5e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1, 0.2])   # empty bias group dropped
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 5e-4, 0.0]
    assert all(g["momentum"] == 5e-4 for g in opt.param_groups)                      # SGD(params, lr, wd) quirk
    lrs = steps(opt, PolyLR(4), 6)
    expected = [b * max(0, 1 - s / 4) ** 0.9 for s in range(6) for b in (0.01, 0.1, 0.2)]
    assert [v for row in lrs for v in row] == pytest.approx(expected)
    assert poly_lr(0.1, 2, 4) == pytest.approx(0.1 * 0.5 ** 0.9) and poly_lr(0.1, 9, 4) == 0
    assert build_optimizer("sgd", published_groups(groups(), 0.01, 5e-4), 0.01, 5e-4, 0.9).param_groups[0][
        "momentum"] == 0.9


def test_head_lr_mult_scales_the_new_layers_groups_only():
    """``--head_lr_mult`` (published 10): new-layer weights x m, their biases x 2m, the backbone's untouched."""
    from wseg.engine.optim import head_lr_mults

    assert head_lr_mults() == (1.0, 2.0, 10.0, 20.0)
    mults = head_lr_mults(80.0)
    opt = build_optimizer("sgd", published_groups(groups(), 0.01, 5e-4, mults), 0.01, 5e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.8, 1.6])


def test_deeplab_adjust_lr_multiplies_after_the_poly_factor():
    opt = build_optimizer("sgd", published_groups(groups(), 0.001, 5e-4, split_mult=True), 0.001, 5e-4, 0.9)
    assert [g["lr_mult"] for g in opt.param_groups] == [1, 10, 20]
    now = PolyLR(101).apply(opt, 50)
    assert now == pytest.approx(0.001 * (1 - 50 / 101) ** 0.9)
    assert [g["lr"] for g in opt.param_groups] == [(0.001 * (1 - 50 / 101) ** 0.9) * m for m in (1, 10, 20)]


def test_warmup_and_eta_min():
    """ToCo's PolyWarmupAdamW (linear from warmup_ratio x to 1x, then poly of the global step) and mmseg's eta_min."""
    s = PolyLR(100, power=1.0, warmup_iters=10, warmup_ratio=0.1)
    assert s.lr(1.0, 0) == pytest.approx(0.1) and s.lr(1.0, 5) == pytest.approx(0.55)
    assert s.lr(1.0, 10) == pytest.approx(0.9) and s.lr(1.0, 50) == pytest.approx(0.5)
    m = PolyLR(100, power=0.9, min_lr=1e-4)
    assert m.lr(0.01, 0) == pytest.approx(0.01) and m.lr(0.01, 100) == pytest.approx(1e-4)
    assert m.lr(0.01, 50) == pytest.approx((0.01 - 1e-4) * 0.5 ** 0.9 + 1e-4)


def test_adamw_groups_drop_multipliers_and_bias_decay():
    opt = build_optimizer("adamw", adamw_groups(groups(), 1e-4), 1e-3, 1e-4)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3, 1e-3]  # the empty group is dropped
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 1e-4, 0.0]
    lrs = steps(opt, PolyLR(5), 3)
    assert [r[0] for r in lrs] == pytest.approx([poly_lr(1e-3, s, 5) for s in range(3)])
