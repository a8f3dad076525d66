"""MS COCO 2014: json -> masks (polygons, RLE, crowd, overlaps) against masks drawn here, 81 <-> 91 ids, labels and
lists, the layouts read as roots (RS+EPM, ToCo/EPS, PMM), eval's handling of absent classes and the 81-class table."""
import itertools
import json
import os
import shutil

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from wseg.cli import main, stage_parser
from wseg.data import coco
from wseg.data.classes import COCO14, COCO14_91, COCO_CATEGORY_IDS, COCO_UNUSED_IDS, get_spec
from wseg.data.voc import VOCRoot, load_cls_labels
from wseg.errors import WsegError
from wseg.io import load_mask_png, save_image, save_mask_png
from wseg.stages import eval as eval_stage
from wseg.stages import make_coco_masks

H, W = 12, 16
PERSON, CAR, STOP, DOG, BRUSH = 1, 3, 13, 18, 90          # raw COCO category ids (13 and 90 lie past gaps)
C81 = {cid: k + 1 for k, cid in enumerate(COCO_CATEGORY_IDS)}


def rect(x0, y0, x1, y1):
    """A polygon covering columns x0..x1-1 and rows y0..y1-1 (pycocotools' pixel-centre rule)."""
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def draw(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def counts_of(m):
    """Uncompressed RLE counts, written here independently: column-major runs, zeros first."""
    runs = [len(list(g)) for _, g in itertools.groupby(m.T.ravel().tolist())]
    return [0] + runs if m.T.ravel()[0] else runs


def ann(i, image_id, cat, seg, area, crowd=0):
    return {"id": i, "image_id": image_id, "category_id": cat, "segmentation": seg, "area": area, "bbox": [0, 0, 1, 1],
            "iscrowd": crowd}


@pytest.fixture()
def coco_root(tmp_path):
    """Two train images with annotations, one without, one val image; expected raw-id masks drawn with numpy."""
    root = tmp_path / "coco"
    cats = [{"id": cid, "name": n, "supercategory": "x"} for cid, n in zip(COCO_CATEGORY_IDS, COCO14.fg_names)]
    person, car = draw(2, 2, 12, 10), draw(8, 4, 12, 8)               # car (16 px) overlaps the person (80 px)
    stop_a, stop_b = draw(0, 0, 2, 2), draw(13, 9, 16, 12)           # one annotation, two polygons
    tie_1, tie_2 = draw(4, 10, 8, 12), draw(6, 10, 10, 12)           # equal areas: the first annotation wins
    crowd = draw(5, 3, 9, 7)                                         # a crowd (RLE) inside a larger dog (RLE)
    dog = draw(1, 1, 15, 11)
    f_dog = np.asfortranarray(dog.astype(np.uint8))
    dog_rle = mask_utils.encode(f_dog)
    dog_rle["counts"] = dog_rle["counts"].decode()
    train = [ann(1, 1, PERSON, [rect(2, 2, 12, 10)], 80.0), ann(2, 1, CAR, [rect(8, 4, 12, 8)], 16.0),
             ann(3, 1, STOP, [rect(0, 0, 2, 2), rect(13, 9, 16, 12)], 13.0),
             ann(4, 1, DOG, [rect(4, 10, 8, 12)], 8.0), ann(5, 1, BRUSH, [rect(6, 10, 10, 12)], 8.0),
             ann(6, 2, BRUSH, {"counts": counts_of(crowd), "size": [H, W]}, 16.0, crowd=1),
             ann(7, 2, DOG, dog_rle, float(dog.sum()))]
    val = [ann(8, 4, CAR, [rect(0, 0, 16, 12)], 192.0), ann(9, 4, PERSON, [rect(3, 3, 6, 6)], 9.0)]
    names = {1: "COCO_train2014_000000000001", 2: "COCO_train2014_000000000002", 3: "COCO_train2014_000000000003",
             4: "COCO_val2014_000000000004"}
    for split, anns, ids in (("train", train, [1, 2, 3]), ("val", val, [4])):
        images = [{"id": i, "file_name": names[i] + ".jpg", "height": H, "width": W} for i in ids]
        os.makedirs(root / "annotations", exist_ok=True)
        (root / "annotations" / f"instances_{split}2014.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
        for i in ids:
            save_image(str(root / f"{split}2014" / (names[i] + ".jpg")), np.full((H, W, 3), 10 * i, np.uint8))
    # expected raw-id masks, painted largest first
    m1 = np.zeros((H, W), np.uint8)
    for m, v in ((person, PERSON), (car, CAR), (stop_a | stop_b, STOP), (tie_2, BRUSH), (tie_1, DOG)):
        m1[m] = v
    m2 = np.zeros((H, W), np.uint8)
    m2[dog] = DOG
    m2[crowd] = 255
    m4 = np.full((H, W), CAR, np.uint8)
    m4[draw(3, 3, 6, 6)] = PERSON
    expect = {names[1]: m1, names[2]: m2, names[4]: m4}
    crowd_as_class = {**expect, names[2]: np.where(m2 == 255, BRUSH, m2).astype(np.uint8)}
    labels = {names[1]: {PERSON, CAR, STOP, DOG, BRUSH}, names[2]: {DOG, BRUSH}, names[4]: {CAR, PERSON}}
    return dict(root=str(root), names=names, expect=expect, crowd_as_class=crowd_as_class, labels=labels)


def to81(m):
    lut = np.arange(256, dtype=np.uint8)
    for cid, k in C81.items():
        lut[cid] = k
    return lut[m]


def vec(cats, raw):
    v = np.zeros(90 if raw else 80, np.float32)
    v[[(c if raw else C81[c]) - 1 for c in cats]] = 1
    return v


@pytest.mark.parametrize("classes", ["coco14", "coco14_91"])
def test_json_to_masks_labels_lists(coco_root, tmp_path, classes):
    out = str(tmp_path / classes)
    raw = classes == "coco14_91"
    res = coco.convert_coco(coco_root["root"], out, classes=classes, num_workers=2, progress=False)
    assert res["written"] == 3 and res["empty_images_left_out"] == 1 and res["crowd_annotations"] == 1
    voc = VOCRoot(out)
    assert voc.layout.name == "voc"
    assert voc.spec.class_names == (COCO14_91 if raw else COCO14).class_names
    n = coco_root["names"]
    assert voc.ids("train") == [n[1], n[2]] and voc.ids("val") == [n[4]]      # the image without annotations: out
    for i, want in coco_root["expect"].items():
        got = load_mask_png(voc.mask_path(i))
        np.testing.assert_array_equal(got, want if raw else to81(want), err_msg=i)
        assert os.path.realpath(voc.image_path(i)).startswith(os.path.realpath(coco_root["root"]))
        assert os.path.islink(voc.image_path(i))
    labels = voc.cls_labels(voc.ids("train") + voc.ids("val"))
    for i, cats in coco_root["labels"].items():
        np.testing.assert_array_equal(labels[i], vec(cats, raw), err_msg=i)
    # crowd regions as their class (coco2voc), images without annotations kept: another root
    out2 = str(tmp_path / (classes + "_class"))
    coco.convert_coco(coco_root["root"], out2, classes=classes, crowd="class", keep_empty=True, progress=False)
    v2 = VOCRoot(out2)
    assert v2.ids("train") == [n[1], n[2], n[3]]
    assert (load_mask_png(v2.mask_path(n[3])) == 0).all()
    for i, want in coco_root["crowd_as_class"].items():
        np.testing.assert_array_equal(load_mask_png(v2.mask_path(i)), want if raw else to81(want))


def test_resume_settings_and_cli_errors(coco_root, tmp_path, capsys):
    out = str(tmp_path / "voc81")
    build = stage_parser(make_coco_masks)
    assert main(build, make_coco_masks.run, ["--coco_root", coco_root["root"], "--out", out, "--num_workers", "0",
                                             "--progress", "False"]) == 0
    assert "wrote 3" in capsys.readouterr().out
    argv = ["--coco_root", coco_root["root"], "--out", out, "--progress", "False"]
    assert main(build, make_coco_masks.run, argv) == 0
    assert "wrote 0, skipped 3" in capsys.readouterr().out
    for argv, needle in ((["--coco_root", coco_root["root"], "--out", out, "--crowd", "class"], "other settings"),
                         (["--coco_root", str(tmp_path / "nope"), "--out", out], "not found"),
                         (["--coco_root", coco_root["root"], "--src_root", out, "--out", out], "exactly one"),
                         (["--coco_root", coco_root["root"], "--out", str(tmp_path / "x"), "--splits", "test"],
                          "instances_test2014.json")):
        assert main(build, make_coco_masks.run, argv + ["--progress", "False"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    bad = json.loads(open(os.path.join(coco_root["root"], "annotations", "instances_val2014.json")).read())
    bad["annotations"][0]["segmentation"] = {"counts": [3, 4], "size": [5, 5]}
    (tmp_path / "bad" / "annotations").mkdir(parents=True)
    (tmp_path / "bad" / "annotations" / "instances_val2014.json").write_text(json.dumps(bad))
    with pytest.raises(WsegError, match="RLE size"):
        coco.convert_coco(str(tmp_path / "bad"), str(tmp_path / "bad_out"), splits=["val"], images="none",
                          progress=False)


def test_81_91_round_trip_and_unused_ids(coco_root, tmp_path):
    v81, v91 = str(tmp_path / "voc81"), str(tmp_path / "voc91")
    coco.convert_coco(coco_root["root"], v81, classes="coco14", progress=False)
    coco.convert_coco(coco_root["root"], v91, classes="coco14_91", progress=False)
    to91, back81 = str(tmp_path / "to91"), str(tmp_path / "back81")
    coco.convert_root(v81, to91, classes="coco14_91", num_workers=2, progress=False)
    coco.convert_root(to91, back81, classes="coco14", progress=False)
    a, b, c, d = (VOCRoot(p) for p in (v91, to91, v81, back81))
    assert b.spec.class_names == COCO14_91.class_names and d.spec.class_names == COCO14.class_names
    ids = a.ids("train") + a.ids("val")
    assert b.ids("train") + b.ids("val") == ids
    for i in ids:
        np.testing.assert_array_equal(load_mask_png(a.mask_path(i)), load_mask_png(b.mask_path(i)))
        np.testing.assert_array_equal(load_mask_png(c.mask_path(i)), load_mask_png(d.mask_path(i)))
    for x, y in ((a, b), (c, d)):
        lx, ly = x.cls_labels(ids), y.cls_labels(ids)
        assert all(np.array_equal(lx[i], ly[i]) for i in ids)
    # the LUT itself: every used id and back, unused ids have no 81-class label
    lut = coco.remap_lut(COCO14, COCO14_91)
    assert [int(lut[k]) for k in range(1, 81)] == list(COCO_CATEGORY_IDS) and lut[255] == 255
    inv = coco.remap_lut(COCO14_91, COCO14)
    assert all(inv[u] == 256 for u in COCO_UNUSED_IDS)
    m = load_mask_png(b.mask_path(ids[0])).copy()
    m[0, 0] = COCO_UNUSED_IDS[0]
    save_mask_png(b.mask_path(ids[0]), m)
    with pytest.raises(WsegError, match=r"label\(s\) \[12\] have no class"):
        coco.convert_root(to91, str(tmp_path / "bad81"), classes="coco14", progress=False)


def test_rsepm_layout_round_trip_and_read_as_root(coco_root, tmp_path):
    v81, rs, back = str(tmp_path / "voc81"), str(tmp_path / "COCO2014"), str(tmp_path / "back")
    coco.convert_coco(coco_root["root"], v81, progress=False)
    res = coco.convert_root(v81, rs, out_layout="rsepm", progress=False)
    assert res["splits"] == {"train": 2, "validation": 1}
    assert sorted(os.listdir(rs)) == [".mask.make_coco_masks.json", "classes.txt", "cls_labels.npy", "train",
                                      "validation"]
    assert sorted(os.listdir(os.path.join(rs, "validation"))) == ["image", "mask", "xml"]
    os.remove(os.path.join(rs, "cls_labels.npy"))           # labels must now come from RS+EPM's XML tags
    os.remove(os.path.join(rs, "classes.txt"))
    r = VOCRoot(rs, "coco14")
    src = VOCRoot(v81)
    assert r.layout.name == "rsepm" and r.spec.name == "coco14"
    assert r.ids("val") == r.ids("validation") == src.ids("val") and r.ids("train") == src.ids("train")
    ids = src.ids("train") + src.ids("val")
    got, want = r.cls_labels(ids), src.cls_labels(ids)
    assert all(np.array_equal(got[i], want[i]) for i in ids)
    for i in ids:
        np.testing.assert_array_equal(load_mask_png(r.mask_path(i)), load_mask_png(src.mask_path(i)))
        assert os.path.samefile(r.image_path(i), src.image_path(i))
    assert r.gt_dir("val") == os.path.join(rs, "validation", "mask") == r.gt_dir()
    coco.convert_root(rs, back, src_classes="coco14", progress=False)
    b = VOCRoot(back)
    assert b.ids("val") == src.ids("val")
    for i in ids:
        np.testing.assert_array_equal(load_mask_png(b.mask_path(i)), load_mask_png(src.mask_path(i)))
    with pytest.raises(WsegError, match="no such split"):
        r.ids("train_aug")
    direct = str(tmp_path / "direct")                         # json -> RS+EPM, images copied
    coco.convert_coco(coco_root["root"], direct, out_layout="rsepm", images="copy", progress=False)
    d = VOCRoot(direct)
    assert d.layout.name == "rsepm" and d.spec.class_names == COCO14.class_names
    for i in ids:
        np.testing.assert_array_equal(load_mask_png(d.mask_path(i)), load_mask_png(src.mask_path(i)))
        assert not os.path.islink(d.image_path(i)) and os.path.getsize(d.image_path(i)) > 0


def test_published_layouts_read_as_roots(tmp_path):
    """RS+EPM (VOC classes, hand-written), ToCo/EPS and PMM trees: ids, paths, labels, default classes."""
    rs = tmp_path / "VOC2012"
    img = np.zeros((6, 8, 3), np.uint8)
    xml = ("<annotation><size><width>8</width><height>6</height><depth>3</depth></size><object><name>{}</name>"
           "<difficult>0</difficult><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>7</xmax><ymax>5</ymax></bndbox>"
           "</object></annotation>")
    for split, i, name in (("train", "2007_000001", "dog"), ("train_aug", "2007_000001", "dog"),
                           ("train_aug", "2008_000002", "cat"), ("validation", "2009_000003", "person")):
        save_image(str(rs / split / "image" / f"{i}.jpg"), img)
        (rs / split / "xml").mkdir(parents=True, exist_ok=True)
        (rs / split / "xml" / f"{i}.xml").write_text(xml.format(name))
    save_mask_png(str(rs / "validation" / "mask" / "2009_000003.png"), np.full((6, 8), 15, np.uint8))
    save_image(str(rs / "test" / "image" / "2010_000004.jpg"), img)
    r = VOCRoot(str(rs))
    assert r.layout.name == "rsepm" and r.spec.num_classes == 21
    assert r.ids("train_aug") == ["2007_000001", "2008_000002"] and r.ids("test") == ["2010_000004"]
    assert r.image_path("2010_000004") == str(rs / "test" / "image" / "2010_000004.jpg")
    assert r.mask_path("2009_000003").endswith("validation/mask/2009_000003.png")
    assert r.mask_path("2010_000004") is None
    labels = r.cls_labels(["2008_000002", "2009_000003"])
    assert np.flatnonzero(labels["2008_000002"]).tolist() == [7] and labels["2009_000003"][14] == 1
    # ToCo / EPS: MSCOCO/{coco2014/{train2014,val2014}, SegmentationClass/{train2014,val2014}}
    toco = tmp_path / "MSCOCO"
    for split in ("train2014", "val2014"):
        i = f"COCO_{split}_000000000001"
        save_image(str(toco / "coco2014" / split / f"{i}.jpg"), img)
        save_mask_png(str(toco / "SegmentationClass" / split / f"{i}.png"), np.full((6, 8), 80, np.uint8))
    save_image(str(toco / "coco2014" / "train2014" / "COCO_train2014_000000000009.jpg"), img)   # no annotation
    t = VOCRoot(str(toco))
    assert t.layout.name == "coco2014" and t.spec.class_names == COCO14.class_names
    assert t.ids("train") == ["COCO_train2014_000000000001"]                                  # annotated images
    assert t.image_path("COCO_val2014_000000000001").endswith("coco2014/val2014/COCO_val2014_000000000001.jpg")
    assert t.gt_dir("train").endswith("SegmentationClass/train2014")
    assert t.cls_labels(["COCO_val2014_000000000001"])["COCO_val2014_000000000001"][79] == 1      # from the mask
    # PMM / WSSS_MMSeg: coco14/{images, voc_format/{class_labels, train.txt, val.txt}}, raw ids -> 91 classes
    pmm = tmp_path / "coco14"
    save_image(str(pmm / "images" / "COCO_val2014_000000000001.jpg"), img)
    save_mask_png(str(pmm / "voc_format" / "class_labels" / "COCO_val2014_000000000001.png"),
                  np.full((6, 8), 90, np.uint8))
    (pmm / "voc_format" / "val.txt").write_text("COCO_val2014_000000000001\n")
    p = VOCRoot(str(pmm))
    assert p.layout.name == "pmm" and p.spec.class_names == COCO14_91.class_names and p.ids("val") == [
        "COCO_val2014_000000000001"]
    assert load_cls_labels(p, ["COCO_val2014_000000000001"])["COCO_val2014_000000000001"][89] == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(WsegError, match="JPEGImages"):
        VOCRoot(str(tmp_path / "empty"))


def reference_skip_miou(preds, gts, num_classes):
    """PMM pipeline/evaluation.py: IoU = -1 where T == 0, mIoU over the rest."""
    T, P, TP = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes)
    for pred, gt in zip(preds, gts):
        cal = gt < 255
        for i in range(num_classes):
            P[i] += np.sum((pred == i) * cal)
            T[i] += np.sum((gt == i) * cal)
            TP[i] += np.sum((gt == i) * (pred == gt) * cal)
    iou = np.array([TP[i] / (T[i] + P[i] - TP[i]) if T[i] > 0 else -1 for i in range(num_classes)])
    return iou[iou >= 0].mean(), iou, T, P, TP


def test_eval_skips_absent_classes_and_prints_81_classes(coco_root, tmp_path, capsys):
    out = str(tmp_path / "voc81")
    coco.convert_coco(coco_root["root"], out, progress=False)
    voc = VOCRoot(out)
    ids = voc.ids("train") + voc.ids("val")
    gts = [load_mask_png(voc.mask_path(i)) for i in ids]
    rng = np.random.default_rng(0)
    pred_dir = tmp_path / "pred"
    preds = []
    for i, g in zip(ids, gts):
        p = np.where(g == 255, 0, g).astype(np.uint8)
        p[rng.random(g.shape) < 0.2] = 7                           # class 7 (train): absent from every gt
        save_mask_png(str(pred_dir / f"{i}.png"), p)
        preds.append(p)
    lst = tmp_path / "all.txt"
    lst.write_text("".join(i + "\n" for i in ids))
    parser = stage_parser(eval_stage)
    base = ["--data_root", out, "--list", str(lst), "--predict_dir", str(pred_dir), "--type", "png", "--logfile", "",
            "--progress", "False", "--num_workers", "1"]
    skip = eval_stage.run(parser().parse_args(base))
    printed = capsys.readouterr().out
    ref, ref_iou, T, P, TP = reference_skip_miou(preds, gts, 81)
    assert skip["absent"] == "skip" and abs(skip["miou"] / 100 - ref) < 1e-9
    present = int((T > 0).sum())
    assert skip["num_present"] == present and "train" in skip["left_out"]
    assert f"means over the {present} of 81 classes present; {81 - present} left out (--absent skip" in printed
    assert max(len(line) for line in printed.splitlines()) < 120 and len(printed.splitlines()) < 50  # 2 columns
    assert all(n in printed for n in ("toothbrush", "hair drier", "stop sign"))
    nan = eval_stage.run(parser().parse_args(base + ["--absent", "nan"]))
    union = T + P - TP
    assert abs(nan["miou"] / 100 - np.mean((TP / np.where(union > 0, union, 1))[union > 0])) < 1e-9
    assert nan["num_present"] == present + 1 and nan["iou"]["train"] == 0.0       # predicted, absent: counts as 0
    zero = eval_stage.run(parser().parse_args(base + ["--absent", "zero", "--table", "long"]))
    assert abs(zero["miou"] / 100 - np.sum(TP / (union + 1e-10)) / 81) < 1e-9 and zero["num_present"] == 81
    assert zero["miou"] < skip["miou"]
    # the same through --gt_dir (no root): classes from the root's classes.txt, COCO -> skip by default
    via_dir = eval_stage.run(parser().parse_args(
        ["--list", str(lst), "--predict_dir", str(pred_dir), "--gt_dir", os.path.join(out, "SegmentationClass"),
         "--type", "png", "--logfile", "", "--progress", "False", "--num_workers", "2"]))
    assert via_dir["miou"] == skip["miou"] and via_dir["absent"] == "skip"
    capsys.readouterr()


def test_voc_default_unchanged():
    from wseg.evaluation import resolve_absent

    assert resolve_absent("auto", get_spec("voc12").class_names) == "zero"
    assert resolve_absent("auto", COCO14_91.class_names) == "skip"
    assert COCO14_91.class_names[12] == "unused_12" and COCO14_91.class_names[90] == "toothbrush"


def test_toy_coco_dataset(tmp_path):
    from wseg.data import synthetic, synthetic_coco

    root = str(tmp_path / "toy")
    s = synthetic_coco.make_toy_coco(root, num_train=4, num_val=2, crowd_prob=0.5, seed=3)
    data = json.load(open(os.path.join(root, "annotations", "instances_train2014.json")))
    crowds = [a for a in data["annotations"] if a["iscrowd"]]
    polys = [a for a in data["annotations"] if not a["iscrowd"]]
    assert crowds and polys and all(isinstance(a["segmentation"]["counts"], list) for a in crowds)
    assert len(data["categories"]) == 80 and s["category_ids"] == synthetic_coco.toy_category_ids(6)
    again = synthetic_coco.make_toy_coco(root, num_train=4, num_val=2, crowd_prob=0.5, seed=3)
    assert again["generated"] == 0
    out = str(tmp_path / "voc81")
    coco.convert_coco(root, out, progress=False)
    voc = VOCRoot(out)
    cfg = synthetic.ToyConfig(num_classes=6, seed=3).validate()
    lut = np.zeros(256, np.uint8)
    lut[255] = 255
    for c, cid in enumerate(s["category_ids"]):
        lut[c + 1] = C81[cid]
    for k, i in enumerate(voc.ids("train"), start=1):
        sample = synthetic.render_sample(k, cfg)
        got = load_mask_png(voc.mask_path(i))
        keep = got != 255                                          # crowd regions
        assert (got[keep] == lut[sample.labels][keep]).mean() > 0.995
    shutil.rmtree(os.path.join(root, "val2014"))
    with pytest.raises(WsegError, match="generated with other settings"):
        synthetic_coco.make_toy_coco(root, num_train=5, num_val=2, crowd_prob=0.5, seed=3)
