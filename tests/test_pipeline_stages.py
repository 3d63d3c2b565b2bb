"""Unit tests of the map stages, plan, inputs and manifest: plain function calls, no Ray."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rrsis import storage
from rrsis.geo.tiling import PixelWindow, Tile
from rrsis.pipeline.area import row_pixel_areas_m2
from rrsis.pipeline.inputs import resolve_inputs, scene_id_for
from rrsis.pipeline.manifest import dedupe_tiles, read_table, write_failures, write_manifest
from rrsis.pipeline.plan import content_tag, derive_run_id, plan_run, sha256_of
from rrsis.pipeline.refiners import clean_water_mask
from rrsis.pipeline.stages import InferStage, RefineStage, read_stage, tile_pixels, verify_stage, write_stage
from rrsis.report.geoparquet import PolygonRows, write_scene_polygons
from tests.pipeline_data import tiny_checkpoint, write_scene


def _plan(tmp_path: Path, uris: list[str], tile_px: int = 64, overlap_px: int = 16) -> tuple:
    scenes, problems = resolve_inputs(uris)
    assert not problems
    return plan_run(
        scenes,
        str(tmp_path / "out" / "run"),
        tile_px=tile_px,
        overlap_px=overlap_px,
        requested_bands=[],
        model_bands=["VV", "VH"],
        in_bands=2,
    )


def _batch(rows: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def test_inputs_globs_folders_lists_and_unique_ids(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_scene(tmp_path / "a" / "x.tif", 8, 8)
    b = write_scene(tmp_path / "b" / "x.tif", 8, 8)
    (tmp_path / "a" / "notes.md").write_text("not a raster")
    listing = tmp_path / "scenes.txt"
    listing.write_text(f"# scenes\n{a}\n\n{b}  # second\n")
    scenes, problems = resolve_inputs([str(listing), str(tmp_path / "a"), str(tmp_path / "*" / "x.tif")])
    assert [s.uri for s in scenes] == [a, b]  # duplicates from the folder and the glob dropped
    assert scenes[0].scene_id != scenes[1].scene_id and scenes[0].scene_id.startswith("x-")
    assert not problems
    scenes, problems = resolve_inputs([str(tmp_path / "none" / "*.tif")])
    assert not scenes and "matches no raster" in problems[0].reason
    assert scene_id_for("s3://bucket/dir/Spain 737.tif") == "Spain_737"


def test_plan_rows_are_metadata_and_bad_scenes_fail(tmp_path: Path) -> None:
    good = write_scene(tmp_path / "good.tif", 100, 70)
    three = write_scene(tmp_path / "three.tif", 20, 20, bands=3)
    nocrs = write_scene(tmp_path / "nocrs.tif", 20, 20, crs=None)
    plans, rows, failures = _plan(tmp_path, [good, three, nocrs, str(tmp_path / "missing.tif")])
    assert [p.scene_id for p in plans] == ["good"]
    # stride 64 - 16 = 48: ceil(100 / 48) = 3 rows x ceil(70 / 48) = 2 cols
    assert len(rows) == 6
    assert all(isinstance(v, (str, int, float)) for v in rows[0].values())
    assert rows[0]["key"].endswith("/good/tiles/r00000_c00000.tif") and rows[0]["bands"] == "1,2"
    reasons = {f.scene_id: f.reason for f in failures}
    assert "model takes 2" in reasons["three"] or "needs 2" in reasons["three"]
    assert "no CRS" in reasons["nocrs"]
    assert "missing.tif" in reasons["missing"]


def test_read_stage_is_boundless_and_flags_nodata(tmp_path: Path) -> None:
    uri = write_scene(tmp_path / "s.tif", 40, 30, nan_corner_px=5)
    _, rows, _ = _plan(tmp_path, [uri], tile_px=64, overlap_px=16)
    out = read_stage(_batch(rows))
    assert out["image"].shape == (1, 2, 64, 64) and out["valid"].shape == (1, 64, 64)
    valid = out["valid"][0]
    # 40 x 30 scene inside a 64 x 64 window: 40*30 pixels minus the 5x5 NaN corner are valid
    assert valid.sum() == 40 * 30 - 25
    assert not valid[:5, :5].any() and not valid[40:].any() and not valid[:, 30:].any()
    assert np.isfinite(out["image"]).all() and out["status"][0] == "ok"


def test_read_stage_fails_only_the_bad_tile(tmp_path: Path) -> None:
    uri = write_scene(tmp_path / "s.tif", 40, 30)
    _, rows, _ = _plan(tmp_path, [uri])
    rows = [dict(rows[0]), dict(rows[0], scene_uri=str(tmp_path / "gone.tif"), tile_id="other")]
    out = read_stage(_batch(rows))
    assert list(out["status"]) == ["ok", "failed"]
    assert "gone.tif" in out["reason"][1]


def test_clean_water_mask_min_mapping_unit() -> None:
    prob = np.zeros((10, 10), np.float32)
    prob[1:3, 1:3] = 0.9  # 4-pixel speck: removed by a 5-pixel unit
    prob[5:10, 5:10] = 0.9  # 25-pixel lake with a 1-pixel hole: kept, hole filled
    prob[7, 7] = 0.1
    valid = np.ones((10, 10), bool)
    valid[0, 9] = False
    mask = clean_water_mask(prob, valid, threshold=0.5, open_px=0, min_mapping_unit_px=5)
    assert mask[1:3, 1:3].sum() == 0
    assert (mask[5:10, 5:10] == 1).all()
    assert mask[0, 9] == 255
    assert int((mask == 1).sum()) == 25


def test_tile_pixels_crop_to_core_and_probability_band() -> None:
    tile = Tile("s", 0, 1, PixelWindow(48, 0, 64, 64), PixelWindow(56, 0, 14, 48), (10, 0, 0, 0, -10, 0), "EPSG:32630")
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 8] = 1  # core starts at window column 56 - 48 = 8
    prob = np.full((64, 64), 0.5, np.float32)
    valid = np.ones((64, 64), bool)
    valid[0, 9] = False
    out = tile_pixels(mask, valid, prob, tile)
    assert out.shape == (2, 48, 14)
    assert (out[0, :, 0] == 1).all() and out[0, :, 1:].sum() == 0
    assert out[1, 1, 1] == 127 and out[1, 0, 1] == 255  # round(0.5 * 254) = 127; invalid -> 255


def test_area_of_utm_pixels_and_geographic_rows() -> None:
    utm = row_pixel_areas_m2((10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0), "EPSG:32630", 0, 0, 4, 3)
    # UTM scale near the central meridian is 0.9996, so a 10 m pixel covers 100 / 0.9996^2 = 100.08 m2
    assert np.allclose(utm, 100.0 / 0.9996**2, rtol=2e-4)
    deg = 8.983152841195215e-05  # Sen1Floods11 pixel; about 10 m at the equator
    geo = row_pixel_areas_m2((deg, 0.0, -0.78, 0.0, -deg, 38.1288), "EPSG:4326", 0, 0, 4, 2)
    # at 38.13 N: (deg * 111320 m * cos(lat)) * (deg * 111000 m) ~ 78.6 m2
    assert 77.5 < geo[0] < 79.5


@pytest.mark.slow
def test_stages_end_to_end_without_ray(tmp_path: Path) -> None:
    uri = write_scene(tmp_path / "s.tif", 70, 90)
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    _, rows, _ = _plan(tmp_path, [uri])
    batch = read_stage(_batch(rows))
    batch = InferStage(ckpt, device="cpu", torch_threads=1)(batch)
    assert batch["prob"].shape == (len(rows), 64, 64) and "image" not in batch
    assert ((batch["prob"] >= 0) & (batch["prob"] <= 1)).all()
    batch = RefineStage("waterland", {"threshold": 0.5}, keep_prob=False)(batch)
    out = write_stage(batch, model="m")
    assert set(out["status"]) == {"written"} and "mask" not in out
    with rasterio.open(out["key"][0]) as src:
        assert (src.width, src.height) == (int(out["core_width"][0]), int(out["core_height"][0]))
        assert src.crs.to_epsg() == 32630 and src.nodata == 255
    sidecar = json.loads(storage.get_bytes(out["key"][0] + ".json"))
    assert sidecar["checksum"] == out["checksum"][0] and sidecar["attempt"] == 1
    assert sum(int(v) for v in out["valid_px"]) == 70 * 90  # cores partition the scene
    verified = verify_stage(_batch(rows))
    assert verified["done"].all()
    storage.put_bytes(out["key"][0], b"corrupt")
    assert not verify_stage(_batch(rows))["done"][0]
    again = write_stage(RefineStage("waterland", {})(InferStage(ckpt, "cpu", 1)(read_stage(_batch(rows[:1])))))
    assert again["attempt"][0] == 2 and again["checksum"][0] == out["checksum"][0]


def test_manifest_dedupes_by_key_and_keeps_schema(tmp_path: Path) -> None:
    rows = [
        {"scene_id": "s", "tile_id": "t1", "row": 0, "col": 1, "key": "k1", "status": "written", "attempt": 1},
        {"scene_id": "s", "tile_id": "t0", "row": 0, "col": 0, "key": "k0", "status": "written", "attempt": 1},
        {"scene_id": "s", "tile_id": "t1", "row": 0, "col": 1, "key": "k1", "status": "written", "attempt": 2},
    ]
    assert [r["key"] for r in dedupe_tiles(rows)] == ["k0", "k1"]
    table = write_manifest(str(tmp_path / "m.parquet"), rows)
    back = read_table(str(tmp_path / "m.parquet"))
    assert back.num_rows == 2 and back.column("attempt").to_pylist() == [1, 2]
    assert back.schema.equals(table.schema)
    failures = write_failures(str(tmp_path / "f.parquet"), [])
    assert failures.num_rows == 0 and "reason" in failures.column_names


def test_vectorised_polygon_areas_subtract_holes() -> None:
    from rrsis.pipeline.area import polygon_areas, ring_areas

    square = [[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0], [0.0, 0.0]]  # closed, as GDAL gives rings
    hole = [[2.0, 2.0], [2.0, 4.0], [4.0, 4.0], [4.0, 2.0], [2.0, 2.0]]
    triangle = [[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]  # open ring: the closing edge is implied
    polygons = [{"coordinates": [square, hole]}, {"coordinates": [triangle]}]
    rings = [square, hole, triangle]
    xy = np.concatenate([np.asarray(r) for r in rings])
    areas = polygon_areas(polygons, ring_areas(xy, np.array([len(r) for r in rings])))
    assert areas.tolist() == [96.0, 6.0]


def test_run_id_follows_the_checkpoint_bytes_not_its_path(tmp_path: Path) -> None:
    """A checkpoint retrained in place (same path, new bytes) gets a new run id, so a rerun never resumes the
    old model's tiles; the same bytes give the same id; an explicit run_id wins; streamed chunks hash alike."""
    import hashlib

    path = tmp_path / "model.pt"
    path.write_bytes(b"weights v1" * 1000)
    first = content_tag(str(path))
    assert first == hashlib.sha256(b"weights v1" * 1000).hexdigest()[:12]
    assert sha256_of(str(path), chunk_bytes=7)[:12] == first  # streamed in any chunk size
    decisive = {"scenes": ["a.tif"], "checkpoint": str(path)}
    run_v1 = derive_run_id("map", "", {**decisive, "model": first})
    assert run_v1 == derive_run_id("map", "", {**decisive, "model": content_tag(f"file://{path}")})
    path.write_bytes(b"weights v2" * 1000)
    assert derive_run_id("map", "", {**decisive, "model": content_tag(str(path))}) != run_v1
    assert run_v1.startswith("map-") and len(run_v1) == len("map-") + 12
    assert derive_run_id("map", "mine", decisive) == "mine"


def test_vectors_are_the_polygoniser_rings_in_wgs84_whatever_the_chunking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rasterio.features import shapes
    from rasterio.transform import from_origin
    from rasterio.warp import transform_geom

    from rrsis.pipeline import products

    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[5:25, 5:25] = 1
    mask[10:15, 10:15] = 0  # a hole
    mask[30:35, 30:48] = 1
    mask[0:3, 40:50] = 255  # nodata: never a polygon
    profile = {"driver": "GTiff", "width": 50, "height": 40, "count": 1, "dtype": "uint8", "nodata": 255,
               "crs": "EPSG:32630", "transform": from_origin(500000, 4200000, 10, 10)}  # fmt: skip
    with rasterio.open(tmp_path / "m.tif", "w", **profile) as dst:
        dst.write(mask, 1)
    scene = {"crs": "EPSG:32630", "transform": tuple(profile["transform"])[:6], "width": 50, "height": 40}
    out = tmp_path / "water.geojson"
    assert products.build_vectors(str(tmp_path / "m.tif"), str(out), scene) == 2
    features = json.loads(out.read_text())["features"]
    truth = [g for g, v in shapes(mask, mask=mask == 1, transform=profile["transform"]) if v == 1]
    assert [f["properties"]["id"] for f in features] == [0, 1]
    for feature, geometry in zip(features, truth, strict=True):
        expected = transform_geom("EPSG:32630", "EPSG:4326", geometry)["coordinates"]
        rings = feature["geometry"]["coordinates"]
        assert [len(r) for r in rings] == [len(r) for r in expected]
        assert np.allclose(np.concatenate(rings), np.concatenate(expected), rtol=0, atol=1e-9)
    # UTM 10 m pixels: 400 - 25 and 90 pixels of ~100.08 m2 (scale 0.9996 near the central meridian)
    areas = [f["properties"]["area_m2"] for f in features]
    assert np.allclose(areas, [375 * 100.08, 90 * 100.08], rtol=2e-3)
    monkeypatch.setattr(products, "VECTOR_CHUNK", 1)  # one projection call per polygon: the same bytes
    rows = PolygonRows("s")  # the GeoParquet partition gathered from the same rings, chunk by chunk
    products.build_vectors(str(tmp_path / "m.tif"), str(tmp_path / "one.geojson"), scene, rows)
    assert (tmp_path / "one.geojson").read_bytes() == out.read_bytes()
    # the very file the report's conversion of the GeoJSON writes (WKB, areas, bbox, metadata)
    assert rows.write(str(tmp_path / "rows.parquet")) == 2
    assert write_scene_polygons(str(tmp_path / "json.parquet"), "s", str(out)) == 2
    assert (tmp_path / "rows.parquet").read_bytes() == (tmp_path / "json.parquet").read_bytes()
    (tmp_path / "none.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    PolygonRows("s").write(str(tmp_path / "rows0.parquet"))
    write_scene_polygons(str(tmp_path / "json0.parquet"), "s", str(tmp_path / "none.geojson"))
    assert (tmp_path / "rows0.parquet").read_bytes() == (tmp_path / "json0.parquet").read_bytes()
