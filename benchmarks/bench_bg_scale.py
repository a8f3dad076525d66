"""The segmentation test's background factor: what the training images chose, and what val would have chosen.

``segmentation/test.py --set bg_scale=auto`` picks the factor for the background probability on the training images,
against the pseudo masks (``seg_test``'s result keeps that curve, ``bg_scale_curve``). This script puts the val curve
of the same trained network beside it, from one MS+flip pass over the val split scored at every factor
(:func:`wseg.segmentation.predict.training_image_confusions` with the val ground truth): unfiltered, filtered by the
image-label classifier's val labels (``<work>/labels/val.npy``, where present), weighted by its val scores to the
chosen power (where the test chose the soft filter) and given the true labels (the diagnostic). It shows whether the
choice made without val lands near val's own best, and how much each factor gives.

    python benchmarks/bench_bg_scale.py --work_dirs runs/demo runs/robust/small_part_101 runs/robust/varied_sizes_303
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def val_curves(work: str, config_path: str, factors, power=None) -> dict:
    """``{candidate: [val mIoU per factor]}`` of ``<work>/seg``'s network (its test settings of ``config_path``)."""
    from bench_seg_recognition import config
    from wseg.data.voc import VOCRoot, labels_from_mask
    from wseg.engine.runtime import resolve_device
    from wseg.io import load_mask_png
    from wseg.label_filter import ClassGate, label_arrays, read_label_file, read_scores, soft_weights
    from wseg.segmentation.calibration import choose, soft_name
    from wseg.segmentation.models import build_model, load_segmentation_weights
    from wseg.segmentation.predict import training_image_confusions
    from wseg.segmentation.test import default_ckpt

    cfg = config(config_path, os.path.join(work, "data"))
    voc = VOCRoot(cfg.voc12_root, cfg.classes)
    ids = voc.ids("val")
    model = build_model(cfg, voc.spec.num_classes, weights=False)
    load_segmentation_weights(model, default_ckpt(cfg, os.path.join(work, "seg"), voc.spec.name))
    k = voc.spec.num_classes - 1
    true = {i: labels_from_mask(load_mask_png(voc.mask_path(i)), voc.spec, voc.mask_path(i)) for i in ids}
    candidates = {"unfiltered": None, "true labels": ClassGate(true)}
    labels = os.path.join(work, "labels", "val.npy")
    if os.path.isfile(labels):
        candidates["filtered"] = ClassGate(dict(zip(ids, label_arrays(read_label_file(labels), ids, k, labels))))
    if power is not None:
        candidates[soft_name(power)] = ClassGate(soft_weights(read_scores(labels, ids, k, "labels"), power), soft=True)
    confs = training_image_confusions(model.to(resolve_device("cpu")), voc, ids, {i: voc.mask_path(i) for i in ids},
                                      candidates, factors, cfg.test_scales, cfg.test_flip, cfg.mean, cfg.std,
                                      progress=False)
    return choose(confs, factors)["curve"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work_dirs", nargs="+", required=True)
    p.add_argument("--config", default=os.path.join(REPO, "segmentation", "configs", "demo_resnet38_standin.py"))
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    for work in args.work_dirs:
        with open(os.path.join(work, "stages", "seg_test.done")) as f:
            res = json.load(f).get("result") or {}
        train = res.get("bg_scale_curve")
        if not train:
            print(f"\n{work}: its seg_test did not choose a background factor (bg_scale=auto); skipped")
            continue
        factors = train["factors"]
        val = val_curves(work, args.config, factors, res.get("label_filter_power"))
        used = res.get("label_filter_candidate") or (
            "filtered" if res.get("label_filter_used", "filtered" in train) else "unfiltered")
        print(f"\n### {work}: chosen x{res['bg_scale']:g}, {used}\n")
        names = [n for n in train if n != "factors"]
        print("| factor | " + " | ".join(f"train, {n}" for n in names) + " | "
              + " | ".join(f"val, {n}" for n in val) + " |")
        print("|---:|" + "---:|" * (len(names) + len(val)))
        for j, f in enumerate(factors):
            cells = [f"{train[n][j]:.2f}" for n in names] + [f"{val[n][j]:.2f}" for n in val]
            print(f"| x{f:g}{' (chosen)' if f == res['bg_scale'] else ''} | " + " | ".join(cells) + " |")
        best = max(range(len(factors)), key=lambda j: val[used][j])
        print(f"\nval's own best for the {used} test: x{factors[best]:g} ({val[used][best]:.2f}), the chosen "
              f"x{res['bg_scale']:g} scores {val[used][factors.index(res['bg_scale'])]:.2f}")
    return 0


if __name__ == "__main__":
    from wseg.cli import guarded

    sys.exit(guarded(main))
