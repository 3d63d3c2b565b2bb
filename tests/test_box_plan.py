"""Box inputs and the box -> tile rule of the `boxes` map task: one owner per box, its window covers it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rrsis.errors import InputError
from rrsis.geo.tiling import plan_tiles
from rrsis.pipeline.box_inputs import BoxRecord, read_boxes, world_to_pixel
from rrsis.pipeline.box_plan import owner, plan_box_groups

# UTM-like north-up transform: 300 m pixels, origin (100000, 5000000)
TF = (300.0, 0.0, 100000.0, 0.0, -300.0, 5000000.0)


def test_csv_boxes() -> None:
    data = b"id,x1,y1,x2,y2\nA,1,2,30,40\nB,5.5,6,7,8\n"
    assert read_boxes(data, "b.csv", TF, "EPSG:32618") == [BoxRecord("A", 1, 2, 30, 40), BoxRecord("B", 5.5, 6, 7, 8)]
    with pytest.raises(InputError, match=r"b\.csv: line 2 \(id 'A'\)"):
        read_boxes(b"id,x1,y1,x2,y2\nA,10,2,3,40\n", "b.csv", TF, "EPSG:32618")
    with pytest.raises(InputError, match="missing CSV column"):
        read_boxes(b"id,x1,y1,x2\nA,1,2,3\n", "b.csv", TF, "EPSG:32618")
    with pytest.raises(InputError, match="appears twice"):
        read_boxes(b"id,x1,y1,x2,y2\nA,1,2,3,4\nA,1,2,3,4\n", "b.csv", TF, "EPSG:32618")


def test_geojson_boxes_map_through_the_inverse_transform() -> None:
    # pixel (10, 20) is world (100000 + 300*10, 5000000 - 300*20) = (103000, 4994000); (40, 50) -> (112000, 4985000)
    assert world_to_pixel(TF, 103000.0, 4994000.0) == pytest.approx((10.0, 20.0))
    ring = [[103000.0, 4994000.0], [112000.0, 4994000.0], [112000.0, 4985000.0], [103000.0, 4994000.0]]
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "id": 7, "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}},
            {"type": "Feature", "properties": {"id": "pt"}, "geometry": {"type": "MultiPoint", "coordinates": ring}},
        ],
    }
    boxes = read_boxes(json.dumps(doc).encode(), "b.geojson", TF, "EPSG:32618")
    assert [b.box_id for b in boxes] == ["7", "pt"]
    assert boxes[0].xyxy() == pytest.approx((10.0, 20.0, 40.0, 50.0))
    doc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4326"}}
    with pytest.raises(InputError, match="reproject"):
        read_boxes(json.dumps(doc).encode(), "b.geojson", TF, "EPSG:32618")


def _tiles() -> list:
    # 1000 x 600 scene, 256 px tiles, 32 px overlap: stride 224, cores [0,224), [224,448), ...
    return plan_tiles(1000, 600, 256, 32, scene_id="s", scene_transform=TF, crs="EPSG:32618")


def test_a_box_across_a_tile_border_has_one_owner_whose_window_covers_it() -> None:
    tiles = _tiles()
    box = BoxRecord("cross", 150.0, 50.0, 310.0, 90.0)  # centre x 230 -> core column 1 ([224, 448))
    groups, failures = plan_box_groups(tiles, [box], 1000, 600, TF)
    assert failures == [] and len(groups) == 1
    (g,) = groups
    assert (g.tile.row, g.tile.col) == (0, 1)
    w = g.tile.window
    # column 1's window normally starts at 224 - 16 = 208 > 150: shifted left to 150 to hold the whole box
    assert (w.col_off, w.width, w.height) == (150, 256, 256)
    assert g.boxes_in_window().tolist() == [[0.0, 50.0, 160.0, 90.0]]
    assert g.tile.transform[2] == pytest.approx(100000.0 + 150 * 300.0)  # window georeferencing follows


def test_boxes_that_do_not_fit_together_split_into_groups_and_oversized_boxes_fail() -> None:
    tiles = _tiles()
    boxes = [
        BoxRecord("left", 0.0, 10.0, 200.0, 60.0),  # centre (100, 35): tile (0, 0)
        BoxRecord("right", 60.0, 70.0, 290.0, 100.0),  # centre (175, 85): tile (0, 0); union 0..290 > 256
        BoxRecord("huge", 0.0, 0.0, 400.0, 100.0),  # 400 px wide > tile 256
        BoxRecord("outside", 1200.0, 10.0, 1300.0, 20.0),
    ]
    groups, failures = plan_box_groups(tiles, boxes, 1000, 600, TF)
    assert sorted(g.group_id for g in groups) == ["r00000_c00000_g0", "r00000_c00000_g1"]
    assert sorted(b.box_id for g in groups for b in g.boxes) == ["left", "right"]
    reasons = dict(failures)
    assert "tiling.tile_px=256" in reasons["huge"] and "outside the scene" in reasons["outside"]


def test_nearby_boxes_in_different_tiles_share_one_window_and_far_boxes_do_not() -> None:
    tiles = _tiles()
    boxes = [
        BoxRecord("a", 180.0, 20.0, 220.0, 60.0),  # centre (200, 40): tile (0, 0)
        BoxRecord("b", 240.0, 200.0, 300.0, 250.0),  # centre (270, 225): tile (1, 1); union 180..300 x 20..250
        BoxRecord("far", 800.0, 400.0, 850.0, 450.0),  # centre (825, 425): tile (1, 3)
    ]
    groups, failures = plan_box_groups(tiles, boxes, 1000, 600, TF)
    assert failures == []
    assert [(g.group_id, [b.box_id for b in g.boxes]) for g in groups] == [
        ("r00001_c00001_g0", ["a", "b"]),  # owned by b's tile (the larger box), one window for both
        ("r00001_c00003_g0", ["far"]),
    ]
    shared = groups[0].tile.window
    assert (shared.width, shared.height) == (256, 256)
    assert (shared.col_off, shared.row_off) == (180, 20)  # tile (1, 1)'s window (208, 208) shifted to hold a
    assert groups[0].boxes_in_window().tolist() == [[0.0, 0.0, 40.0, 40.0], [60.0, 180.0, 120.0, 230.0]]


def reference_packs(boxes: list[BoxRecord], size_px: int) -> set[frozenset[str]]:
    """The packing rule written plainly: largest first, first earlier window that still fits, all windows
    tried (no grid index); a union fits when its outward-rounded extent is at most `size_px` per axis."""
    packs: list[list[BoxRecord]] = []
    for box in sorted(boxes, key=lambda b: (-(b.x2 - b.x1) * (b.y2 - b.y1), b.box_id)):
        for pack in packs:
            members = [*pack, box]
            w = math.ceil(max(b.x2 for b in members)) - math.floor(min(b.x1 for b in members))
            h = math.ceil(max(b.y2 for b in members)) - math.floor(min(b.y1 for b in members))
            if w <= size_px and h <= size_px:
                pack.append(box)
                break
        else:
            packs.append([box])
    return {frozenset(b.box_id for b in pack) for pack in packs}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_box_is_planned_exactly_once_and_seen_whole(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tiles = _tiles()
    boxes = []
    for i in range(300):
        w, h = rng.uniform(1, 200, 2)
        x, y = rng.uniform(0, 1000 - w), rng.uniform(0, 600 - h)
        boxes.append(BoxRecord(f"b{i}", float(x), float(y), float(x + w), float(y + h)))
    groups, failures = plan_box_groups(tiles, boxes, 1000, 600, TF)
    assert failures == []
    planned = [b.box_id for g in groups for b in g.boxes]
    assert sorted(planned) == sorted(b.box_id for b in boxes)
    assert {frozenset(b.box_id for b in g.boxes) for g in groups} == reference_packs(boxes, 256)
    assert any(len({owner(tiles, *b.centre_xy) for b in g.boxes}) > 1 for g in groups)  # windows span tiles
    for g in groups:
        win = g.tile.window
        assert (win.width, win.height) == (256, 256)
        assert 0 <= win.col_off <= 1000 - 256 and 0 <= win.row_off <= 600 - 256
        for b in g.boxes:
            assert win.col_off <= b.x1 and b.x2 <= win.col_end and win.row_off <= b.y1 and b.y2 <= win.row_end
    # the group's tile owns its largest box's centre
    for g in groups:
        first = min(g.boxes, key=lambda b: (-(b.x2 - b.x1) * (b.y2 - b.y1), b.box_id))
        cx, cy = first.centre_xy
        core = g.tile.core
        assert core.col_off <= cx < core.col_end and core.row_off <= cy < core.row_end
