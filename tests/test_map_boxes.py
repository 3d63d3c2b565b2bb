"""`task: boxes` end to end on real Ray: the Landsat scene + a CSV of boxes -> one polygon per box; resume."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import rasterio
import rasterio.windows

from rrsis.config.load import load_config
from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import scene_row
from rrsis.pipeline.run import run_map
from rrsis.pipeline.run_boxes import box_plan, expand_boxes

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_map_boxes_one_mask_per_box(samples: Path, tmp_path: Path, ray_session: None) -> None:
    boxes_csv = tmp_path / "boxes.csv"
    boxes_csv.write_text(
        "id,x1,y1,x2,y2\n"
        "cloud,369,139,419,201\n"
        "across,230,300,330,380\n"  # crosses the tile border at x = 224 (256 px tiles, 32 px overlap)
        "small,500,450,540,480\n"
    )
    overrides = [f"output={tmp_path / 'out'}", f"boxes.path={boxes_csv}", "infer.torch_threads=1", "infer.device=cpu"]
    cfg = load_config(MapConfig, REPO / "configs" / "map" / "sam_boxes.yaml", overrides)
    assert (cfg.task, cfg.tiling.tile_px, cfg.tiling.overlap_px, cfg.boxes.sam.model_type) == ("boxes", 256, 32, "tiny")
    assert run_map(cfg) == 0  # `rrsis map` dispatches task: boxes to run_boxes

    (run_dir,) = (tmp_path / "out").iterdir()
    manifest = pq.read_table(io.BytesIO((run_dir / "manifest.parquet").read_bytes())).to_pylist()
    assert sorted(r["box_id"] for r in manifest) == ["across", "cloud", "small"]  # one row each: no halves
    assert {r["status"] for r in manifest} == {"written"}
    across = next(r for r in manifest if r["box_id"] == "across")
    assert across["tile_id"] == "r00001_c00001"  # centre (280, 340): core column 1 [224, 448), row 1
    vectors = json.loads((run_dir / "RGB.byte" / "boxes.geojson").read_text())
    assert [f["properties"]["box_id"] for f in vectors["features"]] == ["across", "cloud", "small"]
    for f in vectors["features"]:
        if f["geometry"] is not None:  # WGS84: the scene is in UTM 18N, around 77-79 W, 23-25 N
            lon, lat = f["geometry"]["coordinates"][0][0][0]
            assert -80 < lon < -76 and 22 < lat < 26
    assert (run_dir / "RGB.byte" / "quicklook.png").read_bytes()[:4] == b"\x89PNG"  # every task draws one
    assert Path(across["key"]).exists()
    with rasterio.open(run_dir / "RGB.byte" / "mosaic.tif") as mosaic, rasterio.open(across["key"]) as part:
        assert (mosaic.width, mosaic.height, mosaic.crs) == (791, 718, part.crs)  # the whole scene's grid
        win = rasterio.windows.Window(across["win_col_off"], across["win_row_off"], 256, 256)
        inside = mosaic.read(1, window=win)
        assert ((part.read(1) == 1) <= (inside == 1)).all()  # every masked pixel of the window is in the union
    _resume_recomputes_only_what_is_missing(cfg, run_dir, manifest)


def _outputs(run_dir: Path) -> dict[str, bytes]:
    """Every product of the scenes except the sidecars and commit records (they record timings); not the run's
    own tables and report."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.parent != run_dir and not p.name.endswith((".json", ".parquet"))
    }


def _resume_recomputes_only_what_is_missing(cfg: MapConfig, run_dir: Path, manifest: list[dict]) -> None:
    before = _outputs(run_dir)
    groups = sorted({r["key"] for r in manifest})
    assert len(groups) >= 2
    lost_tif, lost_vectors = groups[0], groups[-1]
    Path(lost_tif).unlink()  # a lost mask tile
    Path(lost_tif[: -len(".tif")] + ".geojson").write_text("{}")  # a corrupted GeoJSON: the checksum catches it
    lost = {lost_tif, lost_vectors}
    Path(lost_vectors[: -len(".tif")] + ".geojson").unlink()
    cfg.run_id = run_dir.name  # the same run
    assert run_map(cfg) == 0  # the scene is committed: skipped without reading any of its groups
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["scenes_resumed"], summary["boxes_verified"], summary["boxes_computed"]) == (1, 0, 0)
    assert not Path(lost_tif).exists()
    cfg.verify = "full"  # re-checks every group of every scene, committed ones included
    assert run_map(cfg) == 0
    rerun = pq.read_table(io.BytesIO((run_dir / "manifest.parquet").read_bytes())).to_pylist()
    computed = sorted(r["box_id"] for r in rerun if r["status"] == "written")
    assert computed == sorted(r["box_id"] for r in manifest if r["key"] in lost) and computed
    assert sorted(r["box_id"] for r in rerun if r["status"] == "skipped") == sorted(
        r["box_id"] for r in manifest if r["key"] not in lost
    )
    assert [(r["box_id"], r["score"], r["area_px"]) for r in rerun] == [
        (r["box_id"], r["score"], r["area_px"]) for r in sorted(manifest, key=lambda r: r["box_id"])
    ]
    assert _outputs(run_dir) == before  # masks, polygons, boxes.geojson and mosaic.tif byte-identical

    cfg.resume = False
    with pytest.raises(ConfigError, match="resume=true to continue"):
        run_map(cfg)
    # a rerun's planning flags every group with a sidecar for verification; overwrite=true (verify off) none
    scene = SceneRef("RGB.byte", str(REPO / "data" / "samples" / "rasterio" / "RGB.byte.tif"))
    plan = box_plan(cfg, cfg.boxes, str(run_dir))
    assert all(r["resume"] for r in expand_boxes(scene_row(scene, verify=True), plan=plan))
    assert not any(r["resume"] for r in expand_boxes(scene_row(scene, verify=False), plan=plan))


def test_a_scene_without_groups_plans_to_one_empty_row_carrying_its_box_failures(samples: Path, tmp_path: Path) -> None:
    """No box of the scene can be segmented: still one row (status `empty`, no tile) so the scene is a result
    (empty products), and each unplannable box is a `notes` failure; a missing box file fails the scene."""
    boxes_csv = tmp_path / "boxes.csv"
    boxes_csv.write_text("id,x1,y1,x2,y2\nfar,5000,5000,5010,5010\nhuge,0,0,700,700\n")
    cfg = load_config(MapConfig, REPO / "configs" / "map" / "sam_boxes.yaml", [f"boxes.path={boxes_csv}"])
    scene = SceneRef("RGB.byte", str(samples / "rasterio" / "RGB.byte.tif"))
    (row,) = expand_boxes(scene_row(scene, verify=False), plan=box_plan(cfg, cfg.boxes, str(tmp_path / "run")))
    assert (row["tile_id"], row["status"], row["scene_tiles"], row["scene_width"]) == ("", "empty", 0, 791)
    notes = json.loads(row["notes"])
    assert [(n[0], n[1]) for n in notes] == [("far", "plan"), ("huge", "plan")]
    assert "outside the scene" in notes[0][2] and "raise tiling.tile_px" in notes[1][2]
    cfg.boxes.path = str(tmp_path / "gone.csv")
    (failed,) = expand_boxes(scene_row(scene, verify=False), plan=box_plan(cfg, cfg.boxes, str(tmp_path / "run")))
    assert (failed["tile_id"], failed["status"]) == ("", "failed") and "gone.csv" in failed["reason"]
