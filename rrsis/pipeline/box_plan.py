"""Which boxes share one SAM window, and where that window lies: the rule that keeps one mask per box.

Each box is segmented once, whole: SAM sees it entirely inside one fixed-size read window (the tile's size,
shifted, never resized), embeds that window once and decodes every box of the window. Boxes whose union fits
one window share it (one image-encoder forward), whether or not their centres fall in the same tile; boxes
far apart get a window each. Packing is greedy, largest box first: a box joins the first earlier window that
can still hold it together with its boxes, else it opens a new one. A window belongs to the tile whose core
holds the centre of its first (largest) box and is that tile's window shifted minimally to cover its boxes,
so a box crossing tile borders is still one mask. A box larger than the window cannot be seen whole and is
reported as a failure naming `tiling.tile_px`; a box whose centre lies outside the scene is reported too.
Boxes are clipped to the scene. Pure geometry, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from rrsis.geo.tiling import PixelWindow, Tile, window_transform
from rrsis.pipeline.box_inputs import BoxRecord


@dataclass(frozen=True)
class BoxGroup:
    """Boxes segmented against one embedding; `tile` is the owning tile with its shifted read window."""

    tile: Tile
    group: int
    boxes: tuple[BoxRecord, ...]

    @property
    def group_id(self) -> str:
        return f"{self.tile.tile_id}_g{self.group}"

    def boxes_in_window(self) -> np.ndarray:
        """(K, 4) xyxy in window pixels (what SAM and CFPG receive)."""
        ox, oy = self.tile.window.col_off, self.tile.window.row_off
        return np.array([[b.x1 - ox, b.y1 - oy, b.x2 - ox, b.y2 - oy] for b in self.boxes], dtype=np.float64)


def clip_box(box: BoxRecord, width_px: int, height_px: int) -> BoxRecord:
    return BoxRecord(
        box.box_id,
        min(max(box.x1, 0.0), width_px),
        min(max(box.y1, 0.0), height_px),
        min(max(box.x2, 0.0), width_px),
        min(max(box.y2, 0.0), height_px),
    )


def _shift(off: int, size: int, need_lo: int, need_hi: int, scene: int) -> int | None:
    """Offset of a `size` long window, as close to `off` as possible, covering [need_lo, need_hi)."""
    if need_hi - need_lo > size:
        return None
    if scene <= size:
        return 0  # a scene smaller than a tile: the window starts at 0 and pads (boundless read)
    lo, hi = max(need_hi - size, 0), min(need_lo, scene - size)
    return min(max(off, lo), hi)


def cover(window: PixelWindow, boxes: list[BoxRecord], width_px: int, height_px: int) -> PixelWindow | None:
    """`window` shifted minimally so it contains every box (pixel-rounded outward), or None if too big."""
    x1 = math.floor(min(b.x1 for b in boxes))
    y1 = math.floor(min(b.y1 for b in boxes))
    x2 = math.ceil(max(b.x2 for b in boxes))
    y2 = math.ceil(max(b.y2 for b in boxes))
    col = _shift(window.col_off, window.width, x1, x2, width_px)
    row = _shift(window.row_off, window.height, y1, y2, height_px)
    if col is None or row is None:
        return None
    return PixelWindow(col, row, window.width, window.height)


def owner(tiles: list[Tile], x: float, y: float) -> Tile | None:
    """The tile whose core holds pixel (floor(x), floor(y))."""
    px, py = math.floor(x), math.floor(y)
    for t in tiles:
        c = t.core
        if c.col_off <= px < c.col_end and c.row_off <= py < c.row_end:
            return t
    return None


def _with_window(tile: Tile, window: PixelWindow, scene_transform: tuple[float, ...]) -> Tile:
    a, b, c, d, e, f = window_transform(scene_transform, window)
    return replace(tile, window=window, transform=(a, b, c, d, e, f))


@dataclass(frozen=True)
class Pack:
    """A window being filled: the tile it belongs to, its current (shifted) window, its boxes so far and
    their union (`extent`, so a new box is tried against two boxes, not all of them)."""

    tile: Tile
    window: PixelWindow
    boxes: list[BoxRecord]
    extent: BoxRecord

    def add(self, box: BoxRecord, width_px: int, height_px: int) -> Pack | None:
        """This pack with `box` added, or None when the union no longer fits one window."""
        win = cover(self.tile.window, [self.extent, box], width_px, height_px)
        if win is None:
            return None
        e = self.extent
        union = BoxRecord("", min(e.x1, box.x1), min(e.y1, box.y1), max(e.x2, box.x2), max(e.y2, box.y2))
        return Pack(self.tile, win, [*self.boxes, box], union)


def _cell(box: BoxRecord, window: PixelWindow) -> tuple[int, int]:
    """Grid cell (window-sized) of the box centre. Two boxes whose union fits one window have centres less
    than a window apart on each axis, so a box only needs the packs first seeded in its own and the 8
    neighbouring cells: planning stays linear in the number of boxes, not quadratic."""
    cx, cy = box.centre_xy
    return math.floor(cx / window.width), math.floor(cy / window.height)


def plan_box_groups(
    tiles: list[Tile],
    boxes: list[BoxRecord],
    width_px: int,
    height_px: int,
    scene_transform: tuple[float, ...],
) -> tuple[list[BoxGroup], list[tuple[str, str]]]:
    """Box groups (tile order, then group index) and failures as (box_id, one-line reason)."""
    by_id = {t.tile_id: t for t in tiles}
    failures: list[tuple[str, str]] = []
    placed: list[tuple[Tile, BoxRecord]] = []
    for box in boxes:
        cx, cy = box.centre_xy
        tile = owner(tiles, cx, cy)
        if tile is None:
            failures.append((box.box_id, f"box centre ({cx:.1f}, {cy:.1f}) is outside the scene"))
            continue
        placed.append((tile, clip_box(box, width_px, height_px)))
    placed.sort(key=lambda tb: (-(tb[1].x2 - tb[1].x1) * (tb[1].y2 - tb[1].y1), tb[1].box_id))
    packs: list[Pack] = []
    near: dict[tuple[int, int], list[int]] = {}  # grid cell of a pack's first box centre -> pack indexes
    for tile, box in placed:
        size = tile.window
        cell = _cell(box, size)
        candidates = sorted(
            k for dx in (-1, 0, 1) for dy in (-1, 0, 1) for k in near.get((cell[0] + dx, cell[1] + dy), [])
        )
        for k in candidates:
            grown = packs[k].add(box, width_px, height_px)
            if grown is not None:
                packs[k] = grown
                break
        else:
            win = cover(tile.window, [box], width_px, height_px)
            if win is None:
                failures.append(
                    (
                        box.box_id,
                        f"box is {box.x2 - box.x1:.0f}x{box.y2 - box.y1:.0f} px, larger than "
                        f"tiling.tile_px={size.width}: raise tiling.tile_px to segment it whole",
                    )
                )
                continue
            near.setdefault(cell, []).append(len(packs))
            packs.append(Pack(tile, win, [box], box))
    order = {t.tile_id: i for i, t in enumerate(tiles)}
    groups: list[BoxGroup] = []
    count: dict[str, int] = {}
    for pack in sorted(packs, key=lambda p: order[p.tile.tile_id]):  # stable: creation order within a tile
        k = count.get(pack.tile.tile_id, 0)
        count[pack.tile.tile_id] = k + 1
        ordered = tuple(sorted(pack.boxes, key=lambda b: b.box_id))
        groups.append(BoxGroup(_with_window(by_id[pack.tile.tile_id], pack.window, scene_transform), k, ordered))
    return groups, failures
