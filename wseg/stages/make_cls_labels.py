"""Build ``cls_labels.npy`` and the split lists (train, val, train_aug) from a VOC-format root.

    python voc12/make_cls_labels.py --voc12_root VOCdevkit/VOC2012

writes ``<root>/cls_labels.npy`` ({id: multi-hot over foreground classes}, as the published repos ship it) and
``train.txt``, ``val.txt`` and, when ``SegmentationClassAug/`` (SBD) is present, ``train_aug.txt`` (VOC train + SBD
minus VOC val) into ``<root>/ImageSets/Segmentation`` (or ``--list_dir``).
"""
from __future__ import annotations

import argparse

from wseg.data.voc import make_split_lists, write_cls_labels


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voc12_root", "--data_root", dest="voc12_root", required=True,
                   help="VOC-format root (holds JPEGImages/, Annotations/, ...)")
    p.add_argument("--out", default=None, help="cls_labels.npy path (default <root>/cls_labels.npy)")
    p.add_argument("--list_dir", default=None, help="where split lists go (default <root>/ImageSets/Segmentation)")
    p.add_argument("--classes", default=None, help="voc12 | coco14 | classes.txt path (default: <root>/classes.txt "
                                                   "if present, else voc12)")


def run(args: argparse.Namespace) -> dict:
    splits = make_split_lists(args.voc12_root, args.list_dir)
    path = write_cls_labels(args.voc12_root, out_path=args.out, spec=args.classes)
    for name, ids in splits.items():
        print(f"{name}: {len(ids)} images")
    print(f"wrote {path}")
    return {"cls_labels": path, **{name: len(ids) for name, ids in splits.items()}}
