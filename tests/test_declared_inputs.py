"""What a map config declares for plain rasters (`units`, `input_scale`/`input_offset`, `gcp_crs`): real
Sen1Floods11 chips rewritten in linear power, in amplitude, as scaled digital numbers and as GCP-only rasters,
read through the map's own input resolution and read stage, and mapped through `run_map`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.warp import transform

from rrsis.errors import ConfigError, InputError
from rrsis.geo.raster import Declared, declared_scene, open_raster, read_info, read_window
from rrsis.geo.tiling import PixelWindow
from rrsis.geo.vrt import is_vrt_xml, vrt_label
from rrsis.pipeline.inputs import resolve_inputs
from rrsis.pipeline.manifest import read_table
from rrsis.pipeline.run import run_map
from tests.pipeline_data import map_config, tiny_checkpoint
from tests.test_vrt import S1_CHIP, S2_CHIP, linear_power, read_chip

S2_BANDS = (1, 2, 3, 7)  # B2, B3, B4, B8 of the S2Hand chip


def write_tif(path: Path, data: np.ndarray, profile: dict[str, Any], **overrides: Any) -> str:
    out = dict(profile, driver="GTiff", count=data.shape[0], dtype=str(data.dtype), **overrides)
    with rasterio.open(path, "w", **out) as dst:
        dst.write(data)
    return str(path)


@pytest.fixture(scope="module")
def s1_chip() -> tuple[np.ndarray, dict[str, Any]]:
    db, profile = read_chip(S1_CHIP)
    db[:, 100:140, 200:260] = np.nan  # a NaN block, as swath edges have
    return db, profile


def read_scene(uri: str, bands: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    info = read_info(uri)
    with open_raster(uri) as src:
        return read_window(src, PixelWindow(0, 0, info.width, info.height), bands)


def write_gcp_only(path: Path, data: np.ndarray, affine: Any, gcp_crs: CRS | None) -> str:
    """The pixels with a 5 x 5 grid of GCPs (lon/lat from `affine`), no geotransform, GCP CRS `gcp_crs`."""
    gcps = [
        GroundControlPoint(row=float(r), col=float(c), x=(affine @ (c, r))[0], y=(affine @ (c, r))[1], z=0.0)
        for r in np.linspace(0, data.shape[1], 5)
        for c in np.linspace(0, data.shape[2], 5)
    ]
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype="float32") as dst:
        dst.write(data.astype("float32"))
        dst.gcps = (gcps, gcp_crs or CRS())  # an empty CRS: GCPs (GeoTIFF tie points) with no CRS
        dst.descriptions = ("VV", "VH")
    return str(path)


def test_plain_linear_and_amplitude_geotiffs_read_as_the_db_chip(
    s1_chip: tuple[np.ndarray, dict[str, Any]], tmp_path: Path
) -> None:
    db, profile = s1_chip
    linear = write_tif(tmp_path / "linear.tif", linear_power(db), profile, nodata=float("nan"))
    amplitude = write_tif(tmp_path / "amp.tif", np.sqrt(linear_power(db)), profile, nodata=float("nan"))
    want = write_tif(tmp_path / "db.tif", db, profile, nodata=float("nan"))
    want_image, want_valid = read_scene(want)
    assert not want_valid.all() and want_valid.mean() > 0.9
    for uri, unit in ((linear, "linear"), (amplitude, "amplitude")):
        (scene,), problems = resolve_inputs([uri], declared=Declared(units=unit))
        assert problems == [] and scene.scene_id == Path(uri).stem and is_vrt_xml(scene.uri)
        assert vrt_label(scene.uri) == f"stack {uri}"
        image, valid = read_scene(scene.uri)
        assert (valid == want_valid).all()
        assert np.abs(image - want_image).max() < 1e-4  # dB, to float32 round trip
    # no unit declared: the file is used as it is (no VRT), in whatever units it holds
    (scene,), _ = resolve_inputs([linear])
    assert scene.uri == linear
    # the same declaration on the dB chip itself is a different (wrong) reading: the unit matters
    (scene,), _ = resolve_inputs([want], declared=Declared(units="linear"))
    image, valid = read_scene(scene.uri)
    assert valid.mean() < 0.1  # dB values are mostly negative: log10 of them is nodata


def test_plain_digital_numbers_with_a_declared_scale_read_as_reflectance(tmp_path: Path) -> None:
    x1e4, profile = read_chip(S2_CHIP)
    dn = (x1e4[list(S2_BANDS)].astype(np.int32) + 1000).astype(np.uint16)  # L2A from baseline 04.00
    uri = write_tif(tmp_path / "s2_dn.tif", dn, profile, nodata=0)
    (scene,), problems = resolve_inputs([uri], declared=Declared(scale=1e-4, offset=-0.1))
    assert problems == [] and scene.scene_id == "s2_dn"
    image, valid = read_scene(scene.uri)
    want = (x1e4[list(S2_BANDS)].astype(np.float64) / 1e4).astype(np.float32)
    assert valid.all()  # the chip has no zero digital number in these bands
    assert np.abs(image - want).max() < 1e-6


def test_gcp_raster_without_a_gcp_crs_takes_the_declared_one(
    s1_chip: tuple[np.ndarray, dict[str, Any]], tmp_path: Path
) -> None:
    db, profile = s1_chip
    affine = profile["transform"]
    with_crs = write_gcp_only(tmp_path / "with_crs.tif", db, affine, CRS.from_epsg(4326))
    no_crs = write_gcp_only(tmp_path / "no_crs.tif", db, affine, None)
    # undeclared: the scene is kept (opened lazily) and its read is one line naming the file and the key
    (scene,), problems = resolve_inputs([no_crs])
    assert problems == [] and scene.uri == no_crs
    with pytest.raises(InputError) as err:
        read_info(no_crs)
    assert str(err.value) == (
        f"raster {no_crs} has GCPs without a CRS: set gcp_crs (e.g. gcp_crs=EPSG:4326) to georeference it"
    )
    # declared: the warped view on the same grid as the file whose GCPs carry that CRS, the same pixels
    (scene,), problems = resolve_inputs([no_crs], declared=Declared(gcp_crs="EPSG:4326"))
    assert problems == [] and scene.scene_id == "no_crs" and vrt_label(scene.uri) == f"warped {no_crs}"
    info, want_info = read_info(scene.uri), read_info(with_crs)
    assert (info.crs, info.transform, info.width, info.height) == (
        want_info.crs, want_info.transform, want_info.width, want_info.height,
    )  # fmt: skip
    image, valid = read_scene(scene.uri)
    want_image, want_valid = read_scene(with_crs)
    assert (valid == want_valid).all() and (image == want_image).all()
    # a declared grid: Web Mercator at 20 m; the footprint is the chip's, within one output pixel
    (scene,), _ = resolve_inputs(
        [no_crs], declared=Declared(gcp_crs="EPSG:4326", gcp_warp_crs="EPSG:3857", gcp_warp_res=20)
    )
    grid = read_info(scene.uri)
    assert grid.crs == "EPSG:3857" and grid.res == (20.0, 20.0)
    left, top = grid.transform[2], grid.transform[5]
    right, bottom = left + 20.0 * grid.width, top - 20.0 * grid.height
    lons, lats = transform(CRS.from_epsg(3857), CRS.from_epsg(4326), [left, right], [bottom, top])
    with rasterio.open(S1_CHIP) as chip:
        want_bounds = chip.bounds
    deg = 20.0 / 111_320.0  # one output pixel in degrees of latitude (and more than one of longitude here)
    for got, want in zip((lons[0], lats[0], lons[1], lats[1]), want_bounds, strict=True):
        assert abs(got - want) <= deg, (got, want)
    # a GCP CRS of the file's own wins over the declared one
    assert declared_scene(with_crs, Declared(gcp_crs="EPSG:3857")) == declared_scene(
        with_crs, Declared(gcp_crs="EPSG:4326")
    )
    # a linear GCP raster with units=linear: the warped linear values, in dB
    linear = write_gcp_only(tmp_path / "linear_gcp.tif", linear_power(db), affine, None)
    (scene,), _ = resolve_inputs([linear], declared=Declared(units="linear", gcp_crs="EPSG:4326"))
    (native,), _ = resolve_inputs([linear], declared=Declared(gcp_crs="EPSG:4326"))
    image, valid = read_scene(scene.uri)
    warped_linear, _ = read_scene(native.uri)
    assert valid.mean() > 0.9
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.abs(image[:, valid] - 10 * np.log10(warped_linear[:, valid])).max() < 1e-4
    # digital numbers cannot be scaled through the warper: one line naming the file
    (_, problems) = resolve_inputs([no_crs], declared=Declared(scale=1e-4, gcp_crs="EPSG:4326"))
    assert [p.reason.split(":")[0] for p in problems] == [f"raster {no_crs} is georeferenced by GCPs only"]


def test_unknown_unit_and_bad_gcp_crs_are_one_config_line() -> None:
    with pytest.raises(ConfigError) as err:
        map_config("units=furlong")
    assert str(err.value) == (
        "config error: key 'units': unknown unit 'furlong'; allowed: dB, linear (power), amplitude, reflectance, "
        "1, or empty for the model's own"
    )
    with pytest.raises(ConfigError) as err:
        map_config("gcp_crs=EPSG:999999")
    assert str(err.value) == "config error: key 'gcp_crs': 'EPSG:999999' is not a CRS; e.g. gcp_crs=EPSG:4326"
    with pytest.raises(ConfigError) as err:
        map_config("gcp_warp_crs=UTM")
    assert str(err.value) == "config error: key 'gcp_warp_crs': 'UTM' is not a CRS; e.g. gcp_warp_crs=EPSG:4326"
    with pytest.raises(ConfigError, match=r"^config error: key 'gcp_warp_res': value -10.0 is out of range"):
        map_config("gcp_warp_res=-10")
    cfg = map_config("units=Linear Power", "gcp_crs=EPSG:4326", "input_scale=0.0001", "input_offset=-0.1")
    assert (cfg.units, cfg.gcp_crs, cfg.input_scale, cfg.input_offset) == ("Linear Power", "EPSG:4326", 1e-4, -0.1)


def test_map_linear_geotiff_with_units_matches_the_db_chip(
    ray_session: None, s1_chip: tuple[np.ndarray, dict[str, Any]], tmp_path: Path
) -> None:
    """`units=linear` through run_map: the mosaic of the linear-power file is the dB chip's (IoU >= 0.999,
    same grid); a GCP raster without a GCP CRS in the same run is one failure line naming `gcp_crs`."""
    db, profile = s1_chip
    chip = write_tif(tmp_path / "chip.tif", db, profile, nodata=float("nan"))
    linear = write_tif(tmp_path / "lin.tif", linear_power(db), profile, nodata=float("nan"))
    no_crs = write_gcp_only(tmp_path / "gcp_lin.tif", linear_power(db), profile["transform"], None)
    ckpt = tiny_checkpoint(tmp_path / "model.pt")
    common = [f"infer.checkpoint={ckpt}", "tiling.tile_px=128", "tiling.overlap_px=16", "infer.batch_size=8"]
    lin_out, chip_out = tmp_path / "lin_run", tmp_path / "chip_run"
    assert run_map(map_config(f"input=[{linear},{no_crs}]", "units=linear", f"output={lin_out}", *common)) == 1
    assert run_map(map_config(f"input=[{chip}]", f"output={chip_out}", *common)) == 0
    (lin_run,) = [p for p in lin_out.iterdir() if p.is_dir()]
    (chip_run,) = [p for p in chip_out.iterdir() if p.is_dir()]
    failures = read_table(str(lin_run / "failures.parquet")).to_pylist()
    assert [(f["scene_uri"], f["reason"]) for f in failures] == [
        (no_crs, f"raster {no_crs} has GCPs without a CRS: set gcp_crs (e.g. gcp_crs=EPSG:4326) to georeference it")
    ]
    with rasterio.open(lin_run / "lin" / "mosaic.tif") as got, rasterio.open(chip_run / "chip" / "mosaic.tif") as want:
        assert (got.transform, got.crs, got.shape) == (want.transform, want.crs, want.shape)
        classes, want_classes = got.read(1), want.read(1)
    water, want_water = classes == 1, want_classes == 1
    union = (water | want_water).sum()
    assert union > 1000  # the tiny model finds water and land on this chip
    assert (water & want_water).sum() / union >= 0.999
    assert ((classes == 255) == (want_classes == 255)).all()
