"""The image-label classifier (scripts/label_train.py, wseg.label_filter) and the segmentation test's label_filter:
LSE pooling between average and max, the class restriction, training that beats the label prior and resumes,
the written labels, the check on the training images, and one-line errors for bad label files."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wseg.cli import stage_parser
from wseg.errors import WsegError
from wseg.label_filter import (ClassGate, LabelClassifier, decide, read_label_file, restrict_to_classes, scores_path,
                               soft_weights)
from wseg.models.backbones import build_backbone
from wseg.models.checkpoint import save_state_dict
from wseg.stages import label_train

from test_segmentation_stage import DEMO, TEST, pseudo, trained  # noqa: F401 (fixtures)


def test_lse_pooling_lies_between_average_and_max():
    torch.manual_seed(0)
    net = LabelClassifier(build_backbone("resnet38_tiny"), 3, scales=(1.0,), lse_r=0.01)
    f = torch.randn(net.classifier.in_channels, 4, 5)
    z = net.classifier(f[None])[0].flatten(1)

    def logits(*per_scale):
        return net([list(per_scale)])[0, 0]

    assert torch.allclose(logits(f), z.mean(1), atol=1e-2)                    # r -> 0: average pooling
    net.lse_r = 500.0
    assert torch.allclose(logits(f), z.amax(1), atol=1e-2)                    # r -> inf: max pooling
    net.lse_r = 4.0
    assert bool((logits(f) <= z.amax(1) + 1e-6).all() and (logits(f) >= z.mean(1)).all())
    # several scales: the maximum of each scale's score
    assert torch.allclose(logits(f, f[:, :2, :2]), torch.maximum(logits(f), logits(f[:, :2, :2])))


def test_restrict_to_classes_keeps_background_and_the_listed_classes():
    probs = torch.tensor([[[0.1, 0.2]], [[0.6, 0.1]], [[0.3, 0.7]]])        # classes 1 and 2 win one pixel each
    assert restrict_to_classes(probs, np.array([0, 1])).argmax(0).tolist() == [[2, 2]]
    assert restrict_to_classes(probs, np.array([1, 0])).argmax(0).tolist() == [[1, 0]]
    logits = torch.log(probs)                                            # negative scores: -inf, not 0, for logits
    assert restrict_to_classes(logits, np.array([0, 0]), float("-inf")).argmax(0).tolist() == [[0, 0]]
    assert decide(np.array([0.2, 0.4, 0.1]), 0.5).tolist() == [0, 1, 0]   # none above: the best class stays
    assert decide(np.array([0.6, 0.4, 0.9]), 0.5).tolist() == [1, 0, 1]


def test_levels_stack_on_the_last_levels_grid():
    torch.manual_seed(0)
    bb = build_backbone("resnet38_tiny").eval()
    net = LabelClassifier(bb, 3, scales=(1.0,), levels=("conv3", "conv6"))
    assert net.classifier.in_channels == bb.feature_channels["conv3"] + bb.feature_channels["conv6"]
    img = torch.randn(3, 32, 40)
    (f,) = net.features(img)
    with torch.no_grad():
        last = bb(img[None])["conv6"][0]
    assert f.shape == (net.classifier.in_channels, *last.shape[1:])      # conv3 (stride 4) resized to conv6's grid
    assert torch.equal(f[bb.feature_channels["conv3"]:], last)
    assert LabelClassifier(bb, 3).levels == ("conv6",)                    # default: the last level, as before
    with pytest.raises(WsegError, match="--levels conv9: ResNet38 has no level conv9"):
        LabelClassifier(bb, 3, levels=("conv9",))


def test_context_channels_are_the_features_max_over_a_window():
    torch.manual_seed(0)
    bb = build_backbone("resnet38_tiny").eval()
    plain = LabelClassifier(bb, 3, scales=(1.0,), levels=("conv3", "conv6"))
    net = LabelClassifier(bb, 3, scales=(1.0,), levels=("conv3", "conv6"), context=3)
    assert net.classifier.in_channels == 2 * plain.classifier.in_channels
    img = torch.randn(3, 40, 56)
    (f,), (g,) = plain.features(img), net.features(img)
    c = f.shape[0]
    assert g.shape == (2 * c, *f.shape[1:]) and torch.equal(g[:c], f)
    # position (y, x) also reads the maximum of each channel over the 3x3 window around it (clipped at the border)
    y, x = 0, 2
    assert torch.equal(g[c:, y, x], f[:, :y + 2, x - 1:x + 2].flatten(1).amax(1))
    with pytest.raises(WsegError, match="--context 4: an odd window"):
        LabelClassifier(bb, 3, context=4)
    args = stage_parser(label_train)().parse_args(["--voc12_root", "r", "--train_list", "t", "--weights", "w",
                                                   "--out_labels", "l.npy", "--context", "-1"])
    with pytest.raises(WsegError, match="--context -1: an odd window"):     # before anything runs
        label_train.check(args)


def test_soft_gate_weighs_the_classes_by_the_scores_to_a_power():
    probs = torch.tensor([[[0.4, 0.2]], [[0.35, 0.5]], [[0.25, 0.3]]])   # background, class 1, class 2
    scores = {"a": np.array([0.5, 1.0], np.float32)}
    soft = ClassGate(soft_weights(scores, 1.0), soft=True)("a", probs)
    assert torch.allclose(soft.sum(0), torch.ones(1, 2))                 # a distribution again (the CRF reads it)
    assert soft.argmax(0).tolist() == [[0, 2]]                         # class 1 halved: it loses both pixels
    weak = ClassGate(soft_weights(scores, 0.01), soft=True)("a", probs)
    assert weak.argmax(0).tolist() == probs.argmax(0).tolist()          # power -> 0: the unfiltered test
    near0 = {"a": np.array([0.0, 1.0], np.float32)}                       # power -> large, scores 0/1: the hard one
    hard = ClassGate({"a": np.array([0.0, 1.0], np.float32)})("a", probs)
    assert torch.equal(ClassGate(soft_weights(near0, 4.0), soft=True)("a", probs).argmax(0), hard.argmax(0))
    assert scores_path("runs/labels/train_cv.npy") == "runs/labels/train_cv_scores.npy"


def _args(root, tmp, weights, *extra):
    argv = ["--voc12_root", root, "--train_list", "train", "--infer_list", "val", "--backbone", "resnet38_tiny",
            "--weights", weights, "--scales", "1", "--session_name", os.path.join(tmp, "labels"),
            "--out_labels", os.path.join(tmp, "val.npy"), "--batch_size", "4", "--max_iters", "60", "--lr", "0.03",
            "--device", "cpu", "--progress", "False", *extra]
    return stage_parser(label_train)().parse_args(argv)


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("w") / "tiny.pth")
    save_state_dict(path, build_backbone("resnet38_tiny"))
    return path


def test_label_train_learns_writes_labels_and_resumes(toy_root, backbone_file, tmp_path):
    res = label_train.run(_args(toy_root, str(tmp_path), backbone_file, "--out_cv", str(tmp_path / "cv.npy")))
    train = [line.strip() for line in open(os.path.join(toy_root, "ImageSets", "Segmentation", "train.txt"))]
    cv = read_label_file(str(tmp_path / "cv.npy"))             # held-out labels of every training image
    assert sorted(cv) == sorted(train) and 0 <= res["cv"]["label_acc"] <= 100
    cv_scores = read_label_file(scores_path(str(tmp_path / "cv.npy")))   # their held-out scores, beside them
    assert sorted(cv_scores) == sorted(train)
    assert all(np.array_equal(decide(cv_scores[i], 0.5), cv[i]) and ((cv_scores[i] >= 0) & (cv_scores[i] <= 1)).all()
               for i in train)
    assert res["learned"] is True and res["cls_loss"] < 0.9 * res["prior_loss"]   # it fits its training labels
    labels = read_label_file(str(tmp_path / "val.npy"))
    scores = np.load(str(tmp_path / "val_scores.npy"), allow_pickle=True).item()
    val = [line.strip() for line in open(os.path.join(toy_root, "ImageSets", "Segmentation", "val.txt"))]
    assert sorted(labels) == sorted(val) == sorted(scores)
    assert all(v.shape == (3,) and v.sum() >= 1 and set(v.tolist()) <= {0.0, 1.0} for v in labels.values())
    entry = res["labels"]["val"]
    assert 0 <= entry["label_acc"] <= 100 and 0 <= entry["prior_acc"] <= 100
    cv_flags = ("--out_cv", str(tmp_path / "cv.npy"))
    again = label_train.run(_args(toy_root, str(tmp_path), backbone_file, *cv_flags))  # finished: loads, predicts
    assert again["labels"]["val"]["label_acc"] == entry["label_acc"]
    assert read_label_file(scores_path(str(tmp_path / "cv.npy"))).keys() == cv_scores.keys()
    with pytest.raises(WsegError, match="another configuration .*folds 2 -> 0"):     # 3 heads saved, 1 asked for
        label_train.run(_args(toy_root, str(tmp_path), backbone_file))
    with pytest.raises(WsegError, match="another configuration"):
        label_train.run(_args(toy_root, str(tmp_path), backbone_file, "--lse_r", "2", *cv_flags))


def test_label_train_flag_errors(toy_root, backbone_file, tmp_path):
    for extra, named in ((["--scales", "0"], "--scales"), (["--lse_r", "-1"], "--lse_r"),
                         (["--threshold", "1"], "--threshold"), (["--out_labels", "x.txt"], "--out_labels"),
                         (["--max_iters", "0"], "--max_iters")):
        with pytest.raises(WsegError, match=named):
            label_train.check(_args(toy_root, str(tmp_path), backbone_file, *extra))
    with pytest.raises(WsegError, match="no such file"):
        label_train.run(_args(toy_root, str(tmp_path), str(tmp_path / "missing.pth")))


def test_segmentation_test_keeps_the_classes_of_a_label_file(trained, toy_root, tmp_path):  # noqa: F811
    out, res = trained
    val = [line.strip() for line in open(os.path.join(toy_root, "ImageSets", "Segmentation", "val.txt"))]
    true = np.load(os.path.join(toy_root, "cls_labels.npy"), allow_pickle=True).item()
    path = str(tmp_path / "labels.npy")
    np.save(path, {i: true[i] for i in val}, allow_pickle=True)
    argv = ["--config", DEMO, "--voc12_root", toy_root, "--out_dir", str(tmp_path / "o"), "--ckpt", res["weights"],
            "--progress", "False", "--set", "model.backbone=resnet38_tiny", "crf=False", "test_true_labels=True",
            f"label_filter={path}"]
    r = TEST.run(TEST.build_parser().parse_args(argv))
    # the true labels as the filter: the filtered test is the true-label diagnostic; the published one is scored too
    assert r["miou"] == pytest.approx(r["miou_true_labels"]) and "miou_published" in r
    assert os.path.isdir(r["pred_dir"] + "_published")
    # a file that lacks an image, is not a dict, or has another class count: one line naming it
    np.save(path, {val[0]: true[val[0]]}, allow_pickle=True)
    with pytest.raises(WsegError, match=f"{path}: no image-level labels for 3 of 4"):
        TEST.run(TEST.build_parser().parse_args(argv[:-1] + [f"label_filter={path}", f"pred_dir={tmp_path / 'p'}"]))
    np.save(path, np.zeros(3), allow_pickle=True)
    with pytest.raises(WsegError, match="expected a cls_labels.npy-format dict"):
        TEST.run(TEST.build_parser().parse_args(argv[:-1] + [f"label_filter={path}"]))
    np.save(path, {i: np.ones(5, np.float32) for i in val}, allow_pickle=True)
    with pytest.raises(WsegError, match="5 classes per image"):
        TEST.run(TEST.build_parser().parse_args(argv[:-1] + [f"label_filter={path}"]))
    with pytest.raises(WsegError, match="no such label file"):
        TEST.run(TEST.build_parser().parse_args(argv[:-1] + [f"label_filter={tmp_path / 'nope.npy'}"]))
    # the check on training images (scored against their masks): a classifier right on every training image
    # filters, one always wrong does not
    np.save(path, {i: true[i] for i in val}, allow_pickle=True)
    train = [line.strip() for line in open(os.path.join(toy_root, "ImageSets", "Segmentation", "train.txt"))]
    # (this 4-iteration network calls everything background at x1; at x0.1 its classes come out, and the right
    # labels then score better; at x1 the always-wrong ones tie with the unfiltered test, which wins ties)
    for name, held, used, scale in (("right", {i: true[i] for i in train}, True, 0.1),
                                    ("wrong", {i: 1 - true[i] for i in train}, False, 1.0)):
        check = str(tmp_path / f"{name}.npy")
        np.save(check, held, allow_pickle=True)
        r = TEST.run(TEST.build_parser().parse_args(argv + [f"label_filter_check={check}", f"bg_scale={scale}",
                                                            f"pred_dir={tmp_path / name}"]))
        assert r["label_filter_used"] is used and r["train_images"] == len(train) and r["bg_scale"] == scale
        assert (r["train_miou_filtered"] > r["train_miou_unfiltered"]) if used else \
            (r["train_miou_unfiltered"] >= r["train_miou_filtered"])
        assert r["train_miou"] == max(r["train_miou_filtered"], r["train_miou_unfiltered"])
        assert (r["miou"] == pytest.approx(r["miou_true_labels"])) if used else (r["miou"] == r["miou_published"])
    with pytest.raises(WsegError, match="set label_filter too"):
        TEST.run(TEST.build_parser().parse_args(argv[:-1] + [f"label_filter_check={check}"]))
    # the choice reads the train_list's images among those the held-out file holds (e.g. images held out of the
    # network's training); a file that holds none of them is one line
    two = tmp_path / "two.txt"
    two.write_text("\n".join(train[:2]) + "\n")
    right = str(tmp_path / "right.npy")
    r = TEST.run(TEST.build_parser().parse_args(argv + [f"label_filter_check={right}", "bg_scale=0.1",
                                                        f"train_list={two}", f"pred_dir={tmp_path / 'two'}"]))
    assert r["train_images"] == 2
    np.save(check, {i: true[i] for i in val}, allow_pickle=True)
    with pytest.raises(WsegError, match=f"label_filter_check {check}: holds none of the train_list"):
        TEST.run(TEST.build_parser().parse_args(argv + [f"label_filter_check={check}", "bg_scale=0.1"]))
    # the soft filter: the scores beside both label files, each power one more candidate of the choice
    powers = ["label_filter_powers=[0.5,2]", f"label_filter_check={right}", "bg_scale=auto"]
    with pytest.raises(WsegError, match="no classifier scores beside label_filter_check"):
        TEST.run(TEST.build_parser().parse_args(argv + powers + [f"pred_dir={tmp_path / 'soft0'}"]))
    np.save(scores_path(right), {i: 0.1 + 0.8 * true[i] for i in train}, allow_pickle=True)
    np.save(scores_path(path), {i: 0.1 + 0.8 * true[i] for i in val}, allow_pickle=True)
    r = TEST.run(TEST.build_parser().parse_args(argv + powers + [f"pred_dir={tmp_path / 'soft'}"]))
    curve = r["bg_scale_curve"]
    assert {"unfiltered", "filtered", "scores^0.5", "scores^2"} <= set(curve)
    assert r["train_miou"] == max(max(c) for n, c in curve.items() if n != "factors")
    assert r["label_filter_candidate"] in ("filtered", "scores^0.5", "scores^2")      # the right scores pay
    assert ("label_filter_power" in r) == r["label_filter_candidate"].startswith("scores^")
    with pytest.raises(WsegError, match="set label_filter_check too"):
        TEST.run(TEST.build_parser().parse_args(argv + ["label_filter_powers=[1]"]))


def test_the_report_marks_the_tests_background_factor_and_a_kept_unfiltered_prediction():
    from wseg.pipeline import Stage, report_markdown

    rows = [{"label": "published", "metric": "miou_published"}, {"label": "filtered", "metric": "miou"}]
    stages = [Stage("seg_test", "segmentation/test.py", ["--out_dir", "/w/seg"], report=rows)]
    result = {"label_filter_used": False, "train_miou_unfiltered": 62.1, "train_miou_filtered": 41.9}
    results = {"seg_test": {"seconds": 1, "result": result, "metrics": {"miou": 55.0, "miou_published": 55.0}}}
    table = report_markdown(stages, results)
    assert "| published | " in table and "| filtered (not filtered: " in table and "scored 62.1 mIoU" in table
    result["label_filter_used"] = True
    assert "not filtered" not in report_markdown(stages, results) and "background x" not in table
    result["bg_scale"] = 0.25                            # the chosen background factor is named on the test's rows
    table = report_markdown(stages, results)
    assert "| filtered (background x0.25) | " in table and "| published | " in table
    result["label_filter_power"] = 2.0                   # the soft filter's power too
    assert "| filtered (background x0.25) (classes weighted by the classifier's scores ^2) | " in \
        report_markdown(stages, results)


def test_class_layer_folds_the_standardisation_and_batches_images_of_different_sizes():
    torch.manual_seed(0)
    net = LabelClassifier(build_backbone("resnet38_tiny"), 3, scales=(1.0, 2.0), lse_r=4.0)
    c = net.classifier.in_channels
    net.feat_mean.copy_(torch.randn(c))
    net.feat_std.copy_(torch.rand(c) + 0.5)
    images = [[torch.randn(c, 3, 4), torch.randn(c, 6, 8)], [torch.randn(c, 5, 2), torch.randn(c, 10, 4)]]

    def explicit(per_scale):                 # standardise, 1x1 conv, LSE pool each scale, maximum over the scales
        pooled = []
        for f in per_scale:
            z = net.classifier(((f - net.feat_mean[:, None, None]) / net.feat_std[:, None, None])[None])[0]
            pooled.append((torch.logsumexp(4.0 * z.flatten(1), 1) - np.log(z[0].numel())) / 4.0)
        return torch.stack(pooled).amax(0)

    batched = net(images)[:, 0]
    assert batched.shape == (2, 3)
    for row, per_scale in zip(batched, images):
        assert torch.allclose(row, explicit(per_scale), atol=1e-5)
    half = net([[f.half() for f in per_scale] for per_scale in images])[:, 0]   # an fp16 feature cache reads the same
    assert torch.allclose(half, batched, atol=1e-2)


def test_feature_bank_keeps_fp32_then_fp16_then_nothing_as_the_budget_shrinks():
    from wseg.label_filter import FeatureBank

    class Model:
        calls = 0

        def features(self, image):
            Model.calls += 1
            return [image * 2]

    class Bank(FeatureBank):
        def image(self, i):
            return torch.full((4, 16, 16), float(i))               # 1,024 numbers per image, 4 images

    for gb, dtype, computed in ((4096 * 4 / 2 ** 30, torch.float32, 4), (4096 * 2 / 2 ** 30, torch.float16, 4),
                                (4096 / 2 ** 30, None, 8)):
        Model.calls = 0
        bank = Bank(Model(), None, ["a", "b", "c", "d"], None, None, torch.device("cpu"), gb)
        for _ in range(2):
            assert [float(bank[i][0][0, 0, 0]) for i in range(4)] == [0.0, 2.0, 4.0, 6.0]
        assert bank.dtype == dtype and bank.caching == (dtype is not None) and Model.calls == computed
        assert all(f.dtype == dtype for per_scale in bank.cache.values() for f in per_scale)


def test_fold_heads_learn_from_all_but_their_fold():
    from wseg.stages.label_train import fold_assignment

    torch.manual_seed(0)
    net = LabelClassifier(build_backbone("resnet38_tiny"), 3, scales=(1.0,), folds=3)
    fold_of = fold_assignment(6, 3, seed=0)
    assert sorted(np.bincount(fold_of).tolist()) == [2, 2, 2] and (fold_assignment(4, 0, 0) == -1).all()
    fold = torch.from_numpy(fold_of)
    feats = [[torch.randn(net.classifier.in_channels, 3, 3)] for _ in range(6)]
    target = torch.randint(0, 2, (6, 3)).float()
    logits = net(feats)
    assert logits.shape == (6, 4, 3)
    single = LabelClassifier(net.backbone, 3, scales=(1.0,))        # each head is a one-head classifier
    for k in range(4):
        single.classifier.weight.data.copy_(net.classifier.weight[3 * k:3 * k + 3])
        single.classifier.bias.data.copy_(net.classifier.bias[3 * k:3 * k + 3])
        assert torch.allclose(single(feats)[:, 0], logits[:, k], atol=1e-5)
        assert torch.allclose(net.scores(feats, k), torch.sigmoid(logits[:, k]))
    assert torch.allclose(net.scores(feats), torch.sigmoid(logits[:, 3]))                # default: the full head
    out = net.loss(logits, target, fold)
    assert torch.allclose(out["loss_full"], F.multilabel_soft_margin_loss(logits[:, 3], target), atol=1e-6)
    grad = torch.autograd.grad(net.loss(net(feats), target, fold)["loss"], net.classifier.weight)[0].view(4, 3, -1)
    for k in range(3):                     # a head's gradient ignores its own fold's images
        moved = [[torch.randn_like(f) if fold_of[i] == k else f for f in per] for i, per in enumerate(feats)]
        other = torch.autograd.grad(net.loss(net(moved), target, fold)["loss"], net.classifier.weight)[0]
        other = other.view(4, 3, -1)
        assert torch.allclose(grad[k], other[k], atol=1e-6) and not torch.allclose(grad[3], other[3])
