"""The `boxes` section of `rrsis map` (task: boxes): where the boxes are and how SAM segments them."""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.config.fields import bounded
from rrsis.models.sam.config import SamConfig


@dataclass
class BoxesConfig:
    # .csv (id,x1,y1,x2,y2 in scene pixels) or .geojson (geometries in the scene's CRS); local path or URI.
    # "{scene_id}" is replaced by each scene's id, so one config maps many scenes with their own boxes.
    path: str = ""
    value_max: float = bounded(255.0, 0.0, open_low=True)  # scene value drawn as 255 in SAM's RGB input
    sam: SamConfig = field(default_factory=SamConfig)  # SAM, and CFPG (sam.cfpg) / MBO (sam.mbo) switches
