"""wseg: weakly-supervised semantic segmentation from image-level labels.

The library behind the stage scripts in ``scripts/`` and ``segmentation/``: datasets, networks, losses,
CAM / CRF / affinity / random-walk / metric code and the artifact I/O the stages exchange on disk.
"""
__version__ = "0.1.0"
