"""Where a segmentation network's val errors come from: recognising the classes, or finding their pixels.

The pseudo-mask rows of a WSSS table are scored with the image's true labels (the CAM of every absent class is
dropped before the arg-max), the segmentation network's val row without them: it must also recognise which classes
an image holds. This script splits the two for trained segmentation networks of pipeline work folders. For each
``<work>/<seg>`` it runs the config's test (its scales and flip, no CRF) on ``<work>/data``'s val split and prints:

- ``as tested``: the mIoU of the network's arg-max (``segmentation/test.py``'s MS+flip row);
- ``true labels``: the mIoU when every class absent from the image's ground truth is removed before the arg-max,
  i.e. with recognition solved and the localisation left as it is;
- ``class-agnostic``: the IoU of foreground vs background, whatever the class;
- where the missed foreground goes (to background / to another class, % of foreground pixels);
- objects named right: of the ground truth's objects (connected regions of one class) that the prediction covers
  with foreground (10 pixels or more), the share whose foreground is mostly their own class; where classes come in
  pairs that share a body (the synthetic ``part`` cue), 50 % is what naming by the body alone scores;
- one class per object: the mIoU when every connected region of predicted foreground (8-connected) takes the
  class with the largest summed probability over it; above ``as tested`` where the network names part of each
  object right and the rest of it wrong (a diagnostic, not a test step: touching objects of two classes merge);
- with ``--parts`` (synthetic roots only: the val images are re-rendered from ``toy_voc.json`` to know which
  pixels are a class's discriminative head and which its shared body): the share of head pixels and of body pixels
  predicted as their class, as background and as another class, and of the head-less decoy body's pixels where
  its design's class is absent from the image (background by definition); and, in a second table, the same for
  the weakly supervised stages' label maps of the train split (``<work>/cam_png``: the CAM arg-max, ``cam_crf``,
  ``rw``, ``pseudo``: the masks the networks learned from) and for the saved val predictions of each
  ``--seg_dirs`` folder (``pred_val_published``: the published test, ``pred_val``: the test's choice,
  ``pred_val_true_labels``), with the decoy split by whether its design's class is in the image and how much
  background was given a class (% of the foreground pixels; the share of it on the decoy);
- the image labels the prediction implies (a class counts as predicted when it covers at least ``--min_share`` of
  the image) against the true ones: per-label accuracy, and the accuracy of always answering the more frequent
  value for each class (the prior).

With ``--cam`` it also scores the image labels of each work folder's CAM network (``<work>/models/cam.pth``, its
``class_logits`` > 0 on the images as they are) on the train and val splits: how well the network that the
DeepLab starts from recognises the classes (the CAM rows never have to: they are scored with the true labels).

    python benchmarks/bench_seg_recognition.py --work_dirs runs/demo runs/robust/small_part_101 --seg_dirs seg seg_gt
    python benchmarks/bench_seg_recognition.py --work_dirs runs/demo --seg_dirs --cam
    python benchmarks/bench_seg_recognition.py --work_dirs runs/demo --seg_dirs seg --parts
"""
import argparse
import os
import sys

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def config(path: str, root: str, overrides=None):
    from wseg.segmentation.config import build_parser, config_from_args

    argv = ["--config", path, "--voc12_root", root] + (["--set", *overrides] if overrides else [])
    return config_from_args(build_parser("bench").parse_args(argv))


def measure(cfg, out_dir: str, min_share: float, parts: bool = False) -> dict:
    """Confusion matrices (as tested, with true labels, class-agnostic) and image labels of the network that
    ``segmentation/test.py`` would test in ``out_dir``."""
    from wseg.data.classes import present_classes
    from wseg.data.voc import VOCRoot
    from wseg.io import load_mask_png
    from wseg.label_filter import implied_labels
    from wseg.metrics import confusion_matrix
    from wseg.segmentation.data import InferenceImages
    from wseg.segmentation.models import build_model, load_segmentation_weights
    from wseg.segmentation.predict import ms_flip_logits, true_label_argmax
    from wseg.segmentation.test import default_ckpt

    voc = VOCRoot(cfg.voc12_root, cfg.classes)
    k = voc.spec.num_classes
    net = build_model(cfg, k, weights=False)
    load_segmentation_weights(net, default_ckpt(cfg, out_dir, voc.spec.name))
    net.eval()
    ids = voc.ids(cfg.test_list)
    data = InferenceImages(voc, ids, cfg.test_scales, cfg.mean, cfg.std, cfg.get("long_side"))
    conf = {"tested": 0, "labels": 0, "fgbg": 0, "vote": 0}
    toy = None
    if parts:
        from wseg.data.synthetic import read_config

        toy = read_config(cfg.voc12_root)
    part_counts = np.zeros((3, 3), np.int64)   # rows: -, body, head; columns: right class, background, other
    decoy_counts = np.zeros((2, 3), np.int64)  # rows: its class absent, present; columns: background, its class, other
    true_lab, pred_lab, named = [], [], []
    with torch.no_grad():
        for i, name in enumerate(ids):
            img, inputs = data[i]
            logits = ms_flip_logits(net, inputs, img.shape[:2], flip=cfg.test_flip, device=torch.device("cpu"))
            gt = load_mask_png(voc.mask_path(name))
            pred = logits.argmax(0).numpy()
            oracle = true_label_argmax(logits, gt)
            conf["tested"] = conf["tested"] + confusion_matrix(pred, gt, k)
            conf["labels"] = conf["labels"] + confusion_matrix(oracle, gt, k)
            conf["fgbg"] = conf["fgbg"] + confusion_matrix((pred > 0).astype(np.int64),
                                                           np.where(gt < k, gt > 0, gt).astype(np.int64), 2)
            conf["vote"] = conf["vote"] + confusion_matrix(object_vote(torch.softmax(logits, 0).numpy(), pred), gt, k)
            named += objects_named(pred, gt, k)
            if toy is not None:
                sample = rendered(toy, name, gt)
                part_counts += part_outcomes(pred, gt, sample.parts, k)
                decoy_counts += decoy_outcomes(pred, gt, sample.decoy)
            true_lab.append(present_classes(gt, k - 1) > 0)
            pred_lab.append(implied_labels(pred, k - 1, min_share) > 0)
    return {"conf": conf, "true": np.array(true_lab), "pred": np.array(pred_lab), "named": named, "k": k,
            "parts": part_counts if toy is not None else None, "decoy": decoy_counts}


def rendered(toy, image_id: str, gt: np.ndarray):
    """The generator's :class:`~wseg.data.synthetic.ToySample` of a synthetic image (its part map: visible head 2,
    body 1, else 0; its head-less decoy body), re-rendered; refused when the re-rendered mask is not the root's
    (another generator or edited files)."""
    from wseg.data.synthetic import image_index, render_sample
    from wseg.errors import WsegError

    sample = render_sample(image_index(image_id), toy)
    if sample.mask.shape != gt.shape or not np.array_equal(sample.mask, gt):
        raise WsegError(f"{image_id}: its mask is not what the root's toy_voc.json renders; --parts needs an "
                        "unedited root made by scripts/make_toy_voc.py")
    return sample


#: The label-map folders of the weakly supervised stages (pipeline work folder layout) and their names.
STAGE_DIRS = (("cam_png", "CAM"), ("cam_crf", "CAM + CRF"), ("rw", "RW"), ("pseudo", "pseudo masks"))
#: The prediction folders ``segmentation/test.py`` writes in its output folder, and the test each holds.
TESTS = (("pred_val_published", "published test"), ("pred_val", "the test's choice"),
         ("pred_val_true_labels", "given the true labels"))


def folder_outcomes(work: str, split: str, folders) -> dict:
    """``{folder: (part counts, decoy counts, spurious counts)}``: :func:`part_outcomes`, :func:`decoy_outcomes`
    and :func:`spurious_outcomes` summed over each ``<work>/<folder>``'s label PNGs of ``split`` (a 255 counts as
    another class: not the pixel's class, not background); each image is rendered once."""
    from wseg.data.synthetic import read_config
    from wseg.data.voc import VOCRoot
    from wseg.io import load_mask_png

    voc = VOCRoot(os.path.join(work, "data"))
    toy, k = read_config(voc.root), voc.spec.num_classes
    counts = {folder: [np.zeros((3, 3), np.int64), np.zeros((2, 3), np.int64), np.zeros(3, np.int64)]
              for folder in folders}
    for name in voc.ids(split):
        gt = load_mask_png(voc.mask_path(name))
        sample = rendered(toy, name, gt)
        for folder in folders:
            pred = load_mask_png(os.path.join(work, folder, name + ".png"))
            for total, add in zip(counts[folder], (part_outcomes(pred, gt, sample.parts, k),
                                                   decoy_outcomes(pred, gt, sample.decoy),
                                                   spurious_outcomes(pred, gt, sample.decoy, k))):
                total += add
    return counts


def decoy_outcomes(pred: np.ndarray, gt: np.ndarray, decoy: np.ndarray) -> np.ndarray:
    """``(2, 3)`` pixel counts of the head-less decoy body (background in ``gt``): rows its design's class absent
    from the image / present in it, columns predicted as background / as that class / as another class."""
    on = (decoy > 0) & (gt == 0)
    if not on.any():
        return np.zeros((2, 3), np.int64)
    cls = int(decoy[on][0])
    present = int((gt == cls).any())
    outcome = np.where(pred[on] == 0, 0, np.where(pred[on] == cls, 1, 2))
    counts = np.zeros((2, 3), np.int64)
    counts[present] = np.bincount(outcome, minlength=3)
    return counts


def spurious_outcomes(pred: np.ndarray, gt: np.ndarray, decoy: np.ndarray, k: int) -> np.ndarray:
    """``(3,)`` pixel counts: labelled foreground, background given a class (spurious foreground) and the part of
    the latter on a head-less decoy body."""
    spurious = (gt == 0) & (pred > 0) & (pred < k)
    return np.array([((gt > 0) & (gt < k)).sum(), spurious.sum(), (spurious & (decoy > 0)).sum()], np.int64)


def part_outcomes(pred: np.ndarray, gt: np.ndarray, parts: np.ndarray, k: int) -> np.ndarray:
    """``(3, 3)`` pixel counts: rows part code (0 unused, 1 body, 2 head) of labelled foreground pixels, columns
    predicted as their class / background / another class."""
    fg = (gt > 0) & (gt < k) & (parts > 0)
    outcome = np.where(pred == gt, 0, np.where(pred == 0, 1, 2))
    return np.bincount(parts[fg].astype(np.int64) * 3 + outcome[fg], minlength=9).reshape(3, 3)


def objects_named(pred: np.ndarray, gt: np.ndarray, k: int, min_pixels: int = 10) -> list:
    """For each connected ground-truth region of one foreground class that ``pred`` covers with at least
    ``min_pixels`` foreground pixels: whether its most frequent predicted foreground class is its own."""
    from wseg.data.classes import object_regions

    out = []
    for c, region in object_regions(gt, k):
        fg = pred[region & (pred > 0)]
        if fg.size >= min_pixels:
            out.append(np.bincount(fg, minlength=k).argmax() == c)
    return out


def object_vote(probs: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``pred`` with each 8-connected region of foreground given the foreground class of largest summed ``probs``
    ``(C, H, W)`` over the region."""
    import cv2

    n, regions = cv2.connectedComponents((pred > 0).astype(np.uint8), connectivity=8)
    flat = regions.ravel()
    sums = np.stack([np.bincount(flat, weights=p.ravel(), minlength=n) for p in probs[1:]], 1)  # (regions, C - 1)
    winner = np.concatenate([[0], 1 + sums[1:].argmax(1)])
    return winner[regions].astype(pred.dtype)


def row_shares(*counts: np.ndarray) -> list:
    """Each outcome count vector as percentages of its own total (a part's or a decoy's labelled pixels)."""
    return [100 * c / max(c.sum(), 1) for c in counts]


def summary(m: dict) -> dict:
    from wseg.metrics import scores

    c = m["conf"]["tested"][: m["k"], : m["k"]]
    fg = c[1:].sum()
    freq = m["true"].mean(0)
    return {"tested": 100 * scores(m["conf"]["tested"])["miou"],
            "labels": 100 * scores(m["conf"]["labels"])["miou"],
            "vote": 100 * scores(m["conf"]["vote"])["miou"],
            "fgbg": 100 * scores(m["conf"]["fgbg"])["iou"][1],
            "to_bg": 100 * c[1:, 0].sum() / fg,
            "to_other": 100 * (c[1:, 1:].sum() - np.trace(c[1:, 1:])) / fg,
            "named": 100 * np.mean(m["named"]) if m["named"] else float("nan"),
            "label_acc": 100 * (m["pred"] == m["true"]).mean(),
            "prior_acc": 100 * np.maximum(freq, 1 - freq).mean(),
            # rows: head, body, the decoy where its class is absent (% of each's labelled pixels)
            "parts": None if m["parts"] is None else
            row_shares(m["parts"][2], m["parts"][1], m["decoy"][0])}


def cam_recognition(work: str) -> dict:
    """Image-label accuracy of ``<work>/models/cam.pth`` on ``<work>/data``'s train and val splits."""
    from wseg.data.voc import VOCRoot, load_cls_labels
    from wseg.methods.base import build_from_weights, image_label_accuracy

    method, net, _ = build_from_weights(os.path.join(work, "models", "cam.pth"))
    voc = VOCRoot(os.path.join(work, "data"))
    out = {}
    for split in ("train", "val"):
        ids = voc.ids(split)
        out[split] = image_label_accuracy(method, net, voc, ids, load_cls_labels(voc, ids))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work_dirs", nargs="+", default=["runs/demo"], help="pipeline work folders (<work>/data)")
    p.add_argument("--seg_dirs", nargs="*", default=["seg"],
                   help="segmentation output folders in each work folder (seg: pseudo masks; seg_gt: demo_zoo's "
                        "ground-truth run)")
    p.add_argument("--config", default="segmentation/configs/demo_resnet38_standin.py")
    p.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE",
                   help="the overrides the networks were trained and tested with (e.g. \"test_scales=[2.0]\")")
    p.add_argument("--min_share", type=float, default=0.01, help="image share that makes a class predicted")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cam", action="store_true", help="also score the image labels of <work>/models/cam.pth")
    p.add_argument("--parts", action="store_true",
                   help="synthetic roots: also score head and body pixels apart (re-rendered from toy_voc.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.cam:
        print("| work folder | CAM network image-label accuracy, train (%) | images all right, train (%) | prior, "
              "train (%) | accuracy, val (%) | all right, val (%) | prior, val (%) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for work in args.work_dirs:
            r = cam_recognition(work)
            print(f"| {work} | " + " | ".join(f"{r[s]['accuracy']:.1f} | {r[s]['all_right']:.1f} | {r[s]['prior']:.1f}"
                                             for s in ("train", "val")) + " |", flush=True)
        if not args.seg_dirs:
            return
    print("| work folder | trained on | as tested | true labels | one class per object | class-agnostic fg IoU | "
          "fg -> bg % | fg -> other class % | objects named right % | image-label accuracy | prior accuracy |"
          + (" head px right / bg / other % | body px right / bg / other % | head-less body px, its class absent: "
             "bg / its class / other % |" if args.parts else ""))
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|---|---|" if args.parts else ""))
    for work in args.work_dirs:
        cfg = config(os.path.join(REPO, args.config), os.path.join(work, "data"), args.set)
        for seg in args.seg_dirs:
            out = os.path.join(work, seg)
            if not os.path.isdir(out):
                print(f"| {work} | {seg} | missing: {out} | | | | | | | | |" + (" | | |" if args.parts else ""))
                continue
            s = summary(measure(cfg, out, args.min_share, args.parts))
            extra = "".join(" " + " / ".join(f"{v:.1f}" for v in row) + " |" for row in s["parts"]) \
                if args.parts else ""
            print(f"| {work} | {seg} | {s['tested']:.2f} | {s['labels']:.2f} | {s['vote']:.2f} | {s['fgbg']:.2f} | "
                  f"{s['to_bg']:.1f} | {s['to_other']:.1f} | {s['named']:.1f} | {s['label_acc']:.1f} | "
                  f"{s['prior_acc']:.1f} |{extra}", flush=True)

    if args.parts:
        print("\n| work folder | label maps (split) | head px right / bg / other % | body px right / bg / other % | "
              "head-less body px, its class absent: bg / its class / other % | its class present: bg / its class / "
              "other % | background px given a class, % of fg px | of which on head-less bodies % |")
        print("|---|---|---|---|---|---|---:|---:|")
        for work in args.work_dirs:
            for split, named in (("train", STAGE_DIRS), ("val", [(os.path.join(seg, folder), f"{seg}: {test}")
                                                              for seg in args.seg_dirs for folder, test in TESTS])):
                present = [(folder, name) for folder, name in named if os.path.isdir(os.path.join(work, folder))]
                counts = folder_outcomes(work, split, [folder for folder, _ in present])
                for folder, name in present:
                    parts, decoys, (fg, spurious, on_decoy) = counts[folder]
                    rows = row_shares(parts[2], parts[1], decoys[0], decoys[1])
                    print(f"| {work} | {name} ({split}) | " + " | ".join(" / ".join(f"{v:.1f}" for v in row)
                                                                      for row in rows)
                          + f" | {100 * spurious / max(fg, 1):.1f} | {100 * on_decoy / max(spurious, 1):.1f} |",
                          flush=True)


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
