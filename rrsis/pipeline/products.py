"""Per-scene products built from the mask tiles once all of a scene's tiles exist.

- `mosaic.tif`: COG stitched from the tile cores by `rrsis.geo.mosaic.build_cog` (streamed, one tile at a
  time), band 1 class (0 land, 1 water, 255 nodata), band 2 round(P(water)*254) when probabilities are on.
- `water.geojson`: water polygons of the whole mosaic, EPSG:4326 (RFC 7946), property `area_m2` computed in a
  local Lambert equal-area projection centred on the scene (see `rrsis.pipeline.area`). GDAL's polygoniser
  runs on the mosaic band itself (its uncompressed staging file, while the COG is compressed beside it),
  scanline by scanline, so polygons are never split at tile or block borders and the raster is never held in
  memory (memory grows with the polygons, not the pixels).
- `quicklook.png`: at most `QUICKLOOK_PX` on the long side, read through the COG overviews: the scene's first
  band in grey (2-98 % stretch), water in blue, nodata black.
- `stats.json`: water km², water fraction of valid pixels, nodata fraction (from the manifest's per-tile sums).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import rasterio
import rasterio.features
from PIL import Image
from rasterio.enums import Resampling

from rrsis import storage
from rrsis.geo.mosaic import build_cog, publish_cog, stage_parts, staging_profile
from rrsis.geo.raster import open_raster, read_decimated
from rrsis.geo.tiling import PixelWindow
from rrsis.pipeline.area import WGS84, laea_for_window, polygon_areas, project_rings, ring_areas
from rrsis.pipeline.refiners import NODATA
from rrsis.report.geoparquet import PolygonRows, polygons_uri

QUICKLOOK_PX = 1024
VECTOR_CHUNK = 5000  # polygons projected per PROJ call
MOSAIC_BLOCK_PX = 512  # the COG's (and its staging file's) block size
WATER_RGB = np.array([30, 144, 255], dtype=np.float32)
#: Result key (taken out before the result leaves the products task) saying the scene's GeoParquet
#: partition was written with its vectors.
POLYGONS_WRITTEN = "_polygons_written"


def run_folder(scene: dict[str, Any]) -> str:
    """The run folder a scene's outputs are in: its `prefix` is `<run>/<scene_id>`."""
    return str(scene["prefix"]).rsplit("/", 1)[0]


def _grid(scene: dict[str, Any]) -> tuple[int, int, Any, str, str]:
    """(width, height, transform, crs, dtype) of a scene's mask mosaic."""
    return int(scene["width"]), int(scene["height"]), scene["transform"], str(scene["crs"]), "uint8"


def build_mosaic(out_uri: str, scene: dict[str, Any], parts: Sequence[tuple[PixelWindow, str]], *, count: int) -> str:
    """Stitch the scene's tiles (core window, key) into a COG at `out_uri`."""
    return build_cog(out_uri, *_grid(scene), parts, count=count, nodata=NODATA, block_px=MOSAIC_BLOCK_PX)


def build_vectors(raster_uri: str, out_uri: str, scene: dict[str, Any], polygons: PolygonRows | None = None) -> int:
    """Polygonise water (value 1) of band 1 of a mask raster (the mosaic, or its staging file) into GeoJSON
    with `area_m2`; returns the polygon count. `polygons` also gathers them as the rows of the run's
    GeoParquet partition (`rrsis.report.geoparquet`), from the same coordinates."""
    crs = str(scene["crs"])
    laea = laea_for_window(scene["transform"], crs, 0, 0, int(scene["width"]), int(scene["height"]))
    count = 0
    with tempfile.TemporaryDirectory(prefix="rrsis-vectors-") as tmp:
        path = os.path.join(tmp, "water.geojson")
        with open(path, "wb") as out, open_raster(raster_uri) as src:
            out.write(b'{"type": "FeatureCollection", "name": "water", "features": [\n')
            band = rasterio.band(src, 1)
            shapes = rasterio.features.shapes(band, mask=band, connectivity=4, transform=src.transform)
            chunk: list[dict[str, Any]] = []
            for geometry, value in shapes:
                if int(value) == 1:
                    chunk.append(geometry)
                if len(chunk) >= VECTOR_CHUNK:
                    count = _write_features(out, chunk, crs, laea, count, polygons)
                    chunk = []
            count = _write_features(out, chunk, crs, laea, count, polygons)
            out.write(b"\n]}\n")
        storage.put_file(path, out_uri)
    return count


def _write_features(
    out: Any, polygons: list[dict[str, Any]], crs: str, laea: str, first_id: int, rows: PolygonRows | None
) -> int:
    """Append one GeoJSON feature per polygon (EPSG:4326, 9 decimals) with its equal-area `area_m2`.

    orjson writes each ring straight from its rows of the chunk's coordinate array (shortest round-trip
    floats: the digits `json` wrote), without a Python list per point: that conversion and `json.dumps`
    were a third of the vector time.
    """
    if not polygons:
        return first_id
    xy_m, lengths = project_rings(polygons, crs, laea)
    areas = np.round(polygon_areas(polygons, ring_areas(xy_m, lengths)), 3).tolist()
    xy_deg, _ = project_rings(polygons, crs, WGS84)
    points = np.ascontiguousarray(np.round(xy_deg, 9))  # one rounding for the whole chunk
    bounds = [0, *np.cumsum(lengths).tolist()]  # ring r is points[bounds[r] : bounds[r + 1]]
    if rows is not None:
        rows.extend_bounds(points)
    ring = 0
    for i, poly in enumerate(polygons):
        rings = [points[bounds[r] : bounds[r + 1]] for r in range(ring, ring + len(poly["coordinates"]))]
        ring += len(poly["coordinates"])
        if rows is not None:
            rows.add(first_id + i, areas[i], rings)
        feature = {
            "type": "Feature",
            "properties": {"id": first_id + i, "class": "water", "area_m2": areas[i]},
            "geometry": {"type": "Polygon", "coordinates": rings},
        }
        out.write((b",\n" if first_id + i else b"") + orjson.dumps(feature, option=orjson.OPT_SERIALIZE_NUMPY))
    return first_id + len(polygons)


def _stretch(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """0..255 grey from the 2nd-98th percentile of valid values (0 where there are none)."""
    if not valid.any():
        return np.zeros(values.shape, dtype=np.float32)
    lo, hi = np.percentile(values[valid], [2, 98])
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((values - lo) * scale, 0, 255).astype(np.float32)


def quicklook_shape(width: int, height: int) -> tuple[int, int]:
    """(rows, cols) of the quicklook: at most QUICKLOOK_PX on the long side."""
    factor = max(1.0, max(width, height) / QUICKLOOK_PX)
    return max(1, round(height / factor)), max(1, round(width / factor))


def quicklook_background(scene_uri: str, band: int, width: int, height: int) -> np.ndarray:
    """The scene band at quicklook size (nearest), float32.

    It needs only the scene, so the run starts it (a Ray task) while the scene's tiles are still being
    inferred: the decimated read touches every block of the scene and would otherwise sit in the tail.
    """
    with open_raster(scene_uri) as src:
        out = read_decimated(src, [band], quicklook_shape(width, height))[0]
    return out.astype(np.float32)  # type: ignore[no-any-return]


def build_quicklook(
    mosaic_uri: str, scene_uri: str, band: int, out_uri: str, background: np.ndarray | None = None
) -> str:
    """A small RGB PNG: scene band in grey, water blended in blue, nodata black."""
    with open_raster(mosaic_uri) as src:
        shape = quicklook_shape(src.width, src.height)
        mask = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        if background is None or background.shape != shape:
            background = quicklook_background(scene_uri, band, src.width, src.height)
    valid = (mask != NODATA) & np.isfinite(background)
    grey = _stretch(np.nan_to_num(background), valid)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    water = mask == 1
    rgb[water] = 0.4 * rgb[water] + 0.6 * WATER_RGB
    rgb[~valid] = 0
    with tempfile.TemporaryDirectory(prefix="rrsis-quicklook-") as tmp:
        path = os.path.join(tmp, "quicklook.png")
        Image.fromarray(rgb.astype(np.uint8), mode="RGB").save(path, optimize=False)
        storage.put_file(path, out_uri)
    return out_uri


def scene_stats(scene: dict[str, Any], tiles: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Water area and fractions from the per-tile sums of the manifest."""
    total_px = int(scene["width"]) * int(scene["height"])
    valid_px = sum(int(t["valid_px"]) for t in tiles)
    water_px = sum(int(t["water_px"]) for t in tiles)
    return {
        "scene_id": scene["scene_id"],
        "scene_uri": scene["uri"],
        "width_px": int(scene["width"]),
        "height_px": int(scene["height"]),
        "crs": scene["crs"],
        "tiles": len(tiles),
        "valid_px": valid_px,
        "water_px": water_px,
        "water_km2": sum(float(t["water_m2"]) for t in tiles) / 1e6,
        "valid_km2": sum(float(t["valid_m2"]) for t in tiles) / 1e6,
        "water_fraction": water_px / valid_px if valid_px else 0.0,
        "nodata_fraction": 1.0 - valid_px / total_px if total_px else 1.0,
        "area_method": "local Lambert azimuthal equal-area (WGS84) per tile row",
    }


def scene_products(
    scene: dict[str, Any],
    tiles: Sequence[dict[str, Any]],
    outputs: dict[str, bool],
    background: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every product of one scene; returns the stats with the product URIs added. Runs on a Ray worker.

    `background`: the scene's `quicklook_background`, when the run computed it ahead (else read here).
    """
    prefix = str(scene["prefix"])
    result = scene_stats(scene, tiles)
    storage.put_bytes(storage.join(prefix, "stats.json"), json.dumps(result, indent=2, sort_keys=True).encode())
    result["stats"] = storage.join(prefix, "stats.json")
    if not (outputs.get("mosaic") or outputs.get("vectors") or outputs.get("quicklook")):
        return result
    parts = [
        (
            PixelWindow(int(t["core_col_off"]), int(t["core_row_off"]), int(t["core_width"]), int(t["core_height"])),
            str(t["key"]),
        )
        for t in tiles
    ]
    mosaic = storage.join(prefix, "mosaic.tif")
    count = 2 if outputs.get("probability") else 1
    # The COG (deflate, overviews) and then the quicklook (read through those overviews) run in a thread
    # beside the polygons, which read the uncompressed staging file; GDAL releases the GIL in all three. At
    # the end of a run both cores are free, so the last scene's tail is the longer of the two, not the sum.
    with tempfile.TemporaryDirectory(prefix="rrsis-mosaic-") as tmp, ThreadPoolExecutor(max_workers=1) as pool:
        start = time.perf_counter()
        profile = staging_profile(*_grid(scene), count, NODATA, MOSAIC_BLOCK_PX)
        staging = stage_parts(os.path.join(tmp, "staging.tif"), profile, parts)
        staged_s = time.perf_counter() - start
        published = pool.submit(_timed, publish_cog, staging, mosaic, MOSAIC_BLOCK_PX)
        quicklook = None
        if outputs.get("quicklook"):
            args = (mosaic, str(scene["uri"]), int(scene["bands"][0]), storage.join(prefix, "quicklook.png"))
            quicklook = pool.submit(_timed, build_quicklook, *args, background)  # after the COG: one worker
        if outputs.get("vectors"):
            result["vectors"] = storage.join(prefix, "water.geojson")
            # with a report, the run's GeoParquet partition too, from the same rings, while the COG compresses
            rows = PolygonRows(str(scene["scene_id"])) if outputs.get("report") else None
            result["polygons"], result["vectors_s"] = _timed(build_vectors, staging, result["vectors"], scene, rows)
            if rows is not None:
                rows.write(polygons_uri(run_folder(scene), str(scene["scene_id"])))
                result[POLYGONS_WRITTEN] = True
        result["mosaic"], publish_s = published.result()
        result["mosaic_s"] = staged_s + publish_s
        if quicklook is not None:
            result["quicklook"], result["quicklook_s"] = quicklook.result()
    return result


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(*args), time.perf_counter() - start
