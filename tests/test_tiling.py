"""plan_tiles geometry: exact partition by cores, fixed-size windows, context, transforms equal rasterio's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio.windows
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from rrsis.errors import ConfigError
from rrsis.geo.tiling import PixelWindow, Tile, plan_tiles, window_transform

SCENE_TF = (10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, int, int, int]:
    # sizes up to ~8 strides keep a plan small (hypothesis runs hundreds) while covering every branch
    tile_px = draw(st.integers(1, 64))
    overlap_px = draw(st.integers(0, tile_px - 1))
    stride_px = tile_px - overlap_px
    width_px = draw(st.integers(1, 8 * stride_px + tile_px))
    height_px = draw(st.integers(1, 8 * stride_px + tile_px))
    return width_px, height_px, tile_px, overlap_px


@settings(max_examples=150, deadline=None)
@given(plans())
def test_cores_partition_scene_exactly(case: tuple[int, int, int, int]) -> None:
    width_px, height_px, tile_px, overlap_px = case
    count = np.zeros((height_px, width_px), dtype=np.int32)
    for tile in plan_tiles(width_px, height_px, tile_px, overlap_px):
        count[tile.core.slices()] += 1
    assert (count == 1).all()


@settings(max_examples=150, deadline=None)
@given(plans())
def test_windows_fixed_size_inside_padded_scene_and_hold_core_with_context(case: tuple[int, int, int, int]) -> None:
    width_px, height_px, tile_px, overlap_px = case
    half = overlap_px // 2
    for tile in plan_tiles(width_px, height_px, tile_px, overlap_px):
        w, c = tile.window, tile.core
        assert (w.width, w.height) == (tile_px, tile_px)
        # padded scene: [0, max(size, tile_px)) on each axis
        assert 0 <= w.col_off and w.col_end <= max(width_px, tile_px)
        assert 0 <= w.row_off and w.row_end <= max(height_px, tile_px)
        assert w.contains(c)
        # context where the scene allows it: min(half, distance to the scene edge)
        assert c.col_off - w.col_off >= min(half, c.col_off)
        assert c.row_off - w.row_off >= min(half, c.row_off)
        assert w.col_end - c.col_end >= min(half, width_px - c.col_end)
        assert w.row_end - c.row_end >= min(half, height_px - c.row_end)


@settings(max_examples=100, deadline=None)
@given(plans(), st.floats(0.1, 100.0), st.floats(-1e6, 1e6))
def test_transforms_equal_rasterio(case: tuple[int, int, int, int], gsd_m: float, x0: float) -> None:
    width_px, height_px, tile_px, overlap_px = case
    scene = Affine(gsd_m, 0.0, x0, 0.0, -gsd_m, 5e6)
    for tile in plan_tiles(width_px, height_px, tile_px, overlap_px, scene_transform=tuple(scene)[:6]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PendingDeprecationWarning)  # rasterio's own `*` on Affine
            expected = rasterio.windows.transform(rasterio.windows.Window(*tile.window.to_tuple()), scene)
        assert np.allclose(tile.transform, tuple(expected)[:6], rtol=0, atol=1e-6)


def test_hand_computed_plan() -> None:
    # 10 px wide, tile 4, overlap 2 -> stride 2, half 1; cores at 0,2,4,6,8 (5 per axis)
    # windows start at clamp(core-1, 0, 10-4=6): 0, 1, 3, 5, 6
    tiles = plan_tiles(10, 3, 4, 2, scene_id="s")
    first_row = [t for t in tiles if t.row == 0]
    assert [t.core.col_off for t in first_row] == [0, 2, 4, 6, 8]
    assert [t.window.col_off for t in first_row] == [0, 1, 3, 5, 6]
    # height 3 < ... rows: cores 0..2 (len 2), 2..3 (len 1); windows clamp(-1,0,-1)->0 and clamp(1,0,-1)->0
    assert sorted({(t.core.row_off, t.core.height, t.window.row_off) for t in tiles}) == [(0, 2, 0), (2, 1, 0)]
    assert len(tiles) == 10


def test_scene_smaller_than_tile_is_one_padded_tile() -> None:
    (tile,) = plan_tiles(5, 7, 16, 4, scene_id="tiny", scene_transform=SCENE_TF, crs="EPSG:32618")
    assert tile.core == PixelWindow(0, 0, 5, 7)
    assert tile.window == PixelWindow(0, 0, 16, 16)
    assert tile.transform == SCENE_TF
    assert tile.tile_id == "r00000_c00000"


def test_row_roundtrip_is_flat_and_exact() -> None:
    tiles = plan_tiles(100, 80, 32, 8, scene_id="scene-a", scene_transform=SCENE_TF, crs="EPSG:32618")
    for tile in tiles:
        row = tile.to_row()
        assert all(isinstance(v, int | float | str) for v in row.values())
        assert Tile.from_row(row) == tile
    assert len({t.tile_id for t in tiles}) == len(tiles)


def test_core_transform_is_the_core_corner() -> None:
    tile = plan_tiles(100, 100, 32, 8, scene_transform=SCENE_TF)[5]
    # core transform = scene transform shifted by core offsets (10 m pixels)
    assert tile.core_transform == window_transform(SCENE_TF, tile.core)
    assert tile.core_transform[2] == 500000.0 + 10.0 * tile.core.col_off


def test_window_helpers() -> None:
    a, b = PixelWindow(0, 0, 10, 10), PixelWindow(5, 8, 10, 10)
    assert a.intersection(b) == PixelWindow(5, 8, 5, 2)
    assert a.intersection(PixelWindow(10, 0, 3, 3)) is None
    assert b.relative_to(PixelWindow(2, 3, 20, 20)) == PixelWindow(3, 5, 10, 10)
    arr = np.arange(100).reshape(10, 10)
    assert arr[PixelWindow(2, 3, 4, 1).slices()].tolist() == [[32, 33, 34, 35]]


@pytest.mark.parametrize(
    ("tile_px", "overlap_px", "needle"),
    [(0, 0, "tile_px=0"), (-4, 0, "tile_px=-4"), (8, 8, "overlap_px=8"), (8, -1, "overlap_px=-1")],
)
def test_bad_tiling_config_names_values(tile_px: int, overlap_px: int, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        plan_tiles(100, 100, tile_px, overlap_px)


def test_empty_scene_rejected() -> None:
    with pytest.raises(ConfigError, match="0x10"):
        plan_tiles(0, 10, 8, 2, scene_id="empty")
