"""The scene's own Otsu threshold inside the water-land model: as an input (`data.norm=otsu`: absolute dB
beside dB minus the threshold) and as a post-process (`data.gate=otsu:VV`: water only below the threshold).

Checked on real GeoTIFFs written here and the real Sen1Floods11 chips: the hand-computed channels, the
per-scene thresholds from the decimated read, the checkpoint fields, the training/evaluation dataset,
`rrsis eval`, and the map pipeline's infer stage (every tile of a scene uses that scene's threshold, never
its own).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rrsis.checkpoints import build_from_checkpoint, load_checkpoint, normalize_image, save_checkpoint, scene_norm
from rrsis.data.dataset import WaterLandDataset
from rrsis.data.normalize import (
    NormStats,
    apply_stats,
    decimated_pixels,
    input_channels,
    otsu_thresholds,
    scene_thresholds,
)
from rrsis.data.otsu import dark, gate_band, gate_spec, gate_water, otsu_threshold, otsu_water
from rrsis.data.pairs import geotiff_ref
from rrsis.errors import CheckpointError, ConfigError, InputError
from rrsis.pipeline.inputs import resolve_inputs
from rrsis.pipeline.plan import plan_run
from rrsis.pipeline.stages import InferStage, read_stage
from tests.pipeline_data import gated_checkpoint, read_tiles, tiny_checkpoint
from tests.test_scene_norm import _write


def test_anchored_channels_hand_computed() -> None:
    # one band, mean -10, std 4, anchor (Otsu threshold) -14:
    #   x = -18 -> absolute (-18 + 10) / 4 = -2.0, anchored (-18 + 14) / 4 = -1.0
    #   x =  -6 -> absolute ( -6 + 10) / 4 =  1.0, anchored ( -6 + 14) / 4 =  2.0
    #   NaN     -> the fill (0.0) in both channels
    image = np.array([[[-18.0, -6.0, np.nan]]], dtype=np.float32)
    valid = np.ones((1, 3), dtype=bool)
    out = apply_stats([-10.0], [4.0], 0.0, image, valid, anchor=[-14.0])
    np.testing.assert_allclose(out, [[[-2.0, 1.0, 0.0]], [[-1.0, 2.0, 0.0]]])
    assert input_channels(2, "otsu") == 4 and input_channels(2, "split") == 2 and input_channels(2, "scene") == 2
    with pytest.raises(InputError, match="2 Otsu anchor"):
        apply_stats([-10.0], [4.0], 0.0, image, valid, anchor=[-14.0, -20.0])
    with pytest.raises(InputError, match="no valid pixel"):
        otsu_thresholds(np.zeros((2, 0)))


def test_scene_thresholds_split_each_band_between_its_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    water = np.zeros((64, 64), dtype=bool)
    water[:, :24] = True  # 3/8 of the scene is dark water
    vv = np.where(water, -20.0, -8.0) + rng.normal(0, 1.0, water.shape)
    vh = np.where(water, -27.0, -15.0) + rng.normal(0, 1.0, water.shape)
    data = np.stack([vv, vh]).astype(np.float32)
    data[:, :4, :4] = np.nan
    uri = _write(tmp_path / "s.tif", data)
    thresholds = scene_thresholds(uri, [1, 2], max_px=64)
    assert -18.0 < thresholds[0] < -10.0 and -25.0 < thresholds[1] < -17.0
    pixels = decimated_pixels(uri, [1, 2], max_px=64)
    assert pixels.shape == (2, 64 * 64 - 16)  # the NaN corner is not a pixel
    assert thresholds == [otsu_threshold(pixels[0]), otsu_threshold(pixels[1])]
    assert scene_thresholds(uri, [2, 1], max_px=64) == thresholds[::-1]
    blank = _write(tmp_path / "blank.tif", np.full((2, 8, 8), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match=r"blank\.tif: no valid pixel"):
        scene_thresholds(blank, [1, 2])


def _otsu_checkpoint(tmp_path: Path) -> str:
    """A random SeNet taking 4 channels, saved as a 2-band (VV, VH) norm=otsu checkpoint."""
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "four.pt", in_bands=4))
    ckpt.bands, ckpt.norm_mean, ckpt.norm_std, ckpt.norm = ["VV", "VH"], [-12.0, -19.0], [4.0, 4.0], "otsu"
    save_checkpoint(ckpt, str(tmp_path / "otsu.pt"))
    return str(tmp_path / "otsu.pt")


def test_otsu_checkpoint_needs_the_scene_and_feeds_the_map_infer_stage(tmp_path: Path) -> None:
    """Every tile of a scene is anchored on the scene's thresholds; each scene on its own; the probabilities
    are exactly the model on [absolute, anchored] channels."""
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    water = np.sin(xx / 13.0) * np.cos(yy / 11.0) > 0.3
    scenes = []
    for i, shift in enumerate((0.0, 5.0)):  # the second scene is 5 dB brighter, water and land alike
        vv = np.where(water, -20.0, -8.0) + shift + np.sin(yy / 7.0)
        scenes.append(_write(tmp_path / f"s{i}.tif", np.stack([vv, vv - 7.0])))
    uri = _otsu_checkpoint(tmp_path)
    ckpt = load_checkpoint(uri)
    assert ckpt.norm == "otsu"
    with pytest.raises(CheckpointError, match="norm=otsu"):
        normalize_image(ckpt, np.zeros((2, 4, 4), np.float32), np.ones((4, 4), bool))
    resolved, _ = resolve_inputs(scenes)
    _, rows, failures = plan_run(
        resolved, str(tmp_path / "run"), tile_px=64, overlap_px=0, requested_bands=[], model_bands=["VV", "VH"],
        in_bands=2,
    )  # fmt: skip
    assert not failures and len(rows) == 8
    batch = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
    read = read_stage(batch)
    infer = InferStage(uri, device="cpu", torch_threads=1)
    out = infer(dict(read))
    assert len(infer.scenes) == 2 and len(infer.measurer.futures) == 2  # one decimated read per scene
    model = build_from_checkpoint(ckpt)
    for i, row in enumerate(rows):
        stats = scene_norm(ckpt, str(row["scene_uri"]), [1, 2])
        assert stats.anchor == scene_thresholds(str(row["scene_uri"]), [1, 2])
        assert (stats.norm_mean, stats.norm_std) == ([-12.0, -19.0], [4.0, 4.0])
        x = apply_stats(stats.norm_mean, stats.norm_std, 0.0, read["image"][i], read["valid"][i], stats.anchor)
        assert x.shape == (4, 64, 64)
        with torch.inference_mode():
            expected = torch.softmax(model(torch.from_numpy(x)[None]), dim=1)[0, 1].numpy()
        np.testing.assert_allclose(out["prob"][i], expected, atol=1e-5)
    a0, a1 = (infer.scenes[k][0].anchor for k in sorted(infer.scenes))
    assert a1[0] - a0[0] == pytest.approx(5.0, abs=0.2)  # the threshold follows the scene's level


def test_dataset_anchors_each_chip_on_its_own_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (tmp_path / "labels").mkdir()
    refs = []
    water = rng.random((40, 40)) > 0.6  # the same water in both chips; the "bright" one is 6 dB brighter
    for name, offset in (("dark", -6.0), ("bright", 0.0)):
        image = np.stack([np.where(water, -20.0, -8.0), np.where(water, -27.0, -15.0)]) + offset
        uri = _write(tmp_path / f"{name}.tif", image + rng.normal(0, 1.0, (2, 40, 40)))
        label = _write(tmp_path / "labels" / f"{name}.tif", water[None], "int16", nodata=None)
        refs.append(geotiff_ref(name, name, uri, label, []))
    stats = NormStats(["VV", "VH"], [-12.0, -19.0], [4.0, 4.0], norm="otsu")
    dataset = WaterLandDataset(refs, stats, train=False, crop_px=20)  # 4 windows per chip, no padding
    for index in range(len(dataset)):
        sample, _ = dataset.items[index]
        image, valid, _ = dataset.read(index)
        anchor = scene_thresholds(refs[sample].image_uri, [1, 2])
        expected = apply_stats([-12.0, -19.0], [4.0, 4.0], 0.0, image, valid, anchor)
        np.testing.assert_array_equal(dataset[index]["image"].numpy(), expected)
    # anchored channels agree across the 6 dB offset; absolute channels keep it
    dark = np.concatenate([dataset[i]["image"].numpy() for i in range(len(dataset)) if dataset.items[i][0] == 0], 2)
    bright = np.concatenate([dataset[i]["image"].numpy() for i in range(len(dataset)) if dataset.items[i][0] == 1], 2)
    assert abs(float(dark[2].mean() - bright[2].mean())) < 0.3
    assert float(bright[0].mean() - dark[0].mean()) == pytest.approx(6.0 / 4.0, abs=0.3)


def test_gate_spec_and_hand_computed_gating() -> None:
    assert gate_band("", ["VV", "VH"]) is None and gate_band("none", ["VV", "VH"]) is None
    assert gate_band("otsu:VH", ["VV", "VH"]) == 1 and gate_band("otsu:vv", ["VV", "VH"]) == 0
    for bad in ("otsu:HH", "VV", "otsu:"):
        with pytest.raises(ConfigError, match=r"data\.gate="):
            gate_band(bad, ["VV", "VH"])
    # threshold -14 dB: water at -20 stays, water at -10 (brighter) is dropped, NaN is never "below"
    water = np.array([1, 1, 1, 0], dtype=np.uint8)
    vv = np.array([-20.0, -10.0, np.nan, -20.0])
    np.testing.assert_array_equal(gate_water(water, vv, -14.0), [1, 0, 0, 0])
    assert gate_water(water, vv, -14.0).dtype == np.uint8
    np.testing.assert_allclose(gate_water(np.array([0.9, 0.8]), np.array([-15.0, -13.0]), -14.0), [0.9, 0.0])


def _median_below(band: np.ndarray, threshold: float, window: int) -> np.ndarray:
    """The slow way: sort each window (NaN and the outside as +inf, i.e. bright) and compare its median."""
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(np.where(np.isnan(band), np.inf, band), window // 2, constant_values=np.inf)
    return np.median(sliding_window_view(padded, (window, window)), axis=(-2, -1)) < threshold


def test_median_gate_spec_and_dark_majority_is_the_median_compared(samples: Path) -> None:
    """`otsu:VV:median5`: the 5x5 median of VV below the threshold, checked against sorting every window of a
    real Sen1Floods11 chip (VV in dB, with NaN holes); the dark count gives the same mask for 3, 5 and 7."""
    import rasterio

    bands = ["VV", "VH"]
    assert gate_band("otsu:VV:median5", bands) == 0 and gate_spec("otsu:vh:MEDIAN3", bands) == (1, 3)
    assert gate_spec("otsu:VV", bands) == (0, 1) and gate_spec("none", bands) == (None, 1)
    for bad in ("otsu:VV:median4", "otsu:VV:median", "otsu:VV:mean5", "otsu:VV:median5:x", "otsu:VV:median-3"):
        with pytest.raises(ConfigError, match=r"data\.gate=.*median<odd k>"):
            gate_spec(bad, bands)
    with rasterio.open(samples / "sen1floods11" / "S1Hand" / "Spain_7370579_S1Hand.tif") as src:
        vv = src.read(1, window=((200, 296), (100, 180)))
    vv[np.random.default_rng(0).random(vv.shape) < 0.05] = np.nan
    threshold = otsu_threshold(vv)
    for window in (3, 5, 7):
        np.testing.assert_array_equal(dark(vv, threshold, window), _median_below(vv, threshold, window))
    raw, smooth = dark(vv, threshold), dark(vv, threshold, 5)
    assert 0.05 < smooth.mean() < 0.95 and (raw != smooth).mean() > 0.02  # the chip has both, and speckle
    model_water = np.ones(vv.shape, dtype=np.uint8)
    np.testing.assert_array_equal(gate_water(model_water, vv, threshold, 5), smooth.astype(np.uint8))
    # a water body with one bright speckle: the pixel gate punches a hole, the median gate does not
    body = np.full((9, 9), -20.0)
    body[4, 4] = -5.0
    assert not dark(body, -14.0)[4, 4] and dark(body, -14.0, 5)[4, 4]


def test_gated_checkpoint_in_the_map_infer_stage(tmp_path: Path) -> None:
    """P(water) is the ungated model's where VV is below the scene's Otsu threshold, 0 elsewhere."""
    yy, xx = np.mgrid[0:64, 0:128].astype(np.float32)
    water = np.sin(xx / 9.0) * np.cos(yy / 7.0) > 0.2
    vv = np.where(water, -20.0, -8.0) + np.sin(yy / 5.0) * 3.0
    scene = _write(tmp_path / "s.tif", np.stack([vv, vv - 7.0]))
    plain = tiny_checkpoint(tmp_path / "plain.pt")
    gated_checkpoint(plain, tmp_path / "gated.pt")
    read = read_tiles([scene], tmp_path / "run")
    ungated = InferStage(plain, device="cpu", torch_threads=1)(dict(read))["prob"]
    gated = InferStage(str(tmp_path / "gated.pt"), device="cpu", torch_threads=1)(dict(read))["prob"]
    threshold = scene_thresholds(scene, [1, 2])[0]
    assert -20.0 < threshold < -8.0
    dark = read["image"][:, 0] < threshold
    np.testing.assert_array_equal(gated[dark], ungated[dark])
    assert (gated[~dark] == 0).all() and (ungated[~dark] > 0.5).any()  # the gate removed some model water
    ckpt = load_checkpoint(plain)
    ckpt.gate = "otsu:HH"
    save_checkpoint(ckpt, str(tmp_path / "bad.pt"))
    with pytest.raises(CheckpointError, match=r"bad\.pt: gate='otsu:HH'"):
        load_checkpoint(str(tmp_path / "bad.pt"))


def test_median_gated_tiles_agree_with_the_whole_scene(tmp_path: Path, samples: Path) -> None:
    """A real chip mapped in overlapping tiles with an `otsu:VV:median5` checkpoint: on every tile's core the
    gated P(water) is the ungated one where the whole scene's 5x5 median of VV is below the scene's threshold,
    0 elsewhere; the window's halo lies in the overlap, so there is no seam."""
    import rasterio

    from rrsis.pipeline.stages import _tile

    with rasterio.open(samples / "sen1floods11" / "S1Hand" / "Spain_7370579_S1Hand.tif") as src:
        data = src.read(window=((160, 256), (96, 224)))
    scene = _write(tmp_path / "s.tif", data)
    plain = tiny_checkpoint(tmp_path / "plain.pt")
    gated_checkpoint(plain, tmp_path / "gated.pt", gate="otsu:VV:median5")
    read = read_tiles([scene], tmp_path / "run", tile_px=48, overlap_px=16)
    ungated = InferStage(plain, device="cpu", torch_threads=1)(dict(read))["prob"]
    gated = InferStage(str(tmp_path / "gated.pt"), device="cpu", torch_threads=1)(dict(read))["prob"]
    whole = dark(np.nan_to_num(data[0], nan=0.0), scene_thresholds(scene, [1, 2])[0], 5)
    assert 0.05 < whole.mean() < 0.95
    covered = np.zeros(whole.shape, dtype=bool)
    for i in range(len(gated)):
        tile = _tile(read, i)
        rows, cols = tile.core.relative_to(tile.window).slices()
        scene_rows, scene_cols = tile.core.slices()
        expected = np.where(whole[scene_rows, scene_cols], ungated[i][rows, cols], 0.0)
        np.testing.assert_array_equal(gated[i][rows, cols], expected)
        covered[scene_rows, scene_cols] = True
    assert covered.all() and len(gated) > 4


def test_map_refuses_an_overlap_too_small_for_the_median_gate(tmp_path: Path) -> None:
    """A 5x5 median gate needs 2 px of context around each core: overlap_px 2 (1 px) is one line naming the
    key before any tile is read; 4 passes, and a pixel gate needs no overlap."""
    from rrsis.checkpoint_header import read_header
    from rrsis.pipeline.run import run_map
    from rrsis.pipeline.task_waterland import check_gate_overlap
    from tests.pipeline_data import map_config

    scene = _write(tmp_path / "s.tif", np.full((2, 64, 64), -12.0, dtype=np.float32))
    plain = tiny_checkpoint(tmp_path / "plain.pt")
    median = gated_checkpoint(plain, tmp_path / "median.pt", gate="otsu:VV:median5")
    common = [f"input=[{scene}]", f"output={tmp_path / 'out'}", "tiling.tile_px=32"]
    with pytest.raises(ConfigError, match=r"key 'tiling\.overlap_px': value 2 .*'otsu:VV:median5'.*overlap_px >= 4"):
        run_map(map_config(*common, f"infer.checkpoint={median}", "tiling.overlap_px=2"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.tif"))
    for ckpt, overlap in ((median, 4), (plain, 0)):
        cfg = map_config(*common, f"infer.checkpoint={ckpt}", f"tiling.overlap_px={overlap}")
        check_gate_overlap(cfg, read_header(ckpt))


def test_eval_applies_the_gate_of_the_checkpoint_or_the_config(tmp_path: Path, samples: Path) -> None:
    """`rrsis eval` on a real chip: the gated model's IoU_water equals an independent recomputation (model
    argmax AND VV below the chip's Otsu threshold, from the files); `data.gate=none` switches it off."""
    import json

    from rrsis.config.eval import EvalConfig
    from rrsis.config.train import DataConfig
    from rrsis.evaluate.run import run_eval
    from rrsis.metrics.segmentation import ConfusionMeter

    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "m.pt"))
    ckpt.gate = "otsu:VV"
    save_checkpoint(ckpt, str(tmp_path / "gated.pt"))
    root = samples / "sen1floods11"

    def run(gate: str) -> dict:
        out = tmp_path / f"out_{gate or 'ckpt'}"
        cfg = EvalConfig(
            checkpoint=str(tmp_path / "gated.pt"),
            data=DataConfig(root=str(root), val_events=["India"], gate=gate),
            output=str(out),
            panels=0,
            device="cpu",
        )
        assert run_eval(cfg) == 0
        return json.loads((out / "metrics.json").read_text())

    import rasterio

    with rasterio.open(root / "S1Hand" / "India_900498_S1Hand.tif") as src:
        image = src.read().astype(np.float32)
    with rasterio.open(root / "LabelHand" / "India_900498_LabelHand.tif") as src:
        label = src.read(1).astype(np.int64)
    valid = np.isfinite(image).all(axis=0)
    model = build_from_checkpoint(ckpt)
    x = normalize_image(ckpt, image, valid)
    with torch.inference_mode():
        pred = model(torch.from_numpy(x)[None]).argmax(dim=1)[0].numpy()
    _, threshold = otsu_water(image[0], valid)
    expected = {}
    ways = (("gated", gate_water(pred, image[0], threshold)), ("plain", pred))
    for name, p in (*ways, ("median", gate_water(pred, image[0], threshold, 5))):
        meter = ConfusionMeter()
        meter.update(p, label, valid)
        expected[name] = meter.compute()["iou_water"]
    removed = int((pred.astype(bool) & ~gate_water(pred, image[0], threshold).astype(bool) & valid).sum())
    assert removed > 1000  # the gate takes real model water away on this chip
    assert expected["gated"] != pytest.approx(expected["plain"], abs=1e-5)
    gated, plain = run(""), run("none")
    assert gated["gate"] == "otsu:VV" and plain["gate"] == ""
    assert gated["model"]["pooled"]["iou_water"] == pytest.approx(expected["gated"], abs=1e-6)
    assert plain["model"]["pooled"]["iou_water"] == pytest.approx(expected["plain"], abs=1e-6)
    median = run("otsu:VV:median5")  # the config's gate overrides the checkpoint's
    assert median["gate"] == "otsu:VV:median5" and expected["median"] != pytest.approx(expected["gated"], abs=1e-5)
    assert median["model"]["pooled"]["iou_water"] == pytest.approx(expected["median"], abs=1e-6)
