"""Losses: SEAM (classification, ER, ECR, adaptive min-pooling), PPC pixel-to-prototype contrast, AffinityNet.

The methods of :mod:`wseg.methods` compose them into their training steps."""
from wseg.losses.affinity import affinity_loss
from wseg.losses.ppc import ppc_losses
from wseg.losses.seam import seam_losses

__all__ = ["affinity_loss", "ppc_losses", "seam_losses"]
