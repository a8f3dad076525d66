import os

import numpy as np
import pytest

from wseg.data import classes
from wseg.data.voc import (VOCRoot, load_cls_labels, make_split_lists, read_list, write_cls_labels)
from wseg.errors import WsegError
from wseg.io import save_image, save_mask_png

XML = """<annotation><filename>{id}.jpg</filename><size><width>8</width><height>6</height><depth>3</depth></size>
{objs}</annotation>"""
OBJ = "<object><name>{}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"


def make_root(tmp_path, with_xml=True, aug=False):
    root = tmp_path / "VOC"
    objs = {"2007_000001": ["dog", "person"], "2007_000002": ["cat"], "2008_000003": ["tvmonitor"]}
    for i, names in objs.items():
        save_image(str(root / "JPEGImages" / f"{i}.jpg"), np.zeros((6, 8, 3), np.uint8))
        if with_xml:
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{i}.xml").write_text(XML.format(id=i, objs="".join(OBJ.format(n) for n in names)))
        m = np.zeros((6, 8), np.uint8)
        for k, n in enumerate(names):
            m[k, :] = classes.VOC12.class_names.index(n)
        m[5] = 255
        save_mask_png(str(root / "SegmentationClass" / f"{i}.png"), m)
    split = root / "ImageSets" / "Segmentation"
    split.mkdir(parents=True)
    (split / "train.txt").write_text("2007_000001\n2007_000002\n")
    (split / "val.txt").write_text("2008_000003\n")
    if aug:
        save_image(str(root / "JPEGImages" / "2009_000004.jpg"), np.zeros((6, 8, 3), np.uint8))
        for i in ["2007_000001", "2008_000003", "2009_000004"]:
            save_mask_png(str(root / "SegmentationClassAug" / f"{i}.png"), np.zeros((6, 8), np.uint8))
    return str(root)


def test_read_list_accepts_both_line_styles(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n\n2007_000039\n# c\n")
    assert read_list(str(p)) == ["2007_000032", "2007_000039"]
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(WsegError, match="empty"):
        read_list(str(tmp_path / "e.txt"))
    with pytest.raises(WsegError, match="not found"):
        read_list(str(tmp_path / "nope.txt"))


def test_labels_from_xml_mask_and_npy(tmp_path):
    root = make_root(tmp_path)
    voc = VOCRoot(root)
    assert voc.spec.num_fg == 20
    labels = load_cls_labels(voc, ["2007_000001", "2008_000003"])
    dog, person, tv = [classes.VOC12.class_names.index(n) - 1 for n in ("dog", "person", "tvmonitor")]
    assert np.flatnonzero(labels["2007_000001"]).tolist() == sorted([dog, person])
    assert np.flatnonzero(labels["2008_000003"]).tolist() == [tv]
    # without XML: from masks
    root2 = make_root(tmp_path / "b", with_xml=False)
    labels2 = load_cls_labels(VOCRoot(root2), ["2007_000001"])
    np.testing.assert_array_equal(labels2["2007_000001"], labels["2007_000001"])
    # cls_labels.npy with the published integer keys
    table = {2007000001: labels["2007_000001"]}
    np.save(os.path.join(root2, "cls_labels.npy"), table)
    assert load_cls_labels(VOCRoot(root2), ["2007_000001"])["2007_000001"].sum() == 2


def test_write_cls_labels_and_splits(tmp_path):
    root = make_root(tmp_path, aug=True)
    path = write_cls_labels(root)
    table = np.load(path, allow_pickle=True).item()
    assert set(table) == {"2007_000001", "2007_000002", "2008_000003", "2009_000004"}
    assert table["2009_000004"].sum() == 0  # mask all background -> no labels
    splits = make_split_lists(root)
    assert splits["train_aug"] == ["2007_000001", "2007_000002", "2009_000004"]
    assert read_list(os.path.join(root, "ImageSets/Segmentation/train_aug.txt")) == splits["train_aug"]


def test_bad_roots_and_classes(tmp_path):
    with pytest.raises(WsegError, match="dataset root folder not found"):
        VOCRoot(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WsegError, match="JPEGImages"):
        VOCRoot(str(tmp_path / "empty"))
    root = make_root(tmp_path)
    with pytest.raises(WsegError, match="not in the coco14 class list"):
        load_cls_labels(VOCRoot(root, "coco14"), ["2008_000003"])
    assert classes.get_spec("coco14").num_classes == 81
    classes.write_classes_txt(root, ["background", "a", "b"])
    assert classes.get_spec(None, root=root).num_classes == 3
    with pytest.raises(WsegError, match="unknown dataset"):
        classes.get_spec("imagenet")
