"""Tile pixel coordinates <-> SAM's square input frame, made explicit.

SAM resizes a tile so its longest side equals the encoder's input size (1024 for the official models),
keeps the aspect ratio (sizes rounded half up, as `ResizeLongestSide.get_preprocess_shape`), pads the
bottom/right, and expects prompts in that resized frame. Coordinates are pixel indices (x = column,
y = row); SAM's prompt encoder adds the half-pixel shift itself. Each axis scales by its own rounded
ratio (new_w / old_w, new_h / old_h), exactly as SAM's predictor does, so a box on the tile's right edge
lands on the resized image's right edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamFrame:
    """The resize of one tile of `height_px` x `width_px` into a square input of `input_size_px`."""

    height_px: int
    width_px: int
    input_size_px: int

    @property
    def resized_hw(self) -> tuple[int, int]:
        scale = self.input_size_px / max(self.height_px, self.width_px)
        return int(self.height_px * scale + 0.5), int(self.width_px * scale + 0.5)

    @property
    def scale_xy(self) -> tuple[float, float]:
        new_h, new_w = self.resized_hw
        return new_w / self.width_px, new_h / self.height_px

    def points_to_model(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) tile pixel (x, y) -> SAM input-frame (x, y), float64."""
        sx, sy = self.scale_xy
        return np.asarray(xy, dtype=np.float64) * np.array([sx, sy])

    def points_to_tile(self, xy: np.ndarray) -> np.ndarray:
        sx, sy = self.scale_xy
        return np.asarray(xy, dtype=np.float64) / np.array([sx, sy])

    def boxes_to_model(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4) tile xyxy -> SAM input-frame xyxy."""
        b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 2, 2)
        return self.points_to_model(b).reshape(-1, 4)

    def boxes_to_tile(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 2, 2)
        return self.points_to_tile(b).reshape(-1, 4)
