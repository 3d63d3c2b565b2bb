"""Read the one feature table of an OGC GeoPackage with the stdlib `sqlite3`: geometry bounds and attributes.

No GDAL/OGR bindings are installed, and a GeoPackage is an SQLite database, so this reads exactly what the
`boxes` task needs. Facts used from the OGC GeoPackage encoding standard (12-128r18):
- `gpkg_contents` lists user tables; `data_type = 'features'` marks a feature table.
- `gpkg_geometry_columns` (table_name, column_name, geometry_type_name, srs_id, z, m) names its geometry
  column and its spatial reference system id, which `gpkg_spatial_ref_sys` (srs_id, organization,
  organization_coordsys_id, definition) resolves, e.g. EPSG / 32618.
- A geometry value is a GeoPackageBinary blob: magic "GP", version byte 0 (= version 1), a flags byte
  (bits 7-6 reserved, bit 5 extended type, bit 4 empty geometry, bits 3-1 envelope code 0-4 giving 0, 4,
  6, 6 or 8 doubles as [minx, maxx, miny, maxy, (z/m pairs)], bit 0 header byte order, 1 = little endian),
  an int32 srs_id, the envelope, then the geometry as (ISO) WKB.
The bounds of a geometry come from its envelope when present, else from every coordinate of its WKB.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rrsis.errors import InputError

ENVELOPE_DOUBLES = {0: 0, 1: 4, 2: 6, 3: 6, 4: 8}
WKB_DIMS = {0: 2, 1: 3, 2: 3, 3: 4}  # ISO WKB type // 1000: XY, XYZ, XYM, XYZM
EWKB_Z, EWKB_M = 0x80000000, 0x40000000  # PostGIS extended flags, accepted too


@dataclass(frozen=True)
class GpkgSrs:
    srs_id: int
    organization: str
    code: int
    definition: str


@dataclass(frozen=True)
class GpkgFeature:
    fid: int
    properties: dict[str, Any]
    bounds: tuple[float, float, float, float]  # minx, miny, maxx, maxy in the layer's CRS


@dataclass(frozen=True)
class GpkgLayer:
    table: str
    geometry_column: str
    srs: GpkgSrs
    features: list[GpkgFeature]


def read_gpkg_layer(data: bytes, source: str) -> GpkgLayer:
    """The single feature table of a GeoPackage (bytes); any malformation is one InputError naming `source`."""
    con = sqlite3.connect(":memory:")
    try:
        con.deserialize(data)
        return _layer(con, source)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{source}: not a readable GeoPackage (SQLite: {exc})") from exc
    finally:
        con.close()


def _layer(con: sqlite3.Connection, source: str) -> GpkgLayer:
    tables = [r[0] for r in con.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'features'")]
    if len(tables) != 1:
        found = ", ".join(tables) or "none"
        raise InputError(f"{source}: expected one feature table in gpkg_contents, found {len(tables)} ({found})")
    table = tables[0]
    geom = con.execute(
        "SELECT column_name, srs_id FROM gpkg_geometry_columns WHERE table_name = ?", (table,)
    ).fetchone()
    if geom is None:
        raise InputError(f"{source}: feature table {table!r} has no row in gpkg_geometry_columns")
    column, srs_id = str(geom[0]), int(geom[1])
    srs = con.execute(
        "SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys WHERE srs_id = ?",
        (srs_id,),
    ).fetchone()
    if srs is None:
        raise InputError(f"{source}: srs_id {srs_id} of table {table!r} is not in gpkg_spatial_ref_sys")
    info = con.execute(f'PRAGMA table_info("{_ident(table)}")').fetchall()  # (cid, name, type, notnull, dflt, pk)
    pk = next((str(c[1]) for c in info if c[5]), "")
    if not pk:
        raise InputError(f"{source}: feature table {table!r} has no integer primary key (fid)")
    names = [str(c[1]) for c in info]
    cursor = con.execute(f'SELECT * FROM "{_ident(table)}" ORDER BY "{_ident(pk)}"')
    features = []
    for values in cursor:
        row = dict(zip(names, values, strict=True))
        fid = int(row.pop(pk))
        blob = row.pop(column)
        if not isinstance(blob, bytes):
            raise InputError(f"{source}: table {table!r} feature {fid}: column {column!r} holds no geometry blob")
        features.append(GpkgFeature(fid, row, geometry_bounds(blob, f"{source}: table {table!r} feature {fid}")))
    return GpkgLayer(table, column, GpkgSrs(srs_id, str(srs[0]), int(srs[1]), str(srs[2])), features)


def _ident(name: str) -> str:
    return name.replace('"', '""')


def geometry_bounds(blob: bytes, where: str) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a GeoPackageBinary geometry."""
    if len(blob) < 8 or blob[:2] != b"GP":
        raise InputError(f"{where}: geometry is not a GeoPackageBinary blob (no 'GP' magic)")
    if blob[2] != 0:
        raise InputError(f"{where}: GeoPackageBinary version {blob[2]} (only version 1, byte 0, exists)")
    flags = blob[3]
    if flags & 0b0010_0000:
        raise InputError(f"{where}: extended GeoPackageBinary geometries are not supported")
    if flags & 0b0001_0000:
        raise InputError(f"{where}: empty geometry, no box")
    code = (flags >> 1) & 0b111
    if code not in ENVELOPE_DOUBLES:
        raise InputError(f"{where}: invalid envelope contents indicator {code}")
    order = "<" if flags & 1 else ">"
    n = ENVELOPE_DOUBLES[code]
    if len(blob) < 8 + 8 * n:
        raise InputError(f"{where}: truncated GeoPackageBinary header")
    if n:
        minx, maxx, miny, maxy = struct.unpack_from(f"{order}4d", blob, 8)
        return minx, miny, maxx, maxy
    try:
        pts = list(_wkb_points(memoryview(blob)[8:], 0)[0])
    except (struct.error, IndexError, ValueError) as exc:
        raise InputError(f"{where}: malformed WKB ({exc})") from exc
    if not pts:
        raise InputError(f"{where}: geometry has no coordinates, no box")
    xs, ys = zip(*pts, strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _wkb_points(buf: memoryview, pos: int) -> tuple[Iterator[tuple[float, float]], int]:
    """Every (x, y) of the WKB geometry at `pos`, and the position after it (ISO and EWKB Z/M)."""
    order = "<" if buf[pos] == 1 else ">"
    (raw,) = struct.unpack_from(f"{order}I", buf, pos + 1)
    pos += 5
    dims = 2 + bool(raw & EWKB_Z) + bool(raw & EWKB_M)
    if raw & 0x20000000:  # EWKB SRID follows the type
        pos += 4
    kind = raw & 0x0FFFFFFF
    if kind >= 1000:
        if kind // 1000 not in WKB_DIMS:
            raise ValueError(f"WKB type {kind}")
        dims, kind = WKB_DIMS[kind // 1000], kind % 1000
    pts: list[tuple[float, float]] = []

    def read_points(count: int) -> None:
        nonlocal pos
        for _ in range(count):
            x, y = struct.unpack_from(f"{order}2d", buf, pos)
            pts.append((x, y))
            pos += 8 * dims

    def count() -> int:
        nonlocal pos
        (n,) = struct.unpack_from(f"{order}I", buf, pos)
        pos += 4
        return int(n)

    if kind == 1:  # Point (NaN coordinates = empty point)
        read_points(1)
        pts = [p for p in pts if p[0] == p[0]]
    elif kind == 2:  # LineString
        read_points(count())
    elif kind == 3:  # Polygon
        for _ in range(count()):
            read_points(count())
    elif kind in (4, 5, 6, 7):  # Multi* and GeometryCollection: nested WKB geometries
        for _ in range(count()):
            sub, pos = _wkb_points(buf, pos)
            pts.extend(sub)
    else:
        raise ValueError(f"unsupported WKB geometry type {kind}")
    return iter(pts), pos
