"""Losses (pure torch). The water-land family: `build_loss(name)` and `heads_for_loss(name)`."""

from rrsis.losses.waterland import LOSS_NAMES, HeadSumLoss, build_loss, heads_for_loss

__all__ = ["LOSS_NAMES", "HeadSumLoss", "build_loss", "heads_for_loss"]
