"""`rrsis eval` on a DANet checkpoint: the batched eval path gives the predictor's own per-expression numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rrsis.cli import main
from rrsis.config.train import DataConfig
from rrsis.data.referring import load_image, load_mask, load_referring_split
from rrsis.metrics.referring import ReferringMeter
from rrsis.models.danet.predictor import DanetPredictor, rgb_to_input
from tests.danet_tiny import save_tiny_danet


def jsonl_split(root: Path, scene: Path) -> Path:
    """Three real Landsat crops of different sizes; the referred region is the scene's black nodata collar."""
    lines = []
    with rasterio.open(scene) as src:
        for i, win in enumerate([Window(0, 0, 96, 96), Window(600, 560, 120, 80), Window(0, 300, 72, 100)]):
            rgb = np.ascontiguousarray(src.read(window=win).transpose(1, 2, 0))
            cv2.imwrite(str(root / f"img{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / f"mask{i}.png"), (rgb.max(axis=2) == 0).astype(np.uint8) * 255)
            lines.append(json.dumps({"image": f"img{i}.png", "mask": f"mask{i}.png", "text": "the black border"}))
    (root / "all.jsonl").write_text("\n".join(lines) + "\n")
    return root / "all.jsonl"


@pytest.mark.slow
def test_rrsis_eval_on_danet_matches_one_pair_at_a_time(tmp_path: Path, samples: Path) -> None:
    model = save_tiny_danet(str(tmp_path / "danet.pt"), seed=1)
    split = jsonl_split(tmp_path, samples / "rasterio" / "RGB.byte.tif")
    out = tmp_path / "eval"
    args = [f"checkpoint={tmp_path / 'danet.pt'}", "data.format=jsonl", f"data.root={split}", "split=all"]
    assert main(["eval", *args, f"output={out}", "panels=1", "batch_size=3", "device=cpu"]) == 0

    # The same numbers from the predictor one (image, expression) pair per forward, and the metric functions.
    predictor, meter = DanetPredictor(model), ReferringMeter()
    for s in load_referring_split(DataConfig(format="jsonl", root=str(split)), "all"):
        image = load_image(s)
        prob = predictor.predict(rgb_to_input(image, model.cfg.pixel_mean, model.cfg.pixel_std), [s.text])[0]
        meter.add(s.sample_id, s.category, pred_mask=prob > 0.5, gt_mask=load_mask(s, image.shape[:2]))
    expected = meter.summary()
    report = json.loads((out / "metrics.json").read_text())
    assert report["model"] == "danet" and report["n"] == 3
    # A batched forward may differ in the last float bits: allow 2 pixels flipped per expression.
    rows = list(csv.DictReader((out / "samples.csv").read_text().splitlines()))
    for got, want in zip(rows, meter.rows, strict=True):
        assert abs(int(got["inter_px"]) - int(want.inter_px or 0)) <= 2
        assert abs(int(got["union_px"]) - int(want.union_px or 0)) <= 2
    assert sum(int(r["inter_px"]) for r in rows) > 0  # not a vacuous comparison of empty predictions
    for key in ("miou", "oiou", "pr@0.5", "pr@0.9"):
        assert report[key] == pytest.approx(expected[key], abs=5e-4), key
    assert len(list((out / "panels").glob("*.png"))) == 2  # best and worst
