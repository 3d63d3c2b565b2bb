"""Pure pieces of the `referring` map task (issue 8 item 7): tile boxes -> scene boxes -> one box per object.

Grounding runs on each tile and returns its best box and score in tile pixels. `to_scene` shifts the box
by the tile window's offset and clips it to the scene; `touches_internal_edge` marks boxes cut by a tile
border that is not the scene border (the object continues in the neighbour tile, whose box is the whole
object). `nms_across_tiles` keeps one box per object: candidates are ranked (not cut by an internal edge,
score), as segment-anything's automatic mask generator prefers uncut crops, and a candidate whose IoU
with a kept box reaches `iou_threshold` is suppressed. A box spanning a tile overlap is therefore
reported once. `run_referring.py` wires these into the Ray pipeline.
"""

from __future__ import annotations

import numpy as np

from rrsis.errors import InputError
from rrsis.geo.tiling import PixelWindow
from rrsis.metrics.referring import box_iou


def check_query(
    query: str,
    n_tokens: int,
    max_tokens: int,
    model: str = "grounding",
    key: str = "model.grounding.max_query_tokens",
) -> str:
    """The stripped query, or one line saying why it cannot be used (empty, or longer than the model reads)."""
    text = query.strip()
    if not text:
        raise InputError("config error: key 'query': the query is empty")
    if n_tokens > max_tokens:
        raise InputError(
            f"config error: key 'query': {n_tokens} tokens, the {model} model reads at most {max_tokens} "
            f"({key}); shorten the query"
        )
    return text


def to_scene(box_xyxy: np.ndarray, window: PixelWindow, scene_w: int, scene_h: int) -> np.ndarray:
    """Tile-pixel xyxy -> scene-pixel xyxy, clipped to the scene (tiles past the edge are padded)."""
    b = np.asarray(box_xyxy, dtype=np.float64).reshape(4) + [window.col_off, window.row_off] * 2
    return np.clip(b, 0, [scene_w, scene_h, scene_w, scene_h])


def touches_internal_edge(
    box_scene: np.ndarray, window: PixelWindow, scene_w: int, scene_h: int, tol_px: float = 1.0
) -> bool:
    """True when the box reaches a side of the tile window that lies inside the scene."""
    x1, y1, x2, y2 = (float(v) for v in box_scene)
    left, top = window.col_off, window.row_off
    right, bottom = window.col_off + window.width, window.row_off + window.height
    return bool(
        (left > 0 and x1 <= left + tol_px)
        or (top > 0 and y1 <= top + tol_px)
        or (right < scene_w and x2 >= right - tol_px)
        or (bottom < scene_h and y2 >= bottom - tol_px)
    )


def nms_across_tiles(
    boxes_scene: np.ndarray, scores: np.ndarray, cut: np.ndarray, iou_threshold: float = 0.5
) -> list[int]:
    """Indices of the kept boxes, best first (uncut before cut, then by score, then by index)."""
    boxes = np.asarray(boxes_scene, dtype=np.float64).reshape(-1, 4)
    order = sorted(range(len(boxes)), key=lambda i: (bool(cut[i]), -float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        if kept and float(box_iou(np.repeat(boxes[i : i + 1], len(kept), 0), boxes[kept]).max()) >= iou_threshold:
            continue
        kept.append(i)
    return kept
