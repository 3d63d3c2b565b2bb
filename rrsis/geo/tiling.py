"""Pure tiling geometry: which pixels each tile reads (window) and which it owns (core).

No file I/O here: a tile plan is plain data that travels as Ray Data rows, and every later stage (read, infer,
write, mosaic) derives its pixels and georeferencing from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rrsis.errors import ConfigError

IDENTITY_TRANSFORM: tuple[float, float, float, float, float, float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True)
class PixelWindow:
    """A rectangle of pixels, rasterio's `Window` order: (col_off, row_off, width, height)."""

    col_off: int
    row_off: int
    width: int
    height: int

    @property
    def row_slice(self) -> slice:
        return slice(self.row_off, self.row_off + self.height)

    @property
    def col_slice(self) -> slice:
        return slice(self.col_off, self.col_off + self.width)

    @property
    def col_end(self) -> int:
        return self.col_off + self.width

    @property
    def row_end(self) -> int:
        return self.row_off + self.height

    def slices(self) -> tuple[slice, slice]:
        """(row_slice, col_slice): index a (H, W) array or the last two axes of (C, H, W)."""
        return self.row_slice, self.col_slice

    def intersection(self, other: PixelWindow) -> PixelWindow | None:
        """The overlap of two windows, or None when they share no pixel."""
        col0, row0 = max(self.col_off, other.col_off), max(self.row_off, other.row_off)
        col1, row1 = min(self.col_end, other.col_end), min(self.row_end, other.row_end)
        if col1 <= col0 or row1 <= row0:
            return None
        return PixelWindow(col0, row0, col1 - col0, row1 - row0)

    def relative_to(self, outer: PixelWindow) -> PixelWindow:
        """This window's offsets inside `outer` (e.g. a tile's core inside its read window)."""
        return PixelWindow(self.col_off - outer.col_off, self.row_off - outer.row_off, self.width, self.height)

    def contains(self, other: PixelWindow) -> bool:
        return (
            self.col_off <= other.col_off
            and self.row_off <= other.row_off
            and other.col_end <= self.col_end
            and other.row_end <= self.row_end
        )

    def to_tuple(self) -> tuple[int, int, int, int]:
        return (self.col_off, self.row_off, self.width, self.height)


def window_transform(scene_transform: Sequence[float], window: PixelWindow) -> tuple[float, ...]:
    """Affine (a, b, c, d, e, f) of the window's top-left pixel corner; same as `rasterio.windows.transform`."""
    a, b, c, d, e, f = (float(v) for v in scene_transform[:6])
    col, row = window.col_off, window.row_off
    return (a, b, a * col + b * row + c, d, e, d * col + e * row + f)


@dataclass(frozen=True)
class Tile:
    """One unit of work: read `window` (fixed size, padded past the scene edge), write only `core`."""

    scene_id: str
    row: int
    col: int
    window: PixelWindow
    core: PixelWindow
    transform: tuple[float, float, float, float, float, float]
    crs: str

    @property
    def tile_id(self) -> str:
        return f"r{self.row:05d}_c{self.col:05d}"

    @property
    def core_transform(self) -> tuple[float, ...]:
        """Transform of the core's top-left corner: the georeferencing of the mask tile this tile writes."""
        return window_transform(self.transform, self.core.relative_to(self.window))

    def to_row(self) -> dict[str, Any]:
        """A flat dict of plain scalars (Ray Data / Arrow friendly); `from_row` inverts it."""
        row: dict[str, Any] = {"scene_id": self.scene_id, "row": self.row, "col": self.col, "tile_id": self.tile_id}
        for name, win in (("win", self.window), ("core", self.core)):
            row[f"{name}_col_off"], row[f"{name}_row_off"], row[f"{name}_width"], row[f"{name}_height"] = win.to_tuple()
        for key, value in zip("abcdef", self.transform, strict=True):
            row[f"transform_{key}"] = float(value)
        row["crs"] = self.crs
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Tile:
        def win(name: str) -> PixelWindow:
            return PixelWindow(
                int(row[f"{name}_col_off"]),
                int(row[f"{name}_row_off"]),
                int(row[f"{name}_width"]),
                int(row[f"{name}_height"]),
            )

        a, b, c, d, e, f = (float(row[f"transform_{k}"]) for k in "abcdef")
        return cls(
            scene_id=str(row["scene_id"]),
            row=int(row["row"]),
            col=int(row["col"]),
            window=win("win"),
            core=win("core"),
            transform=(a, b, c, d, e, f),
            crs=str(row["crs"]),
        )


def _axis_plan(size_px: int, tile_px: int, overlap_px: int) -> list[tuple[int, int, int]]:
    """Per index along one axis: (core_off, core_len, window_off). See `plan_tiles` for the rule."""
    stride_px = tile_px - overlap_px
    half_px = overlap_px // 2
    plan = []
    for i in range(math.ceil(size_px / stride_px)):
        core_off = i * stride_px
        core_len = min(stride_px, size_px - core_off)
        window_off = max(0, min(core_off - half_px, size_px - tile_px))
        plan.append((core_off, core_len, window_off))
    return plan


def plan_tiles(
    width_px: int,
    height_px: int,
    tile_px: int,
    overlap_px: int,
    *,
    scene_id: str = "",
    scene_transform: Sequence[float] | None = None,
    crs: str = "",
) -> list[Tile]:
    """Cover a scene with fixed-size tiles whose cores partition it exactly.

    Rule (per axis, stride = tile_px - overlap_px, half = overlap_px // 2):
    - cores are the stride grid `[i*stride, min((i+1)*stride, size))`, i = 0..ceil(size/stride)-1, so every
      pixel lies in exactly one core and the last partial row/column gets its own (smaller) core;
    - every window is tile_px long and starts at `clamp(core_off - half, 0, size - tile_px)`: interior cores
      get `half` pixels of context before and `overlap_px - half` after; at the scene edge the window is
      shifted inward (more real context, no padding). Only a scene smaller than one tile pads: its window
      starts at 0 and extends past the edge (boundless read), so windows lie inside
      `[0, max(size, tile_px))`.
    Tiles are ordered row-major; `transform` is the window's top-left affine in scene georeferencing.
    """
    if tile_px <= 0:
        raise ConfigError(f"tile_px={tile_px} must be > 0")
    if overlap_px < 0 or overlap_px >= tile_px:
        raise ConfigError(f"overlap_px={overlap_px} must be >= 0 and < tile_px={tile_px}")
    if width_px <= 0 or height_px <= 0:
        raise ConfigError(f"scene {scene_id or '?'} has size {width_px}x{height_px} px; both must be > 0")
    scene_tf = tuple(scene_transform[:6]) if scene_transform is not None else IDENTITY_TRANSFORM
    cols = _axis_plan(width_px, tile_px, overlap_px)
    rows = _axis_plan(height_px, tile_px, overlap_px)
    tiles = []
    for r, (core_row, core_h, win_row) in enumerate(rows):
        for c, (core_col, core_w, win_col) in enumerate(cols):
            window = PixelWindow(win_col, win_row, tile_px, tile_px)
            a, b, cc, d, e, f = window_transform(scene_tf, window)
            tiles.append(
                Tile(
                    scene_id=scene_id,
                    row=r,
                    col=c,
                    window=window,
                    core=PixelWindow(core_col, core_row, core_w, core_h),
                    transform=(a, b, cc, d, e, f),
                    crs=crs,
                )
            )
    return tiles
