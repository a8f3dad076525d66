"""The regularised (dense energy) loss in PyTorch against a reference that follows the published
``DenseEnergyLoss`` / ``DenseEnergyLossFunction`` step by step with an explicit float64 kernel matrix."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wseg.errors import WsegError
from wseg.losses.dense_energy import (DenseEnergyLoss, bilateral_features, dense_energy_autograd, energy_loss,
                                      exact_gaussian_filter, grid_gaussian_filter)


def kernel_matrix(image, sigma_rgb, sigma_xy):
    """``exp(-|p_i - p_j|^2 / 2 sxy^2 - |I_i - I_j|^2 / 2 srgb^2)`` for one ``(3, H, W)`` image, float64."""
    _, h, w = image.shape
    ys, xs = np.mgrid[0:h, 0:w]
    f = np.concatenate([xs.reshape(1, -1) / sigma_xy, ys.reshape(1, -1) / sigma_xy,
                        image.reshape(3, -1).astype(np.float64) / sigma_rgb]).T
    return np.exp(-0.5 * ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))


def ref_published(images, probs, rois, seg_label, weight=1e-7, sigma_rgb=15, sigma_xy=100, sf=0.5, gain=1.0):
    """The published forward, and the published gradient with respect to the *scaled* probabilities."""
    imgs = F.interpolate(images, scale_factor=sf, recompute_scale_factor=True)
    segs = F.interpolate(probs, scale_factor=sf, mode="bilinear", align_corners=False, recompute_scale_factor=True)
    rois = F.interpolate(rois.unsqueeze(1), scale_factor=sf, recompute_scale_factor=True).squeeze(1)
    lab = F.interpolate(seg_label, scale_factor=sf, mode="nearest", recompute_scale_factor=True)
    unlabel = (lab.long() == 255).squeeze(1)
    n, k, h, w = segs.shape
    gate = rois.clone() - torch.max(segs, dim=1)[0]
    gate[unlabel] = 1
    gate[gate < 0] = 0
    s = (segs * rois.unsqueeze(1)).double().numpy()
    a_s = np.zeros_like(s)
    for i in range(n):
        wm = kernel_matrix(imgs[i].numpy(), sigma_rgb, sigma_xy * sf) * gain
        a_s[i] = (s[i].reshape(k, -1) @ wm.T).reshape(k, h, w) * gate[i].double().numpy()[None]
    loss = -np.dot(s.ravel(), a_s.ravel()) / n
    grad = -2 * a_s / n * rois.unsqueeze(1).double().numpy()
    return weight * loss, weight * torch.from_numpy(grad), segs


def make_inputs(seed=0, n=2, k=4, h=16, w=20):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, h // 4, w // 4, generator=g) * 255).repeat_interleave(4, 2).repeat_interleave(4, 3)
    images = images + torch.rand(n, 3, h, w, generator=g) * 20
    logits = torch.randn(n, k, h, w, generator=g) * 2
    rois = torch.ones(n, h, w)
    rois[1, :4] = 0
    label = torch.randint(0, k, (n, 1, h, w), generator=g).float()
    label[:, :, 6:10] = 255
    return images, logits, rois, label


def test_forward_and_published_backward_match_reference():
    images, logits, rois, label = make_inputs()
    probs = logits.softmax(1).requires_grad_()
    loss = DenseEnergyLoss(method="exact", gain=1.0)(images, probs, rois, label)
    ref_loss, ref_grad, ref_segs = ref_published(images, probs.detach(), rois, label)
    assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-4)
    loss.backward()
    # the reference gradient w.r.t. the scaled maps, carried back through the bilinear resize by autograd
    p2 = probs.detach().clone().requires_grad_()
    segs = F.interpolate(p2, scale_factor=0.5, mode="bilinear", align_corners=False, recompute_scale_factor=True)
    (segs * ref_grad.float()).sum().backward()
    assert torch.allclose(probs.grad, p2.grad, rtol=1e-4, atol=1e-12)
    # the loss of the published call site (ImageNet-normalised image, logits, img_box)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    box = torch.tensor([[0, 16, 0, 20], [4, 16, 0, 20]])
    site = energy_loss((images - mean) / std, logits, label.squeeze(1), box, DenseEnergyLoss(method="exact", gain=1.0))
    assert float(site) == pytest.approx(ref_loss, rel=1e-4)


def test_published_gradient_is_autograd_without_gate():
    """All pixels unlabelled and the ROI everywhere: the gate is 1, and the published backward is the exact
    gradient of the energy (for the exact and for the grid filter, both symmetric)."""
    images, logits, _, label = make_inputs(1)
    rois = torch.ones(2, 8, 10)
    unl = torch.ones(2, 8, 10, dtype=torch.bool)
    feats = bilateral_features(F.interpolate(images, scale_factor=0.5, recompute_scale_factor=True), 15, 4.0)
    segs = logits[:, :, ::2, ::2].softmax(1)
    from wseg.losses.dense_energy import DenseEnergyLossFunction
    for method in ("exact", "grid"):
        a = segs.clone().requires_grad_()
        DenseEnergyLossFunction.apply(a, feats, rois, unl, method, 1.0).backward()
        b = segs.clone().requires_grad_()
        dense_energy_autograd(b, feats, rois, unl, method, 1.0).backward()
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), method
    # with a real gate the published gradient is not the exact one
    unl[:, :4] = False
    a = segs.clone().requires_grad_()
    DenseEnergyLossFunction.apply(a, feats, rois, unl, "exact", 1.0).backward()
    b = segs.clone().requires_grad_()
    dense_energy_autograd(b, feats, rois, unl, "exact", 1.0).backward()
    assert not torch.allclose(a.grad, b.grad, rtol=1e-3)


def test_grid_filter_approximates_exact():
    g = torch.Generator().manual_seed(2)
    h, w = 40, 48
    images = (torch.rand(1, 3, 5, 6, generator=g) * 255).repeat_interleave(8, 2).repeat_interleave(8, 3)
    images = F.avg_pool2d(images, 5, 1, 2, count_include_pad=False) + torch.rand(1, 3, h, w, generator=g) * 10
    feats = bilateral_features(images, 15, 10.0)
    vals = F.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 7, 1, 3).reshape(1, 3, -1)
    ex = exact_gaussian_filter(feats, vals)
    gr = grid_gaussian_filter(feats, vals)
    wm = torch.from_numpy(kernel_matrix(images[0].numpy(), 15, 10.0)).float()
    assert torch.allclose(ex[0], vals[0] @ wm.T, rtol=1e-4, atol=1e-3)
    energy_ratio = float((vals * gr).sum() / (vals * ex).sum())
    assert energy_ratio == pytest.approx(1.0, abs=0.03)
    assert float((gr - ex).abs().mean() / ex.abs().mean()) < 0.1


def test_bad_settings_are_one_line_errors():
    with pytest.raises(WsegError, match="filter"):
        DenseEnergyLoss(method="lattice")
    with pytest.raises(WsegError, match="backward"):
        DenseEnergyLoss(backward="exact")
    with pytest.raises(WsegError, match="cell"):
        grid_gaussian_filter(torch.zeros(1, 4, 5), torch.zeros(1, 1, 4), cell=2.0)
