"""Heads composed onto :mod:`wseg.models.backbones` (parameter names inside each head are the published ones).

- :class:`~wseg.models.heads.cam.CAMHead` (``fc8``), :class:`~wseg.models.heads.cam.ProjectionHead` (``fc_proj``),
  :class:`~wseg.models.heads.pcm.PCM` (SEAM's pixel correlation module): CAM networks;
- :class:`~wseg.models.heads.affinity.AffinityHead`: AffinityNet;
- :class:`~wseg.models.heads.deeplab.LargeFOVHead` (DeepLab v1), :class:`~wseg.models.heads.deeplab.ASPPHead`
  (the published DeepLab v2): segmentation decode heads;
- :mod:`wseg.models.heads.mmseg`: mmsegmentation's heads with its names (``DepthwiseSeparableASPPHead`` of
  DeepLabV3+, ``PSPHead``, the auxiliary ``FCNHead``, and DeepLabV3's ``ASPPHead`` as ``mmseg.ASPPHead``).

Heads create their layers in ``__init__`` and initialise them in ``reset_parameters()``, which the network calls
in the published order (the random initial weights depend on that order).
"""
from wseg.models.heads.affinity import AffinityHead
from wseg.models.heads.cam import CAMHead, ProjectionHead
from wseg.models.heads.deeplab import ASPP, ASPPHead, LargeFOVHead
from wseg.models.heads.mmseg import DepthwiseSeparableASPPHead, FCNHead, PSPHead
from wseg.models.heads.pcm import PCM

__all__ = ["AffinityHead", "ASPP", "ASPPHead", "CAMHead", "DepthwiseSeparableASPPHead", "FCNHead", "LargeFOVHead",
           "PCM", "ProjectionHead", "PSPHead"]
