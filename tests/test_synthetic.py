"""Synthetic toy VOC: determinism, resume, exact VOC layout and formats, and that the task is a fair WSSS one
(several classes, occlusion, class evidence concentrated in discriminative heads, colour alone is not enough)."""
import importlib.util
import os
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from wseg.cli import main
from wseg.data import synthetic
from wseg.data.classes import get_spec
from wseg.data.synthetic import ToyConfig, make_toy_voc, parse_size, render_sample, save_preview
from wseg.data.voc import read_list
from wseg.errors import WsegError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = os.path.join("ImageSets", "Segmentation")


def load_script():
    spec = importlib.util.spec_from_file_location("wseg_script_make_toy_voc_test",
                                                  os.path.join(REPO, "scripts", "make_toy_voc.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tree_bytes(root):
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two roots with the same seed (one written by 2 workers), one with another seed."""
    base = tmp_path_factory.mktemp("synth")
    kw = dict(num_train=7, num_val=3, num_classes=4, image_size="96x64")
    a = make_toy_voc(str(base / "a"), seed=5, **kw)
    b = make_toy_voc(str(base / "b"), seed=5, workers=2, **kw)
    c = make_toy_voc(str(base / "c"), seed=6, **dict(kw, num_train=3, num_val=1))
    return base, a, b, c


def test_same_seed_identical_bytes_other_seed_differs(made):
    base, a, b, c = made
    ta, tb, tc = (tree_bytes(str(base / k)) for k in "abc")
    assert a["generated"] == 10 and b["generated"] == 10
    assert ta == tb  # byte-identical, independent of the number of workers
    jpgs = [k for k in tc if k.startswith("JPEGImages")]
    assert len(jpgs) == 4 and all(ta[k] != tc[k] for k in jpgs)
    assert not [k for k in ta if os.path.basename(k).startswith(".")]  # no temp files left


def test_rerun_skips_and_repairs(made, tmp_path):
    base, _, _, _ = made
    root = str(base / "a")
    before = tree_bytes(root)
    again = make_toy_voc(root, num_train=7, num_val=3, num_classes=4, image_size="96x64", seed=5)
    assert again["generated"] == 0 and again["skipped"] == 10
    os.remove(os.path.join(root, "SegmentationClass", "toy_000004.png"))
    fixed = make_toy_voc(root, num_train=7, num_val=3, num_classes=4, image_size="96x64", seed=5)
    assert fixed["generated"] == 1
    assert tree_bytes(root) == before
    with pytest.raises(WsegError, match="other settings"):
        make_toy_voc(root, num_train=7, num_val=3, num_classes=5, image_size="96x64", seed=5)
    real = tmp_path / "VOC2012"
    (real / "JPEGImages").mkdir(parents=True)
    (real / "JPEGImages" / "2007_000032.jpg").write_bytes(b"x")
    with pytest.raises(WsegError, match="not a toy VOC root"):  # never writes into a real dataset
        make_toy_voc(str(real), num_train=1, num_val=1)
    assert os.listdir(real) == ["JPEGImages"]


def test_voc_layout_xml_masks_labels_and_lists(made):
    base, summary, _, _ = made
    root = str(base / "a")
    names = [line.strip() for line in open(os.path.join(root, "classes.txt"))]
    assert names == ["background", "class01", "class02", "class03", "class04"]
    assert get_spec(None, root=root).num_fg == 4
    train, val = read_list(os.path.join(root, SPLITS, "train.txt")), read_list(os.path.join(root, SPLITS, "val.txt"))
    trainval = read_list(os.path.join(root, SPLITS, "trainval.txt"))
    assert len(train) == 7 and len(val) == 3 and not set(train) & set(val)
    assert trainval == train + val
    assert sorted(trainval) == sorted(f[:-4] for f in os.listdir(os.path.join(root, "JPEGImages")))
    table = np.load(os.path.join(root, "cls_labels.npy"), allow_pickle=True).item()
    assert sorted(table) == sorted(trainval)
    band_seen = 0
    for iid in trainval:
        with Image.open(os.path.join(root, "JPEGImages", iid + ".jpg")) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (96, 64)  # (W, H)
        with Image.open(os.path.join(root, "SegmentationClass", iid + ".png")) as im:
            assert im.mode == "P" and im.size == (96, 64)
            assert im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]  # VOC colour map
            mask = np.asarray(im)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(5)) | {255}
        band_seen += 255 in values
        ann = ET.parse(os.path.join(root, "Annotations", iid + ".xml")).getroot()
        assert ann.findtext("filename") == iid + ".jpg"
        assert [ann.findtext(f"size/{k}") for k in ("width", "height", "depth")] == ["96", "64", "3"]
        xml_classes = set()
        for obj in ann.iter("object"):
            assert obj.findtext("pose") == "Unspecified"
            assert obj.findtext("truncated") in ("0", "1") and obj.findtext("difficult") == "0"
            x0, y0, x1, y1 = (int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x0 <= x1 <= 96 and 1 <= y0 <= y1 <= 64  # 1-based, inside the image
            cls = names.index(obj.findtext("name"))
            xml_classes.add(cls)
            box = mask[y0 - 1:y1, x0 - 1:x1]
            assert (box == cls).any()  # the box holds pixels of its class
        mask_classes = values - {0, 255}
        assert mask_classes == xml_classes and xml_classes
        vec = table[iid]
        assert vec.dtype == np.float32 and vec.shape == (4,)
        assert set((np.flatnonzero(vec) + 1).tolist()) == xml_classes
    assert band_seen == len(trainval)


def test_ignore_band_follows_object_borders():
    cfg = ToyConfig(num_classes=5, width=96, height=72, seed=1)
    for i in range(1, 13):
        s = render_sample(i, cfg)
        inst = s.instances.astype(np.int32)
        # both pixels of every pair of neighbours in different objects (or object / background) are ignored
        for a, b, ma, mb in ((inst[:, 1:], inst[:, :-1], s.mask[:, 1:], s.mask[:, :-1]),
                             (inst[1:], inst[:-1], s.mask[1:], s.mask[:-1])):
            edge = a != b
            assert (ma[edge] == 255).all() and (mb[edge] == 255).all()
        # ... and only there: a thin band, not whole regions
        band = s.mask == 255
        assert band.sum() <= 4 * max(1, (inst[:, 1:] != inst[:, :-1]).sum() + (inst[1:] != inst[:-1]).sum())
        np.testing.assert_array_equal(np.where(band, s.labels, s.mask), s.labels)  # band only hides labels


def test_scenes_have_several_classes_occlusion_repeats_and_scales():
    cfg = ToyConfig(num_classes=6, width=128, height=96, seed=0)
    samples = [render_sample(i, cfg) for i in range(1, 81)]
    counts = [len(s.objects) for s in samples]
    assert min(counts) >= 1 and max(counts) == 4
    assert sum(len({o["class_index"] for o in s.objects}) >= 2 for s in samples) >= 25
    assert sum(len({o["class_index"] for o in s.objects}) < len(s.objects) for s in samples) >= 2  # same class twice
    occluded = [o for s in samples for o in s.objects if o["occluded"]]
    assert len(occluded) >= 10
    # depth order in the mask: an occluded object lost pixels to a later one, which keeps its own label there
    assert any(0.35 <= o["visible_fraction"] < 0.9 for o in occluded)
    extents = [max(o["bndbox"][2] - o["bndbox"][0], o["bndbox"][3] - o["bndbox"][1]) + 1
               for s in samples for o in s.objects if not o["occluded"] and not o["truncated"]]
    assert min(extents) < 0.25 * 96 and max(extents) > 0.5 * 96  # varied scale
    assert {o["class_index"] for s in samples for o in s.objects} == set(range(1, 7))


def test_the_headless_decoy_body_is_background_and_recorded_with_its_designs_class():
    base = ToyConfig(num_classes=6, width=128, height=96, seed=3, headless_prob=0.0)
    always = ToyConfig(num_classes=6, width=128, height=96, seed=3, headless_prob=1.0)
    assert all(not render_sample(i, base).decoy.any() for i in range(1, 6))
    seen = 0
    for i in range(1, 13):
        s = render_sample(i, always)
        on = s.decoy > 0
        assert (s.labels[on] == 0).all() and (s.parts[on] == 0).all()   # background by definition, no object part
        values = np.unique(s.decoy[on])
        assert len(values) <= 1 and set(values.tolist()) <= set(range(1, 7))   # one body, drawn from one design
        seen += int(on.sum() > 0)
    assert seen >= 8                                  # mostly visible, though objects and occluders may hide it


def test_task_is_not_colour_thresholding_and_heads_carry_the_class():
    cfg = ToyConfig(num_classes=6, width=128, height=96, seed=0)
    train = [render_sample(i, cfg) for i in range(1, 61)]
    val = [render_sample(i, cfg) for i in range(61, 91)]
    C = cfg.num_classes + 1

    # 1) a per-pixel colour-only classifier (nearest class-mean colour) is far from solving the task
    X = np.concatenate([s.image.reshape(-1, 3) for s in train]).astype(np.float32)
    Y = np.concatenate([s.labels.reshape(-1) for s in train])
    means = np.stack([X[Y == c].mean(0) for c in range(C)])
    Xv = np.stack([s.image for s in val]).astype(np.float32)
    gt = np.stack([s.mask for s in val])
    pred = ((Xv[..., None, :] - means) ** 2).sum(-1).argmin(-1)
    valid = gt != 255
    ious = [((pred == c) & (gt == c) & valid).sum() / max(1, ((pred == c) | (gt == c))[valid].sum()) for c in range(C)]
    assert np.mean(ious) < 0.35

    # 2) the discriminative part: per object, the mean colour of its head identifies the class, its body does not
    def features(samples, part):
        f, y = [], []
        for s in samples:
            for o in s.objects:
                sel = (s.instances == o["instance"]) & (s.parts == part)
                if sel.sum() >= 8:
                    f.append(s.image[sel].astype(np.float32).mean(0))
                    y.append(o["class_index"])
        return np.array(f), np.array(y)

    acc = {}
    for part, name in ((2, "head"), (1, "body")):
        f, y = features(train, part)
        fv, yv = features(val, part)
        centres = np.stack([f[y == c].mean(0) for c in range(1, C)])
        guess = ((fv[:, None] - centres) ** 2).sum(-1).argmin(1) + 1
        acc[name] = (guess == yv).mean()
    assert acc["head"] > 0.8 and acc["body"] < 0.65, acc

    # 3) every class has its head pattern present in every visible instance that is not cut off
    heads = [o["head_pixels"] for s in train for o in s.objects]
    assert np.mean(np.array(heads) >= 6) > 0.9


def test_designs_share_bodies_and_give_unique_heads():
    for n in (1, 2, 5, 6, 20):
        d = synthetic.class_designs(n)
        assert len(d) == n
        heads = {(x.head_shape, x.head_pattern, x.head_rgb) for x in d}
        assert len(heads) == n
        if n >= 2:  # every group has at least two classes sharing the body
            groups = [x.group for x in d]
            assert min(groups.count(g) for g in set(groups)) >= 2
            for x in d:
                mates = [y for y in d if y.group == x.group]
                assert len({(y.body_kind, y.body_texture, y.body_hsv) for y in mates}) == 1
    assert synthetic.toy_class_names(3) == ["background", "class01", "class02", "class03"]
    assert synthetic.toy_class_names(120)[1] == "class001"


def test_parse_size_and_cli(tmp_path, capsys):
    assert parse_size("128") == (128, 128) and parse_size("128x96") == (128, 96)
    assert parse_size((80, 60)) == (80, 60) and parse_size(None) == synthetic.DEFAULT_SIZE
    for bad in ("12x", "axb", "16", "1x2x3"):
        with pytest.raises(WsegError, match="--size"):
            parse_size(bad)
    script = load_script()
    out = str(tmp_path / "cli")
    preview = str(tmp_path / "preview.png")
    argv = ["--out", out, "--num_train", "3", "--num_val", "2", "--num_classes", "2", "--size", "64x48",
            "--preview", preview, "--preview_n", "3"]
    assert main(script.build_parser, script.run, argv) == 0
    assert "3 train + 2 val images" in capsys.readouterr().out
    with Image.open(preview) as im:
        assert im.size[0] > 3 * 64 and im.size[1] >= 48
    assert main(script.build_parser, script.run, argv[:-4] + ["--size", "10x10"]) == 2
    assert "error: --size" in capsys.readouterr().err
    assert main(script.build_parser, script.run, ["--out", out, "--num_train", "0", "--num_val", "0"]) == 2


def test_difficulty_presets(tmp_path):
    easy = ToyConfig(num_classes=3, **synthetic.DIFFICULTY["easy"])
    hard = ToyConfig(num_classes=3, **synthetic.DIFFICULTY["hard"])
    n_easy = sum(len(render_sample(i, easy).objects) for i in range(1, 9))
    assert n_easy >= 8  # same scene structure, only the clutter changes
    assert easy.distractors[1] < hard.distractors[0]
    root = str(tmp_path / "e")
    make_toy_voc(root, num_train=2, num_val=1, num_classes=3, image_size="64x48", difficulty="easy")
    with open(os.path.join(root, synthetic.CONFIG_JSON)) as f:
        assert '"distractors": [\n  0,\n  2\n ]' in f.read()
    with pytest.raises(WsegError, match="other settings"):  # a resumed root keeps its preset
        make_toy_voc(root, num_train=2, num_val=1, num_classes=3, image_size="64x48")
    with pytest.raises(WsegError, match="--difficulty"):
        make_toy_voc(root, num_train=2, num_val=1, num_classes=3, difficulty="brutal")


def test_preview_grid(made, tmp_path):
    base, _, _, _ = made
    out = save_preview(str(base / "a"), str(tmp_path / "p.png"), n=4, scale=1, columns=2)
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.size[0] >= 2 * 3 * 96 and im.size[1] >= 2 * 64


def test_read_config_re_renders_the_roots_masks_and_refuses_other_roots(made, tmp_path):
    import json

    from wseg.data.synthetic import CONFIG_JSON, image_index, read_config
    from wseg.io import load_mask_png

    base = made[0]
    cfg = read_config(str(base / "a"))
    assert (cfg.seed, cfg.num_classes, cfg.width, cfg.height) == (5, 4, 96, 64)
    for iid in read_list(os.path.join(str(base / "a"), SPLITS, "val.txt")):
        sample = render_sample(image_index(iid), cfg)
        assert np.array_equal(sample.mask, load_mask_png(os.path.join(str(base / "a"), "SegmentationClass",
                                                                      iid + ".png")))
        assert set(np.unique(sample.parts)) <= {0, 1, 2}
    with pytest.raises(WsegError, match="not a toy VOC id"):
        image_index("2007_000032x")
    with pytest.raises(WsegError, match=f"{CONFIG_JSON}: not a toy VOC root"):
        read_config(str(tmp_path))                                   # a real dataset has no generator record
    old = tmp_path / "old"
    old.mkdir()
    meta = json.load(open(os.path.join(str(base / "a"), CONFIG_JSON)))
    (old / CONFIG_JSON).write_text(json.dumps({**meta, "version": synthetic.GENERATOR_VERSION + 1}))
    with pytest.raises(WsegError, match="generator version"):
        read_config(str(old))
