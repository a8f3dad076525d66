"""The diagnostic counts of the recognition benchmarks: objects named right and one class per object
(``bench_seg_recognition.py``), dead
last-level channels (``bench_standin_probe.py``), a CAM network's image-label accuracy (``--cam``), and the
robustness bench's pattern check with its margin (``bench_robustness.py``)."""
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from bench_seg_recognition import (decoy_outcomes, object_vote, objects_named, part_outcomes, rendered,  # noqa: E402
                                   spurious_outcomes)
from bench_robustness import verdict  # noqa: E402
from bench_standin_probe import dead_channels  # noqa: E402


def test_objects_named_counts_each_region_by_its_majority_class():
    gt = np.zeros((20, 20), np.uint8)
    gt[1:6, 1:6] = 1           # object A, class 1
    gt[10:16, 10:16] = 1       # object B, class 1 (separate region)
    gt[1:6, 12:18] = 2         # object C, class 2
    gt[18:20, 0:2] = 2         # object D: only 4 pixels, too few to count
    gt[0, 19] = 255            # ignore stays out
    pred = np.zeros_like(gt)
    pred[1:6, 1:6] = 1                      # A right
    pred[10:16, 10:16] = 2                  # B named as class 2
    pred[10:12, 10:16] = 1                  # ... its minority still class 1
    pred[1:6, 12:18] = 2                    # C right
    pred[18:20, 0:2] = 2
    assert sorted(objects_named(pred, gt, 3)) == [False, True, True]
    assert objects_named(np.zeros_like(gt), gt, 3) == []      # no foreground predicted: nothing to name


def test_object_vote_gives_each_foreground_region_its_largest_summed_class():
    probs = np.zeros((3, 6, 8), np.float32)
    probs[0] = 1.0
    probs[:, 1:5, 0:3] = [[[0.05]], [[0.5]], [[0.45]]]     # region 1: class 1 wins 9 pixels by a little ...
    probs[:, 1, 0:3] = [[0.0], [0.05], [0.95]]              # ... class 2 wins 3 by a lot: sums 4.65 vs 6.9
    probs[:, 1:5, 5:8] = [[[0.1]], [[0.9]], [[0.0]]]       # region 2 (apart from region 1): all class 1
    pred = probs.argmax(0).astype(np.uint8)
    assert (pred[2:5, 0:3] == 1).all() and (pred[1, 0:3] == 2).all()
    voted = object_vote(probs, pred)
    assert (voted[1:5, 0:3] == 2).all()                        # the whole region takes the largest sum
    assert (voted[1:5, 5:8] == 1).all()
    assert (voted[pred == 0] == 0).all() and voted.dtype == pred.dtype      # background untouched


def test_part_outcomes_count_head_and_body_pixels_by_what_they_are_predicted():
    gt = np.array([[0, 1, 1, 2], [255, 1, 1, 2]], np.uint8)
    parts = np.array([[0, 2, 1, 2], [1, 1, 1, 1]], np.uint8)     # the 255 pixel's part is not counted
    pred = np.array([[1, 1, 0, 1], [0, 2, 1, 2]], np.uint8)
    c = part_outcomes(pred, gt, parts, 3)
    assert c[2].tolist() == [1, 0, 1]          # heads: (0,1) right, (0,3) another class
    assert c[1].tolist() == [2, 1, 1]          # bodies: (1,2), (1,3) right, (0,2) background, (1,1) another class
    assert c[0].sum() == 0 and c.sum() == 6


def test_decoy_and_spurious_outcomes_count_the_headless_body_by_what_it_is_predicted():
    gt = np.array([[0, 0, 0, 2], [0, 0, 255, 2]], np.uint8)
    decoy = np.array([[1, 1, 1, 0], [1, 0, 1, 0]], np.uint8)       # a class-1 body; the 255 pixel is not counted
    pred = np.array([[0, 1, 2, 2], [1, 3, 0, 2]], np.uint8)         # 3: another class off the body
    c = decoy_outcomes(pred, gt, decoy)
    assert c[0].tolist() == [1, 2, 1] and c[1].sum() == 0           # class 1 absent: bg, its class x2, another
    gt_present = gt.copy()
    gt_present[0, 3] = 1                                            # now class 1 is in the image
    assert decoy_outcomes(pred, gt_present, decoy)[1].tolist() == [1, 2, 1]
    assert decoy_outcomes(pred, gt, np.zeros_like(decoy)).sum() == 0
    assert spurious_outcomes(pred, gt, decoy, 4).tolist() == [2, 4, 3]  # fg px, bg given a class, on the decoy


def test_rendered_sample_refuses_an_edited_mask(toy_root):
    from wseg.data.synthetic import read_config
    from wseg.errors import WsegError
    from wseg.io import load_mask_png

    toy = read_config(toy_root)
    gt = load_mask_png(os.path.join(toy_root, "SegmentationClass", "toy_000001.png"))
    assert rendered(toy, "toy_000001", gt).parts.shape == gt.shape
    edited = gt.copy()
    edited[0, 0] = 255 if edited[0, 0] != 255 else 0
    with pytest.raises(WsegError, match="toy_000001: its mask is not what"):
        rendered(toy, "toy_000001", edited)


class _TwoChannel(torch.nn.Module):
    levels = ("out",)

    def forward(self, x):
        return {"out": torch.cat([x.relu(), torch.zeros_like(x)], 1)}


def test_dead_channels_counts_channels_zero_on_every_image():
    xs = [torch.randn(1, 4, 4) for _ in range(3)]
    assert dead_channels(_TwoChannel(), xs) == 50.0


class _FixedCam(torch.nn.Module):
    """A CAM network stub: every image gets the same ``cam`` map."""

    def __init__(self, cam):
        super().__init__()
        self.cam = cam

    def forward(self, x):
        return {"cam": self.cam.expand(x.shape[0], -1, -1, -1)}


def test_class_logits_read_the_channels_the_classification_loss_reads():
    from wseg.losses.eps import cls_loss
    from wseg.losses.seam import classification_loss, with_background
    from wseg.methods.base import get_method

    cam = torch.randn(1, 4, 5, 6)      # 3 foreground classes + background
    label = torch.tensor([[1.0, 0.0, 1.0]])
    x = torch.zeros(2, 3, 8, 8)
    for name, loss in (("contrast", lambda c: classification_loss(c, with_background(label))),
                       ("eps", lambda c: cls_loss(c, label))):
        logits = get_method(name)().class_logits(_FixedCam(cam), x)
        assert logits.shape == (2, 3)
        assert float(F.multilabel_soft_margin_loss(logits[:1], label)) == pytest.approx(float(loss(cam)), rel=1e-6)
    assert torch.allclose(get_method("contrast")().class_logits(_FixedCam(cam), x)[0], cam.mean((2, 3))[0, 1:])
    assert torch.allclose(get_method("eps")().class_logits(_FixedCam(cam), x)[0], cam.mean((2, 3))[0, :-1])


def test_image_label_accuracy_scores_the_logits_against_the_labels(toy_root):
    from wseg.data.voc import VOCRoot, load_cls_labels
    from wseg.methods.base import get_method, image_label_accuracy

    voc = VOCRoot(toy_root)
    ids = voc.ids("train")
    labels = load_cls_labels(voc, ids)
    true = np.array([labels[i] for i in ids]) > 0.5
    cam = torch.zeros(1, 4, 2, 2)
    cam[:, 1] = 1.0                     # class 1 always present, classes 2 and 3 always absent
    net = _FixedCam(cam).train()
    out = image_label_accuracy(get_method("contrast")(), net, voc, ids, labels)
    pred = np.zeros_like(true)
    pred[:, 0] = True
    assert out["accuracy"] == pytest.approx(100 * (pred == true).mean())
    assert out["all_right"] == pytest.approx(100 * (pred == true).all(1).mean())
    freq = true.mean(0)
    assert out["prior"] == pytest.approx(100 * np.maximum(freq, 1 - freq).mean())
    assert net.training                 # the network's mode is restored


def test_the_robustness_verdict_checks_the_pattern_and_prints_the_margin():
    m = {"CAM": 50.0, "RW": 55.0, "pseudo": 57.0, "DeepLab val": 50.0, "DeepLab+CRF val": 52.5}
    assert verdict(m, 12.0, 12.0) == "pattern holds (DeepLab val - pseudo -7.0, -4.5 with the CRF)"
    assert verdict({**m, "DeepLab val": 48.9}, 12.0, 12.0).startswith("fails: DeepLab near pseudo (DeepLab val - "
                                                                     "pseudo -8.1")
    assert verdict({**m, "CAM": 29.0, "RW": 28.0}, 12.0, 12.0).startswith("fails: RW > CAM, CAM >= 30 (")
    assert verdict({"CAM": 50.0}, 12.0, 12.0) == "incomplete"
