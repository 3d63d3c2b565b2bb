"""Per-scene products of the `boxes` task, made on a Ray worker once every group of the scene is out.

- `boxes.geojson`: the groups' polygons merged, WGS84, one feature per box (ordered by `box_id`).
- `mosaic.tif`: the union of every box mask, streamed window by window into a COG (`union_mosaic`).
  Box-group windows overlap (each is shifted to cover its boxes), so parts are OR-ed into a tiled staging
  GeoTIFF by read-modify-write of one window at a time, never a whole-scene array; GDAL's COG driver then
  writes the deflate COG with overviews. Values: 1 = inside some box's mask, 0 = not (areas without boxes
  were not segmented and read 0 too).
- `quicklook.png` (`outputs.quicklook`): the scene's first mapped band in grey, the boxes' masks in blue.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.warp import transform_geom
from rasterio.windows import Window

from rrsis import storage
from rrsis.geo.mosaic import publish_cog, staging_profile
from rrsis.geo.raster import open_raster
from rrsis.geo.tiling import PixelWindow
from rrsis.pipeline.products import build_quicklook
from rrsis.pipeline.task_boxes import geojson_key


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


def scene_vectors(out_uri: str, crs: str, keys: list[str]) -> str:
    """Merge the groups' GeoJSON of one scene into `out_uri` (WGS84), one feature per box."""
    features = []
    for key in sorted(keys):
        for feat in json.loads(storage.get_bytes(geojson_key(key)))["features"]:
            if feat["geometry"] is not None:
                feat["geometry"] = transform_geom(crs, "EPSG:4326", feat["geometry"], precision=9)
            features.append(feat)
    features.sort(key=lambda f: str(f["properties"]["box_id"]))
    storage.put_bytes(out_uri, json.dumps({"type": "FeatureCollection", "features": features}).encode())
    return out_uri


def box_scene_products(
    scene: dict[str, Any], rows: list[dict[str, Any]], outputs: dict[str, bool], background: Any = None
) -> dict[str, Any]:
    """A scene's `boxes.geojson`, `mosaic.tif` and quicklook from its box rows (the manifest's, one per box).

    `background`: the scene's quicklook background when the run read it ahead (else read here)."""
    prefix = str(scene["prefix"])
    done = [r for r in rows if r["status"] in ("written", "skipped")]
    vectors = scene_vectors(storage.join(prefix, "boxes.geojson"), str(scene["crs"]), sorted({r["key"] for r in done}))
    parts = {r["key"]: PixelWindow(r["win_col_off"], r["win_row_off"], r["win_width"], r["win_height"]) for r in done}
    mosaic = union_mosaic(
        storage.join(prefix, "mosaic.tif"),
        int(scene["width"]),
        int(scene["height"]),
        scene["transform"],
        str(scene["crs"]),
        [(w, k) for k, w in sorted(parts.items())],
    )
    result = {"scene_id": scene["scene_id"], "scene_uri": scene["uri"], "boxes": len(done), "vectors": vectors,
              "mosaic": mosaic}  # fmt: skip
    if outputs.get("quicklook"):
        out = storage.join(prefix, "quicklook.png")
        result["quicklook"] = build_quicklook(mosaic, str(scene["uri"]), int(scene["bands"][0]), out, background)
    return result
