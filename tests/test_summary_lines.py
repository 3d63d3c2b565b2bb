"""The console summary of a map never reads "water 0.000 km²" for a scene whose mosaic was written: a scene
without water says so (and on how many valid pixels), a small area keeps its significant digits.

The records are the stats of `rrsis map --config configs/map/waterland.yaml input=[.../S1Hand/]` with the demo
model (Ghana_53713: no water in 262,144 valid px; Spain_6860600: 21 px, 0.0016 km²), which printed
"water 0.000 km² (0.0 %)" for both.
"""

from __future__ import annotations

from typing import Any

from rrsis.pipeline.context import SummaryFormat, km2_text, percent_text, summary_line, water_line

GHANA = {"scene_id": "Ghana_53713_S1Hand", "water_px": 0, "valid_px": 262144, "water_km2": 0.0, "water_fraction": 0.0}
SPAIN = {"scene_id": "Spain_6860600_S1Hand", "water_px": 21, "valid_px": 262144,
         "water_km2": 0.0016468882390150916, "water_fraction": 8.0108642578125e-05}  # fmt: skip
INDIA = {"scene_id": "India_900498_S1Hand", "water_px": 118700, "valid_px": 262144, "water_km2": 10.5654,
         "water_fraction": 0.4528}  # fmt: skip


def test_scene_lines_never_round_a_mapped_area_to_zero() -> None:
    assert SummaryFormat("water").scene_line is water_line  # the tile tasks' scene line
    assert water_line(GHANA, "water") == "no water mapped in 262,144 valid px"
    assert water_line(SPAIN, "water") == "water 0.00165 km² (0.008 %)"
    assert water_line(INDIA, "water") == "water 10.565 km² (45.3 %)"
    assert water_line({**GHANA, "scene_id": "x"}, "referred") == "no referred mapped in 262,144 valid px"
    for record in (GHANA, SPAIN, INDIA):
        assert "0.000 km²" not in water_line(record, "water") and "(0.0 %)" not in water_line(record, "water")


def test_area_and_share_texts() -> None:
    assert [km2_text(v) for v in (0.0, 0.000123456, 0.0999, 0.1, 12.3456)] == [
        "0 km²", "0.000123 km²", "0.0999 km²", "0.100 km²", "12.346 km²"]  # fmt: skip
    assert [percent_text(v) for v in (0.0, 0.00008, 0.001, 0.4528)] == ["0.0 %", "0.008 %", "0.1 %", "45.3 %"]


def test_the_closing_line_keeps_a_small_total() -> None:
    summary: dict[str, Any] = {
        "run_id": "map-1", "scenes_failed": 0, "scenes_ok": 2, "scenes": 2, "tiles": 18, "tiles_computed": 18,
        "tiles_skipped": 0, "tiles_failed": 0, "target": "water", "water_km2": GHANA["water_km2"] + SPAIN["water_km2"],
        "tiles_per_s": 1.0, "wall_s": 3.0, "output": "/tmp/out",
    }  # fmt: skip
    assert "water 0.00165 km², " in summary_line(summary)
