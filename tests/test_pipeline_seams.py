"""Seams: the tiled mosaic (real stages + COG) against one whole-image forward of the same model.

Measured with a random MU-Net (the paper's best trunk, calibrated to a ~50 % water share so many pixels sit
near the threshold, the hardest case). Every water-land trunk has global context (channel attention pools
over the whole input, and 4-7 pooling levels), so no tiling can match a whole-image forward bit for bit;
core-crop with overlap gets within the tolerances below, and the disagreement is not concentrated at tile
borders (no seams). Figures seen when this was written (mask disagreement, whole-image vs tiled):
150x130 scene: tile 64/overlap 0: 4.8 %, 64/16: 1.7 %, 64/32: 1.7 %, 96/48: 1.6 %; 40x50 scene (smaller
than one tile, padded with nodata): 3.7 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rrsis.checkpoints import build_from_checkpoint, load_checkpoint, normalize_image
from rrsis.geo.raster import open_raster, read_window
from rrsis.geo.tiling import PixelWindow
from rrsis.pipeline.inputs import resolve_inputs
from rrsis.pipeline.plan import plan_run
from rrsis.pipeline.products import build_mosaic
from rrsis.pipeline.stages import InferStage, RefineStage, read_stage, write_stage
from tests.pipeline_data import tiny_checkpoint, write_scene

MASK_TOLERANCE = 0.05  # fraction of valid pixels whose class differs from the whole-image forward
BORDER_PX = 2


def _whole_image_mask(ckpt_uri: str, scene: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ckpt = load_checkpoint(ckpt_uri)
    model = build_from_checkpoint(ckpt).eval()
    with open_raster(scene) as src:
        image, valid = read_window(src, PixelWindow(0, 0, width, height), [1, 2])
    with torch.inference_mode():
        logits = model(torch.from_numpy(normalize_image(ckpt, image, valid))[None])
    prob = torch.softmax(logits, dim=1)[0, 1].numpy()
    return (prob >= 0.5).astype(np.uint8), valid


def _tiled_mosaic(tmp_path: Path, ckpt: str, scene: str, tile_px: int, overlap_px: int) -> tuple[np.ndarray, list]:
    scenes, _ = resolve_inputs([scene])
    plans, rows, failures = plan_run(
        scenes,
        str(tmp_path / f"run{tile_px}_{overlap_px}"),
        tile_px=tile_px,
        overlap_px=overlap_px,
        requested_bands=[],
        model_bands=["VV", "VH"],
        in_bands=2,
    )
    assert not failures
    batch = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    infer = InferStage(ckpt, device="cpu", torch_threads=1)
    out = write_stage(RefineStage("waterland", {"threshold": 0.5, "enabled": False})(infer(read_stage(batch))))
    parts = [
        (PixelWindow(int(c), int(r), int(w), int(h)), str(k))
        for c, r, w, h, k in zip(
            out["core_col_off"], out["core_row_off"], out["core_width"], out["core_height"], out["key"], strict=True
        )
    ]
    info = plans[0].info
    record = {"width": info.width, "height": info.height, "transform": info.transform, "crs": info.crs}
    mosaic_uri = build_mosaic(str(tmp_path / f"mosaic{tile_px}_{overlap_px}.tif"), record, parts, count=1)
    with rasterio.open(mosaic_uri) as src:
        return src.read(1), [p[0] for p in parts]


def _border_band(shape: tuple[int, int], cores: list[PixelWindow]) -> np.ndarray:
    """Pixels within BORDER_PX of a core edge that is inside the scene (where a seam would show)."""
    band = np.zeros(shape, dtype=bool)
    for core in cores:
        if core.col_off > 0:
            band[core.row_slice, max(0, core.col_off - BORDER_PX) : core.col_off + BORDER_PX] = True
        if core.row_off > 0:
            band[max(0, core.row_off - BORDER_PX) : core.row_off + BORDER_PX, core.col_slice] = True
    return band


@pytest.fixture(scope="module")
def munet(tmp_path_factory: pytest.TempPathFactory) -> str:
    return tiny_checkpoint(tmp_path_factory.mktemp("seams") / "munet.pt", family="munet")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("height", "width", "tile_px", "overlap_px"),
    [
        (150, 130, 64, 16),  # neither side a multiple of the tile or the stride
        (150, 130, 96, 48),
        (40, 50, 64, 16),  # smaller than one tile
    ],
)
def test_tiled_mosaic_matches_whole_image_forward(
    tmp_path: Path, munet: str, height: int, width: int, tile_px: int, overlap_px: int
) -> None:
    scene = write_scene(tmp_path / "scene.tif", height, width, nan_corner_px=7)
    whole, valid = _whole_image_mask(munet, scene, height, width)
    mosaic, cores = _tiled_mosaic(tmp_path, munet, scene, tile_px, overlap_px)
    assert mosaic.shape == (height, width)  # no dropped last row/column
    assert (mosaic[~valid] == 255).all() and (mosaic[valid] != 255).all()  # every valid pixel written once
    differs = (mosaic != whole) & valid
    rate = differs.sum() / valid.sum()
    assert 0 < whole[valid].mean() < 1  # the mask has both classes, so disagreement could show
    assert rate <= MASK_TOLERANCE, f"{rate:.4f} of pixels differ from the whole-image forward"
    border = _border_band((height, width), cores) & valid
    if height > tile_px or width > tile_px:  # else one window covers the scene: no seam can exist
        border_rate = differs[border].mean()
        inner_rate = differs[valid & ~border].mean()
        # a seam would make the border band disagree far more than the rest
        assert border_rate <= 2.0 * inner_rate + 0.02, (border_rate, inner_rate)
