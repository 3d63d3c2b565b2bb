"""Typed config of the water-land U-Net family (pure dataclass)."""

from __future__ import annotations

from dataclasses import dataclass

from rrsis.fields import bounded, choice


@dataclass
class WaterlandConfig:
    family: str = choice("munet", "senet", "deepunet", "munet")
    width: str = choice("half", "full", "half")
    in_bands: int = bounded(2, 1, 64)
    num_classes: int = bounded(2, 2, 2)
    # One extra output layer per extra loss term (eq. 3 and 6 of the paper use two heads).
    aux_heads: int = bounded(0, 0, 1)
