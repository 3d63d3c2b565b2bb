"""SAM decoder fine-tuning with the tiny SAM on real Sen1Floods11 samples: it overfits, only the decoder moves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rrsis.config.load import load_config
from rrsis.config.train import TrainConfig
from rrsis.errors import ConfigError
from rrsis.models.sam.build import build_sam
from rrsis.models.sam.predictor import SamTilePredictor
from rrsis.train.run import run_train
from rrsis.train.sam_decoder import (
    DecoderSample,
    DecoderTrainSettings,
    fit_sam_decoder,
    samples_from_mask,
    sen1floods11_samples,
    settings_from_train_config,
)

REPO = Path(__file__).resolve().parents[1]
TINY_YAML = REPO / "configs" / "train" / "sam_decoder_tiny.yaml"
CROPS = [(0, 288), (32, 32), (32, 64)]  # (row, col) of 64 px crops with 17-30 % water and no nodata


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """A 2-core machine shared with other test workers: intra-op threads only contend (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def water_samples(samples: Path) -> list[DecoderSample]:
    """Real samples: S2 RGB (B4, B3, B2; reflectance x 10000 scaled by 255 / 3000) + the largest water body."""
    root = samples / "sen1floods11"
    with rasterio.open(root / "S2Hand" / "Spain_7370579_S2Hand.tif") as src:
        rgb = np.clip(src.read([4, 3, 2]).transpose(1, 2, 0) / 3000.0 * 255.0, 0, 255).astype(np.uint8)
    with rasterio.open(root / "LabelHand" / "Spain_7370579_LabelHand.tif") as src:
        label = src.read(1)
    out: list[DecoderSample] = []
    for row, col in CROPS:
        win = np.s_[row : row + 64, col : col + 64]
        assert (label[win] >= 0).all()
        out += samples_from_mask(rgb[win].copy(), label[win] == 1, f"{row}_{col}", min_area_px=64, max_objects=1)
    assert len(out) == 3
    return out


def test_samples_from_mask_boxes_are_object_extents() -> None:
    mask = np.zeros((20, 30), bool)
    mask[2:5, 3:9] = True  # 18 px object: box (3, 2, 9, 5)
    mask[10:18, 12:25] = True  # 104 px object: box (12, 10, 25, 18), listed first
    got = samples_from_mask(np.zeros((20, 30, 3), np.uint8), mask, "x", min_area_px=10)
    assert [s.box_xyxy for s in got] == [(12, 10, 25, 18), (3, 2, 9, 5)]
    assert got[0].mask.sum() == 104 and not got[0].mask[3, 4]


@pytest.mark.slow
def test_decoder_overfits_a_few_real_samples(
    water_samples: list[DecoderSample], tmp_path: Path, one_thread: None
) -> None:
    cfg = load_config(TrainConfig, TINY_YAML)
    settings = settings_from_train_config(cfg)
    before = build_sam(cfg.model.sam)
    result = fit_sam_decoder(cfg.model.sam, water_samples, settings, out_dir=tmp_path)
    first, last = result.history[0], result.history[-1]
    assert len(result.history) == settings.epochs
    assert last <= 0.1 * first, f"loss {first:.3f} -> {last:.3f}: fell less than 90 %"

    # the checkpoint is decoder-only, self-describing, and a predictor built from it fits the samples
    assert result.checkpoint is not None
    raw = torch.load(result.checkpoint, weights_only=True)
    assert raw["model"] == "sam_decoder" and raw["metrics"]["train_loss"] == pytest.approx(last)
    cfg.model.sam.decoder_checkpoint = str(result.checkpoint)
    tuned = SamTilePredictor.from_config(cfg.model.sam)
    enc_before, enc_after = before.image_encoder.state_dict(), tuned.sam.image_encoder.state_dict()
    assert all(torch.equal(enc_before[k], enc_after[k]) for k in enc_before)  # same seed, encoder untouched
    ious = []
    for s in water_samples:
        tuned.set_image(s.image)
        (mask,), _ = tuned.predict(np.array([s.box_xyxy], float))
        ious.append((mask & s.mask).sum() / (mask | s.mask).sum())
    assert min(ious) > 0.8


def test_settings_refuse_losses_the_decoder_does_not_have() -> None:
    cfg = load_config(TrainConfig, TINY_YAML, overrides=["loss.name=edge"])
    with pytest.raises(ConfigError, match=r"loss\.name"):
        settings_from_train_config(cfg)
    assert settings_from_train_config(load_config(TrainConfig, REPO / "configs/train/sam_decoder.yaml")) == (
        DecoderTrainSettings(lr=1e-4, epochs=20, batch_size=1)  # the paper's setting
    )


def test_run_sam_decoder_reads_sen1floods11_and_writes_a_decoder_checkpoint(tmp_path: Path, one_thread: None) -> None:
    overrides = ["data.crop_px=256", "optim.epochs=1", f"output={tmp_path}"]
    cfg = load_config(TrainConfig, TINY_YAML, overrides)
    samples = sen1floods11_samples(cfg.data)
    # the one S2 chip (Spain_7370579) cut into 4 crops of 256 px; up to 4 water bodies of >= 64 px per crop
    assert 0 < len(samples) <= 16 and all(s.image.shape == (256, 256, 3) for s in samples)
    assert run_train(cfg) == 0  # the plain loop over the SAM decoder recipe
    raw = torch.load(tmp_path / "sam_decoder_tiny" / "decoder.pt", weights_only=True)
    assert raw["kind"] == "rrsis.sam_decoder" and raw["epoch"] == 1
    with pytest.raises(ConfigError, match="sensor 's2'"):
        sen1floods11_samples(load_config(TrainConfig, TINY_YAML, ["data.sensor=s1"]).data)
