"""The diagnostic counts of the recognition benchmarks: objects named right (``bench_seg_recognition.py``) and dead
last-level channels (``bench_standin_probe.py``)."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from bench_seg_recognition import objects_named  # noqa: E402
from bench_standin_probe import dead_channels  # noqa: E402


def test_objects_named_counts_each_region_by_its_majority_class():
    gt = np.zeros((20, 20), np.uint8)
    gt[1:6, 1:6] = 1           # object A, class 1
    gt[10:16, 10:16] = 1       # object B, class 1 (separate region)
    gt[1:6, 12:18] = 2         # object C, class 2
    gt[18:20, 0:2] = 2         # object D: only 4 pixels, too few to count
    gt[0, 19] = 255            # ignore stays out
    pred = np.zeros_like(gt)
    pred[1:6, 1:6] = 1                      # A right
    pred[10:16, 10:16] = 2                  # B named as class 2
    pred[10:12, 10:16] = 1                  # ... its minority still class 1
    pred[1:6, 12:18] = 2                    # C right
    pred[18:20, 0:2] = 2
    assert sorted(objects_named(pred, gt, 3)) == [False, True, True]
    assert objects_named(np.zeros_like(gt), gt, 3) == []      # no foreground predicted: nothing to name


class _TwoChannel(torch.nn.Module):
    levels = ("out",)

    def forward(self, x):
        return {"out": torch.cat([x.relu(), torch.zeros_like(x)], 1)}


def test_dead_channels_counts_channels_zero_on_every_image():
    xs = [torch.randn(1, 4, 4) for _ in range(3)]
    assert dead_channels(_TwoChannel(), xs) == 50.0
