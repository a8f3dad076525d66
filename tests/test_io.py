import os

import numpy as np
import pytest
from PIL import Image

from wseg import io
from wseg.errors import WsegError


def test_palette_matches_voc_reference():
    pal = io.voc_palette()
    # Reference colours of the published VOC colour map.
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128]  # person
    assert pal[20].tolist() == [0, 64, 128]     # tvmonitor
    assert pal[255].tolist() == [224, 224, 192]  # ignore


def test_mask_png_roundtrip_is_palette(tmp_path):
    m = np.random.default_rng(0).integers(0, 21, (17, 23)).astype(np.uint8)
    m[0] = 255
    p = tmp_path / "sub" / "a.png"
    io.save_mask_png(str(p), m)
    with Image.open(p) as im:
        assert im.mode == "P"
    np.testing.assert_array_equal(io.load_mask_png(str(p)), m)
    assert [f for f in os.listdir(p.parent) if f.startswith(".")] == []


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"
    with pytest.raises(RuntimeError):
        with io.atomic_path(str(target)) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("crash")
    assert os.listdir(tmp_path) == []
    assert not io.is_done(str(target))


def test_cam_dict_roundtrip_and_validation(tmp_path):
    cams = {0: np.random.rand(5, 7), 14: np.random.rand(5, 7)}
    p = str(tmp_path / "c.npy")
    io.save_cam_dict(p, cams)
    back = io.load_cam_dict(p, num_fg=20, shape=(5, 7))
    assert sorted(back) == [0, 14] and back[14].dtype == np.float32
    # readable the published way
    pub = np.load(p, allow_pickle=True).item()
    np.testing.assert_allclose(pub[14], cams[14], rtol=1e-6)
    keys, stack = io.cam_dict_to_stack(back)
    assert keys.tolist() == [0, 14] and stack.shape == (2, 5, 7)
    with pytest.raises(WsegError, match="outside"):
        io.load_cam_dict(p, num_fg=10)
    with pytest.raises(WsegError, match="differs from the image"):
        io.load_cam_dict(p, shape=(6, 7))
    np.save(str(tmp_path / "bad.npy"), np.zeros((21, 5, 7)))
    with pytest.raises(WsegError, match="expected a CAM dict"):
        io.load_cam_dict(str(tmp_path / "bad.npy"))
    with pytest.raises(WsegError, match="not found"):
        io.load_cam_dict(str(tmp_path / "missing.npy"))
    # the one dict reader (CAM dicts, cls_labels.npy, predicted labels): garbage and non-dicts are one line each
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    with pytest.raises(WsegError, match=r"garbage.npy: cannot read it as a CAM dict .*; delete it and re-run"):
        io.load_cam_dict(str(tmp_path / "garbage.npy"))
    with pytest.raises(WsegError, match=r"bad.npy: expected labels, got ndarray \(21, 5, 7\); fix it"):
        io.load_dict(str(tmp_path / "bad.npy"), "labels", "fix it")
    assert io.load_dict(p, "a CAM dict", "-").keys() == back.keys()


def test_check_labels_names_bad_values():
    m = np.array([[0, 3, 255], [21, 40, 1]], np.uint8)
    with pytest.raises(WsegError, match="labels 21, 40 outside"):
        io.check_labels(m, 21, "gt.png")
    io.check_labels(m, 41, "gt.png")


def test_pending_ids_skips_finished(tmp_path):
    io.save_cam_dict(str(tmp_path / "a.npy"), {0: np.zeros((2, 2))})
    (tmp_path / "b.npy").write_bytes(b"")  # empty file = not done
    assert io.pending_ids(["a", "b", "c"], [(str(tmp_path), ".npy"), (None, ".png")]) == ["b", "c"]


def test_overlays_shapes():
    img = np.full((8, 9, 3), 100, np.uint8)
    m = np.zeros((8, 9), np.uint8)
    m[2:5, 2:5] = 3
    m[0, 0] = 255
    ov = io.overlay_mask(img, m)
    assert ov.shape == img.shape and (ov[0, 0] == 100).all() and not (ov[3, 3] == 100).all()
    hm = io.overlay_cam(img, np.linspace(0, 1, 72).reshape(8, 9))
    assert hm.shape == img.shape
    assert io.side_by_side([img, ov, m]).shape == (8, 9 * 3 + 8, 3)
