"""Grounding model family (PSLG-SAM stage one): `GroundingModel`, its config and the L1 + GIoU loss."""
