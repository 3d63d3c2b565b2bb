"""Stitch per-tile mask GeoTIFFs into one Cloud-Optimized GeoTIFF, one tile at a time.

Tiles are written into an uncompressed, tiled staging GeoTIFF on local disk (so partial block writes cost
no re-compression) and the staging file is translated by GDAL's COG driver, which builds the overviews
block by block. Memory stays at about one tile plus GDAL's block cache, whatever the scene size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from rrsis import storage
from rrsis.errors import InputError
from rrsis.geo.raster import open_raster
from rrsis.geo.tiling import PixelWindow


def staging_profile(
    width: int,
    height: int,
    transform: Sequence[float],
    crs: str,
    dtype: str,
    count: int,
    nodata: float | None,
    block_px: int,
) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "transform": Affine(*[float(v) for v in transform[:6]]),
        "tiled": True,
        "blockxsize": block_px,
        "blockysize": block_px,
        "BIGTIFF": "IF_SAFER",
    }
    if crs:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    return profile


def _write_part(dst: Any, window: PixelWindow, part_uri: str) -> None:
    with open_raster(part_uri) as src:
        if (src.width, src.height) != (window.width, window.height) or src.count != dst.count:
            raise InputError(
                f"tile {part_uri} is {src.count}x{src.height}x{src.width} (bands x rows x cols) but its core "
                f"window {window.to_tuple()} needs {dst.count}x{window.height}x{window.width}"
            )
        dst.write(src.read(out_dtype=dst.dtypes[0]), window=Window(*window.to_tuple()))


def build_cog(
    out_uri: str,
    width: int,
    height: int,
    transform: Sequence[float],
    crs: str,
    dtype: str,
    parts: Iterable[tuple[PixelWindow, str]],
    *,
    count: int = 1,
    nodata: float | None = None,
    block_px: int = 512,
) -> str:
    """Mosaic `parts` (core window in scene pixels, URI of a tile GeoTIFF of exactly that extent) into a COG.

    Pixels no part covers are `nodata` (0 when nodata is None). Parts must lie inside the scene. Output goes
    to a local path or s3:// in one atomic write; identical inputs give identical bytes.
    """
    if block_px <= 0 or block_px % 16:
        raise InputError(f"block_px={block_px} must be a positive multiple of 16")
    profile = staging_profile(width, height, transform, crs, dtype, count, nodata, block_px)
    with tempfile.TemporaryDirectory(prefix="rrsis-mosaic-") as tmp:
        staging = stage_parts(os.path.join(tmp, "staging.tif"), profile, parts)
        publish_cog(staging, out_uri, block_px)
    return out_uri


def stage_parts(staging: str, profile: dict[str, Any], parts: Iterable[tuple[PixelWindow, str]]) -> str:
    """Write `parts` into an uncompressed tiled GeoTIFF of `staging_profile` at the local path `staging`.

    The staging file already holds the whole mosaic: a reader that needs no overviews (the polygoniser) can
    start on it while `publish_cog` compresses it.
    """
    width, height = int(profile["width"]), int(profile["height"])
    scene = PixelWindow(0, 0, width, height)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(staging, "w", **profile) as dst:
        for window, part_uri in parts:
            if not scene.contains(window):
                raise InputError(f"tile {part_uri} window {window.to_tuple()} is outside the {width}x{height} scene")
            _write_part(dst, window, part_uri)
    return staging


def publish_cog(staging: str, out_uri: str, block_px: int = 512) -> str:
    """Translate a local tiled GeoTIFF into a COG (deflate, overviews) and put it at `out_uri`."""
    with tempfile.TemporaryDirectory(prefix="rrsis-cog-") as tmp:
        cog = os.path.join(tmp, "out.tif")
        with rasterio.Env(GDAL_NUM_THREADS="1"):
            rasterio.shutil.copy(
                staging,
                cog,
                driver="COG",
                COMPRESS="DEFLATE",
                BLOCKSIZE=block_px,
                OVERVIEWS="AUTO",
                OVERVIEW_RESAMPLING="NEAREST",
                BIGTIFF="IF_SAFER",
            )
        storage.put_file(cog, out_uri)
    return out_uri
