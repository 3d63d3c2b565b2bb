"""Boxes for the `boxes` map task: a CSV of pixel boxes, or a GeoJSON / GeoPackage in the scene's CRS.

Every box becomes a `BoxRecord` in scene pixel coordinates (x = column, y = row, end-exclusive like the
CFPG crop `I[y1:y2, x1:x2]`). A vector geometry's box is the pixel extent of its bounding box, mapped
through the scene's inverse affine transform. A layer whose CRS differs from the scene's is refused (no
silent reprojection). Bad rows fail the whole file with one line naming the file and the row/feature: a
box is never silently dropped. GeoPackage is read with the stdlib `sqlite3` (`rrsis.pipeline.gpkg`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rrsis.errors import InputError
from rrsis.pipeline.gpkg import GpkgSrs, read_gpkg_layer

CSV_COLUMNS = ("id", "x1", "y1", "x2", "y2")


@dataclass(frozen=True)
class BoxRecord:
    """One box prompt in scene pixels, with the id its mask and polygon will carry."""

    box_id: str
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def centre_xy(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0

    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2


def _checked(source: str, where: str, box_id: str, values: Sequence[float]) -> BoxRecord:
    x1, y1, x2, y2 = values
    if not all(math.isfinite(v) for v in values) or x2 <= x1 or y2 <= y1:
        raise InputError(f"{source}: {where} (id {box_id!r}) is not a box with x1 < x2 and y1 < y2: {list(values)}")
    return BoxRecord(box_id, x1, y1, x2, y2)


def read_csv_boxes(text: str, source: str) -> list[BoxRecord]:
    """CSV with a header `id,x1,y1,x2,y2` (pixel coordinates of the scene)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{source}: missing CSV column(s) {missing}; expected header {','.join(CSV_COLUMNS)}")
    boxes = []
    for line, row in enumerate(reader, start=2):
        try:
            values = [float(row[c]) for c in CSV_COLUMNS[1:]]
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: line {line}: non-numeric coordinate ({exc})") from exc
        boxes.append(_checked(source, f"line {line}", str(row["id"]), values))
    return _unique(boxes, source)


def _coords(geometry: Any) -> Iterator[tuple[float, float]]:
    """Every (x, y) of a GeoJSON geometry, whatever its nesting."""
    if geometry.get("type") == "GeometryCollection":
        for g in geometry.get("geometries", []):
            yield from _coords(g)
        return

    def walk(node: Any) -> Iterator[tuple[float, float]]:
        if isinstance(node, (list, tuple)) and node and isinstance(node[0], (int, float)):
            yield float(node[0]), float(node[1])
        elif isinstance(node, (list, tuple)):
            for child in node:
                yield from walk(child)

    yield from walk(geometry.get("coordinates", []))


def world_to_pixel(transform: Sequence[float], x: float, y: float) -> tuple[float, float]:
    """Inverse of the affine (a, b, c, d, e, f): x_world = a*col + b*row + c, y_world = d*col + e*row + f."""
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    det = a * e - b * d
    if det == 0:
        raise InputError(f"scene transform {tuple(transform[:6])} is not invertible")
    dx, dy = x - c, y - f
    return (e * dx - b * dy) / det, (-d * dx + a * dy) / det


def _epsg(text: str) -> str | None:
    m = re.search(r"EPSG:{1,2}(\d+)", text, flags=re.IGNORECASE)
    return m.group(1) if m else None


def read_geojson_boxes(text: str, source: str, transform: Sequence[float], scene_crs: str) -> list[BoxRecord]:
    """GeoJSON FeatureCollection in the scene's CRS -> pixel boxes (feature id, `properties.id`, or index)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON ({exc})") from exc
    declared = ((doc.get("crs") or {}).get("properties") or {}).get("name", "")
    if declared and _epsg(declared) and _epsg(scene_crs) and _epsg(declared) != _epsg(scene_crs):
        raise InputError(f"{source}: boxes are in {declared}, the scene is in {scene_crs}; reproject them first")
    features = doc.get("features") if doc.get("type") == "FeatureCollection" else None
    if features is None:
        raise InputError(f"{source}: expected a GeoJSON FeatureCollection")
    boxes = []
    for i, feat in enumerate(features):
        props = feat.get("properties") or {}
        box_id = str(feat.get("id", props.get("id", i)))
        pts = list(_coords(feat.get("geometry") or {}))
        if not pts:
            raise InputError(f"{source}: feature {i} (id {box_id!r}) has no coordinates")
        xs, ys = zip(*pts, strict=True)
        corners = [world_to_pixel(transform, x, y) for x in (min(xs), max(xs)) for y in (min(ys), max(ys))]
        cols, rows = zip(*corners, strict=True)
        boxes.append(_checked(source, f"feature {i}", box_id, (min(cols), min(rows), max(cols), max(rows))))
    return _unique(boxes, source)


ID_COLUMNS = ("box_id", "id")  # a GeoPackage column giving the box id (case-insensitive), else the fid


def _same_crs(srs: GpkgSrs, scene_crs: str) -> bool:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        layer = CRS.from_epsg(srs.code) if srs.organization.upper() == "EPSG" else CRS.from_wkt(srs.definition)
        return bool(layer == CRS.from_user_input(scene_crs))
    except CRSError:
        return False


def read_gpkg_boxes(data: bytes, source: str, transform: Sequence[float], scene_crs: str) -> list[BoxRecord]:
    """The feature table of a GeoPackage in the scene's CRS -> pixel boxes (id column `box_id`/`id`, else fid)."""
    layer = read_gpkg_layer(data, source)
    srs = layer.srs
    if srs.srs_id in (0, -1) or srs.organization.upper() == "NONE":
        raise InputError(
            f"{source}: table {layer.table!r} has an undefined CRS; boxes must be in the scene's {scene_crs}"
        )
    if not _same_crs(srs, scene_crs):
        raise InputError(
            f"{source}: table {layer.table!r} is in {srs.organization}:{srs.code}, the scene is in {scene_crs}; "
            "reproject the boxes first"
        )
    boxes = []
    for feat in layer.features:
        lower = {k.lower(): v for k, v in feat.properties.items()}
        box_id = next((str(lower[c]) for c in ID_COLUMNS if lower.get(c) is not None), str(feat.fid))
        minx, miny, maxx, maxy = feat.bounds
        corners = [world_to_pixel(transform, x, y) for x in (minx, maxx) for y in (miny, maxy)]
        cols, rows = zip(*corners, strict=True)
        where = f"table {layer.table!r} feature {feat.fid}"
        boxes.append(_checked(source, where, box_id, (min(cols), min(rows), max(cols), max(rows))))
    return _unique(boxes, source)


def _unique(boxes: list[BoxRecord], source: str) -> list[BoxRecord]:
    seen: set[str] = set()
    for b in boxes:
        if b.box_id in seen:
            raise InputError(f"{source}: box id {b.box_id!r} appears twice; ids name the output masks")
        seen.add(b.box_id)
    return boxes


def read_boxes(data: bytes, source: str, transform: Sequence[float], scene_crs: str) -> list[BoxRecord]:
    """Parse a box file by its extension (.csv, .geojson/.json, .gpkg)."""
    lower = source.lower()
    if lower.endswith(".gpkg"):
        return read_gpkg_boxes(data, source, transform, scene_crs)
    text = data.decode("utf-8-sig")
    if lower.endswith(".csv"):
        return read_csv_boxes(text, source)
    if lower.endswith((".geojson", ".json")):
        return read_geojson_boxes(text, source, transform, scene_crs)
    raise InputError(f"{source}: unknown box file type; use .csv (pixel boxes), .geojson or .gpkg (scene CRS)")
