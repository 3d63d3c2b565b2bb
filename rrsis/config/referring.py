"""The `referring` section of `rrsis map` (task: referring): which model maps the query, how results are kept.

`method: pslg_sam` (top-level key) uses `checkpoint` (grounding), `min_score`, `nms_iou` and the `boxes`
section; `method: danet` uses `danet` (a DANet checkpoint), `value_max`, `infer.threshold` and `refine`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rrsis.config.fields import bounded


@dataclass
class ReferringConfig:
    checkpoint: str = ""  # rrsis grounding checkpoint (local path or URI)
    min_score: float = bounded(0.5, 0.0, 1.0)  # a tile's best box is kept when its score reaches this
    nms_iou: float = bounded(0.5, 0.0, 1.0, open_low=True)  # boxes overlapping a kept box this much are dropped
    danet: str = ""  # method: danet: rrsis DANet checkpoint (local path or URI)
    # method: danet: the scene value drawn as white (1.0 before the model's RGB normalisation); scene-wide
    value_max: float = bounded(255.0, 0.0, open_low=True)
