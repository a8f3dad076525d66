import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wseg.cam import (background_power, cam_dict_from_maps, cam_to_label, max_normalize, minmax_normalize,
                      multiscale_cam)
from wseg.data.transforms import RandomCrop, multiscale_flip_inputs, normalize


def published_minmax(sum_cam):
    """The published contrast_infer.py normalisation, written out in numpy."""
    sum_cam = sum_cam.copy()
    sum_cam[sum_cam < 0] = 0
    cam_max = np.max(sum_cam, (1, 2), keepdims=True)
    cam_min = np.min(sum_cam, (1, 2), keepdims=True)
    sum_cam[sum_cam < cam_min + 1e-5] = 0
    return (sum_cam - cam_min - 1e-5) / (cam_max - cam_min + 1e-5)


def test_minmax_matches_published():
    x = np.random.default_rng(0).normal(size=(4, 9, 11)).astype(np.float32)
    x[2] = 0  # absent class
    np.testing.assert_allclose(minmax_normalize(torch.from_numpy(x)).numpy(), published_minmax(x), atol=1e-6)
    np.testing.assert_allclose(max_normalize(torch.ones(1, 2, 2)).numpy(), 1 / (1 + 1e-5), rtol=1e-6)


def test_multiscale_cam_equals_hand_average():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8))
    scales = [0.5, 1.0, 1.5]
    batches = multiscale_flip_inputs(img, scales, flip=True)
    assert [tuple(b.shape) for b in batches] == [(2, 3, 5, 7), (2, 3, 10, 14), (2, 3, 15, 21)]
    w = torch.randn(4, 3)  # 1x1 "network": bg + 3 classes
    cam_fn = lambda x: torch.einsum("kc,nchw->nkhw", w, x)  # noqa: E731
    label = torch.tensor([1.0, 0.0, 1.0])
    out = multiscale_cam(lambda x: cam_fn(x)[:, 1:], batches, label, (10, 14), torch.device("cpu"))  # fg maps
    # hand computation: per scale, upsample each flip, un-flip the mirror, sum
    total = 0
    for s in scales:
        x = torch.from_numpy(normalize(np.asarray(img.resize((round(14 * s), round(10 * s)), Image.BICUBIC)
                                                  if s != 1 else img))).permute(2, 0, 1)[None]
        for flip in (False, True):
            xi = x.flip(-1) if flip else x
            c = F.interpolate(cam_fn(xi)[:, 1:], (10, 14), mode="bilinear", align_corners=False)[0]
            total = total + (c.flip(-1) if flip else c) * label.view(3, 1, 1)
    np.testing.assert_allclose(out.numpy(), published_minmax(total.numpy()), atol=1e-5)
    cams = cam_dict_from_maps(out.numpy(), label.numpy())
    assert sorted(cams) == [0, 2]


def test_cam_to_label_matches_published_argmax():
    rng = np.random.default_rng(2)
    cams = {3: rng.random((6, 5)).astype(np.float32), 7: rng.random((6, 5)).astype(np.float32)}
    cams[7][0, 0] = cams[3][0, 0] = 0.26  # tie with background -> background
    tensor = np.zeros((21, 6, 5), np.float32)
    for k, v in cams.items():
        tensor[k + 1] = v
    tensor[0] = 0.26
    np.testing.assert_array_equal(cam_to_label(cams, 0.26), np.argmax(tensor, 0))
    bg = background_power(cams, 4)
    np.testing.assert_allclose(bg, (1 - np.maximum(cams[3], cams[7])) ** 4, rtol=1e-5)
    assert cam_to_label({}, 0.2, (3, 3)).sum() == 0


def test_random_crop_pads_small_images():
    import random
    random.seed(0)
    x = np.ones((5, 40, 3), np.float32)
    out = RandomCrop(16)(x)
    assert out.shape == (16, 16, 3) and out.sum() == 5 * 16 * 3
