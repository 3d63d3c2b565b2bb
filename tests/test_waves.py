"""Waves of the streaming executor: sized by work rows (tiles) as well as scenes, the first one from the first
scene's header, so a run of many small scenes and one of a few large ones hold about the same per wave."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rrsis.geo.tiling import plan_tiles
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import PlanArgs
from rrsis.pipeline.waves import tiles_estimate, wave_size
from rrsis.session import limit_malloc_arenas, release_free_memory
from tests.pipeline_data import map_config, write_scene


def test_wave_takes_about_wave_rows_of_work_and_never_more_than_wave_scenes() -> None:
    cfg = map_config("wave_scenes=64", "wave_rows=1000")
    assert wave_size(cfg, 0.0) == 64  # nothing known yet: the scene cap
    assert wave_size(cfg, 400.0) == 2  # 800 tiles
    assert wave_size(cfg, 5000.0) == 1  # a scene above the budget still makes a wave of its own
    assert wave_size(cfg, 1.0) == 64  # tiny scenes: capped by scenes


def test_first_wave_is_estimated_from_the_first_readable_scene(tmp_path: Path) -> None:
    plan = PlanArgs(str(tmp_path / "run"), tile_px=32, overlap_px=0, requested_bands=(), model_bands=(), in_bands=2)
    scene = write_scene(tmp_path / "a.tif", 640, 640)
    missing = SceneRef("gone", str(tmp_path / "gone.tif"))
    assert tiles_estimate([missing, SceneRef("a", str(scene))], plan) == 400.0  # 20 x 20 tiles
    overlapped = PlanArgs(str(tmp_path / "run"), 64, 16, (), (), 2)
    assert (
        tiles_estimate([SceneRef("a", str(scene))], overlapped) == len(plan_tiles(640, 640, 64, 16)) == 14 * 14
    )  # plan_tiles: ceil(640 / 48) cores a side
    assert tiles_estimate([missing], plan) == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux only")
def test_release_free_memory_gives_freed_heap_back_to_the_system() -> None:
    def rss() -> int:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024

    limit_malloc_arenas()  # the driver's setting; a no-op when MALLOC_ARENA_MAX is in the environment
    blocks = [bytearray(100_000) for _ in range(2000)]  # 200 MB of heap chunks (below the mmap threshold)
    keep = blocks[-1]  # pins the top of the heap: freeing the rest does not shrink it by itself
    del blocks
    before = rss()
    release_free_memory()
    assert rss() < before - 100_000_000
    assert len(keep) == 100_000
