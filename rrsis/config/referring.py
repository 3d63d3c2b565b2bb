"""The `referring` section of `rrsis map` (task: referring): which grounding model and how boxes are kept."""

from __future__ import annotations

from dataclasses import dataclass

from rrsis.config.fields import bounded


@dataclass
class ReferringConfig:
    checkpoint: str = ""  # rrsis grounding checkpoint (local path or URI)
    min_score: float = bounded(0.5, 0.0, 1.0)  # a tile's best box is kept when its score reaches this
    nms_iou: float = bounded(0.5, 0.0, 1.0, open_low=True)  # boxes overlapping a kept box this much are dropped
