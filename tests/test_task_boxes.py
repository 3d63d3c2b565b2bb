"""The `boxes` map task's stages, chained without Ray on the real Landsat scene with a tiny SAM."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rrsis.geo.raster import encode_geotiff, read_info
from rrsis.geo.tiling import PixelWindow, plan_tiles
from rrsis.models.sam.config import SamConfig
from rrsis.pipeline.box_inputs import BoxRecord
from rrsis.pipeline.box_plan import plan_box_groups
from rrsis.pipeline.box_products import union_mosaic
from rrsis.pipeline.stages import read_stage
from rrsis.pipeline.task_boxes import (
    SamBoxStage,
    group_row,
    mbo_stage,
    prompt_stage,
    resume_stage,
    sam_options,
    to_rgb,
    verify_boxes_stage,
    write_boxes_stage,
)

BOXES = [
    BoxRecord("cloud", 369.0, 139.0, 419.0, 201.0),  # the bright blob of tests/test_mbo.py, inside tile (0, 1)
    BoxRecord("across", 230.0, 300.0, 330.0, 380.0),  # centre x 280 crosses the tile border at x = 224
    BoxRecord("small", 500.0, 450.0, 540.0, 480.0),
]


def test_to_rgb_uses_a_fixed_scale() -> None:
    img = np.array([[[0.0, 127.5]], [[255.0, 300.0]], [[10.0, 20.0]]], np.float32)  # (3, 1, 2)
    rgb = to_rgb(img, 255.0)
    assert rgb.shape == (1, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [0, 255, 10] and rgb[0, 1].tolist() == [128, 255, 20]  # 127.5 rounds to 128


@pytest.mark.slow
def test_boxes_task_stages_end_to_end(samples: Path, tmp_path: Path) -> None:
    uri = str(samples / "rasterio" / "RGB.byte.tif")
    info = read_info(uri)
    tiles = plan_tiles(info.width, info.height, 256, 32, scene_id="rgb", scene_transform=info.transform, crs=info.crs)
    groups, failures = plan_box_groups(tiles, BOXES, info.width, info.height, info.transform)
    assert failures == []
    rows = [group_row(g, uri, "1,2,3", str(tmp_path / "run" / "rgb")) for g in groups]
    batch = {k: np.array([r[k] for r in rows]) for k in rows[0]}

    sam_cfg = SamConfig(model_type="tiny")
    batch = read_stage(batch)
    batch = prompt_stage(batch, cfpg=sam_options(sam_cfg)["cfpg"])
    threads = torch.get_num_threads()
    try:
        batch = SamBoxStage(sam_options(sam_cfg), torch_threads=1)(batch)  # as a 1-CPU actor would
    finally:
        torch.set_num_threads(threads)
    batch = mbo_stage(batch, mbo=sam_options(sam_cfg)["mbo"])
    n = len(batch["key"])
    failed = write_boxes_stage({**batch, "status": np.array(["failed"] * n), "reason": np.array(["read: boom"] * n)})
    assert set(failed["status"]) == {"failed"} and set(failed["reason"]) == {"read: boom"}
    assert not any(Path(str(k)).exists() for k in batch["key"])  # a failed row writes nothing
    batch["inputs_sha"] = np.array([f"inputs-{k}" for k in range(n)])
    meta = write_boxes_stage(batch)
    assert set(meta["status"]) == {"written"}

    # resume check: every group verifies; changed inputs or a corrupted GeoJSON do not
    rows_batch = {k: v for k, v in meta.items() if k not in ("status", "reason")}
    assert verify_boxes_stage(rows_batch)["done"].all()
    recorded = json.loads(str(verify_boxes_stage(rows_batch)["sidecar_meta"][0]))
    assert recorded["box_ids"] == str(meta["box_ids"][0]) and recorded["box_px"] == str(meta["box_px"][0])
    tif_sha = [hashlib.sha256(Path(str(k)).read_bytes()).hexdigest() for k in meta["key"]]
    assert verify_boxes_stage(rows_batch)["checksum"].tolist() == tif_sha == meta["checksum"].tolist()
    # in the pipeline: only rows flagged `resume` (a sidecar was listed) are verified, and become `skipped`
    flagged = {**rows_batch, "status": np.array(["ok"] * n), "resume": np.array([True] + [False] * (n - 1))}
    resumed = resume_stage(flagged)
    assert resumed["status"].tolist() == ["skipped"] + ["ok"] * (n - 1)
    assert json.loads(str(resumed["sidecar_meta"][0]))["checksum"] == tif_sha[0]
    assert resumed["sidecar_meta"][1:].tolist() == [""] * (n - 1)
    changed = {**rows_batch, "inputs_sha": np.array(["other", *rows_batch["inputs_sha"][1:]])}
    assert verify_boxes_stage(changed)["done"].tolist() == [False] + [True] * (n - 1)
    Path(str(meta["key"][-1])[: -len(".tif")] + ".geojson").write_text("{}")
    assert verify_boxes_stage(rows_batch)["done"].tolist() == [True] * (n - 1) + [False]
    Path(str(meta["key"][-1])[: -len(".tif")] + ".geojson").unlink()
    meta = write_boxes_stage(batch)  # rewritten: verifies again
    assert verify_boxes_stage(rows_batch)["done"].all()

    # one polygon feature per box, each box exactly once across all groups
    features = []
    for key in meta["key"]:
        doc = json.loads(Path(str(key)[: -len(".tif")] + ".geojson").read_text())
        features += doc["features"]
    assert sorted(f["properties"]["box_id"] for f in features) == ["across", "cloud", "small"]
    across = next(g for g in groups if any(b.box_id == "across" for b in g.boxes))
    assert across.tile.col == 1  # owned by the tile whose core holds the centre (224 <= 280 < 448)

    # mask tiles are georeferenced on their (shifted) windows, masks stay inside the window
    for g, key in zip(groups, meta["key"], strict=True):
        with rasterio.open(str(key)) as src:
            assert src.crs.to_string() == info.crs
            assert src.transform.c == pytest.approx(info.transform[2] + g.tile.window.col_off * info.transform[0])
            assert src.transform.f == pytest.approx(info.transform[5] + g.tile.window.row_off * info.transform[4])
            assert src.width == 256 and src.nodata == 255
    cloud = next(f for f in features if f["properties"]["box_id"] == "cloud")
    assert cloud["properties"]["cfpg"] == "ok"  # the bright blob gets a CFPG point


def test_union_mosaic_ors_overlapping_windows(tmp_path: Path) -> None:
    tf = (10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
    a = np.zeros((4, 4), np.uint8)
    a[1, 1] = 1
    b = np.zeros((4, 4), np.uint8)  # b's window starts 2 px right: its (1, 0) is scene (1, 2), 0 over a's ones
    b[0, 0] = 1
    b[1, 0] = 255  # nodata is not a mask
    (tmp_path / "a.tif").write_bytes(encode_geotiff(a, tf, "EPSG:32633", nodata=255))
    (tmp_path / "b.tif").write_bytes(encode_geotiff(b, tf, "EPSG:32633", nodata=255))
    out = str(tmp_path / "mosaic.tif")
    parts = [(PixelWindow(0, 0, 4, 4), str(tmp_path / "a.tif")), (PixelWindow(2, 0, 4, 4), str(tmp_path / "b.tif"))]
    union_mosaic(out, 5, 3, tf, "EPSG:32633", parts, block_px=16)  # b sticks out of the 5 x 3 scene: clipped
    with rasterio.open(out) as src:
        got = src.read(1)
        assert src.transform.c == 500000.0 and src.crs.to_string() == "EPSG:32633"
    expected = np.zeros((3, 5), np.uint8)
    expected[1, 1] = 1  # from a
    expected[0, 2] = 1  # from b's (0, 0), shifted 2 px
    assert np.array_equal(got, expected)


def test_sam_stage_gives_freed_heap_back_after_every_encoder_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from rrsis.pipeline import task_boxes

    trims: list[str] = []
    monkeypatch.setattr(task_boxes, "release_freed_memory", lambda min_free_bytes=0: trims.append("trim"))
    threads = torch.get_num_threads()
    try:
        stage = SamBoxStage(sam_options(SamConfig(model_type="tiny")), torch_threads=1)
    finally:
        torch.set_num_threads(threads)
    blocks = len(stage.predictor.sam.image_encoder.blocks)
    assert blocks >= 2
    stage.predictor.set_image(np.zeros((64, 64, 3), np.uint8))
    assert trims == ["trim"] * blocks
