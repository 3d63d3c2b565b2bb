"""GCP-only rasters (as Sentinel-1 GRD measurement TIFFs are delivered): a real Sen1Floods11 chip rewritten with
GCPs and no geotransform is read through a warped VRT in the UTM zone of its centre, and mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform

from rrsis.geo.raster import open_raster, read_info, read_window
from rrsis.geo.tiling import PixelWindow
from rrsis.geo.warp import utm_crs
from rrsis.pipeline.run import run_map
from tests.pipeline_data import map_config, tiny_checkpoint

CHIP = Path(__file__).resolve().parents[1] / "data" / "samples" / "sen1floods11" / "S1Hand" / "India_900498_S1Hand.tif"


def write_gcp_chip(path: Path) -> str:
    """The chip's pixels with a 5 x 5 grid of GCPs (lon/lat from its own geotransform) and no geotransform."""
    with rasterio.open(CHIP) as src:
        data, affine = src.read(), src.transform
    gcps = [
        GroundControlPoint(row=float(r), col=float(c), x=(affine @ (c, r))[0], y=(affine @ (c, r))[1], z=0.0)
        for r in np.linspace(0, 512, 5)
        for c in np.linspace(0, 512, 5)
    ]
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=2, dtype="float32") as dst:
        dst.write(data)
        dst.gcps = (gcps, CRS.from_epsg(4326))
        dst.descriptions = ("VV", "VH")
    return str(path)


def test_utm_zone_of_a_point() -> None:
    assert utm_crs(93.7, 26.7).to_epsg() == 32646 and utm_crs(-58.0, -25.3).to_epsg() == 32721
    assert utm_crs(180.0, 0.0).to_epsg() == 32660 and utm_crs(-180.0, 0.0).to_epsg() == 32601


def test_gcp_raster_reads_as_gdal_warps_it(tmp_path: Path) -> None:
    uri = write_gcp_chip(tmp_path / "gcp.tif")
    with rasterio.open(uri) as src:
        assert src.transform.is_identity and src.crs is None  # what GDAL sees: no georeferencing but GCPs
        gcps, gcp_crs = src.gcps
        data = src.read()
    info = read_info(uri)
    assert info.crs == "EPSG:32646" and info.band_names == ("VV", "VH")  # India, 93.7 E: UTM 46N
    assert info.res[0] == pytest.approx(info.res[1]) and 8.5 < info.res[0] < 10.5  # native pixel size, ~9-10 m
    expected = np.full((2, info.height, info.width), np.nan, dtype="float32")
    reproject(
        data, expected, gcps=gcps, src_crs=gcp_crs, dst_crs=CRS.from_epsg(32646),
        dst_transform=rasterio.Affine(*info.transform), resampling=Resampling.bilinear, src_nodata=np.nan,
        dst_nodata=np.nan,
    )  # fmt: skip
    with open_raster(uri) as src:
        image, valid = read_window(src, PixelWindow(0, 0, info.width, info.height))
    assert (valid == ~np.isnan(expected).any(axis=0)).all()
    assert 0.97 < valid.mean() < 1.0  # the corners outside the rotated footprint are nodata
    assert np.abs(image[:, valid] - expected[:, valid]).max() < 1e-4


def test_map_gcp_raster_footprint_matches_the_chip(ray_session: None, tmp_path: Path) -> None:
    uri = write_gcp_chip(tmp_path / "gcp.tif")
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    output = tmp_path / "run"
    cfg = map_config(
        f"input=[{uri}]", f"output={output}", f"infer.checkpoint={ckpt}", "tiling.tile_px=128",
        "tiling.overlap_px=16", "infer.batch_size=8",
    )  # fmt: skip
    assert run_map(cfg) == 0
    (run,) = [p for p in output.iterdir() if p.is_dir()]
    with rasterio.open(run / "gcp" / "mosaic.tif") as src:
        classes, affine, crs = src.read(1), src.transform, src.crs
    assert crs.to_epsg() == 32646
    rows, cols = np.nonzero(classes != 255)
    xs, ys = affine @ (cols + 0.5, rows + 0.5)
    lons, lats = transform(crs, CRS.from_epsg(4326), xs, ys)
    with rasterio.open(CHIP) as chip:
        left, bottom, right, top = chip.bounds
        px = chip.res[0]
    # the mapped pixel centres span the chip's pixel centres, within one chip pixel on every side
    for got, want in ((min(lons), left + px / 2), (max(lons), right - px / 2), (min(lats), bottom + px / 2)):
        assert abs(got - want) <= px, (got, want)
    assert abs(max(lats) - (top - px / 2)) <= px
    assert {0, 1} <= set(np.unique(classes).tolist())
