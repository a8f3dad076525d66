"""The segmentation stage (the last step of WSSS), one idea per module:

- :mod:`~wseg.segmentation.config`: experiment configs (keys, the ``model`` dict, overrides);
- :mod:`~wseg.segmentation.models`: networks by ``model.type`` (published DeepLab v1/v2, mmseg's DeepLabV3+ /
  PSPNet) and their weights (mmseg checkpoints both ways);
- :mod:`~wseg.segmentation.data`: the joint train transform, mask checks, test-time inputs;
- :mod:`~wseg.segmentation.train`: training on the one engine; validation;
- :mod:`~wseg.segmentation.predict`: multi-scale + flip inference, mmseg's whole/slide test and TTA, the CRF,
  palette PNGs;
- :mod:`~wseg.segmentation.test`: the test stage (predict, record settings, evaluate);
- :mod:`~wseg.segmentation.checks`: one-line errors for config values.
"""
from wseg.segmentation.data import check_mask_sizes
from wseg.segmentation.models import build_model, load_backbone_weights, load_segmentation_weights
from wseg.segmentation.predict import MMSegTest, mmseg_predict, ms_flip_logits, ms_flip_probs, predict_split
from wseg.segmentation.train import train

__all__ = ["MMSegTest", "build_model", "check_mask_sizes", "load_backbone_weights", "load_segmentation_weights",
           "mmseg_predict", "ms_flip_logits", "ms_flip_probs", "predict_split", "train"]
