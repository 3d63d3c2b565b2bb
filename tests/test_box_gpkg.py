"""GeoPackage box input of the `boxes` task: a minimal valid GeoPackage written here with sqlite3."""

from __future__ import annotations

import json
import sqlite3
import struct
from pathlib import Path

import pytest

from rrsis.config.boxes import BoxesConfig
from rrsis.config.map import MapConfig
from rrsis.errors import InputError
from rrsis.geo.raster import read_info
from rrsis.pipeline.box_inputs import BoxRecord, read_boxes
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import scene_row
from rrsis.pipeline.run_boxes import box_plan, expand_boxes

# north-up, 300 m pixels, origin (100000, 5000000): pixel (col, row) = ((x - 100000) / 300, (5000000 - y) / 300)
TF = (300.0, 0.0, 100000.0, 0.0, -300.0, 5000000.0)


def wkb_polygon(ring: list[tuple[float, float]], little: bool = True) -> bytes:
    o = "<" if little else ">"
    out = bytes([1 if little else 0]) + struct.pack(f"{o}II", 3, 1) + struct.pack(f"{o}I", len(ring))
    return out + b"".join(struct.pack(f"{o}2d", x, y) for x, y in ring)


def wkb_multipoint_z(points: list[tuple[float, float, float]]) -> bytes:
    """ISO WKB MultiPoint Z (type 1004) of Point Z (1001) members, big endian."""
    body = b"".join(b"\x00" + struct.pack(">I3d", 1001, *p) for p in points)
    return b"\x00" + struct.pack(">II", 1004, len(points)) + body


def gpb(wkb: bytes, srs_id: int, envelope: tuple[float, float, float, float] | None, *, flags_extra: int = 0) -> bytes:
    """GeoPackageBinary: 'GP', version 0, flags (envelope code 1 or 0, little-endian header), srs_id, env, WKB."""
    code = 1 if envelope else 0
    head = b"GP" + bytes([0, (code << 1) | 1 | flags_extra]) + struct.pack("<i", srs_id)
    return head + (struct.pack("<4d", *envelope) if envelope else b"") + wkb


def write_gpkg(
    path: Path,
    features: list[tuple[bytes, str | None]],
    *,
    epsg: int = 32618,
    extra_table: bool = False,
) -> Path:
    """A GeoPackage with one feature table `boxes` (fid, geom, box_id) in EPSG:`epsg` (the spec's tables)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA application_id = 1196444487")  # 'GPKG'
    con.execute(
        "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT "
        "NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT)"
    )
    con.executemany(
        "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)",
        [
            ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", ""),
            ("Undefined geographic SRS", 0, "NONE", 0, "undefined", ""),
            ("WGS 84", 4326, "EPSG", 4326, "GEOGCS[...]", ""),
            (f"EPSG {epsg}", epsg, "EPSG", epsg, "PROJCS[...]", ""),
        ],
    )
    con.execute(
        "CREATE TABLE gpkg_contents (table_name TEXT PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT, "
        "description TEXT, last_change DATETIME, min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE, "
        "srs_id INTEGER)"
    )
    con.execute(
        "CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL, "
        "geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL)"
    )
    tables = ["boxes", "other"] if extra_table else ["boxes"]
    for table in tables:
        con.execute(f"INSERT INTO gpkg_contents VALUES (?, 'features', ?, '', '', 0, 0, 0, 0, {epsg})", (table, table))
        con.execute(f"INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', 'GEOMETRY', {epsg}, 0, 0)", (table,))
        con.execute(f"CREATE TABLE {table} (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, box_id TEXT)")
    con.executemany("INSERT INTO boxes (geom, box_id) VALUES (?, ?)", features)
    con.commit()
    con.close()
    return path


def test_gpkg_boxes_from_envelope_and_from_wkb(tmp_path: Path) -> None:
    # pixel box (10, 20)-(40, 50) is world x 103000..112000, y 4985000..4994000
    ring = [(103000.0, 4994000.0), (112000.0, 4994000.0), (112000.0, 4985000.0), (103000.0, 4994000.0)]
    with_env = gpb(wkb_polygon(ring), 32618, (103000.0, 112000.0, 4985000.0, 4994000.0))  # minx, maxx, miny, maxy
    no_env = gpb(wkb_polygon(ring, little=False), 32618, None)  # bounds from the big-endian WKB itself
    points = gpb(wkb_multipoint_z([(100300.0, 4999400.0, 5.0), (100900.0, 4998800.0, 7.0)]), 32618, None)
    path = write_gpkg(tmp_path / "b.gpkg", [(with_env, "lake"), (no_env, None), (points, "pts")])
    boxes = read_boxes(path.read_bytes(), str(path), TF, "EPSG:32618")
    assert [b.box_id for b in boxes] == ["lake", "2", "pts"]  # the box_id column, else the fid
    assert boxes[0].xyxy() == pytest.approx((10.0, 20.0, 40.0, 50.0))
    assert boxes[1].xyxy() == pytest.approx((10.0, 20.0, 40.0, 50.0))
    assert boxes[2] == BoxRecord("pts", pytest.approx(1.0), pytest.approx(2.0), pytest.approx(3.0), pytest.approx(4.0))


def test_gpkg_in_another_crs_or_malformed_is_one_line_naming_the_file(tmp_path: Path) -> None:
    ring = [(103000.0, 4994000.0), (112000.0, 4985000.0), (103000.0, 4994000.0)]
    good = gpb(wkb_polygon(ring), 32633, None)
    other = write_gpkg(tmp_path / "utm33.gpkg", [(good, "a")], epsg=32633)
    with pytest.raises(InputError, match=r"utm33\.gpkg: table 'boxes' is in EPSG:32633, the scene is in EPSG:32618"):
        read_boxes(other.read_bytes(), str(other), TF, "EPSG:32618")
    cases = {
        "junk.gpkg": (b"not a database at all" * 10, "not a readable GeoPackage"),
        "two.gpkg": (write_gpkg(tmp_path / "t.gpkg", [(good, "a")], extra_table=True).read_bytes(), "found 2"),
        "magic.gpkg": (write_gpkg(tmp_path / "m.gpkg", [(b"XX" + good[2:], "a")]).read_bytes(), "'GP' magic"),
        "empty.gpkg": (
            write_gpkg(tmp_path / "e.gpkg", [(gpb(b"", 32618, None, flags_extra=16), "a")]).read_bytes(),
            "empty",
        ),
        "trunc.gpkg": (write_gpkg(tmp_path / "w.gpkg", [(good[:-5], "a")]).read_bytes(), "malformed WKB"),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(InputError, match=reason) as err:
            read_boxes(data, name, TF, "EPSG:32618")
        assert str(err.value).startswith(f"{name}: ") and "\n" not in str(err.value)


def test_gpkg_boxes_plan_on_the_real_scene(samples: Path, tmp_path: Path) -> None:
    """The `boxes.path` of a .gpkg goes through the same planning as a CSV (real scene metadata)."""
    scene = str(samples / "rasterio" / "RGB.byte.tif")
    info = read_info(scene)
    a, _, c, _, e, f = info.transform[:6]
    x1, y1, x2, y2 = c + a * 230, f + e * 300, c + a * 330, f + e * 380  # pixel box (230, 300)-(330, 380)
    ring = [(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)]
    epsg = int(str(info.crs).split(":")[1])
    path = write_gpkg(tmp_path / "boxes.gpkg", [(gpb(wkb_polygon(ring), epsg, None), "across")], epsg=epsg)
    cfg = MapConfig(task="boxes", input=[scene])
    cfg.tiling.tile_px, cfg.tiling.overlap_px = 256, 32
    plan = box_plan(cfg, BoxesConfig(path=str(path)), str(tmp_path / "run"))
    rows = expand_boxes(scene_row(SceneRef("rgb", scene), verify=False), plan=plan)  # as a planning task does
    assert json.loads(rows[0]["notes"]) == [] and len(rows) == 1  # no box failed to plan
    assert rows[0]["box_ids"] == '["across"]' and rows[0]["tile_id"] == "r00001_c00001"
    ox, oy = rows[0]["win_col_off"], rows[0]["win_row_off"]
    assert json.loads(rows[0]["boxes"]) == [pytest.approx([230 - ox, 300 - oy, 330 - ox, 380 - oy])]
