"""`task: referring`, `method: danet` end to end on real Ray: a tiny DANet checkpoint maps the Landsat scene."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

from rrsis.checkpoints import build_from_checkpoint, load_checkpoint
from rrsis.cli import main
from rrsis.config.load import load_config
from rrsis.config.map import MapConfig
from rrsis.geo.raster import open_raster, read_window
from rrsis.geo.tiling import PixelWindow, plan_tiles
from rrsis.models.danet.predictor import DanetPredictor, scale_to_input
from rrsis.pipeline.run import run_map
from rrsis.pipeline.task_danet import polygon_score, referring_vectors
from tests.danet_tiny import save_tiny_danet

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "map" / "referring_danet.yaml"
QUERY = "the river"
TILE_PX, OVERLAP_PX = 320, 64


@pytest.fixture(scope="module")
def danet_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = str(tmp_path_factory.mktemp("danet") / "danet.pt")
    save_tiny_danet(uri)
    return uri


def overrides(tmp_path: Path, ckpt: str, query: str, *extra: str) -> list[str]:
    return [
        f"output={tmp_path / 'out'}",
        "referring.danet=" + (ckpt or "''"),
        f"query={query}",
        f"tiling.tile_px={TILE_PX}",
        f"tiling.overlap_px={OVERLAP_PX}",
        "infer.device=cpu",
        "infer.torch_threads=1",
        "outputs.quicklook=false",
        *extra,
    ]


def tile_prob(ckpt: str, scene: Path, window: PixelWindow) -> np.ndarray:
    """P of one tile computed outside the pipeline: the same predictor on the same window."""
    torch.set_num_threads(1)
    predictor = DanetPredictor(build_from_checkpoint(load_checkpoint(ckpt)))  # type: ignore[arg-type]
    with open_raster(str(scene)) as src:
        raw, valid = read_window(src, window, [1, 2, 3])
    x = scale_to_input(raw, valid, 255.0, predictor.cfg.pixel_mean, predictor.cfg.pixel_std)
    prob = predictor.predict_tiles(x[None], predictor.embed_query(QUERY))[0]
    prob[~valid] = 0.0
    return prob


@pytest.mark.slow
def test_danet_maps_a_scene_with_a_query(samples: Path, tmp_path: Path, danet_ckpt: str, ray_session: None) -> None:
    scene = samples / "rasterio" / "RGB.byte.tif"
    # The threshold is the tiny model's own median P on the first tile: a random model then still draws polygons.
    first = plan_tiles(791, 718, TILE_PX, OVERLAP_PX)[0]
    prob0 = tile_prob(danet_ckpt, scene, first.window)
    threshold = float(np.median(prob0[prob0 > 0]))
    cfg = load_config(MapConfig, CONFIG, overrides(tmp_path, danet_ckpt, QUERY, f"infer.threshold={threshold}"))
    assert run_map(cfg) == 0
    (run_dir,) = (tmp_path / "out").iterdir()
    out = run_dir / "RGB.byte"

    with rasterio.open(scene) as src, rasterio.open(out / "mosaic.tif") as mosaic:
        assert mosaic.crs == src.crs and mosaic.transform == src.transform
        assert (mosaic.width, mosaic.height, mosaic.count) == (src.width, src.height, 2)
        with rasterio.open(out / "tiles" / f"{first.tile_id}.tif") as tile:
            core_origin = src.transform @ Affine.translation(first.core.col_off, first.core.row_off)
            assert tile.crs == src.crs and tile.transform.almost_equals(core_origin)
        # The mosaic's P band over the first tile's core is the tile predicted on its own, core-cropped.
        rows, cols = first.core.relative_to(first.window).slices()
        c = first.core
        stitched = mosaic.read(2, window=Window(c.col_off, c.row_off, c.width, c.height)).astype(int)
        expected = np.rint(np.clip(prob0[rows, cols], 0, 1) * 254).astype(int)
        valid = stitched != 255
        assert np.abs(stitched[valid] - expected[valid]).max() <= 1

    features = json.loads((out / "referring.geojson").read_text())["features"]
    assert features and not (out / "water.geojson").exists()
    for f in features:
        props = f["properties"]
        assert props["query"] == QUERY and props["method"] == "danet" and props["class"] == "referred"
        assert props["score"] is None or threshold - 0.01 <= props["score"] <= 1.0  # every pixel passed threshold

    manifest = pq.read_table(io.BytesIO((run_dir / "manifest.parquet").read_bytes())).to_pylist()
    planned = {t.tile_id for t in plan_tiles(791, 718, TILE_PX, OVERLAP_PX)}
    assert sorted(r["tile_id"] for r in manifest) == sorted(planned)  # every tile exactly once
    assert {r["status"] for r in manifest} == {"written"}
    assert pq.read_table(io.BytesIO((run_dir / "failures.parquet").read_bytes())).num_rows == 0

    # Rerun: every tile verified from the first run, the polygons rebuilt identically.
    assert run_map(cfg) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tiles_skipped"] == len(planned) and summary["tiles_computed"] == 0
    assert json.loads((out / "referring.geojson").read_text())["features"] == features


def test_bad_queries_and_checkpoints_are_one_line_exit_2(
    tmp_path: Path, danet_ckpt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        (overrides(tmp_path, danet_ckpt, "' '"), "key 'query': the query is empty"),
        (overrides(tmp_path, danet_ckpt, "a very long query " * 6), "the DANet model reads at most 20"),
        (overrides(tmp_path, "", QUERY), "key 'referring.danet': a DANet checkpoint is required"),
        (
            [*overrides(tmp_path, danet_ckpt, QUERY), "method=pslg_sam", f"referring.checkpoint={danet_ckpt}"],
            "method=danet referring.danet=",
        ),
    ]
    for args, message in cases:
        assert main(["map", "--config", str(CONFIG), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def _mosaic(path: Path, classes: np.ndarray, scaled: np.ndarray) -> str:
    profile = {"driver": "GTiff", "width": 20, "height": 20, "count": 2, "dtype": "uint8", "nodata": 255}
    with rasterio.open(
        path, "w", crs="EPSG:32618", transform=from_origin(500_000, 4_000_000, 30, 30), **profile
    ) as dst:
        dst.write(np.stack([classes, scaled]))
    return str(path)


def test_polygons_score_their_own_pixels_and_empty_is_valid(tmp_path: Path) -> None:
    classes, scaled = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    classes[2:6, 3:8], scaled[2:6, 3:8] = 1, 200  # 20 px at P = 200/254, one of them at 254
    scaled[2, 3] = 254
    classes[10:12, 10:12], scaled[10:12, 10:12] = 1, 127  # 4 px at P = 0.5
    scaled[15, 15] = 250  # high P outside any polygon must not count
    out = tmp_path / "referring.geojson"
    result = referring_vectors(_mosaic(tmp_path / "m.tif", classes, scaled), str(out), QUERY)
    assert result["polygons"] == 2
    scores = sorted(f["properties"]["score"] for f in json.loads(out.read_text())["features"])
    assert scores == [round(127 / 254, 4), round((19 * 200 + 254) / 20 / 254, 4)]
    with rasterio.open(tmp_path / "m.tif") as src:  # 3 px blocks: the same mean, summed block by block
        big = max(json.loads(out.read_text())["features"], key=lambda f: f["properties"]["area_m2"])
        assert polygon_score(src, big["geometry"], block_px=3) == scores[1]

    empty = referring_vectors(_mosaic(tmp_path / "e.tif", classes * 0, scaled), str(out), QUERY)
    assert empty["polygons"] == 0 and json.loads(out.read_text())["features"] == []
