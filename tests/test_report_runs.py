"""The report of real train and eval runs (tiny SeNet on crops of the shipped Sen1Floods11 chips), opened in
headless Chromium: every epoch's metrics and every plot are on the page, and no request left the machine."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from rasterio.windows import Window

from rrsis.checkpoint_header import read_header
from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
from rrsis.cli import main
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model
from rrsis.report import build_report, run_kind
from tests.browser import Rendered, ensure_chromium, external_urls, open_page

REPO = Path(__file__).resolve().parents[1]
CHIPS = ("India_900498", "Pakistan_849790", "Spain_7370579")


def small_chips(samples: Path, root: Path, size_px: int = 64) -> None:
    """Top-left crops of three real chips in the Sen1Floods11 layout: a training run of seconds."""
    for chip in CHIPS:
        for layer in ("S1Hand", "LabelHand"):
            with rasterio.open(samples / "sen1floods11" / layer / f"{chip}_{layer}.tif") as src:
                window = Window(0, 0, size_px, size_px)
                profile = {**src.profile, "width": size_px, "height": size_px}
                profile["transform"] = src.window_transform(window)
                for key in ("blockxsize", "blockysize", "tiled"):
                    profile.pop(key, None)
                data = src.read(window=window)
            (root / layer).mkdir(parents=True, exist_ok=True)
            with rasterio.open(root / layer / f"{chip}_{layer}.tif", "w", **profile) as dst:
                dst.write(data)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = ensure_chromium()
    if not path:
        pytest.skip("no chromium: `apt-get install -y chromium` failed or is not allowed here (needs root + apt)")
    return path


def check_offline(rendered: Rendered, run: Path) -> None:
    html = (run / "report.html").read_text()
    assert external_urls(html) == []
    assert rendered.requests and all(u.startswith(f"file://{run}/") for u in rendered.requests), rendered.requests


@pytest.mark.slow
def test_training_report_in_chromium(samples: Path, chromium: str, tmp_path: Path) -> None:
    small_chips(samples, tmp_path / "chips")
    argv = [
        "train",
        "--config",
        str(REPO / "configs/train/waterland_tiny.yaml"),
        f"output={tmp_path / 'out'}",
        f"data.root={tmp_path / 'chips'}",
        "optim.epochs=3",
        "data.eval_tile_px=64",
    ]
    assert main(argv) == 0
    run = tmp_path / "out" / "waterland_tiny"
    assert run_kind(str(run)) == "train"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rendered = open_page(chromium, run / "report.html", tmp_path / "train.png", height=1600)
    check_offline(rendered, run)
    # every epoch's row, with its metrics as the run recorded them
    rows = {r["id"]: r["cells"] for r in rendered.tables["epochs"]}
    assert list(rows) == [f"epoch-{r['epoch']}" for r in records] == ["epoch-1", "epoch-2", "epoch-3"]
    for r in records:
        cells = rows[f"epoch-{r['epoch']}"]
        for key in ("loss", "val_iou_water", "val_iou_mean", "elapsed_s"):
            assert f"{r[key]:.6g}" in cells, (key, cells)
    # the best checkpoint: the epoch best.pt's own header names, with the ranking metric's value
    best_epoch = int(read_header(str(run / "best.pt"))["metrics"]["epoch"])
    best = max(records, key=lambda r: (r["val_iou_water"], -r["epoch"]))
    assert best_epoch == best["epoch"]
    assert f"best.pt: epoch {best_epoch}, val_iou_water = {best['val_iou_water']:.4f}" in rendered.body
    assert [r["id"] for r in rendered.tables["epochs"] if r["cls"] == "best"] == [f"epoch-{best_epoch}"]
    # every plot drawn, one point per epoch and series; axes labelled with units
    charts = {c["label"]: c for c in rendered.charts}
    assert set(charts) >= {"training loss per epoch", "validation metrics per epoch", "wall time per epoch"}
    assert all(c["width"] > 0 and c["height"] > 0 for c in charts.values())
    assert charts["training loss per epoch"]["points"] == 3
    assert charts["validation metrics per epoch"]["points"] == 3 * 5  # f1, iou water/land/mean, accuracy
    html = (run / "report.html").read_text()
    assert "loss (unitless)" in html and "metric (fraction, 0-1)" in html and "time, s" in html
    assert "<dt>wall time</dt>" in html and "waterland (senet, half)" in rendered.body
    assert (tmp_path / "train.png").stat().st_size > 10_000


@pytest.mark.slow
def test_eval_report_in_chromium(samples: Path, chromium: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig()
    cfg.waterland.family, cfg.waterland.width = "senet", "half"
    ckpt = checkpoint_from_model(
        build_model(cfg), cfg, bands=["VV", "VH"], norm_mean=[-10.0, -17.0], norm_std=[4.0, 4.0]
    )
    save_checkpoint(ckpt, str(tmp_path / "m.pt"))
    small_chips(samples, tmp_path / "chips")
    out = tmp_path / "eval"
    argv = [
        "eval",
        f"checkpoint={tmp_path / 'm.pt'}",
        f"data.root={tmp_path / 'chips'}",
        "data.val_events=[India,Spain]",
        "split=val",
        f"output={out}",
        "panels=2",
        "device=cpu",
    ]
    assert main(argv) == 0
    report = json.loads((out / "metrics.json").read_text())
    rendered = open_page(chromium, out / "report.html", tmp_path / "eval.png")
    check_offline(rendered, out)
    methods = {r["id"]: r["cells"] for r in rendered.tables["metrics"]}
    assert set(methods) == {"method-model", "method-otsu_vv", "method-otsu_vh"}
    for name in ("model", "otsu_vv", "otsu_vh"):
        assert f"{report[name]['pooled']['iou_water']:.4f}" in methods[f"method-{name}"]
    items = [r["cells"][0] for r in rendered.tables["items"]]
    assert sorted(items) == ["India_900498", "Spain_7370579"]
    panels = [i for i in rendered.images if i["src"].startswith("panels/")]
    assert len(panels) == 2 and all(i["naturalWidth"] > 0 for i in panels)
    assert len(rendered.charts) >= 2 and all(c["width"] > 0 and c["bars"] == 3 for c in rendered.charts[:2])
    # a rebuild later gives the same page
    before = (out / "report.html").read_text()
    assert build_report(str(out)) == f"{out}/report.html" and (out / "report.html").read_text() == before


@pytest.mark.slow
@pytest.mark.ray
def test_tune_report_in_chromium(ray_session: None, samples: Path, chromium: str, tmp_path: Path) -> None:
    small_chips(samples, tmp_path / "chips")
    argv = [
        "tune",
        "--config",
        str(REPO / "configs/tune/waterland_tiny.yaml"),
        f"output={tmp_path / 'out'}",
        f"base.data.root={tmp_path / 'chips'}",
        "base.data.eval_tile_px=64",
        f"space={REPO / 'configs/tune/space_waterland_tiny.yaml'}",
        "num_samples=2",
        "base.optim.epochs=2",
        "scheduler=fifo",
    ]
    assert main(argv) == 0
    exp = tmp_path / "out" / "waterland_tiny"
    assert run_kind(str(exp)) == "tune"
    results = pq.read_table(exp / "results.parquet").to_pylist()
    rendered = open_page(chromium, exp / "report.html", tmp_path / "tune.png")
    check_offline(rendered, exp)
    rows = rendered.tables["trials"]
    ranked = sorted(results, key=lambda r: -r["val_iou_mean"])
    assert [r["id"] for r in rows] == [f"trial-{r['trial_id']}" for r in ranked]  # best first
    assert rows[0]["cls"] == "best" and f"{ranked[0]['val_iou_mean']:.6g}" in rows[0]["cells"]
    charts = {c["label"]: c for c in rendered.charts}
    assert charts["val_iou_mean per trial (last reported)"]["bars"] == 2
    assert charts["val_iou_mean per epoch, by trial"]["points"] == sum(r["epochs_run"] for r in results) == 4
    assert "best_train.yaml" in rendered.body and f"{ranked[0]['trial_id']}: val_iou_mean" in rendered.body
