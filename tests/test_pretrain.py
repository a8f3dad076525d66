"""The ImageNet stand-in: the corpus is deterministic and split, the pretraining script learns (a tiny run beats
random initialisation on held-out images), and the shipped weights load through the published weights paths."""
import glob
import os

import numpy as np
import pytest
import torch

from wseg.data.standin import StandInConfig, StandInCorpus, render

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_corpus_is_a_seeded_function_of_the_index_and_splits_differ():
    cfg = StandInConfig(size=40)
    a, ca = render(3, cfg)
    b, cb = render(3, cfg)
    c, _ = render(3, cfg, "heldout")
    assert np.array_equal(a, b) and ca == cb and not np.array_equal(a, c)
    x, y = StandInCorpus(cfg, length=5)[4]
    assert x.shape == (3, 40, 40) and y.shape == (3,) and cfg.num_classes == 16 * 16 * 12
    labels = np.array([render(i, cfg)[1] for i in range(200)])
    assert all(len(np.unique(labels[:, k])) > 8 for k in range(3))        # every factor varies


def _heldout_loss(backbone, cfg) -> float:
    from wseg.stages.pretrain_backbone import Classifier

    torch.manual_seed(0)
    net = Classifier(backbone, cfg.factors).eval()
    x, y = zip(*(StandInCorpus(cfg, "heldout", length=96)[i] for i in range(96)))
    with torch.no_grad():
        out = net(torch.stack(x))
    y = torch.stack(y)
    return float(sum(torch.nn.functional.cross_entropy(o, y[:, k]) for k, o in enumerate(out)))


def test_a_tiny_pretraining_run_beats_random_initialisation(tmp_path):
    """120 iterations of scripts/pretrain_backbone.py; its backbone, under the classifier it was trained with,
    has a clearly lower held-out loss than the same network at random initialisation."""
    from wseg.models.backbones import build_backbone
    from wseg.models.checkpoint import read_state_dict
    from wseg.pipeline import load_script
    from wseg.stages.pretrain_backbone import Classifier

    script = load_script("scripts/pretrain_backbone.py")
    out = str(tmp_path / "w.pth")
    res = script.run(script.build_parser().parse_args(
        ["--backbone", "resnet38_tiny", "--out", out, "--image_size", "32", "--batch_size", "16", "--max_iters",
         "120", "--warmup_iters", "10", "--lr", "0.003", "--num_workers", "0", "--device", "cpu", "--eval_images",
         "64", "--log_every", "60"]))
    state, meta = read_state_dict(out)
    assert meta["backbone"] == "resnet38_tiny" and "hue_acc" in meta["standin"] and res["iters"] == 120
    assert not any(k.startswith(("fc.", "backbone.")) for k in state)     # the backbone alone, published layout
    cfg = StandInConfig(size=32)
    trained = torch.load(str(tmp_path / "w.last.pth"), map_location="cpu", weights_only=True)["model"]
    net = Classifier(build_backbone("resnet38_tiny", frozen=(), freeze_bn=False), cfg.factors)
    net.load_state_dict(trained)
    x, y = zip(*(StandInCorpus(cfg, "heldout", length=96)[i] for i in range(96)))
    net.eval()
    with torch.no_grad():
        out = net(torch.stack(x))
    y = torch.stack(y)
    pretrained = float(sum(torch.nn.functional.cross_entropy(o, y[:, k]) for k, o in enumerate(out)))
    random_init = _heldout_loss(build_backbone("resnet38_tiny", frozen=(), freeze_bn=False), cfg)
    assert pretrained < random_init - 0.2, (pretrained, random_init)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "weights", "standin", "*.pth"))))
def test_shipped_weights_load_through_the_published_paths(path):
    """Each shipped stand-in file loads strictly where the ImageNet file of its backbone goes: the CAM network's
    --weights (new heads start fresh), AffinityNet's --weights, DeepLab's backbone_weights."""
    from wseg.methods import get_method
    from wseg.methods.affinitynet import build_affinity_net_for_training
    from wseg.methods.base import build_for_training
    from wseg.models.checkpoint import read_state_dict
    from wseg.models.deeplab import build_deeplab
    from wseg.segmentation import load_backbone_weights

    state, meta = read_state_dict(path)
    name = meta["backbone"]
    assert {"top1", "outline_acc", "texture_acc", "hue_acc", "iters"} <= set(meta["standin"])
    if name.startswith("resnet38"):
        cam = build_for_training(get_method("contrast")(), name, 7, path)
        assert torch.equal(cam.backbone.conv1a.weight, state["conv1a.weight"])
        aff = build_affinity_net_for_training(name, path)
        assert torch.equal(aff.backbone.b7.conv_branch2b2.weight, state["b7.conv_branch2b2.weight"])
        seg = build_deeplab("deeplabv1", name, 7, head_dim=16)
        load_backbone_weights(seg, path)
        assert torch.equal(seg.backbone.bn7.running_var, state["bn7.running_var"])
    elif name.startswith("vit"):   # the demos' small ViT: ToCo's and LOC-BE's --weights (the published ViT path)
        from wseg.methods import get_single_stage

        assert name == "vit_small_demo_cs", name
        for network in ("locbe", "toco"):
            method = get_single_stage(network)(None)
            net = method.build_network(name, 7)
            method.load_pretrained(net, path)
            assert torch.equal(net.backbone.patch_embed.proj[0].weight, state["patch_embed.proj.0.weight"])
            assert torch.equal(net.backbone.blocks[5].mlp.fc2.weight, state["blocks.5.mlp.fc2.weight"])
    else:   # the demos' reduced ResNetV1c: the segmentation zoo's backbone_weights and RS+EPM's --weights
        from wseg.config import load_config_file
        from wseg.segmentation.models import build_model

        assert name == "resnet_v1c_small", name
        for config in ("demo_deeplabv3plus_standin.py", "demo_pspnet_standin.py"):
            cfg = load_config_file(os.path.join(REPO, "segmentation", "configs", config))
            seg = build_model({**cfg, "backbone_weights": path}, 7)
            assert torch.equal(seg.backbone.layer4[1].bn3.running_var, state["layer4.1.bn3.running_var"])
            assert torch.equal(seg.backbone.stem[0].weight, state["stem.0.weight"])
        from wseg.methods import get_single_stage

        rsepm = get_single_stage("rsepm")(None)
        net = rsepm.build_network(name, 7)
        rsepm.load_pretrained(net, path)
        assert torch.equal(net.backbone.layer3[0].conv2.weight, state["layer3.0.conv2.weight"])


def test_init_continues_from_backbone_weights_and_object_scale_reaches_the_corpus(tmp_path):
    """``--init`` starts the backbone from a stand-in file (continued pretraining, e.g. at another image size or
    object scale: with lr ~0 every convolution stays the file's); the settings land in the metadata; bad values
    are one-line errors."""
    from wseg.cli import main
    from wseg.models.checkpoint import read_state_dict
    from wseg.pipeline import load_script

    script = load_script("scripts/pretrain_backbone.py")
    first = str(tmp_path / "a.pth")
    base = ["--backbone", "resnet38_tiny", "--image_size", "32", "--batch_size", "8", "--warmup_iters", "2",
            "--num_workers", "0", "--device", "cpu", "--eval_images", "16", "--log_every", "10"]
    script.run(script.build_parser().parse_args(base + ["--out", first, "--max_iters", "10"]))
    second = str(tmp_path / "b.pth")
    script.run(script.build_parser().parse_args(base + ["--out", second, "--max_iters", "3", "--init", first,
                                                        "--lr", "1e-9", "--object_scale", "0.1", "0.3"]))
    a, _ = read_state_dict(first)
    b, meta = read_state_dict(second)
    assert meta["standin"]["init"] == "a.pth" and meta["standin"]["object_scale"] == [0.1, 0.3]
    # lr 1e-9: only BatchNorm running statistics move; every conv weight is the --init file's
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if k.endswith("weight") and a[k].ndim == 4)
    assert not all(torch.equal(a[k], b[k]) for k in a if k.endswith("running_mean"))   # it did train
    for bad in (["--object_scale", "0.5", "0.2"], ["--init", str(tmp_path / "missing.pth")]):
        argv = base + ["--out", str(tmp_path / "c.pth"), "--max_iters", "3"] + bad
        assert main(script.build_parser, script.run, argv) == 2
