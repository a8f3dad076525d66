"""Shared fixtures: one tiny synthetic VOC-format dataset per test session; one torch thread per process
(the suite runs on 2 shared cores, where extra threads only add contention)."""
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _single_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """12 train + 4 val images, 3 classes, 64x48 pixels."""
    from wseg.data.synthetic import make_toy_voc

    root = str(tmp_path_factory.mktemp("toy") / "toy_voc")
    make_toy_voc(root, num_train=12, num_val=4, num_classes=3, image_size="64x48", seed=0)
    return root
