"""RS+EPM training (issue #22 part 3: wseg/losses/rsepm.py, wseg/methods/rsepm.py): every RecurSeed / EdgePredictMix
piece against a reference written here pixel by pixel (loops, NumPy float64), the seeds' and losses' gradients,
the ablation flags, the augmentation's crop box, and a 3-step run through scripts/wsss_train.py (tiny ResNet) with
exact resume and inference through scripts/wsss_infer.py and scripts/infer_rsepm.py."""
import argparse
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from wseg.losses import rsepm as L
from wseg.methods.rsepm import RSEPM, RSEPMAugment
from wseg.models.checkpoint import read_state_dict

SMALL = argparse.Namespace(base_channels=8, feature_size=16)


def rnd(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random(shape).astype(np.float32))


# ------------------------------------------------------------------------------------------------ pieces

def test_crop_pool_and_norm_cam():
    cams = torch.randn(2, 3, 5, 6)
    box = torch.tensor([[0, 40, 16, 48], [7, 33, 0, 47]])
    got = L.crop_pool(cams, box, (40, 48))
    for i, (h0, h1, w0, w1) in enumerate(box.tolist()):
        r0, r1 = math.floor(h0 * 5 / 40), math.ceil(h1 * 5 / 40)
        c0, c1 = math.floor(w0 * 6 / 48), math.ceil(w1 * 6 / 48)
        for c in range(3):
            vals = [float(cams[i, c, r, q]) for r in range(r0, r1) for q in range(c0, c1)]
            assert abs(got[i, c].item() - sum(vals) / len(vals)) < 1e-5
    torch.testing.assert_close(L.crop_pool(cams, None, (40, 48)), cams.mean((2, 3)))
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    n = L.norm_cam(cams, labels)
    for i in range(2):
        for c in range(3):
            a = np.maximum(cams[i, c].numpy().astype(np.float64), 0)
            ref = a / (a.max() + 1e-5) * float(labels[i, c])
            np.testing.assert_allclose(n[i, c].numpy(), ref, atol=1e-6)


def ref_scg(cam, feats, t1, t2, tf, tb):
    n, c, h, w = cam.shape
    p = h * w
    out = np.zeros((n, c, h, w))
    for i in range(n):
        hsc = np.zeros((p, p))
        for f in feats:
            x = f[i].numpy().astype(np.float64).reshape(f.shape[1], p)
            x = x / np.maximum(np.linalg.norm(x, axis=0, keepdims=True), 1e-12)
            s1 = np.maximum(x.T @ x, 0)
            s1[s1 < t1] = 0
            s2 = s1 @ s1
            for j in range(p):                                   # column j: pixel j's correlations
                s1c = s1[:, j].sum()
                s2c = s2[:, j].sum()
                s1[:, j] = s1[:, j] / (s1c + 1e-5)
                s2[:, j] = s2[:, j] / (s2c + 1e-5)
            s2[s2 < t2 / p] = 0
            m = np.maximum(s1, s2)
            hsc += m / (m.sum(0, keepdims=True) + 1e-5)
        for k in range(c):
            a = cam[i, k].numpy().reshape(p).astype(np.float64)
            if a.max() <= 0:
                continue
            v = np.array([max(0.0, sum(hsc[q, j] for q in range(p) if a[q] >= tf)
                              - sum(hsc[q, j] for q in range(p) if a[q] <= tb)) for j in range(p)])
            out[i, k] = ((v - v.min()) / (v.max() - v.min() + 1e-5)).reshape(h, w)
    return out


def test_scg_against_reference():
    cam = L.norm_cam(torch.randn(2, 3, 4, 5), torch.tensor([[1.0, 0, 1], [0, 1, 1]]))
    feats = [torch.randn(2, 6, 4, 5), torch.randn(2, 5, 4, 5)]
    got = L.scg(cam, feats, 0.2, 0.5, 0.3, 0.05)
    np.testing.assert_allclose(got.numpy(), ref_scg(cam, feats, 0.2, 0.5, 0.3, 0.05), atol=1e-5)
    assert got[0, 1].abs().max() == 0                                         # absent class stays zero


def ref_pamr(img, mask, dilations, iters, sigma):
    img = img.numpy().astype(np.float64)
    n, c3, h, w = img.shape
    mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=True).numpy().astype(np.float64)
    offs = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]

    def at(a, y, x):
        return a[..., min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    aff = np.zeros((n, len(offs), h, w))
    for i in range(n):
        for y in range(h):
            for x in range(w):
                win = np.stack([at(img[i], y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
                std = win.std(axis=0, ddof=1)
                k = np.array([-np.mean(np.abs(at(img[i], y + oy, x + ox) - img[i, :, y, x]) / (sigma * std + 1e-8))
                              for oy, ox in offs])
                e = np.exp(k - k.max())
                aff[i, :, y, x] = e / e.sum()
    for _ in range(iters):
        new = np.zeros_like(mask)
        for y in range(h):
            for x in range(w):
                for j, (oy, ox) in enumerate(offs):
                    new[:, :, y, x] += aff[:, j, y, x][:, None] * at(mask, y + oy, x + ox)
        mask = new
    return mask


def test_pamr_against_reference():
    img, mask = rnd(1, 3, 7, 9, seed=1), rnd(1, 2, 4, 5, seed=2)
    got = L.pamr(img, mask, (1, 2), iters=2, sigma=0.1)
    np.testing.assert_allclose(got.numpy(), ref_pamr(img, mask, (1, 2), 2, 0.1), atol=1e-5)


def test_seed_label_cam_loss_and_edges():
    seed = rnd(2, 3, 5, 6, seed=3)
    lab = L.seed_label(seed, 0.55, 0.10)
    for i in range(2):
        for y in range(5):
            for x in range(6):
                v = seed[i, :, y, x].tolist()
                m = max(v)
                want = v.index(m) + 1 if m >= 0.55 else (0 if m <= 0.10 else 255)
                assert lab[i, y, x] == want
    cams = torch.randn(2, 3, 3, 3)
    target = torch.randint(0, 4, (2, 6, 6))
    target[0, :2] = 255
    small = target[:, ::2, ::2]                                              # nearest 6 -> 3
    total, count = 0.0, 0
    for i in range(2):
        for y in range(3):
            for x in range(3):
                t = int(small[i, y, x])
                if t == 255:
                    continue
                count += 1
                for c in range(3):
                    p = 1 / (1 + math.exp(-float(cams[i, c, y, x])))
                    total -= math.log(p) if t == c + 1 else math.log(1 - p)
    assert abs(L.cam_loss(cams, target).item() - total / (count * 3)) < 1e-5
    prob = torch.softmax(torch.randn(2, 4, 5, 6), 1)
    e = L.edge_map(prob)
    for i in range(2):
        for y in range(5):
            for x in range(6):
                best = 0.0
                for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    if 0 <= yy < 5 and 0 <= xx < 6:
                        best = max(best, float((prob[i, :, y, x] - prob[i, :, yy, xx]).abs().max()))
                assert abs(float(e[i, y, x]) - best) < 1e-6


@pytest.mark.parametrize("mode", ["epm", "certainmix"])
def test_edge_predict_mix_against_reference(mode):
    n, h, w = 3, 6, 7
    images = torch.randn(n, 3, 12, 14)
    target = torch.randint(0, 4, (n, h, w))
    target[1, 0] = 255
    prob = torch.softmax(3 * torch.randn(n, 4, h, w), 1)
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = L.epm_mix(images, labels, target, prob, mode, edge_th=0.4)
    edge = L.edge_map(prob)
    for i in range(n):
        b = (i - 1) % n                                                     # roll by 1: i gets i - 1's paste
        present = set()
        for y in range(h):
            for x in range(w):
                tb = int(target[b, y, x])
                m = 1.0 if 1 <= tb <= 3 else 0.0
                e = float(edge[b, y, x]) if mode == "epm" else 0.0
                a = m * (1 - e)
                assert abs(float(out["alpha"][i, y, x]) - a) < 1e-6
                want = tb if a > 0.5 else int(target[i, y, x])
                if 0 < a < 1 and e > 0.4:
                    want = 255
                assert int(out["target"][i, y, x]) == want
                if a > 0.5:
                    present.add(tb)
        lab = labels[i].clone()
        for c in present:
            lab[c - 1] = 1
        torch.testing.assert_close(out["labels"][i], lab)
        a_img = F.interpolate(out["alpha"][i][None, None], size=(12, 14), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(out["image"][i], images[i] * (1 - a_img) + images[b] * a_img)
    if mode == "certainmix":
        assert set(out["alpha"].unique().tolist()) <= {0.0, 1.0}


# ------------------------------------------------------------------------------------- the step and flags

@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    return RSEPM(SMALL).build_network("resnet_tiny", 4)


def batch():
    x = rnd(2, 3, 48, 48, seed=5) * 4 - 2
    return x, torch.tensor([[1.0, 0, 1], [0, 1, 0]]), torch.tensor([[0, 48, 0, 40], [8, 48, 0, 48]])


def test_make_seed_recursion(small_net):
    x, labels, _ = batch()
    cfg = L.RSEPMConfig(pamr_iter=2, scg=True)
    out = small_net(x, with_features=True)
    e = L.make_seed(out, x, labels, cfg, recursive=False)
    cam = L.norm_cam(out["cams"], labels)
    e16 = torch.maximum(cam, L.scg(cam, [out["features"]["layer3"], out["features"]["layer4"]], 0.5, 0.1, 0.3, 0.05))
    torch.testing.assert_close(e, F.interpolate(e16, size=out["seg_logits"].shape[-2:], mode="bilinear",
                                                align_corners=False))
    r = L.make_seed(out, x, labels, cfg, recursive=True)
    s = torch.softmax(out["seg_logits"], 1)[:, 1:] * labels[..., None, None]
    small = F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(r, torch.maximum(e, L.pamr(small, s, (1, 2, 4, 8, 12, 24), 2, 0.1)))
    assert not r.requires_grad and (r[1, 0] == 0).all()                     # absent class: no seed


def grads(net, losses):
    net.zero_grad()
    losses["loss"].backward()
    def norm(prefix):
        return sum(float(p.grad.abs().sum()) for n, p in net.named_parameters()
                   if n.startswith(prefix) and p.grad is not None)
    return {k: norm(k) for k in ("backbone.", "cam_head.", "seg_head.")}


def test_terms_gradients_and_ablations(small_net):
    x, labels, box = batch()
    base = dict(rs_start=2, mix_start=4, pamr_iter=1)
    before = L.rsepm_losses(small_net, x, labels, box, 1, L.RSEPMConfig(**base))
    assert float(before["cls"]) > 0 and all(float(before[k]) == 0 for k in ("cam", "seg", "mix_cls", "mix_seg"))
    g = grads(small_net, before)
    assert g["cam_head."] > 0 and g["backbone."] > 0 and g["seg_head."] == 0   # cls only: the seg head rests
    rs = L.rsepm_losses(small_net, x, labels, box, 3, L.RSEPMConfig(**base))
    assert float(rs["seg"]) > 0 and float(rs["cam"]) > 0 and float(rs["mix_seg"]) == 0
    g = grads(small_net, rs)
    assert g["seg_head."] > 0
    torch.manual_seed(7)                                                    # the decoder's dropout
    full = L.rsepm_losses(small_net, x, labels, box, 4, L.RSEPMConfig(**base))
    assert all(float(full[k]) > 0 for k in ("cls", "cam", "seg", "mix_cls", "mix_cam", "mix_seg"))
    six = ("cls", "cam", "seg", "mix_cls", "mix_cam", "mix_seg")
    assert abs(float(full["loss"].detach()) - sum(float(full[k]) for k in six)) < 1e-4          # weights 1.0
    epm_alone = L.rsepm_losses(small_net, x, labels, box, 4, L.RSEPMConfig(**base, rs=False))
    assert float(epm_alone["cam"]) == 0 and float(epm_alone["mix_cam"]) == 0 and float(epm_alone["mix_seg"]) > 0
    torch.manual_seed(7)
    rs_alone = L.rsepm_losses(small_net, x, labels, box, 4, L.RSEPMConfig(**base, mix="none"))
    assert all(float(rs_alone[k]) == 0 for k in ("mix_cls", "mix_cam", "mix_seg")) and float(rs_alone["cam"]) > 0
    torch.testing.assert_close(rs_alone["seg"], full["seg"])              # same seeds, same first pass


def test_flags_parse_to_the_ablations():
    from wseg.methods.single_stage import get_single_stage

    cls = get_single_stage("rsepm")
    p = argparse.ArgumentParser()
    cls.add_arguments(p.add_argument_group())
    cfg = cls(p.parse_args([])).config()
    assert (cfg.rs, cfg.mix, cfg.cf_conf, cfg.cf_uncertain, cfg.recur_start) == (True, "epm", 0.55, 0.10, cfg.rs_start)
    assert cls(p.parse_args(["--no_rs"])).config().rs is False
    assert cls(p.parse_args(["--rs", "False"])).config().rs is False
    assert cls(p.parse_args(["--no_epm"])).config().mix == "none"
    assert cls(p.parse_args(["--mix", "certainmix"])).config().mix == "certainmix"
    assert cls.defaults["batch_size"] == 16 and cls.defaults["crop_size"] == 512


def test_augmentation_box():
    aug = RSEPMAugment(64, (30, 40), jitter=False)
    img = Image.fromarray(np.full((30, 50, 3), 200, np.uint8))
    for seed in range(5):
        aug.reseed(seed)
        out = aug({"image": img})
        h0, h1, w0, w1 = out["crop_box"].tolist()
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[h0:h1, w0:w1] = True
        assert out["image"].shape == (3, 64, 64)
        assert (out["image"][:, ~inside] == 0).all() and (out["image"][:, inside] != 0).all()
        aug.reseed(seed)
        torch.testing.assert_close(aug({"image": img})["image"], out["image"])


# --------------------------------------------------------------------------------------- through the stages

def run(name, argv):
    from wseg.pipeline import load_script

    mod = load_script(f"scripts/{name}.py")
    return mod.run(mod.build_parser().parse_args(argv))


def train_argv(root, prefix, extra=()):
    return ["--voc12_root", root, "--train_list", "train", "--session_name", prefix, "--network", "rsepm",
            "--backbone", "resnet_tiny", "--base_channels", "8", "--feature_size", "16", "--max_iters", "3",
            "--batch_size", "2", "--crop_size", "48", "--resize_long", "40", "56", "--rs_start", "1",
            "--mix_start", "2", "--pamr_iter", "2", "--lr", "0.01", "--num_workers", "0", "--device", "cpu",
            "--log_every", "1", "--seed", "3", *extra]


@pytest.fixture(scope="module")
def trained(toy_root, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("rsepm") / "rsepm")
    return prefix, run("wsss_train", train_argv(toy_root, prefix))


def test_training_and_exact_resume(toy_root, tmp_path, trained):
    prefix, out = trained
    assert out["finished"] and out["weights"] == prefix + ".pth"
    assert set(out["last_losses"]) == {"loss", "cls", "cam", "seg", "mix_cls", "mix_cam", "mix_seg"}
    assert all(math.isfinite(v) for v in out["last_losses"].values()) and out["last_losses"]["mix_seg"] > 0
    state, meta = read_state_dict(prefix + ".pth")
    assert meta["network"] == "rsepm" and "classifier.weight" in state and "decoder.classifier.4.weight" in state
    # the saved result is the weights' moving average, updated after each of the 3 optimiser steps
    assert meta["ema"]["updates"] == 3 and meta["ema"]["decay"] == 0.9999
    # did it learn: the saved (averaged) network's classification loss in eval mode on the un-augmented images
    from wseg.data.voc import VOCRoot
    from wseg.methods import get_single_stage
    from wseg.methods.base import eval_cls_loss
    from wseg.stages.wsss_infer import load_trained

    method, net, _ = load_trained(prefix + ".pth")
    voc = VOCRoot(toy_root)
    labels = np.load(os.path.join(toy_root, "cls_labels.npy"), allow_pickle=True).item()
    ids = voc.ids("train")
    assert get_single_stage("rsepm").eval_cls_check
    assert out["cls_loss"] == pytest.approx(eval_cls_loss(method, net, voc, ids, labels), rel=1e-5)
    assert out["train_cls_loss"] != out["cls_loss"]
    resumed = str(tmp_path / "resumed")
    first = run("wsss_train", train_argv(toy_root, resumed, ["--stop_iter", "2"]))
    assert not first["finished"]
    second = run("wsss_train", train_argv(toy_root, resumed))
    assert second["trained_iters"] == 1 and second["finished"]
    b, meta_b = read_state_dict(resumed + ".pth")
    assert meta_b["ema"]["updates"] == 3
    for k in state:
        torch.testing.assert_close(state[k], b[k], rtol=0, atol=0, msg=k)


def test_inference_through_both_scripts(toy_root, tmp_path, trained):
    from wseg.data.transforms import hwc_to_chw, normalize
    from wseg.data.voc import VOCRoot
    from wseg.io import load_mask_png
    from wseg.rsepm import infer_image
    from wseg.stages.wsss_infer import load_trained

    weights = trained[0] + ".pth"
    pred = str(tmp_path / "pred")
    argv = ["--weights", weights, "--voc12_root", toy_root, "--infer_list", "val", "--out_pred", pred,
            "--num_workers", "0", "--device", "cpu"]
    assert run("wsss_infer", argv)["inferred"] == 4
    voc = VOCRoot(toy_root)
    _, net, _ = load_trained(weights)
    net.eval()
    image_id = voc.ids("val")[0]
    img = np.asarray(Image.open(voc.image_path(image_id)).convert("RGB"))
    _, prob = infer_image(net, torch.from_numpy(hwc_to_chw(normalize(img))), (1.0, 0.5, 1.5, 2.0))
    np.testing.assert_array_equal(load_mask_png(os.path.join(pred, image_id + ".png")), prob.argmax(0).numpy())
    seeds = str(tmp_path / "seeds")                                          # the released seed script reads it
    run("infer_rsepm", ["--root_dir", toy_root, "--domain", "val", "--weights", weights, "--out_dir", seeds,
                        "--device", "cpu", "--num_workers", "0", "--scales", "1.0"])
    assert len(os.listdir(seeds)) >= 4


def test_rsepm_train_script_is_the_single_stage_trainer_with_network_rsepm():
    """``scripts/rsepm_train.py`` (the issue's name for the trainer the authors never released) fills in
    ``--network rsepm``: its help lists the RS+EPM flags and the published defaults."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(repo, "scripts/rsepm_train.py"), "--help"], cwd=repo,
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": repo}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--mix" in out.stdout and "--rs_start" in out.stdout


def test_model_ema_follows_the_released_formula_and_survives_resume(tmp_path):
    """``ModelEMA``: every float state entry (parameters and BN statistics) becomes d * ema + (1 - d) * model with
    d = decay * (1 - exp(-updates / tau)) (the released torch_utils ModelEMA); integer buffers are left alone; its
    state round-trips through a resume checkpoint."""
    import torch
    from torch import nn

    from wseg.engine.ema import ModelEMA
    from wseg.models.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ema = ModelEMA(net, decay=0.9, tau=3.0)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    for step in range(1, 6):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.add_(1.0)
            net[1].num_batches_tracked.add_(1)
        ema.update(net)
        d = 0.9 * (1 - math.exp(-step / 3.0))
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                ref[k] = d * ref[k] + (1 - d) * v
    for k, v in ema.module.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, ref[k], atol=1e-6), k
    assert int(ema.module[1].num_batches_tracked) == 0
    path = str(tmp_path / "c.pth")
    save_checkpoint(path, net, None, 5, ema=ema)
    other = ModelEMA(net, decay=0.9, tau=3.0)
    load_checkpoint(path, net, ema=other)
    assert other.updates == 5 and torch.equal(other.module[0].weight, ema.module[0].weight)
