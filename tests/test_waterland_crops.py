"""Water-centred training crops (`data.water_crop_fraction`) on a real GeoTIFF pair with one small lake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from rrsis.config.load import load_config
from rrsis.config.train import TrainConfig
from rrsis.data.dataset import WaterLandDataset, water_points
from rrsis.data.normalize import NormStats
from rrsis.data.pairs import find_geotiff_pairs


def _tif(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": data.dtype.name}
    with rasterio.open(path, "w", crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4000000), **profile) as dst:
        dst.write(data)


def _lake_pair(root: Path) -> None:
    """64 x 64 chip, water only in the 4 x 4 block rows 0-3, cols 60-63 (a corner: 16 of 4096 pixels)."""
    label = np.zeros((1, 64, 64), dtype=np.int16)
    label[0, 0:4, 60:64] = 1
    _tif(root / "images" / "lake.tif", np.random.default_rng(0).normal(size=(2, 64, 64)).astype(np.float32))
    _tif(root / "labels" / "lake.tif", label)


def _crops_with_water(root: Path, fraction: float, n: int = 60) -> int:
    refs = find_geotiff_pairs(str(root), [])
    stats = NormStats(["a", "b"], [0.0, 0.0], [1.0, 1.0])
    data = WaterLandDataset(refs, stats, train=True, crop_px=16, crops_per_sample=n, water_crop_fraction=fraction)
    torch.manual_seed(0)
    return sum(int((data[i]["label"] == 1).any()) for i in range(len(data)))


def test_water_points_are_the_labelled_water_pixels_and_capped_by_stride(tmp_path: Path) -> None:
    _lake_pair(tmp_path)
    ref = find_geotiff_pairs(str(tmp_path), [])[0]
    points = water_points(ref)
    expected = {(r, c) for r in range(4) for c in range(60, 64)}
    assert {tuple(p) for p in points.tolist()} == expected and len(points) == 16
    # cap 5 of 16 points: stride ceil(16 / 5) = 4 -> points 0, 4, 8, 12 in row-major order = rows 0..3, col 60
    assert water_points(ref, max_points=5).tolist() == [[0, 60], [1, 60], [2, 60], [3, 60]]


def test_water_crop_fraction_puts_the_small_lake_in_the_crops(tmp_path: Path) -> None:
    _lake_pair(tmp_path)
    # uniform 16 px crops hold the corner lake for col_off in 45..48 and row_off in 0..3: 16 of 49 x 49
    # positions (0.7 %); the dataset redraws crops without a *valid* label pixel only, so water stays rare
    assert _crops_with_water(tmp_path, 0.0) <= 3
    assert _crops_with_water(tmp_path, 1.0) == 60  # every crop is placed over a water pixel, clamped inside
    assert 15 <= _crops_with_water(tmp_path, 0.5) <= 45


def test_water_crop_fraction_is_a_training_config_key(tmp_path: Path) -> None:
    cfg = load_config(TrainConfig, "configs/train/waterland_demo.yaml", ["data.water_crop_fraction=0.25"])
    assert cfg.data.water_crop_fraction == 0.25
