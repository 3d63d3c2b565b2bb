"""COG mosaic from per-core tiles: exact pixels, nodata where uncovered, overviews, deterministic, S3 output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from rrsis import storage
from rrsis.errors import InputError
from rrsis.geo.mosaic import build_cog
from rrsis.geo.raster import write_mask_tile
from rrsis.geo.tiling import PixelWindow, plan_tiles

TF = (10.0, 0.0, 600000.0, 0.0, -10.0, 4100000.0)
W, H = 300, 260


def write_parts(tmp_path: Path, truth: np.ndarray, skip: int) -> list[tuple[PixelWindow, str]]:
    parts = []
    for tile in plan_tiles(W, H, 128, 32, scene_transform=TF, crs="EPSG:32618"):
        if tile.row * 10 + tile.col == skip:
            continue  # one tile missing -> its core must come out as nodata
        uri = str(tmp_path / "tiles" / f"{tile.tile_id}.tif")
        write_mask_tile(uri, truth[tile.core.slices()], tile.core_transform, "EPSG:32618", nodata=255)
        parts.append((tile.core, uri))
    return parts


def test_cog_mosaic_equals_truth_with_nodata_hole(tmp_path: Path, s3_bucket: str) -> None:
    truth = (np.arange(W * H).reshape(H, W) % 7).astype(np.uint8)
    parts = write_parts(tmp_path, truth, skip=11)  # tile r1 c1
    hole = plan_tiles(W, H, 128, 32)[[t.row * 10 + t.col for t in plan_tiles(W, H, 128, 32)].index(11)].core
    out = build_cog(str(tmp_path / "m.tif"), W, H, TF, "EPSG:32618", "uint8", parts, nodata=255, block_px=64)
    with rasterio.open(out) as src:
        got = src.read(1)
        assert src.profile["tiled"] and src.block_shapes[0] == (64, 64)
        assert src.overviews(1), "a COG has overviews"
        assert tuple(src.transform)[:6] == TF and src.nodata == 255
    want = truth.copy()
    want[hole.slices()] = 255
    assert np.array_equal(got, want)
    again = build_cog(f"s3://{s3_bucket}/m/m.tif", W, H, TF, "EPSG:32618", "uint8", parts, nodata=255, block_px=64)
    assert storage.get_bytes(again) == Path(out).read_bytes()  # deterministic bytes, local == s3


def test_part_with_wrong_extent_names_the_tile(tmp_path: Path) -> None:
    uri = write_mask_tile(str(tmp_path / "t.tif"), np.zeros((10, 10), np.uint8), TF, "EPSG:32618")
    with pytest.raises(InputError, match=r"t\.tif is 1x10x10"):
        build_cog(str(tmp_path / "m.tif"), W, H, TF, "EPSG:32618", "uint8", [(PixelWindow(0, 0, 12, 10), uri)])
