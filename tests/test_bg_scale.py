"""The segmentation test's background scale (wseg.segmentation.calibration, segmentation/test.py bg_scale): one
pass scores every factor exactly as the arg-max of the scaled probabilities would, the choice prefers the
published test on ties, bg_scale=auto picks the factor that a fixed run reproduces, and bad values or missing
training masks are one-line errors."""
import json
import os

import numpy as np
import pytest
import torch

from wseg.errors import WsegError
from wseg.label_filter import restrict_to_classes
from wseg.metrics import confusion_matrix, histogram_to_confusions
from wseg.segmentation.calibration import (FILTERED, UNFILTERED, bg_scale_setting, choose, factor_histogram,
                                           scale_background)

from test_segmentation_stage import DEMO, TEST, pseudo, trained  # noqa: F401 (fixtures)


def test_one_histogram_equals_the_arg_max_at_every_factor():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(4, 9, 11, generator=g), 0)
    mask = torch.randint(0, 4, (9, 11), generator=g).numpy().astype(np.uint8)
    mask[0, :4] = 255
    factors = np.array([0.05, 0.25, 0.5, 1.0], np.float32)
    for present in (None, np.array([1, 0, 1], np.float32)):
        p = probs if present is None else restrict_to_classes(probs, present)
        confs = histogram_to_confusions(factor_histogram(p, mask, factors, 4))
        for f, conf in zip(factors, confs):
            pred = scale_background(p, float(f)).argmax(0).numpy()
            assert np.array_equal(conf, confusion_matrix(pred, mask, 4)), (present, f)
    # the scaled probabilities stay a distribution (the CRF reads them)
    assert torch.allclose(scale_background(probs, 0.3).sum(0), torch.ones(9, 11))
    assert scale_background(probs, 1.0) is probs


def test_choose_takes_the_best_and_prefers_the_published_test_on_ties():
    perfect = np.diag([10, 10, 0]).astype(np.int64)          # (C + 1) x (C + 1) with C = 2
    poor = np.array([[5, 5, 0], [5, 5, 0], [0, 0, 0]], np.int64)
    factors = [0.25, 0.5, 1.0]
    best = choose({UNFILTERED: np.stack([poor, perfect, perfect]), FILTERED: np.stack([perfect, poor, poor])},
                  factors)
    assert (best["candidate"], best["bg_scale"]) == (UNFILTERED, 1.0) and best["miou"] == pytest.approx(100, abs=1e-6)
    best = choose({UNFILTERED: np.stack([poor, poor, poor]), FILTERED: np.stack([perfect, poor, poor])}, factors)
    assert (best["candidate"], best["bg_scale"]) == (FILTERED, 0.25)
    assert best["curve"][UNFILTERED] == pytest.approx([50 / 1.5 / 1, 50 / 1.5, 50 / 1.5], rel=1e-3)


def test_bg_scale_values():
    assert bg_scale_setting("auto") is None and bg_scale_setting(" AUTO ") is None
    assert bg_scale_setting("0.25") == 0.25 and bg_scale_setting(1) == 1.0
    for bad in ("0", "1.5", "-0.1", "half"):
        with pytest.raises(WsegError, match="bg_scale"):
            bg_scale_setting(bad)


def test_auto_picks_a_factor_a_fixed_run_reproduces(trained, pseudo, toy_root, tmp_path):  # noqa: F811
    out, res = trained
    argv = ["--config", DEMO, "--voc12_root", toy_root, "--ckpt", res["weights"], "--progress", "False", "--set",
            "model.backbone=resnet38_tiny", "crf=False", f"pseudo_mask_dir={pseudo}", "test_true_labels=True"]
    auto = TEST.run(TEST.build_parser().parse_args(argv + [f"out_dir={tmp_path / 'a'}", "bg_scale=auto",
                                                           "bg_scale_grid=[1.0,0.5,0.2]"]))
    curve = auto["bg_scale_curve"]
    assert curve["factors"] == [0.2, 0.5, 1.0] and auto["bg_scale"] in curve["factors"]
    assert auto["train_miou"] == max(curve[UNFILTERED]) and "label_filter_used" not in auto
    assert "miou_published" in auto and "miou_true_labels" in auto
    fixed = TEST.run(TEST.build_parser().parse_args(argv + [f"out_dir={tmp_path / 'f'}",
                                                            f"bg_scale={auto['bg_scale']}"]))
    assert fixed["miou"] == pytest.approx(auto["miou"])
    plain = TEST.run(TEST.build_parser().parse_args(argv + [f"out_dir={tmp_path / 'p'}"]))
    assert plain["miou"] == pytest.approx(auto["miou_published"]) and "miou_published" not in plain
    if auto["bg_scale"] != 1:
        assert os.path.isdir(auto["pred_dir"] + "_published")
    # bad values and missing training masks: one line naming the key or the folder
    with pytest.raises(WsegError, match="bg_scale 'half'"):
        TEST.run(TEST.build_parser().parse_args(argv + [f"out_dir={tmp_path / 'x'}", "bg_scale=half"]))
    with pytest.raises(WsegError, match="bg_scale_grid"):
        TEST.run(TEST.build_parser().parse_args(argv + [f"out_dir={tmp_path / 'x'}", "bg_scale=auto",
                                                        "bg_scale_grid=[1.0,2.0]"]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WsegError, match=f"{empty}: no training mask for"):
        TEST.run(TEST.build_parser().parse_args(argv + [f"out_dir={tmp_path / 'x'}", "bg_scale=auto",
                                                        f"pseudo_mask_dir={empty}"]))


def test_a_rerun_reuses_the_choice_until_its_inputs_change(trained, pseudo, toy_root, tmp_path,  # noqa: F811
                                                           monkeypatch):
    import wseg.segmentation.predict as predict
    from wseg.segmentation.test import _cached_choice

    out, res = trained
    argv = ["--config", DEMO, "--voc12_root", toy_root, "--ckpt", res["weights"], "--progress", "False", "--set",
            "model.backbone=resnet38_tiny", "crf=False", f"pseudo_mask_dir={pseudo}", "bg_scale=auto",
            f"out_dir={tmp_path / 'o'}"]
    first = TEST.run(TEST.build_parser().parse_args(argv))
    passes = []
    real = predict.training_image_confusions
    monkeypatch.setattr(predict, "training_image_confusions", lambda *a, **k: passes.append(1) or real(*a, **k))
    again = TEST.run(TEST.build_parser().parse_args(argv))
    assert passes == [] and again["bg_scale_curve"] == first["bg_scale_curve"] and again["miou"] == first["miou"]
    # the record holds what the choice was made from: any other input (checkpoint, settings, grid, masks) misses
    choice = tmp_path / "o" / ".pred_val.choice.json"
    saved = json.loads(choice.read_text())
    assert _cached_choice(str(choice), saved["inputs"]) == saved["choice"]
    for key, value in (("factors", [0.3, 1.0]), ("masks", {**saved["inputs"]["masks"], "files": 0}),
                       ("test", {**saved["inputs"]["test"], "ckpt_mtime": 0})):
        assert _cached_choice(str(choice), {**saved["inputs"], key: value}) is None
    # a choice file that is not JSON is not trusted: the pass runs again
    choice.write_text("{")
    TEST.run(TEST.build_parser().parse_args(argv))
    assert passes == [1]
