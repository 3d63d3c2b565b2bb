"""How the streaming executor (`tile_run.execute`) cuts a run into waves, from scene headers alone: how many
scenes the next wave takes (about `wave_rows` work rows, at most `wave_scenes` scenes), the first wave's
estimate of a scene's tiles, and the band list an inference actor can measure the next scene with ahead of
its tiles. Only the first few scenes' headers are read, on the driver; everything else is planned on the
cluster.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from rrsis.config.map import MapConfig
from rrsis.geo.raster import RasterInfo, read_info
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import PlanArgs, choose_bands

T = TypeVar("T")


#: Scenes whose headers are tried, in order, for the run's estimates: a bad first scene is not a bad run.
HEADER_TRIES = 3


def first_header(scenes: list[SceneRef], use: Callable[[RasterInfo], T]) -> T | None:
    """`use` of the first of the first HEADER_TRIES scenes whose header reads and that `use` accepts (does
    not raise on); None when none does (each such scene fails later, in its own planning task)."""
    for scene in scenes[:HEADER_TRIES]:
        try:
            return use(read_info(scene.uri))
        except Exception:
            continue
    return None


def first_scene_key(scenes: list[SceneRef], plan: PlanArgs) -> str:
    """The band list of the first scene that plans (its metadata only): a guess for every scene's bands, so
    an inference actor can measure each next scene ahead of its tiles (a wrong guess costs one more read)."""

    def key(info: RasterInfo) -> str:
        bands = choose_bands(info, plan.requested_bands, plan.model_bands, plan.in_bands)
        return ",".join(str(b) for b in bands)

    return first_header(scenes, key) or ""


def wave_size(cfg: MapConfig, rows_per_scene: float) -> int:
    """Scenes in the next wave: about `wave_rows` work rows, at most `wave_scenes` scenes, at least one."""
    if rows_per_scene <= 0:
        return cfg.wave_scenes
    return max(1, min(cfg.wave_scenes, int(cfg.wave_rows / rows_per_scene)))


def tiles_estimate(scenes: list[SceneRef], plan: PlanArgs) -> float:
    """Tiles of the first scene whose header reads (0 when none does): the first wave's size, before any
    scene has been counted. `plan_tiles`' count: one core per stride on each axis."""
    step = max(1, plan.tile_px - plan.overlap_px)
    tiles = first_header(scenes, lambda info: float(math.ceil(info.width / step) * math.ceil(info.height / step)))
    return tiles or 0.0
