"""DANet checkpoints round-trip through rrsis.checkpoints and predict through `DanetPredictor`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from rrsis.checkpoints import build_from_checkpoint, load_checkpoint
from rrsis.errors import InputError
from rrsis.models.danet.model import Danet
from rrsis.models.danet.predictor import DanetPredictor
from tests.danet_tiny import MEAN, STD, save_tiny_danet


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Danet, str]:
    """A tiny DANet and its checkpoint file (saved once: the MiniLM weights make it ~90 MB)."""
    uri = str(tmp_path_factory.mktemp("danet") / "danet.pt")
    return save_tiny_danet(uri), uri


@pytest.mark.slow
def test_checkpoint_round_trip_and_predictor(saved: tuple[Danet, str], samples: Path) -> None:
    model, uri = saved
    restored = build_from_checkpoint(load_checkpoint(uri))
    assert isinstance(restored, Danet) and restored.cfg.k == 8

    with rasterio.open(samples / "rasterio" / "RGB.byte.tif") as src:  # a real Landsat crop, 100 x 80 px
        raw = src.read(window=rasterio.windows.Window(300, 300, 100, 80)).astype(np.float32) / 255.0
    image = (raw - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    texts = ["the river", "the bright field"]
    probs = DanetPredictor(restored).predict(image, texts)
    assert probs.shape == (2, 80, 100) and probs.dtype == np.float32
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    np.testing.assert_allclose(DanetPredictor(model).predict(image, texts), probs, atol=1e-6)  # same weights
    with pytest.raises(InputError, match="NaN"):
        DanetPredictor(restored).predict(np.full((3, 8, 8), np.nan, np.float32), texts)
    with pytest.raises(InputError, match=r"\(3, H, W\)"):
        DanetPredictor(restored).predict(image[:2], texts)


@pytest.mark.slow
def test_rrsis_eval_runs_a_danet_checkpoint(saved: tuple[Danet, str], tmp_path: Path, samples: Path) -> None:
    """`rrsis eval` on a JSONL split of real Landsat crops; the referred region is the nodata collar."""
    import json

    import cv2

    from rrsis.cli import main

    with rasterio.open(samples / "rasterio" / "RGB.byte.tif") as src:
        rgb = src.read(window=rasterio.windows.Window(0, 0, 96, 96)).transpose(1, 2, 0)  # corner: collar + land
        rgb2 = src.read(window=rasterio.windows.Window(600, 560, 96, 96)).transpose(1, 2, 0)
    lines = []
    for i, img in enumerate((rgb, rgb2)):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(tmp_path / f"mask{i}.png"), (img.max(axis=2) == 0).astype(np.uint8) * 255)
        lines.append(json.dumps({"image": f"img{i}.png", "mask": f"mask{i}.png", "text": "the black border"}))
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n")
    ckpt = saved[1]
    out = tmp_path / "eval"
    args = [f"checkpoint={ckpt}", "data.format=jsonl", f"data.root={tmp_path / 'all.jsonl'}", "split=all"]
    assert main(["eval", *args, f"output={out}", "panels=1"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["model"] == "danet" and 0.0 <= report["miou"] <= 1.0
    assert len((out / "samples.csv").read_text().strip().splitlines()) == 3  # header + 2 expressions
