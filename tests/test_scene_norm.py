"""Per-scene normalisation (`data.norm=scene`): robust statistics of the whole scene, the same for every tile.

Checked on real GeoTIFFs written here: the hand-computable statistics, the decimated read, the checkpoint
field, the training/evaluation dataset, and the map pipeline's infer stage (every tile of a scene is
normalised with that scene's statistics, never its own, so tiles agree at their borders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from rrsis.checkpoints import (
    build_from_checkpoint,
    load_checkpoint,
    normalize_image,
    save_checkpoint,
    scene_norm,
)
from rrsis.data.dataset import WaterLandDataset
from rrsis.data.normalize import NormStats, apply_stats, robust_stats, sample_scene_stats, scene_stats
from rrsis.data.pairs import geotiff_ref
from rrsis.errors import CheckpointError, InputError
from rrsis.pipeline.inputs import resolve_inputs
from rrsis.pipeline.plan import plan_run
from rrsis.pipeline.stages import InferStage, read_stage
from tests.pipeline_data import tiny_checkpoint


def _write(path: Path, data: np.ndarray, dtype: str = "float32", nodata: float | None = float("nan")) -> str:
    profile = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": dtype,
        "transform": from_origin(500000.0, 4500000.0, 10.0, 10.0),
        "crs": "EPSG:32630",
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(dtype))
    return str(path)


def test_robust_stats_hand_computed() -> None:
    # band 0: 1..5 -> p25 2, median 3, p75 4 -> scale (4 - 2) / 1.349 = 1.48258; band 1: constant -> MIN_STD
    mean, std = robust_stats(np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [7.0] * 5]))
    assert mean == pytest.approx([3.0, 7.0])
    assert std == pytest.approx([2.0 / 1.349, 1e-6])
    with pytest.raises(InputError, match="no valid pixel"):
        robust_stats(np.zeros((2, 0)))


def test_scene_stats_decimated_read_skips_nan_and_nodata(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    coarse = rng.normal(-12.0, 4.0, (2, 16, 16))
    coarse[:, 0, 0] = np.nan  # NaN nodata in both bands
    coarse[1, 3, 5] = np.nan  # NaN in one band: the pixel is not a measurement
    fine = np.kron(coarse, np.ones((1, 4, 4)))  # 64x64, constant 4x4 blocks: any nearest pick is exact
    uri = _write(tmp_path / "scene.tif", fine)
    keep = np.isfinite(coarse).all(axis=0)
    expected = robust_stats(coarse[:, keep])
    np.testing.assert_allclose(scene_stats(uri, [1, 2], max_px=16), expected)  # a 16x16 read, not 64x64
    np.testing.assert_allclose(scene_stats(uri, [2, 1], max_px=16)[0], expected[0][::-1])
    tagged = _write(tmp_path / "tagged.tif", np.where(np.isnan(fine), -9999.0, fine), nodata=-9999.0)
    np.testing.assert_allclose(scene_stats(tagged, [1, 2], max_px=16), expected)
    empty = _write(tmp_path / "empty.tif", np.full((2, 8, 8), np.nan))
    with pytest.raises(InputError, match=r"empty\.tif: no valid pixel"):
        scene_stats(empty, [1, 2])


def test_scene_checkpoint_round_trip_and_no_tile_normalisation(tmp_path: Path) -> None:
    uri = tiny_checkpoint(tmp_path / "split.pt")
    ckpt = load_checkpoint(uri)
    assert ckpt.norm == "split"
    ckpt.norm = "scene"
    save_checkpoint(ckpt, str(tmp_path / "scene.pt"))
    scene_ckpt = load_checkpoint(str(tmp_path / "scene.pt"))
    assert scene_ckpt.norm == "scene"
    image, valid = np.zeros((2, 4, 4), dtype=np.float32), np.ones((4, 4), dtype=bool)
    with pytest.raises(CheckpointError, match="norm=scene"):
        normalize_image(scene_ckpt, image, valid)
    # a file written before the `norm` entry existed loads as a split-normalised checkpoint
    payload = torch.load(uri, weights_only=True)
    del payload["norm"]
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(str(tmp_path / "old.pt")).norm == "split"
    payload["norm"] = "tile"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="norm='tile'"):
        load_checkpoint(str(tmp_path / "bad.pt"))


def test_dataset_normalises_each_chip_by_its_own_scene_stats(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "labels").mkdir()
    refs = []
    for name, offset in (("dark", -20.0), ("bright", -5.0)):
        image = _write(tmp_path / f"{name}.tif", rng.normal(offset, 2.0, (2, 40, 40)))
        label = _write(tmp_path / "labels" / f"{name}.tif", (rng.random((1, 40, 40)) > 0.5), "int16", nodata=None)
        refs.append(geotiff_ref(name, name, image, label, []))
    stats = NormStats(["a", "b"], [-12.0, -12.0], [4.0, 4.0], norm="scene")
    dataset = WaterLandDataset(refs, stats, train=False, crop_px=16)
    for index in range(len(dataset)):
        sample, _ = dataset.items[index]
        image, valid, _ = dataset.read(index)
        mean, std = sample_scene_stats(refs[sample])
        expected = apply_stats(mean, std, 0.0, image, valid)
        np.testing.assert_array_equal(dataset[index]["image"].numpy(), expected)
    # each chip is centred on its own median: both come out near 0 despite a 15 dB offset
    assert abs(float(dataset[0]["image"].mean())) < 0.5 and abs(float(dataset[len(dataset) - 1]["image"].mean())) < 0.5


def test_map_infer_stage_uses_scene_stats_for_every_tile(tmp_path: Path) -> None:
    """Tiles of one scene get the scene's statistics (identical for all, so no seam from normalisation);
    each scene gets its own; the probabilities are exactly the model on scene-normalised tiles."""
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    ramp = -22.0 + 14.0 * xx / 127.0  # a strong left-right gradient: each tile's own statistics would differ
    scenes = []
    for i, shift in enumerate((0.0, 6.0)):
        data = np.stack([ramp + shift + np.sin(yy / 9.0), ramp + shift - 7.0 + np.cos(xx / 11.0)])
        scenes.append(_write(tmp_path / f"s{i}.tif", data))
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "split.pt"))
    ckpt.norm = "scene"
    save_checkpoint(ckpt, str(tmp_path / "scene.pt"))
    resolved, _ = resolve_inputs(scenes)
    _, rows, failures = plan_run(
        resolved,
        str(tmp_path / "run"),
        tile_px=64,
        overlap_px=0,
        requested_bands=[],
        model_bands=["VV", "VH"],
        in_bands=2,
    )
    assert not failures and len(rows) == 8
    batch = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    read = read_stage(batch)
    infer = InferStage(str(tmp_path / "scene.pt"), device="cpu", torch_threads=1)
    out = infer(dict(read))
    assert sorted(uri for uri, _ in infer.scenes) == sorted(str(r["scene_uri"]) for r in rows[::4])
    model = build_from_checkpoint(ckpt)
    for i, row in enumerate(rows):
        stats = scene_norm(ckpt, str(row["scene_uri"]), [1, 2])
        np.testing.assert_allclose((stats.norm_mean, stats.norm_std), scene_stats(str(row["scene_uri"]), [1, 2]))
        x = apply_stats(stats.norm_mean, stats.norm_std, 0.0, read["image"][i], read["valid"][i])
        with torch.inference_mode():
            expected = torch.softmax(model(torch.from_numpy(x)[None]), dim=1)[0, 1].numpy()
        np.testing.assert_allclose(out["prob"][i], expected, atol=1e-5)
    s0, s1 = (infer.scenes[k][0] for k in sorted(infer.scenes))
    assert s1.norm_mean[0] - s0.norm_mean[0] == pytest.approx(6.0, abs=0.2)  # each scene its own level


def test_all_nodata_scene_with_a_scene_norm_model_does_not_fail_the_infer_stage(tmp_path: Path) -> None:
    """An all-NaN scene has no scene statistics: the infer stage falls back to the checkpoint's training
    statistics instead of raising (which would fail the whole Ray Data run); its tiles stay all invalid, so the
    run reports the scene as all nodata in failures.parquet and loses no other scene."""
    blank = _write(tmp_path / "blank.tif", np.full((2, 64, 64), np.nan, dtype=np.float32))
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "split.pt"))
    ckpt.norm = "scene"
    save_checkpoint(ckpt, str(tmp_path / "scene.pt"))
    with pytest.raises(InputError, match="no valid pixel"):
        scene_stats(blank, [1, 2])
    resolved, _ = resolve_inputs([blank])
    _, rows, _ = plan_run(
        resolved, str(tmp_path / "run"), tile_px=64, overlap_px=0, requested_bands=[], model_bands=["VV", "VH"],
        in_bands=2,
    )  # fmt: skip
    batch = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    read = read_stage(batch)
    assert not read["valid"].any()
    out = InferStage(str(tmp_path / "scene.pt"), device="cpu", torch_threads=1)(dict(read))
    assert out["prob"].shape == (1, 64, 64) and np.isfinite(out["prob"]).all()
