"""Which tile segments which box, and through which window: the rule that keeps one mask per box.

Decision (issue 7, item 5): a box belongs to the tile whose *core* contains its centre, and that tile's
fixed-size read window is shifted (never resized) so it covers every box it owns; SAM then sees each box
whole, embeds the window once and decodes all its boxes. A box that crosses a tile border is therefore
segmented once, by one tile, never as two halves. When the owned boxes do not fit in one window
together, they are split greedily (largest first) into several groups of the same tile, each with its own
shifted window. A box larger than the window cannot be seen whole and is reported as a failure naming
`tiling.tile_px`; a box whose centre lies outside the scene is reported too. Boxes are clipped to the
scene. Pure geometry, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from rrsis.geo.tiling import PixelWindow, Tile, window_transform
from rrsis.pipeline.box_inputs import BoxRecord


@dataclass(frozen=True)
class BoxGroup:
    """Boxes one tile segments against one embedding; `tile.window` is the shifted read window."""

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


def plan_box_groups(
    tiles: list[Tile],
    boxes: list[BoxRecord],
    width_px: int,
    height_px: int,
    scene_transform: tuple[float, ...],
) -> tuple[list[BoxGroup], list[tuple[str, str]]]:
    """Box groups (tile order, then group index) and failures as (box_id, one-line reason)."""
    owned: dict[str, list[BoxRecord]] = {}
    by_id = {t.tile_id: t for t in tiles}
    failures: list[tuple[str, str]] = []
    for box in boxes:
        cx, cy = box.centre_xy
        tile = owner(tiles, cx, cy)
        if tile is None:
            failures.append((box.box_id, f"box centre ({cx:.1f}, {cy:.1f}) is outside the scene"))
            continue
        owned.setdefault(tile.tile_id, []).append(clip_box(box, width_px, height_px))
    groups: list[BoxGroup] = []
    for tile in tiles:
        members = sorted(owned.get(tile.tile_id, []), key=lambda b: (-(b.x2 - b.x1) * (b.y2 - b.y1), b.box_id))
        packs: list[tuple[PixelWindow, list[BoxRecord]]] = []
        for box in members:
            for k, (_, pack) in enumerate(packs):
                win = cover(tile.window, [*pack, box], width_px, height_px)
                if win is not None:
                    packs[k] = (win, [*pack, box])
                    break
            else:
                win = cover(tile.window, [box], width_px, height_px)
                if win is None:
                    failures.append(
                        (
                            box.box_id,
                            f"box is {box.x2 - box.x1:.0f}x{box.y2 - box.y1:.0f} px, larger than "
                            f"tiling.tile_px={tile.window.width}: raise tiling.tile_px to segment it whole",
                        )
                    )
                else:
                    packs.append((win, [box]))
        for k, (win, pack) in enumerate(packs):
            ordered = tuple(sorted(pack, key=lambda b: b.box_id))
            groups.append(BoxGroup(_with_window(by_id[tile.tile_id], win, scene_transform), k, ordered))
    return groups, failures
