"""The single-stage seam (wseg/methods/single_stage.py) with its generic stages (wsss_train, wsss_infer), and ToCo /
LOC-BE on it: a toy method registered here runs through both stages unchanged; ToCo and LOC-BE train through
scripts/wsss_train.py on the synthetic root with the test ViT; a resumed run equals the uninterrupted one; inference
writes PNGs, logits and CRF labels, resumes and guards its folders; the published inference procedures, the
augmentation's box, the optimiser and schedule, and the loss totals against references written here."""
import argparse
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import wseg.methods.locbe  # noqa: F401  (registration: the lead adds these to wseg/methods/__init__.py)
import wseg.methods.toco  # noqa: F401
from wseg.errors import WsegError
from wseg.io import load_mask_png
from wseg.methods.single_stage import (SINGLE_STAGE, SampleTransform, SingleStageMethod, get_single_stage,
                                       register_single_stage)
from wseg.models.checkpoint import read_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name):
    from wseg.pipeline import load_script

    return load_script(f"scripts/{name}.py")


def run(name, argv):
    mod = script(name)
    return mod.run(mod.build_parser().parse_args(argv))


def train_argv(root, prefix, network, iters=3, extra=()):
    net_flags = {"locbe": ["--local_crop_size", "40"], "toco": ["--local_crop_size", "16"]}.get(network, [])
    return ["--voc12_root", root, "--train_list", "train", "--session_name", prefix, "--network", network,
            "--backbone", "vit_test", "--max_iters", str(iters), "--batch_size", "2", "--crop_size", "64",
            "--warmup_iters", "2", "--seg_start", "1", "--par_iters", "2", "--num_workers", "0", "--device", "cpu",
            "--log_every", "1", "--seed", "3", *net_flags, *extra]


# --------------------------------------------------------------------------------------------- a toy method

class ToyNet(nn.Module):
    def __init__(self, num_classes, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, num_classes, 1))

    def forward(self, x):
        seg = self.body(x)
        return {"seg": seg, "cls": seg[:, 1:].amax(dim=(2, 3))}


class ToyTransform(SampleTransform):
    def __init__(self, crop):
        super().__init__()
        self.crop = crop

    def __call__(self, sample):
        img = sample["image"].resize((self.crop, self.crop))
        flip = self.rng.random() < 0.5
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
        return {"image": x.flip(-1) if flip else x, "flipped": torch.tensor(flip)}


@register_single_stage
class ToySeam(SingleStageMethod):
    """Registered here: the stages must run it with no edit."""

    name = "toy_seam_test"
    summary = "test method"
    defaults = dict(backbone="toy", max_iters=3, batch_size=2, crop_size=32, lr=1e-2, wt_decay=0.0, warmup_iters=0,
                    warmup_lr=1e-6, power=0.9)
    infer_procedures = {"tta": (1.0, 0.5)}
    crf = dict(iters=2, pos_w=1, pos_xy_std=1, bi_w=4, bi_xy_std=30, bi_rgb_std=5)
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    seen = []

    @classmethod
    def add_arguments(cls, g):
        g.add_argument("--toy_width", type=int, default=8)

    def build_network(self, backbone, num_classes):
        return ToyNet(num_classes, int(self.option("toy_width", 8)))

    def train_transform(self, crop_size):
        return ToyTransform(crop_size)

    def training_step(self, net, batch, ctx):
        type(self).seen.append(sorted(k for k in batch if k != "id"))
        loss = F.multilabel_soft_margin_loss(net(batch["image"])["cls"], batch["label"])
        return {"loss": loss, "cls": loss.detach()}


def test_stages_name_no_method():
    for rel in ("wseg/stages/wsss_train.py", "wseg/stages/wsss_infer.py", "scripts/wsss_train.py",
                "scripts/wsss_infer.py"):
        text = open(os.path.join(REPO, rel)).read().lower()
        assert not any(n in text for n in ("toco", "locbe", "loc-be", "toy_seam")), rel


def test_toy_method_through_both_stages(toy_root, tmp_path):
    prefix = str(tmp_path / "toy")
    out = run("wsss_train", ["--network", "toy_seam_test", "--voc12_root", toy_root, "--train_list", "train",
                             "--session_name", prefix, "--toy_width", "4", "--num_workers", "0", "--device", "cpu"])
    assert out["finished"] and out["iters"] == 3 and os.path.isfile(prefix + ".pth")
    assert ToySeam.seen[-1] == ["flipped", "image", "label"]            # the method's sample dict + the label
    state, meta = read_state_dict(prefix + ".pth")
    assert meta["network"] == "toy_seam_test" and meta["options"] == {"toy_width": 4}
    assert state["body.0.weight"].shape[0] == 4
    # inference rebuilds the width-4 network from the metadata (a width-8 one would not load strictly)
    res = run("wsss_infer", ["--weights", prefix + ".pth", "--voc12_root", toy_root, "--infer_list", "val",
                             "--out_pred", str(tmp_path / "pred"), "--out_crf", str(tmp_path / "crf"),
                             "--num_workers", "0", "--device", "cpu"])
    assert res["inferred"] == 4
    assert len(os.listdir(tmp_path / "pred")) == len(os.listdir(tmp_path / "crf")) == 4
    with pytest.raises(WsegError, match="publishes tta"):
        run("wsss_infer", ["--weights", prefix + ".pth", "--voc12_root", toy_root, "--infer_list", "val",
                           "--out_pred", str(tmp_path / "pred2"), "--procedure", "voc", "--device", "cpu"])


def test_unknown_method_and_published_defaults():
    with pytest.raises(WsegError, match="unknown single-stage method; choose one of locbe, rsepm, toco"):
        get_single_stage("no_such_method")
    with pytest.raises(WsegError, match="contrast is a CAM method: its network goes to scripts/contrast_train.py"):
        get_single_stage("contrast")
    p = script("wsss_train").build_parser()
    args = p.parse_args(["--network", "locbe", "--voc12_root", "r", "--train_list", "train"])
    assert (args.backbone, args.max_iters, args.batch_size, args.crop_size) == ("vit_base_patch16_224", 20000, 4, 448)
    assert (args.lr, args.wt_decay, args.warmup_iters, args.warmup_lr, args.power) == (6e-5, 0.01, 1500, 1e-6, 0.9)
    assert (args.local_crop_size, args.seg_start, args.w_sc, args.w_loc, args.w_be, args.num_crops) == (86, 2000, 0.3,
                                                                                                      1.0, 1.0, 4)
    assert (args.high_thre, args.low_thre, args.bkg_thre, args.cam_scales) == (0.7, 0.25, 0.5, [1.0, 0.5, 1.5])
    args = script("wsss_train").build_parser().parse_args(["--network", "toco", "--voc12_root", "r",
                                                           "--train_list", "train"])
    assert (args.local_crop_size, args.ncrops, args.w_ptc, args.w_ctc, args.temp) == (96, 10, 0.2, 0.5, 0.5)
    assert set(SINGLE_STAGE) >= {"toco", "locbe", "toy_seam_test"}


# --------------------------------------------------------------------------------------------- ToCo / LOC-BE

@pytest.fixture(scope="module")
def locbe_run(toy_root, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("locbe") / "locbe")
    return prefix, run("wsss_train", train_argv(toy_root, prefix, "locbe", iters=4))


@pytest.mark.parametrize("network", ["toco", "locbe"])
def test_training_through_the_script(network, toy_root, tmp_path, locbe_run):
    if network == "locbe":
        prefix, out = locbe_run
    else:
        prefix = str(tmp_path / network)
        out = run("wsss_train", train_argv(toy_root, prefix, network))
    assert out["finished"] and out["weights"] == prefix + ".pth"
    terms = {"toco": {"cls", "aux", "ptc", "ctc", "seg", "reg"}, "locbe": {"cls", "aux", "be", "loc", "sc", "seg",
                                                                          "reg"}}[network]
    assert set(out["last_losses"]) == terms | {"loss"}
    assert all(math.isfinite(v) for v in out["last_losses"].values())
    assert out["last_losses"]["reg"] != 0.0 and out["last_losses"]["seg"] > 0.0      # after --seg_start 1
    assert out["learned"] in (True, False) and out["prior_loss"] > 0
    state, meta = read_state_dict(prefix + ".pth")
    assert meta["network"] == network and meta["backbone"] == "vit_test" and meta["num_classes"] == 4
    assert "encoder.blocks.0.attn.qkv.weight" in state and "decoder.conv8.weight" in state
    assert ("attn_proj.weight" in state) == (network == "locbe")
    assert any(k.startswith("proj_head_t.") for k in state) == (network == "toco")
    lines = open(prefix + "_scalars.jsonl").read().splitlines()
    assert len(lines) == out["iters"]


def test_resume_equals_uninterrupted(toy_root, tmp_path, locbe_run):
    full_prefix, _ = locbe_run
    prefix = str(tmp_path / "resumed")
    first = run("wsss_train", train_argv(toy_root, prefix, "locbe", iters=4, extra=["--stop_iter", "2"]))
    assert not first["finished"] and first["weights"] is None and os.path.isfile(prefix + "_last.pth")
    second = run("wsss_train", train_argv(toy_root, prefix, "locbe", iters=4))
    assert second["trained_iters"] == 2 and second["finished"]
    a, _ = read_state_dict(full_prefix + ".pth")
    b, _ = read_state_dict(prefix + ".pth")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    with pytest.raises(WsegError, match="another configuration"):      # a method flag is a resume setting
        run("wsss_train", train_argv(toy_root, prefix, "locbe", iters=4, extra=["--w_loc", "0.5"]))


def test_inference_stage_writes_resumes_and_guards(toy_root, tmp_path, locbe_run):
    from wseg.data.transforms import hwc_to_chw, normalize
    from wseg.data.voc import VOCRoot
    from wseg.stages.wsss_infer import load_trained

    weights = locbe_run[0] + ".pth"
    outs = {k: str(tmp_path / k) for k in ("pred", "crf", "logits")}
    argv = ["--weights", weights, "--voc12_root", toy_root, "--infer_list", "val", "--out_pred", outs["pred"],
            "--out_crf", outs["crf"], "--out_logits", outs["logits"], "--num_workers", "1", "--device", "cpu"]
    assert run("wsss_infer", argv)["inferred"] == 4
    voc = VOCRoot(toy_root)
    method, net, _ = load_trained(weights)
    net.eval()
    for image_id in voc.ids("val"):
        img = np.asarray(Image.open(voc.image_path(image_id)).convert("RGB"))
        pred, crf = load_mask_png(os.path.join(outs["pred"], image_id + ".png")), load_mask_png(
            os.path.join(outs["crf"], image_id + ".png"))
        assert pred.shape == crf.shape == img.shape[:2] and pred.max() < 4 and crf.max() < 4
        logits = np.load(os.path.join(outs["logits"], image_id + ".npy"), allow_pickle=True).item()["msc_seg"]
        x = torch.from_numpy(hwc_to_chw(normalize(img)))[None]
        ref = method.predict(net, x, img.shape[:2]).numpy()
        assert logits.shape == (1, 4) + img.shape[:2]
        np.testing.assert_allclose(logits[0], ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(pred, ref.argmax(0))
    os.remove(os.path.join(outs["pred"], voc.ids("val")[0] + ".png"))
    assert run("wsss_infer", argv)["inferred"] == 1                      # resume: only the missing image
    assert run("wsss_infer", argv)["inferred"] == 0
    with pytest.raises(WsegError, match="other settings"):              # the folder's settings guard
        run("wsss_infer", argv + ["--scales", "1.0"])


# --------------------------------------------------------------------------------------------- published pieces

def ref_voc_inference(net, x, size, scales=(1.0, 1.5, 1.25)):
    """L:tools/infer_seg_voc.py:53-68, step by step."""
    _, _, h, w = x.shape
    seg_list = []
    for sc in scales:
        _inputs = F.interpolate(x, size=[int(h * sc), int(w * sc)], mode="bilinear", align_corners=False)
        segs = net(torch.cat([_inputs, _inputs.flip(-1)], dim=0))["seg"]
        segs = F.interpolate(segs, size=size, mode="bilinear", align_corners=False)
        seg_list.append(segs[:1] + segs[1:].flip(-1))
    return torch.max(torch.stack(seg_list, dim=0), dim=0)[0][0]


def ref_coco_inference(net, x, size, scales=(1.0, 1.25, 1.5)):
    """L:tools/infer_seg_coco_ddp.py:57-73, step by step."""
    x = F.interpolate(x, size=[448, 448], mode="bilinear", align_corners=False)
    _, _, h, w = x.shape
    seg_list = []
    for sc in scales:
        _inputs = F.interpolate(x, size=[int(h * sc), int(w * sc)], mode="bilinear", align_corners=False)
        segs = net(torch.cat([_inputs, _inputs.flip(-1)], dim=0))["seg"]
        segs = F.interpolate(segs, size=size, mode="bilinear", align_corners=False)
        seg_list.append(torch.max(segs[:1], segs[1:].flip(-1)))
    return torch.sum(torch.stack(seg_list, dim=0), dim=0)[0]


def test_published_inference_procedures():
    method = get_single_stage("locbe")()
    assert method.infer_scales() == (1.0, 1.5, 1.25) and method.infer_scales("coco") == (1.0, 1.25, 1.5)
    assert method.crf == dict(iters=10, pos_w=1, pos_xy_std=1, bi_w=4, bi_xy_std=121, bi_rgb_std=5)
    torch.manual_seed(0)
    net = method.build_network("vit_test", 5).eval()
    with torch.no_grad():
        for p in net.decoder.parameters():            # a decoder with distinct outputs per scale
            p.add_(torch.randn_like(p) * 0.5)
        x = torch.randn(1, 3, 50, 70)
        voc = method.predict(net, x, (53, 71))
        ref = ref_voc_inference(net, x, (53, 71))
        torch.testing.assert_close(voc, ref, rtol=1e-5, atol=1e-5)
        mean_ref = sum(ref_voc_inference(net, x, (53, 71), (s,)) for s in (1.0, 1.5, 1.25)) / 3
        assert not torch.allclose(voc, mean_ref, atol=1e-3)          # the max over scales is what is checked
        coco = method.predict(net, x, (53, 71), procedure="coco")
        torch.testing.assert_close(coco, ref_coco_inference(net, x, (53, 71)), rtol=1e-5, atol=1e-5)
    with pytest.raises(WsegError):
        method.predict(net, x, (53, 71), procedure="ade")


def test_augmentation_box_flip_and_seeds():
    import random

    from wseg.methods.toco import ToCoAugment, random_crop_with_box, scale_flip_crop

    rng = random.Random(0)
    for shape in ((30, 50), (80, 90), (40, 100)):
        arr = np.full(shape + (3,), 7, np.uint8)
        crop, box = random_crop_with_box(arr, 64, rng)
        inside = np.zeros((64, 64), bool)
        inside[box[0]:box[1], box[2]:box[3]] = True
        assert crop.shape == (64, 64, 3) and (crop[inside] == 7).all() and (crop[~inside] == 0).all()
    ramp = np.repeat(np.linspace(10, 250, 60).astype(np.uint8)[None, :, None], 40, 0).repeat(3, 2)   # dark->bright
    flips = set()
    for seed in range(16):                  # scaling U(0.5, 2) drawn first, int() sides, then flip p 0.5, then crop
        ratio = random.Random(seed).uniform(0.5, 2.0)
        arr, box = scale_flip_crop(Image.fromarray(ramp), 64, (0.5, 2.0), random.Random(seed))
        assert [box[1] - box[0], box[3] - box[2]] == [min(64, int(ratio * 40)), min(64, int(ratio * 60))]
        row = arr[(box[0] + box[1]) // 2, box[2]:box[3], 0].astype(int)
        flips.add(bool(row[0] > row[-1]))
    assert flips == {True, False}
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    published, fixed = ToCoAugment(64), ToCoAugment(64, flip_box=True)
    cases = set()
    for seed in range(12):
        published.reseed(seed)
        fixed.reseed(seed)
        a, b = published({"image": img}), fixed({"image": img})
        assert torch.equal(a["image"], b["image"]) and a["image"].shape == a["view2"].shape == a["local"].shape
        assert a["image"].shape == (3, 64, 64) and a["img_box"].dtype == torch.int64
        pa, pb = a["img_box"].tolist(), b["img_box"].tolist()
        cases.add(pa == pb)
        assert pa == pb or pb == [pa[0], pa[1], 64 - pa[3], 64 - pa[2]]
    assert cases == {True, False}                                     # both flipped and unflipped crops seen
    published.reseed(5)
    first = published({"image": img})
    published.reseed(5)
    again = published({"image": img})
    assert all(torch.equal(first[k], again[k]) for k in first)
    lbe = get_single_stage("locbe")().train_transform(64)
    assert set(lbe({"image": img})) == {"image", "img_box"}            # LOC-BE reads no extra view


def test_optimizer_groups_and_schedule():
    method = get_single_stage("toco")()
    net = method.build_network("vit_test", 4)
    args = argparse.Namespace(lr=6e-5, wt_decay=0.01, max_iters=20000, warmup_iters=1500, warmup_lr=1e-6, power=0.9)
    opt = method.build_optimizer(net, args)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([6e-5, 6e-5, 6e-4, 6e-4])
    assert all(g["weight_decay"] == 0.01 and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8
               for g in opt.param_groups)
    assert isinstance(opt, torch.optim.AdamW)
    sched = method.schedule(args)
    init = [g["initial_lr"] for g in opt.param_groups]
    for step in (0, 1, 749, 1499, 1500, 9000, 19999):                # PolyWarmupAdamW (L:utils/optimizer.py:51-63)
        if step < 1500:
            mult = 1 - (1 - step / 1500) * (1 - 1e-6)
        else:
            mult = (1 - step / 20000) ** 0.9
        sched.apply(opt, step)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([i * mult for i in init], rel=1e-12)


def test_loss_totals_warm_phase_and_coco_phases():
    from wseg.locbe import LocBeConfig, _seg_terms, locbe_coco_losses, locbe_losses, multiscale_cams
    from wseg.models.heads.par import PAR

    method = get_single_stage("locbe")()
    torch.manual_seed(0)
    net = method.build_network("vit_test", 4)
    x, y = torch.randn(2, 3, 48, 48), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    box = torch.tensor([[0, 48, 0, 48], [4, 40, 0, 44]])
    cfg = LocBeConfig(local_crop_size=32, high=0.3, seg_start=5)
    common = dict(par=PAR(num_iter=2), generator=torch.Generator().manual_seed(0))
    for itr, late in ((5, False), (6, True)):
        net.zero_grad()
        out = locbe_losses(net, x, y, box, itr, cfg, **common)
        out["loss"].backward()
        grads = [p.grad for p in net.decoder.parameters()]
        assert all(g is not None for g in grads)                      # published 0.0 * seg_loss: zero grads
        assert all(bool((g == 0).all()) for g in grads) != late
        total = out["cls"] + out["aux"] + out["be"] + 0.3 * out["sc"]
        if late:
            total = total + 0.1 * out["seg"] + 0.05 * out["reg"] + out["loc"]
        torch.testing.assert_close(out["loss"].detach(), total)
    coco = LocBeConfig(local_crop_size=32, high=0.3, low=0.25, bkg=0.25, w_seg=0.2)
    with torch.no_grad():                    # the seg term on the aux CAM's pseudo labels, then on the main CAM's
        cams, cams_aux = multiscale_cams(net, x, coco.cam_scales)
        out = net(x)
        seg_of = {name: _seg_terms(out, x, c, y, box, coco, common["par"], None, False)[0]
                  for name, c in (("aux", cams_aux), ("main", cams))}
    assert not torch.allclose(seg_of["aux"], seg_of["main"])
    for itr in (3, 4, 7):
        out = locbe_coco_losses(net, x, y, box, itr, coco, phases=(3, 6), **common)
        torch.testing.assert_close(out["seg"], seg_of["aux" if itr <= 6 else "main"])
        total = out["cls"] + out["aux"]
        if 3 < itr <= 6:
            total = total + 0.1 * out["seg"] + 0.05 * out["reg"]
        elif itr > 6:
            total = total + 0.2 * out["seg"] + 0.05 * out["reg"] + out["be"] + out["loc"] + 0.3 * out["sc"]
        torch.testing.assert_close(out["loss"].detach(), total)
        assert (float(out["reg"]) == 0.0) == (itr <= 3)


class ScriptedRng:
    """Every ``random()`` draw returns ``v``; the other draws their lowest or middle value."""

    def __init__(self, v):
        self.v = v

    def random(self):
        return self.v

    def uniform(self, a, b):
        return (a + b) / 2

    def randrange(self, n):
        return 0

    def randint(self, a, b):
        return a

    def sample(self, seq, k):
        return list(seq)[:k]


@pytest.mark.parametrize("v", [0.15, 0.85])
def test_augmentation_probabilities(v, monkeypatch):
    """T:datasets/voc.py:102-129: flip p .5, jitter p .8, grayscale p .2 in each view; blur p .5 (local), 1.0
    (image), .1 (view 2); solarisation p .2 (view 2)."""
    import torchvision.transforms.functional as TF
    from PIL import ImageOps

    import wseg.methods.toco as toco

    calls = []
    monkeypatch.setattr(toco, "_color_jitter", lambda img, rng, *strength: calls.append("jitter") or img)
    monkeypatch.setattr(TF, "rgb_to_grayscale", lambda img, num_output_channels=1: calls.append("gray") or img)
    monkeypatch.setattr(TF, "hflip", lambda img: calls.append("flip") or img)
    monkeypatch.setattr(ImageOps, "solarize", lambda img: calls.append("solarize") or img)
    real_blur = toco._gaussian_blur
    monkeypatch.setattr(toco, "_gaussian_blur",
                        lambda img, rng, p, *radius: calls.append(("blur", p)) or real_blur(img, rng, p, *radius))
    aug = toco.ToCoAugment(32)
    aug.rng = ScriptedRng(v)
    aug({"image": Image.new("RGB", (40, 30), (90, 120, 200))})
    view = ["flip", "jitter", "gray"] if v < 0.2 else []
    assert calls == view + [("blur", 0.5)] + view + [("blur", 1.0)] + view + [("blur", 0.1)] + (
        ["solarize"] if v < 0.2 else [])
    img = Image.new("RGB", (20, 20))
    img.putpixel((10, 10), (255, 255, 255))
    assert np.asarray(real_blur(img, ScriptedRng(0.5), 0.5))[10, 10, 0] < 255          # random() <= p blurs
    assert np.asarray(real_blur(img, ScriptedRng(0.51), 0.5))[10, 10, 0] == 255


def test_pretrained_vit_weights_load_with_any_head(tmp_path):
    from wseg.locbe import ViTSegNet

    method = get_single_stage("locbe")()
    src = ViTSegNet("vit_test", 4).backbone.state_dict()
    for name, state in (("same", src), ("nohead", {k: v for k, v in src.items() if not k.startswith("head.")}),
                        ("otherhead", {**src, "head.weight": torch.zeros(7, 48), "head.bias": torch.zeros(7)})):
        torch.save(state, tmp_path / f"{name}.pth")
        net = method.build_network("vit_test", 4)
        method.load_pretrained(net, str(tmp_path / f"{name}.pth"))
        torch.testing.assert_close(net.backbone.blocks[0].attn.qkv.weight, src["blocks.0.attn.qkv.weight"])
    torch.save({k: v for k, v in src.items() if not k.startswith("blocks.0.")}, tmp_path / "broken.pth")
    with pytest.raises(WsegError, match="missing"):
        method.load_pretrained(method.build_network("vit_test", 4), str(tmp_path / "broken.pth"))
