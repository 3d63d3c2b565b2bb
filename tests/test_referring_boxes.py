"""Pure pieces of the referring map task: tile -> scene boxes, cut boxes, NMS across tile overlaps, query checks."""

from __future__ import annotations

import numpy as np
import pytest

from rrsis.errors import InputError
from rrsis.geo.tiling import PixelWindow
from rrsis.pipeline.referring_boxes import check_query, nms_across_tiles, to_scene, touches_internal_edge


def test_box_spanning_a_tile_overlap_is_reported_once() -> None:
    # scene 200 x 100, tiles of 120 px with 40 px overlap: A = cols 0-119, B = cols 80-199.
    a, b = PixelWindow(0, 0, 120, 100), PixelWindow(80, 0, 120, 100)
    # the object spans scene cols 90-150: tile A sees it cut at its right edge (cols 90-120),
    # tile B sees all of it (tile cols 10-70 -> scene cols 90-150)
    box_a = to_scene(np.array([90, 20, 120, 60]), a, 200, 100)
    box_b = to_scene(np.array([10, 20, 70, 60]), b, 200, 100)
    assert box_b.tolist() == [90, 20, 150, 60]
    cut = np.array([touches_internal_edge(box_a, a, 200, 100), touches_internal_edge(box_b, b, 200, 100)])
    assert cut.tolist() == [True, False]
    # A scores higher, but its box is cut by an internal edge: B's whole box wins.
    # IoU(A, B) = (30 * 40) / (60 * 40) = 0.5 -> suppressed at threshold 0.5
    kept = nms_across_tiles(np.stack([box_a, box_b]), np.array([0.9, 0.6]), cut, iou_threshold=0.5)
    assert kept == [1]


def test_separate_objects_are_all_kept_and_scene_edges_do_not_count_as_cuts() -> None:
    w = PixelWindow(0, 0, 100, 100)
    assert not touches_internal_edge(np.array([0, 0, 10, 10]), w, 100, 100)  # scene corner, not a cut
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [1, 1, 10, 10]], dtype=float)
    # box 2 overlaps box 0: IoU = 81 / 100 = 0.81 -> suppressed; box 1 is elsewhere
    assert nms_across_tiles(boxes, np.array([0.5, 0.4, 0.3]), np.zeros(3, bool)) == [0, 1]


def test_to_scene_clips_padded_tiles() -> None:
    edge = PixelWindow(80, 0, 40, 40)  # reaches past a 100 px wide scene
    assert to_scene(np.array([10, 5, 35, 20]), edge, 100, 50).tolist() == [90, 5, 100, 20]


def test_query_checks() -> None:
    assert check_query("  the storage tanks near the harbour ", 8, 40) == "the storage tanks near the harbour"
    with pytest.raises(InputError, match="query is empty"):
        check_query("   ", 2, 40)
    with pytest.raises(InputError, match="41 tokens, the grounding model reads at most 40"):
        check_query("long " * 39, 41, 40)
