"""Scene mosaic of the `boxes` task: the union of every box mask, streamed window by window into a COG.

Box-group windows overlap (each is shifted to cover its boxes), so parts are OR-ed into a tiled staging
GeoTIFF by read-modify-write of one window at a time, never a whole-scene array; GDAL's COG driver then
writes the deflate COG with overviews. Values: 1 = inside some box's mask, 0 = not (areas without boxes
were not segmented and read 0 too).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from rrsis.geo.mosaic import publish_cog, staging_profile
from rrsis.geo.raster import open_raster
from rrsis.geo.tiling import PixelWindow


def union_mosaic(
    out_uri: str,
    width: int,
    height: int,
    transform: Sequence[float],
    crs: str,
    parts: Iterable[tuple[PixelWindow, str]],
    block_px: int = 512,
) -> str:
    """OR the value-1 pixels of `parts` (window in scene pixels, URI of its mask GeoTIFF) into one COG."""
    scene = PixelWindow(0, 0, width, height)
    with tempfile.TemporaryDirectory(prefix="rrsis-boxes-mosaic-") as tmp:
        staging = os.path.join(tmp, "staging.tif")
        profile = staging_profile(width, height, transform, crs, "uint8", 1, None, block_px)
        with rasterio.open(staging, "w+", **profile) as dst:
            for window, part_uri in parts:
                inside = window.intersection(scene)
                if inside is None:
                    continue
                rows, cols = inside.relative_to(window).slices()
                with open_raster(part_uri) as src:
                    part = src.read(1)[rows, cols] == 1
                target = Window(*inside.to_tuple())
                current = dst.read(1, window=target)
                dst.write(np.where(part, np.uint8(1), current)[None], window=target)
        publish_cog(staging, out_uri, block_px)
    return out_uri
