"""Methods as modules (the method seam, :mod:`wseg.methods.base`): each published system is one module.

- :mod:`~wseg.methods.seam`: SEAM (``--network seam``);
- :mod:`~wseg.methods.ppc`: Pixel-to-Prototype Contrast on SEAM (``--network contrast``);
- :mod:`~wseg.methods.affinitynet`: AffinityNet (the random-walk refinement of PSA/SEAM/PPC; its own stages).
"""
from wseg.methods.base import METHODS, CamMethod, get_method, register
from wseg.methods import ppc, seam  # noqa: F401  (registration)

__all__ = ["METHODS", "CamMethod", "build_cam_net", "get_method", "register"]


def build_cam_net(network: str = "contrast", backbone: str = "resnet38", num_classes: int = 21, **kwargs):
    """The network of CAM method ``network`` (``seam``, ``contrast``, ...) on a named backbone; ``num_classes``
    counts background. Keywords: ``dropout``, ``frozen``, ``freeze_bn``."""
    return get_method(network)().build_network(backbone, num_classes, **kwargs)
