"""Per-band stacking (rrsis.geo.vrt through rrsis.geo.raster): real Sen1Floods11 chips written as per-band
COGs in the units catalogs publish, read back through the VRT by the map's own `read_window`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from rrsis.errors import InputError
from rrsis.geo.raster import gdal_options, open_raster, read_decimated, read_info, read_window, stack_bands
from rrsis.geo.tiling import PixelWindow
from rrsis.geo.units import conversion_for_unit
from rrsis.geo.vrt import BandSource, is_vrt_xml, vrt_label

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "sen1floods11"
S1_CHIP = SAMPLES / "S1Hand" / "India_900498_S1Hand.tif"
S2_CHIP = SAMPLES / "S2Hand" / "Spain_7370579_S2Hand.tif"


def read_chip(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile)


def write_cog(path: Path | str, band: np.ndarray, profile: dict[str, Any], **overrides: Any) -> str:
    """One single-band COG (GDAL's COG driver) with the chip's georeferencing."""
    out = {k: profile[k] for k in ("width", "height", "crs", "transform")}
    out.update(driver="COG", count=1, dtype=str(band.dtype), compress="deflate", blocksize=256, **overrides)
    with rasterio.open(str(path), "w", **out) as dst:
        dst.write(band, 1)
    return str(path)


def linear_power(db: np.ndarray) -> np.ndarray:
    return np.power(10.0, db.astype(np.float64) / 10.0).astype(np.float32)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def s1_db() -> tuple[np.ndarray, dict[str, Any]]:
    db, profile = read_chip(S1_CHIP)
    db[:, 100:140, 200:260] = np.nan  # the chip has no nodata of its own: a NaN block, as swath edges have
    return db, profile


@pytest.fixture(scope="module")
def s1_cogs(tmp_path_factory: pytest.TempPathFactory, s1_db: tuple[np.ndarray, dict[str, Any]]) -> dict[str, str]:
    db, profile = s1_db
    folder = tmp_path_factory.mktemp("s1cogs")
    return {
        name: write_cog(folder / f"{name}.tif", linear_power(db[i]), profile, nodata=float("nan"))
        for i, name in enumerate(("VV", "VH"))
    }


def read_all(uri: str, bands: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    info = read_info(uri)
    with open_raster(uri) as src:
        return read_window(src, PixelWindow(0, 0, info.width, info.height), bands or [1, 2], "float32")


def test_linear_power_stack_reads_the_db_chip(s1_db: tuple[np.ndarray, Any], s1_cogs: dict[str, str]) -> None:
    db, profile = s1_db
    xml = stack_bands([BandSource(n, s1_cogs[n], convert="power") for n in ("VV", "VH")], "India_900498")
    assert is_vrt_xml(xml) and vrt_label(xml) == "stack India_900498"
    info = read_info(xml)
    assert info.band_names == ("VV", "VH") and info.crs == "EPSG:4326"
    assert (info.width, info.height) == (512, 512)
    assert info.transform == pytest.approx(tuple(profile["transform"])[:6], abs=0, rel=0)
    image, valid = read_all(xml)
    expected_valid = ~np.isnan(db).any(axis=0)
    assert (valid == expected_valid).all()
    assert np.abs(image[:, valid] - db[:, valid]).max() < 1e-4
    assert (image[:, ~valid] == 0).all()  # NaN -> 0 and invalid, exactly as from a stacked file
    # a window crossing the scene edge (boundless) and a band subset, as the read stage asks
    with open_raster(xml) as src:
        part, part_valid = read_window(src, PixelWindow(480, 480, 64, 64), [2])
    assert part_valid[:32, :32].all() and not part_valid[32:, :].any() and not part_valid[:, 32:].any()
    assert np.allclose(part[0, :32, :32], db[1, 480:, 480:], atol=1e-4)


def test_zero_negative_and_nodata_become_nodata(tmp_path: Path, s1_db: tuple[np.ndarray, dict[str, Any]]) -> None:
    db, profile = s1_db
    lin = np.nan_to_num(linear_power(db[0]), nan=-32768.0)  # the -32768 nodata tag a large catalog uses
    lin[0, :4] = [0.0, -0.5, -1e-9, 1e-7]
    uri = write_cog(tmp_path / "vv.tif", lin, profile, nodata=-32768.0)
    xml = stack_bands([BandSource("VV", uri, convert="power")], "tagged")
    image, valid = read_all(xml, [1])
    assert not valid[0, :3].any() and valid[0, 3] and image[0, 0, 3] == pytest.approx(-70.0, abs=1e-4)
    assert not valid[100:140, 200:260].any()
    inside = valid.copy()
    inside[0, :4] = False
    assert np.abs(image[0][inside] - db[0][inside]).max() < 1e-4
    # amplitude -> dB is 20 log10
    amp = write_cog(tmp_path / "amp.tif", np.sqrt(np.nan_to_num(linear_power(db[0]), nan=1.0)), profile)
    image, _ = read_all(stack_bands([BandSource("VV", amp, convert="amplitude")], "amp"), [1])
    ok = ~np.isnan(db[0])
    assert np.abs(image[0][ok] - db[0][ok]).max() < 1e-4


def test_coarser_band_is_resampled_onto_the_finest_grid(
    tmp_path: Path, s1_db: tuple[np.ndarray, dict[str, Any]], s1_cogs: dict[str, str]
) -> None:
    db, profile = s1_db
    with rasterio.open(s1_cogs["VH"]) as src:  # VH at half the resolution, as a 20 m band beside a 10 m one
        coarse = src.read(1, out_shape=(256, 256), resampling=Resampling.average)
    half = dict(profile, width=256, height=256, transform=profile["transform"] @ Affine.scale(2))
    vh20 = write_cog(tmp_path / "vh20.tif", coarse, half, nodata=float("nan"))
    xml = stack_bands([BandSource("VH", vh20, convert="power"), BandSource("VV", s1_cogs["VV"], convert="power")], "m")
    info = read_info(xml)
    assert (info.width, info.height) == (512, 512) and info.band_names == ("VH", "VV")
    assert info.transform == tuple(profile["transform"])[:6]
    image, valid = read_all(xml)
    with rasterio.open(vh20) as src:  # what GDAL's own bilinear upsampling of the 20 m band gives
        up = src.read(1, out_shape=(512, 512), resampling=Resampling.bilinear).astype(np.float64)
    both = valid & np.isfinite(up) & (up > 0)
    assert both.mean() > 0.95
    assert np.abs(image[0][both] - 10 * np.log10(up[both])).max() < 1e-3
    assert np.abs(image[1][valid] - db[0][valid]).max() < 1e-4  # the fine band is untouched


def test_sentinel2_scale_offset(tmp_path: Path) -> None:
    refl_x1e4, profile = read_chip(S2_CHIP)  # L1C reflectance x 10000, int16
    bands = {"B2": 1, "B3": 2, "B4": 3, "B8": 7}
    sources = []
    for name, index in bands.items():  # L2A baseline >= 04.00: DN = reflectance * 10000 + 1000, uint16, 0 = nodata
        dn = (refl_x1e4[index].astype(np.int32) + 1000).astype(np.uint16)
        dn[:8, :8] = 0
        uri = write_cog(tmp_path / f"{name}.tif", dn, profile, nodata=0)
        sources.append(BandSource(name, uri, scale=1e-4, offset=-0.1))
    xml = stack_bands(sources, "Spain_7370579_S2")
    image, valid = read_all(xml, [1, 2, 3, 4])
    expected = refl_x1e4[list(bands.values())].astype(np.float64) / 10000.0
    assert not valid[:8, :8].any() and valid[8:, 8:].all()
    assert np.abs(image[:, valid] - expected[:, valid]).max() < 1e-6
    # the quicklook/statistics path (decimated reads) sees the same converted values
    with open_raster(xml) as src:
        small = read_decimated(src, [1], (64, 64))
    assert np.nanmax(small) < 1.0


def test_stack_errors_are_one_line(tmp_path: Path, s1_cogs: dict[str, str], s1_db: tuple[np.ndarray, Any]) -> None:
    db, profile = s1_db
    utm = dict(profile, crs="EPSG:32646", transform=Affine(10.0, 0, 500000.0, 0, -10.0, 3000000.0))
    other = write_cog(tmp_path / "vh_utm.tif", linear_power(db[1]), utm)
    with pytest.raises(InputError) as err:
        stack_bands([BandSource("VV", s1_cogs["VV"]), BandSource("VH", other)], "item-a")
    assert str(err.value) == "item-a: bands in different CRS cannot be stacked (VV EPSG:4326, VH EPSG:32646)"
    with pytest.raises(InputError, match=r"^item-b: band VH: cannot open .*missing\.tif: ") as err:
        stack_bands([BandSource("VV", s1_cogs["VV"]), BandSource("VH", str(tmp_path / "missing.tif"))], "item-b")
    assert "\n" not in str(err.value)
    bare = {k: v for k, v in profile.items() if k != "crs"}
    nocrs = write_cog(tmp_path / "vh_nocrs.tif", linear_power(db[1]), dict(bare, crs=None))
    with pytest.raises(InputError, match=r"^item-c: band VH has no CRS \(GCPs only\?\)"):
        stack_bands([BandSource("VV", s1_cogs["VV"]), BandSource("VH", nocrs)], "item-c")
    with pytest.raises(InputError) as err:
        conversion_for_unit("furlong", "units.VV")
    assert str(err.value) == "units.VV: unknown unit 'furlong'; allowed: dB, linear (power), amplitude, reflectance, 1"
    assert conversion_for_unit("Linear Power", "k") == "power" and conversion_for_unit("dB", "k") == "native"


def test_stack_of_s3_cogs(s3_bucket: str, s1_db: tuple[np.ndarray, Any], s1_cogs: dict[str, str]) -> None:
    db, _ = s1_db
    client = boto3.client("s3")
    for name, path in s1_cogs.items():
        client.upload_file(path, s3_bucket, f"cogs/{name}.tif")
    xml = stack_bands([BandSource(n, f"s3://{s3_bucket}/cogs/{n}.tif", convert="power") for n in ("VV", "VH")], "s3")
    assert f"/vsis3/{s3_bucket}/cogs/VV.tif" in xml
    assert gdal_options(xml)["AWS_VIRTUAL_HOSTING"] == "FALSE"
    image, valid = read_all(xml)
    assert (valid == ~np.isnan(db).any(axis=0)).all()
    assert np.abs(image[:, valid] - db[:, valid]).max() < 1e-4
