"""OMBRIA reader on the real chips in ../shared/data/ombria (skipped when absent, e.g. on a fresh clone), its
errors on broken or incomplete triplets, the PNG -> model-input scaling, and fine-tuning from a checkpoint."""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from omegaconf import OmegaConf
from PIL import Image

from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
from rrsis.cli import main
from rrsis.config.eval import EvalConfig
from rrsis.config.train import DataConfig, TrainConfig
from rrsis.data import ombria
from rrsis.data.dataset import WaterLandDataset, build_splits
from rrsis.data.normalize import NormStats, sample_scene_stats
from rrsis.data.otsu import otsu_water
from rrsis.data.pairs import SampleRef, read_sample
from rrsis.data.sen1floods11 import find_chips
from rrsis.errors import ConfigError, InputError
from rrsis.evaluate.run import run_eval
from rrsis.metrics.segmentation import ConfusionMeter
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model
from rrsis.train.waterland import init_weights, prepare_waterland

REPO = Path(__file__).resolve().parents[1]
OMBRIA = REPO.parent / "shared" / "data" / "ombria"  # staged beside the project, never vendored into it
needs_ombria = pytest.mark.skipif(
    not (OMBRIA / "OmbriaS1").is_dir(), reason=f"real OMBRIA chips not staged at {OMBRIA} (not part of the repo)"
)


def _png(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(data, dtype=np.uint8), mode="L").save(path)
    return path


def _flat_triplet(folder: Path, n: str, after: np.ndarray, mask: np.ndarray) -> None:
    _png(folder / f"S1_before_{n}.png", np.full_like(after, 100))
    _png(folder / f"S1_after_{n}.png", after)
    _png(folder / f"S1_mask_{n}.png", mask)


@needs_ombria
def test_real_ombria_triplets_both_layouts_groups_and_values() -> None:
    samples = ombria.find_samples(str(OMBRIA))
    groups = collections.Counter(s.group for s in samples)
    assert groups == {
        "OmbriaS1-train": 624,
        "OmbriaS1-test": 70,
        "ALBANIA": 22,
        "FRANCE": 88,
        "GUYANA": 30,
        "TIMOR": 10,
    }
    by_id = {s.sample_id: s for s in samples}
    s1 = by_id["OmbriaS1-test_0013"]
    assert Path(s1.before).name == "S1_before_0013.png" and Path(s1.mask).parent.name == "MASK"
    event = by_id["ALBANIA_1"]
    assert Path(event.after) == OMBRIA / "2021/ALBANIA/Sentinel1/AFTER/imafter_1.png"
    assert Path(event.mask).name == "gt_1.png" and Path(event.before).name == "imbefore_1.png"
    image, valid, label = read_sample(event.ref())
    raw_mask = np.asarray(Image.open(event.mask))
    assert image.shape == (1, 256, 256) and image.dtype == np.float32 and valid.all()
    np.testing.assert_array_equal(image[0], np.asarray(Image.open(event.after), dtype=np.float32))
    np.testing.assert_array_equal(label, (raw_mask == 255).astype(np.int64))  # 255 = flooded -> water (1)
    assert 0 < label.mean() < 1


@needs_ombria
def test_real_ombria_splits_by_group_and_scene_normalised_dataset() -> None:
    data = DataConfig(format="ombria", root=str(OMBRIA), val_events=["OmbriaS1-test"], norm="scene")
    splits = build_splits(data)
    assert splits.bands == ["VV"]
    assert len(splits.val) == 70 and {r.group for r in splits.val} == {"OmbriaS1-test"}
    assert len(splits.train) == 774 and "OmbriaS1-test" not in {r.group for r in splits.train}
    stats = NormStats(["VV"], [0.0], [1.0], norm="scene")
    dataset = WaterLandDataset(splits.val[:3], stats, train=True, crop_px=128, water_crop_fraction=0.5)
    item = dataset[0]
    assert item["image"].shape == (1, 128, 128)
    # each chip is normalised by its own median and IQR/1.349: the chip's median lands at 0
    image, valid, _ = read_sample(splits.val[0])
    x = dataset.sample_stats[0].apply(image, valid)
    assert abs(float(np.median(x))) < 1e-6 and 0.5 < float(np.subtract(*np.percentile(x, [75, 25]))) < 2.0


def test_flat_layout_and_bad_or_incomplete_samples_name_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    after = rng.integers(0, 256, (32, 32))
    mask = np.where(after < 100, 255, 0)
    flat = tmp_path / "ok" / "OmbriaS1" / "train"
    _flat_triplet(flat, "0001", after, mask)
    samples = ombria.find_samples(str(tmp_path / "ok"))
    assert [s.sample_id for s in samples] == ["OmbriaS1-train_0001"] and samples[0].width == 32
    _, _, label = read_sample(samples[0].ref())
    np.testing.assert_array_equal(label, (after < 100).astype(np.int64))

    broken = tmp_path / "broken" / "OmbriaS1" / "test"
    _flat_triplet(broken, "0002", after, mask)
    data = (broken / "S1_after_0002.png").read_bytes()
    (broken / "S1_after_0002.png").write_bytes(data[: len(data) // 2])  # truncated mid-stream
    with pytest.raises(InputError, match=r"S1_after_0002\.png"):
        ombria.find_samples(str(tmp_path / "broken"))

    missing = tmp_path / "missing" / "2021" / "ATLANTIS" / "Sentinel1"
    _png(missing / "AFTER" / "imafter_3.png", after)
    _png(missing / "BEFORE" / "imbefore_3.png", after)
    with pytest.raises(InputError, match=r"incomplete: its mask image .*MASK/gt_3\.png is missing"):
        ombria.find_samples(str(tmp_path / "missing"))

    rgb = tmp_path / "rgb" / "OmbriaS1" / "train"
    _flat_triplet(rgb, "0004", after, mask)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8), mode="RGB").save(rgb / "S1_mask_0004.png")
    with pytest.raises(InputError, match=r"S1_mask_0004\.png: expected a 1-band 8-bit PNG"):
        ombria.find_samples(str(tmp_path / "rgb"))

    grey = tmp_path / "grey" / "OmbriaS1" / "train"
    _flat_triplet(grey, "0005", after, np.full_like(mask, 128))  # a mask value that is neither 0 nor 255
    (sample,) = ombria.find_samples(str(tmp_path / "grey"))
    with pytest.raises(InputError, match=r"S1_mask_0005\.png has values \[128\]"):
        read_sample(sample.ref())

    with pytest.raises(InputError, match="no OMBRIA chips"):
        ombria.find_samples(str(tmp_path / "missing" / "2021" / "ATLANTIS"))
    with pytest.raises(InputError, match="one band, VV"):
        ombria.band_indexes(["VV", "VH"])


def _stretch_to_png(values: np.ndarray, path: Path) -> Path:
    """OMBRIA's 8-bit scaling as measured: a per-image min-max stretch to 0..255."""
    lo, hi = float(values.min()), float(values.max())
    return _png(path, np.round((values - lo) / (hi - lo) * 255))


def _tif(path: Path, band: np.ndarray) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", width=band.shape[1], height=band.shape[0], count=1, dtype="float32",
        crs="EPSG:4326", transform=Affine(1e-4, 0, 0, 0, -1e-4, 0),
    ) as dst:  # fmt: skip
        dst.write(band[None].astype(np.float32))
    return path


def test_png_scaling_matches_sen1floods11_scene_normalised_db(samples: Path, tmp_path: Path) -> None:
    """A real Sen1Floods11 VV crop (dB) stretched like OMBRIA and read through the reader + norm=scene gives
    the model the same input as the dB crop itself (up to 8-bit quantisation); a stretch of linear power,
    which OMBRIA's values rule out, would not."""
    chip = next(r for r in find_chips(str(samples / "sen1floods11")) if r.sample_id == "India_900498")
    image, valid, _ = read_sample(chip)
    vv_db = image[0, :256, :256]
    assert valid[:256, :256].all()
    mask = np.zeros((256, 256))
    refs = {}
    for name, values in (("db", vv_db), ("power", 10 ** (vv_db / 10))):
        folder = tmp_path / name / "OmbriaS1" / "train"
        _stretch_to_png(values, folder / "S1_after_0001.png")
        _png(folder / "S1_before_0001.png", mask)
        _png(folder / "S1_mask_0001.png", mask)
        (refs[name],) = ombria.find_refs(str(tmp_path / name))
    tif = _tif(tmp_path / "vv_db.tif", vv_db)
    crop = dataclasses.replace(chip, image_uri=str(tif), label_uri=str(tif), bands=(1,), width=256, height=256)
    reference = NormStats(["VV"], *sample_scene_stats(crop))
    expected = reference.apply(vv_db[None], np.ones((256, 256), bool))[0]

    def model_input(ref: SampleRef) -> np.ndarray:
        stats = NormStats(["VV"], *sample_scene_stats(ref))
        png, png_valid, _ = read_sample(ref)
        return stats.apply(png, png_valid)[0]

    from_db_png = model_input(refs["db"])
    assert float(np.abs(from_db_png - expected).mean()) < 0.05  # 1 DN is ~0.2 dB here: quantisation only
    np.testing.assert_allclose(np.median(from_db_png), 0.0, atol=0.05)
    from_power_png = model_input(refs["power"])
    assert float(np.abs(from_power_png - expected).mean()) > 0.5


def test_ombria_training_needs_scene_norm(tmp_path: Path) -> None:
    cfg = OmegaConf.to_object(OmegaConf.structured(TrainConfig))
    assert isinstance(cfg, TrainConfig)
    cfg.data.format, cfg.data.root, cfg.data.norm = "ombria", str(tmp_path), "split"
    with pytest.raises(ConfigError, match=r"data.norm='split': OMBRIA chips are stretched per image"):
        prepare_waterland(cfg)


def test_init_checkpoint_loads_matching_weights_and_refuses_other_bands(tmp_path: Path) -> None:
    cfg = OmegaConf.to_object(OmegaConf.structured(TrainConfig))
    assert isinstance(cfg, TrainConfig)
    cfg.model.waterland.family, cfg.model.waterland.in_bands, cfg.model.waterland.aux_heads = "senet", 1, 1
    torch.manual_seed(0)
    source = build_model(cfg.model)
    uri = str(tmp_path / "pre.pt")
    save_checkpoint(
        checkpoint_from_model(source, cfg.model, bands=["VV"], norm_mean=[0.0], norm_std=[1.0], norm="scene"), uri
    )
    cfg.init_checkpoint = uri
    torch.manual_seed(1)
    target = build_model(cfg.model)
    init_weights(target, cfg, NormStats(["VV"], [0.0], [1.0], norm="scene"))
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    with pytest.raises(ConfigError, match=r"init_checkpoint=.*pre\.pt: trained on bands \['VV'\] with norm=scene"):
        init_weights(target, cfg, NormStats(["VV"], [0.0], [1.0], norm="split"))
    cfg.model.waterland.in_bands = 2
    with pytest.raises(ConfigError, match=r"init_checkpoint=.*does not match"):
        init_weights(build_model(cfg.model), cfg, NormStats(["VV", "VH"], [0.0] * 2, [1.0] * 2, norm="scene"))


@needs_ombria
def test_eval_on_real_ombria_test_chips_beside_otsu(tmp_path: Path) -> None:
    """`rrsis eval` with data.format=ombria: the model (random weights, scene norm) and Otsu on the 8-bit band,
    scored against the flood mask; the Otsu column is checked against the files read directly."""
    cfg = ModelConfig()
    cfg.waterland.family, cfg.waterland.in_bands = "senet", 1
    torch.manual_seed(0)
    model = build_model(cfg)
    for norm in ("scene", "split"):
        ckpt = checkpoint_from_model(model, cfg, bands=["VV"], norm_mean=[0.0], norm_std=[1.0], norm=norm)
        save_checkpoint(ckpt, str(tmp_path / f"{norm}.pt"))
    subset = tmp_path / "ombria" / "OmbriaS1" / "test"
    for role in ("BEFORE", "AFTER", "MASK"):  # two real test chips, linked (not copied) into a small root
        (subset / role).mkdir(parents=True)
        for n in ("0013", "0018"):
            name = f"S1_{role.lower()}_{n}.png"
            (subset / role / name).symlink_to(OMBRIA / "OmbriaS1" / "test" / role / name)
    data = DataConfig(format="ombria", root=str(tmp_path / "ombria"), val_events=["OmbriaS1-test"])
    eval_cfg = EvalConfig(checkpoint=str(tmp_path / "scene.pt"), data=data, output=str(tmp_path / "out"), panels=0)
    assert run_eval(eval_cfg) == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["chips"] == ["OmbriaS1-test_0013", "OmbriaS1-test_0018"] and set(report) >= {"model", "otsu_vv"}
    rows = {r["sample_id"]: r for r in csv.DictReader((tmp_path / "out" / "chips.csv").open())}
    for n in ("0013", "0018"):
        after = np.asarray(Image.open(subset / "AFTER" / f"S1_after_{n}.png"), dtype=np.float32)
        mask = (np.asarray(Image.open(subset / "MASK" / f"S1_mask_{n}.png")) == 255).astype(np.int64)
        water, _ = otsu_water(after, np.ones(after.shape, bool))
        meter = ConfusionMeter()
        meter.update(water, mask, np.ones(after.shape, bool))
        assert float(rows[f"OmbriaS1-test_{n}"]["otsu_vv_iou_water"]) == pytest.approx(
            meter.compute()["iou_water"], abs=1e-4
        )
    eval_cfg.checkpoint = str(tmp_path / "split.pt")
    with pytest.raises(ConfigError, match="the checkpoint's norm='split': OMBRIA chips are stretched per image"):
        run_eval(eval_cfg)


def test_missing_init_checkpoint_fails_before_training_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the config names its data relative to the repository
    config = REPO / "configs" / "train" / "waterland_demo.yaml"
    missing = tmp_path / "pre.pt"
    assert main(["train", "-c", str(config), f"init_checkpoint={missing}", f"output={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "key 'init_checkpoint'" in err[0] and str(missing) in err[0], err
    assert not any(tmp_path.iterdir())


def test_data_log_line_names_a_dozen_samples_and_counts_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(1)
    for n in range(14):
        after = rng.integers(0, 256, (32, 32))
        _flat_triplet(tmp_path / "OmbriaS1" / "train", f"{n:04d}", after, np.where(after < 80, 255, 0))
    cfg = OmegaConf.to_object(OmegaConf.structured(TrainConfig))
    assert isinstance(cfg, TrainConfig)
    cfg.data.format, cfg.data.root, cfg.data.norm, cfg.data.crop_px = "ombria", str(tmp_path), "scene", 16
    caplog.set_level(logging.INFO, logger="rrsis.train.waterland")
    setup = prepare_waterland(cfg)
    assert len(setup.splits.train) == 14 and setup.stats.norm == "scene"
    (line,) = [r.getMessage() for r in caplog.records if "train samples" in r.getMessage()]
    assert "14 train samples (OmbriaS1-train_0000, " in line and "OmbriaS1-train_0011 and 2 more)" in line
    assert "OmbriaS1-train_0013" not in line
