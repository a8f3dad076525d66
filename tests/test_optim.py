import pytest
import torch

from wseg.optim import PolyAdamW, PolyOptimizer, build_optimizer, poly_lr


def groups():
    torch.manual_seed(0)
    return ([torch.nn.Parameter(torch.randn(3, 3))], [], [torch.nn.Parameter(torch.randn(2))],
            [torch.nn.Parameter(torch.randn(1))])


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_poly_schedule_and_resume(name):
    opt = build_optimizer(name, groups(), lr=0.1, weight_decay=5e-4, max_step=10, momentum=0.9)
    assert isinstance(opt, PolyOptimizer if name == "sgd" else PolyAdamW)
    for _ in range(4):
        for g in opt.param_groups:
            for p in g["params"]:
                p.grad = torch.ones_like(p)
        opt.step()
    base = [g["initial_lr"] for g in opt.param_groups]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([poly_lr(b, 3, 10) for b in base])
    sd = opt.state_dict()
    again = build_optimizer(name, groups(), lr=0.1, weight_decay=5e-4, max_step=10, momentum=0.9)
    again.load_state_dict(sd)
    assert again.global_step == 4 and again.max_step == 10


def test_adamw_groups_drop_multipliers_and_bias_decay():
    opt = PolyAdamW(groups(), lr=1e-3, weight_decay=1e-4, max_step=5)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3, 1e-3]  # the empty group is dropped
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 1e-4, 0.0]
