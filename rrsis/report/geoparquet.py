"""All polygons of a run as one GeoParquet dataset, one file per scene: `polygons/<scene_id>.parquet`.

Each scene's GeoJSON (EPSG:4326, RFC 7946) becomes rows with WKB geometry and GeoParquet 1.1 `geo`
metadata (CRS omitted = OGC:CRS84, lon/lat), so `pyarrow.dataset`, GeoPandas and DuckDB read the folder as
one table. Scenes are converted one at a time, so memory follows the largest scene, not the run. Files of
scenes that are no longer in the run are removed, so every polygon of the run is in the dataset once.

A map run converts each scene in its products task (`scene_polygons`), beside the next scenes' inference;
the report at the run's end then converts only the scenes without a file (`write_polygons(reuse=True)`):
done there for every scene, the conversion (~2.4 s a scene of 21 k polygons) was the run's tail, and a
3,000-scene run would have spent two hours on it after its last tile.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from rrsis import storage
from rrsis.errors import InputError

GEOPARQUET_VERSION = "1.1.0"
#: The run's folder of scene partitions.
POLYGONS = "polygons"
#: Typed columns of every partition; other feature properties go, as JSON text, into `properties`.
SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("feature_id", pa.int64()),
        ("class", pa.string()),
        ("area_m2", pa.float64()),
        ("query", pa.string()),
        ("score", pa.float64()),
        ("properties", pa.string()),
        ("geometry", pa.binary()),
    ]
)
TYPED = ("id", "class", "area_m2", "query", "score")
WKB_TYPES = {"Polygon": 3, "MultiPolygon": 6}


def ring_wkb(ring: Sequence[Sequence[float]]) -> bytes:
    coords = [c for point in ring for c in point[:2]]
    return struct.pack(f"<I{len(coords)}d", len(ring), *coords)


def polygon_wkb(rings: Sequence[Sequence[Sequence[float]]]) -> bytes:
    return struct.pack("<BII", 1, 3, len(rings)) + b"".join(ring_wkb(r) for r in rings)


def geometry_wkb(geometry: dict[str, Any]) -> bytes:
    """ISO WKB (little-endian, 2D) of a GeoJSON Polygon or MultiPolygon."""
    kind = geometry.get("type")
    if kind == "Polygon":
        return polygon_wkb(geometry["coordinates"])
    if kind == "MultiPolygon":
        parts = geometry["coordinates"]
        return struct.pack("<BII", 1, 6, len(parts)) + b"".join(polygon_wkb(p) for p in parts)
    raise InputError(f"geometry type {kind!r} is not a polygon")


def bounds(geometries: Iterable[dict[str, Any]]) -> list[float] | None:
    xs: list[float] = []
    ys: list[float] = []
    for g in geometries:
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        for poly in polys:
            for ring in poly:
                xs += [p[0] for p in ring]
                ys += [p[1] for p in ring]
    return [min(xs), min(ys), max(xs), max(ys)] if xs else None


def features_table(scene_id: str, features: list[dict[str, Any]]) -> tuple[pa.Table, dict[str, Any]]:
    """A scene's polygon features as a table in `SCHEMA` and the GeoParquet metadata of its geometry column."""
    rows = []
    geoms = []
    for i, f in enumerate(features):
        geom = f.get("geometry") or {}
        if geom.get("type") not in WKB_TYPES:
            continue
        props = dict(f.get("properties") or {})
        rest = {k: v for k, v in props.items() if k not in TYPED}
        rows.append(
            {
                "scene_id": scene_id,
                "feature_id": int(props.get("id", i)),
                "class": None if props.get("class") is None else str(props["class"]),
                "area_m2": None if props.get("area_m2") is None else float(props["area_m2"]),
                "query": None if props.get("query") is None else str(props["query"]),
                "score": None if props.get("score") is None else float(props["score"]),
                "properties": json.dumps(rest, sort_keys=True) if rest else None,
                "geometry": geometry_wkb(geom),
            }
        )
        geoms.append(geom)
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted({g["type"] for g in geoms}),
    }
    box = bounds(geoms)
    if box:
        column["bbox"] = box
    return pa.Table.from_pylist(rows, schema=SCHEMA), column


def geo_metadata(column: dict[str, Any]) -> bytes:
    return json.dumps(
        {"version": GEOPARQUET_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}
    ).encode()


class PolygonRows:
    """One scene's water polygons gathered as partition rows while its GeoJSON is written
    (`rrsis.pipeline.products.build_vectors`): `write` stores the same file `write_scene_polygons` would
    build from that GeoJSON, without parsing it again. Rings come as the (N, 2) float64 lon/lat rows the
    GeoJSON is written from (the JSON's shortest round-trip digits parse back to these very doubles), so
    their WKB is the rows' bytes."""

    def __init__(self, scene_id: str) -> None:
        self.scene_id = scene_id
        self.ids: list[int] = []
        self.areas: list[float] = []
        self.wkb: list[bytes] = []
        self.box: list[float] | None = None

    def add(self, feature_id: int, area_m2: float, rings: Sequence[np.ndarray]) -> None:
        """One Polygon feature (class water) with its rings, each (N, 2) lon/lat."""
        parts = [struct.pack("<BII", 1, 3, len(rings))]
        for ring in rings:
            parts += [struct.pack("<I", len(ring)), np.ascontiguousarray(ring[:, :2], dtype="<f8").tobytes()]
        self.ids.append(int(feature_id))
        self.areas.append(float(area_m2))
        self.wkb.append(b"".join(parts))

    def extend_bounds(self, points: np.ndarray) -> None:
        """Grow the bounding box by every ring point of a chunk of features (`add`ed or to be)."""
        if len(points):
            lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
            box = [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])]
            if self.box is not None:
                box = [*map(min, self.box[:2], box[:2]), *map(max, self.box[2:], box[2:])]
            self.box = box

    def write(self, uri: str) -> int:
        n = len(self.ids)
        none = pa.nulls(n, pa.string())
        columns = [pa.array([self.scene_id] * n, pa.string()), pa.array(self.ids, pa.int64()),
                   pa.array(["water"] * n, pa.string()), pa.array(self.areas, pa.float64()), none,
                   pa.nulls(n, pa.float64()), none, pa.array(self.wkb, pa.binary())]  # fmt: skip
        column: dict[str, Any] = {"encoding": "WKB", "geometry_types": ["Polygon"] if n else []}
        if self.box is not None and n:
            column["bbox"] = self.box
        return _write_partition(uri, pa.Table.from_arrays(columns, schema=SCHEMA), column)


def write_scene_polygons(uri: str, scene_id: str, vectors_uri: str) -> int:
    """Convert one scene's GeoJSON into a GeoParquet file at `uri`; the number of polygons written."""
    try:
        collection = orjson.loads(storage.get_bytes(vectors_uri))
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{vectors_uri} is not GeoJSON: {exc}") from exc
    return _write_partition(uri, *features_table(scene_id, list(collection.get("features") or [])))


def _write_partition(uri: str, table: pa.Table, column: dict[str, Any]) -> int:
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = geo_metadata(column)
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.put_bytes(uri, buf.getvalue())
    return table.num_rows


def polygons_uri(run_uri: str, scene_id: str) -> str:
    """Where a scene's partition of the run's GeoParquet dataset lives."""
    return storage.join(run_uri, POLYGONS, f"{scene_id}.parquet")


def scene_polygons(run_uri: str, scene_id: str, vectors_uri: str, write: bool) -> None:
    """A scene's partition, from the GeoJSON its products task just wrote (`write`: the run builds a report),
    or, without a report, no partition at all: a file from an earlier attempt would no longer match."""
    uri = polygons_uri(run_uri, scene_id)
    if write:
        write_scene_polygons(uri, scene_id, vectors_uri)
    else:
        storage.delete(uri)  # idempotent: no file is no error


def write_polygons(run_uri: str, vectors: dict[str, str], reuse: bool = False) -> dict[str, str]:
    """`polygons/<scene_id>.parquet` for every scene_id -> vectors URI; stale scene files are deleted.

    `reuse`: keep the files that exist (a map run wrote them with the scenes' products, `scene_polygons`)
    and convert only the missing ones. Returns scene_id -> partition URI.
    """
    folder = storage.join(run_uri, POLYGONS)
    out = {sid: polygons_uri(run_uri, sid) for sid in vectors}
    keep = set(out.values())
    present = set()
    for uri in storage.list_prefix(folder + "/"):
        if uri in keep:
            present.add(uri)
        elif uri.endswith(".parquet"):
            storage.delete(uri)
    for sid, vec in vectors.items():
        if not (reuse and out[sid] in present):
            write_scene_polygons(out[sid], sid, vec)
    return out
