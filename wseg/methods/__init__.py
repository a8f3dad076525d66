"""Methods as modules (the method seam, :mod:`wseg.methods.base`): each published system is one module.

- :mod:`~wseg.methods.seam`: SEAM (``--network seam``);
- :mod:`~wseg.methods.ppc`: Pixel-to-Prototype Contrast on SEAM (``--network contrast``);
- :mod:`~wseg.methods.eps`: EPS, saliency as pseudo-pixel supervision (``--network eps``);
- :mod:`~wseg.methods.eps_ppc`: EPS + Pixel-to-Prototype Contrast, the usr922/wseg ``esp`` branch
  (``--network eps_contrast``);
- :mod:`~wseg.methods.affinitynet`: AffinityNet (the random-walk refinement of PSA/SEAM/PPC; its own stages).

Single-stage methods (one network from image labels to masks) live on their own seam,
:mod:`~wseg.methods.single_stage` (``wsss_train`` / ``wsss_infer``): :mod:`~wseg.methods.toco`,
:mod:`~wseg.methods.locbe`.
"""
from wseg.methods.base import METHODS, CamMethod, get_method, register
from wseg.methods import eps, eps_ppc, ppc, seam  # noqa: F401  (registration)
from wseg.methods.single_stage import SINGLE_STAGE, SingleStageMethod, get_single_stage, register_single_stage

__all__ = ["METHODS", "CamMethod", "SINGLE_STAGE", "SingleStageMethod", "build_cam_net", "get_method",
           "get_single_stage", "register", "register_single_stage"]


def build_cam_net(network: str = "contrast", backbone: str = "resnet38", num_classes: int = 21, **kwargs):
    """The network of CAM method ``network`` (``seam``, ``contrast``, ...) on a named backbone; ``num_classes``
    counts background. Keywords: ``dropout``, ``frozen``, ``freeze_bn``."""
    return get_method(network)().build_network(backbone, num_classes, **kwargs)
