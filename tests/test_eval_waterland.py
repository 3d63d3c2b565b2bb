"""`rrsis eval` for water-land: Otsu baseline by hand, and a full run on a real held-out chip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import torch

from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
from rrsis.config.eval import EvalConfig
from rrsis.config.train import DataConfig
from rrsis.data.otsu import otsu_threshold, otsu_water
from rrsis.evaluate.run import run_eval
from rrsis.metrics.segmentation import ConfusionMeter
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model


def test_otsu_threshold_hand_computed() -> None:
    # Two equal modes at -20 dB and -8 dB: every cut between them gives the same between-class variance,
    # argmax takes the first: the upper edge of bin 0 of 256 bins over [-20, -8] = -20 + 12 / 256.
    values = np.array([-20.0] * 50 + [-8.0] * 50)
    assert otsu_threshold(values) == pytest.approx(-20 + 12 / 256)
    # Unequal spread: modes 0 (x3) and 10 (x1) -> still a cut between the modes; water below it.
    band = np.array([[0.0, 0.0, 0.0, 10.0]])
    water, threshold = otsu_water(band, np.array([[True, True, False, True]]))
    assert 0 < threshold <= 10 and water.tolist() == [[1, 1, 0, 0]]  # the invalid pixel is never water
    assert np.isnan(otsu_threshold(np.array([np.nan])))


@pytest.mark.slow
def test_run_eval_writes_metrics_csv_panels_and_baseline(
    tmp_path: Path, samples: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig()
    cfg.waterland.family, cfg.waterland.width = "senet", "half"
    ckpt = checkpoint_from_model(
        build_model(cfg), cfg, bands=["VV", "VH"], norm_mean=[-10.0, -17.0], norm_std=[4.0, 4.0]
    )
    save_checkpoint(ckpt, str(tmp_path / "m.pt"))
    root = samples / "sen1floods11"
    eval_cfg = EvalConfig(
        checkpoint=str(tmp_path / "m.pt"),
        data=DataConfig(root=str(root), val_events=["India"]),
        split="val",
        output=str(tmp_path / "out"),
        panels=1,
        device="cpu",
    )
    assert run_eval(eval_cfg) == 0
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["chips"] == ["India_900498"] and set(report) >= {"model", "otsu_vv", "otsu_vh"}
    rows = list(csv.DictReader((tmp_path / "out" / "chips.csv").open()))
    assert [r["sample_id"] for r in rows] == ["India_900498"]
    # independent check of the baseline column: Otsu on VV straight from the files
    with rasterio.open(root / "S1Hand" / "India_900498_S1Hand.tif") as src:
        vv = src.read(1)
    with rasterio.open(root / "LabelHand" / "India_900498_LabelHand.tif") as src:
        label = src.read(1).astype(np.int64)
    valid = np.isfinite(vv)
    water, threshold = otsu_water(np.nan_to_num(vv), valid)
    meter = ConfusionMeter()
    meter.update(water, label, valid)
    assert float(rows[0]["otsu_vv_iou_water"]) == pytest.approx(meter.compute()["iou_water"], abs=1e-4)
    assert float(rows[0]["otsu_vv_threshold_db"]) == pytest.approx(threshold, abs=1e-3)
    assert report["otsu_vv"]["pooled"]["iou_water"] == pytest.approx(meter.compute()["iou_water"])
    panel = cv2.imread(str(tmp_path / "out" / "panels" / "India_900498.png"))
    assert panel.shape == (512, 5 * 512 + 4 * 4, 3)  # image | label | model | Otsu VV | Otsu VH
    out = capsys.readouterr().out
    assert "otsu_vv" in out and "India_900498" in out and "mean per-chip IoU_water" in out
