"""Losses: SEAM (classification, ER, ECR, adaptive min-pooling) and PPC pixel-to-prototype contrast."""
from wseg.losses.ppc import cam_losses, ppc_losses
from wseg.losses.seam import seam_losses

__all__ = ["cam_losses", "ppc_losses", "seam_losses"]
