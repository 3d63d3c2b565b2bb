"""Areas in square metres for any CRS, through a local Lambert azimuthal equal-area projection.

Why LAEA: it is equal-area everywhere (except at the antipode of its centre), so projecting a pixel or a
polygon into a LAEA centred near it and taking the planar area gives the true area on the WGS84 ellipsoid
(PROJ's ellipsoidal LAEA uses the authalic latitude) for geographic (EPSG:4326) and projected scenes alike,
without pyproj or shapely. Used for per-tile water area (stats) and per-polygon `area_m2` (vectors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_geom

WGS84 = "EPSG:4326"


def laea_at(lon: float, lat: float) -> str:
    """A PROJ string of the WGS84 equal-area projection centred at (lon, lat)."""
    return f"+proj=laea +lat_0={lat:.6f} +lon_0={lon:.6f} +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"


def lonlat(crs: str, x: float, y: float) -> tuple[float, float]:
    """(lon, lat) of one point given in `crs`."""
    xs, ys = warp_transform(CRS.from_user_input(crs), WGS84, [x], [y])
    return float(xs[0]), float(ys[0])


def laea_for_window(transform: Sequence[float], crs: str, col_off: int, row_off: int, width: int, height: int) -> str:
    """The LAEA centred on the middle of a pixel window of a raster."""
    aff = Affine(*transform[:6])
    col, row = col_off + width / 2.0, row_off + height / 2.0
    x, y = aff.a * col + aff.b * row + aff.c, aff.d * col + aff.e * row + aff.f
    return laea_at(*lonlat(crs, x, y))


def _shoelace(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Areas of quads along axis 1 (xs, ys of shape (N, 4), corners in ring order)."""
    return 0.5 * np.abs(np.sum(xs * np.roll(ys, -1, axis=1) - np.roll(xs, -1, axis=1) * ys, axis=1))


def row_pixel_areas_m2(
    transform: Sequence[float], crs: str, col_off: int, row_off: int, width: int, height: int
) -> np.ndarray:
    """Area (m²) of one pixel in each row of a window, taken at the window's middle column.

    Pixel area varies with latitude (rows) in geographic scenes and only by the projection's scale error in
    projected ones, so one pixel per row is enough at tile scale.
    """
    laea = laea_for_window(transform, crs, col_off, row_off, width, height)
    aff = Affine(*transform[:6])
    col = col_off + width // 2
    rows = np.arange(row_off, row_off + height, dtype=np.float64)
    corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    px = np.stack([np.full_like(rows, col + dc) for dc, _ in corners], axis=1)
    py = np.stack([rows + dr for _, dr in corners], axis=1)
    x = aff.a * px + aff.b * py + aff.c
    y = aff.d * px + aff.e * py + aff.f
    lx, ly = warp_transform(CRS.from_user_input(crs), laea, x.ravel().tolist(), y.ravel().tolist())
    return _shoelace(np.asarray(lx).reshape(x.shape), np.asarray(ly).reshape(y.shape))


def _ring_area(ring: Sequence[Sequence[float]] | np.ndarray) -> float:
    pts = np.asarray(ring, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def polygon_area_m2(geometry: dict[str, Any], crs: str, laea: str) -> float:
    """Area of a GeoJSON-like Polygon/MultiPolygon in `crs`: outer rings minus holes, in the LAEA."""
    projected = transform_geom(CRS.from_user_input(crs), laea, geometry)
    polygons = projected["coordinates"] if projected["type"] == "MultiPolygon" else [projected["coordinates"]]
    total = 0.0
    for rings in polygons:
        total += _ring_area(rings[0]) - sum(_ring_area(hole) for hole in rings[1:])
    return total


def project_rings(polygons: list[dict[str, Any]], crs: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ring of every Polygon in `crs`, projected to `target` with ONE transform call.

    Returns the (N, 2) concatenation of all rings (outer ring of each polygon first) and each ring's length.
    Batching matters: a mask can have hundreds of thousands of polygons, and one PROJ call (or one numpy
    call) per polygon would dominate the run.
    """
    rings = [np.asarray(ring, dtype=np.float64) for poly in polygons for ring in poly["coordinates"]]
    if not rings:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    xy = np.concatenate(rings)
    tx, ty = warp_transform(CRS.from_user_input(crs), target, xy[:, 0], xy[:, 1])
    return np.column_stack([tx, ty]), np.array([len(r) for r in rings], dtype=np.int64)


def ring_areas(xy: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Planar area of each ring of a concatenation (shoelace in one vectorised pass; open or closed rings)."""
    if not len(lengths):
        return np.zeros(0)
    x, y = xy[:, 0], xy[:, 1]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = starts + lengths - 1
    cross = np.zeros(len(x))
    cross[:-1] = x[:-1] * y[1:] - x[1:] * y[:-1]
    cross[ends] = x[ends] * y[starts] - x[starts] * y[ends]  # the closing edge, not the edge to the next ring
    return 0.5 * np.abs(np.add.reduceat(cross, starts))  # type: ignore[no-any-return]


def polygon_areas(polygons: list[dict[str, Any]], ring_area: np.ndarray) -> np.ndarray:
    """Per polygon: outer ring area minus its holes, from `ring_areas` over `project_rings`' output."""
    counts = np.array([len(poly["coordinates"]) for poly in polygons], dtype=np.int64)
    if not len(counts):
        return np.zeros(0)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    signed = -ring_area.copy()
    signed[first] = ring_area[first]
    return np.add.reduceat(signed, first)  # type: ignore[no-any-return]
