"""The plain training loop and `rrsis train` runner on real chips with the real (tiny) SeNet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader

from rrsis.checkpoints import build_from_checkpoint, load_checkpoint
from rrsis.config.load import load_config
from rrsis.config.train import TrainConfig
from rrsis.losses import build_loss
from rrsis.metrics.segmentation import ConfusionMeter
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model
from rrsis.train.loop import evaluate, predict, train_one_epoch

REPO = Path(__file__).resolve().parents[1]


def _batches(n: int, size: int = 16, seed: int = 0) -> list[dict[str, Any]]:
    """Items where water is exactly where band 0 is negative (a learnable rule), 1 pixel in 8 ignored."""
    gen = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        image = torch.randn(2, size, size, generator=gen)
        label = (image[0] < 0).long()
        label[::8, ::8] = -1
        items.append({"image": image, "label": label, "valid": torch.ones(size, size, dtype=torch.bool)})
    return items


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig()
    cfg.waterland.family, cfg.waterland.width, cfg.waterland.aux_heads = "senet", "half", 1
    return build_model(cfg)


def test_train_one_epoch_learns_and_steps_every_grad_accum_batches() -> None:
    model = _model()
    loader = DataLoader(_batches(4), batch_size=4)
    loss_fn = build_loss("ce_dice")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = train_one_epoch(model, loader, loss_fn, optimizer, device="cpu")["loss"]
    for _ in range(14):
        last = train_one_epoch(model, loader, loss_fn, optimizer, device="cpu")
    assert last["loss"] < 0.5 * first
    assert 0.0 <= last["train_iou_water"] <= 1.0
    # 3 batches with grad_accum=2: steps after batch 2 and after the last (partial) group -> Adam step 2
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, DataLoader(_batches(3), batch_size=1), loss_fn, fresh, device="cpu", grad_accum=2)
    assert {int(s["step"]) for s in fresh.state.values()} == {2}


def test_evaluate_pools_confusion_counts_over_the_split() -> None:
    model = _model().eval()
    items = _batches(3, size=12, seed=3)
    items[2]["label"][:, :] = -1  # a batch with nothing to count must not pull the metric down
    loader = DataLoader(items, batch_size=2)  # batches of 2 and 1 items
    got = evaluate(model, loader, device="cpu")
    meter = ConfusionMeter()
    for item in items:
        meter.update(predict(model, item["image"][None])[0].numpy(), item["label"].numpy())
    expected = meter.compute()
    assert got["n_pixels"] == 2 * (144 - 4) == expected["n_pixels"]  # 12x12 minus the 4 ignored pixels, 2 items
    for key in ("iou_water", "iou_land", "f1"):
        assert np.isclose(got[key], expected[key], equal_nan=True)


def _small_sen1floods11(samples: Path, root: Path, size_px: int = 96) -> None:
    """Top-left crops of three real chips, in the Sen1Floods11 layout (keeps the test small)."""
    for chip in ("India_900498", "Pakistan_849790", "Spain_7370579"):
        for layer in ("S1Hand", "LabelHand"):
            with rasterio.open(samples / "sen1floods11" / layer / f"{chip}_{layer}.tif") as src:
                window = Window(0, 0, size_px, size_px)
                profile = {
                    **src.profile,
                    "width": size_px,
                    "height": size_px,
                    "transform": src.window_transform(window),
                }
                for key in ("blockxsize", "blockysize", "tiled"):
                    profile.pop(key, None)
                data = src.read(window=window)
            (root / layer).mkdir(parents=True, exist_ok=True)
            with rasterio.open(root / layer / f"{chip}_{layer}.tif", "w", **profile) as dst:
                dst.write(data)


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "gate"), [("split", "none"), ("otsu", "otsu:VH")])
def test_run_train_tiny_config_writes_metrics_and_a_loadable_best_checkpoint(
    tmp_path: Path, samples: Path, norm: str, gate: str
) -> None:
    from rrsis.train.run import run_train

    _small_sen1floods11(samples, tmp_path / "chips")
    cfg = load_config(
        TrainConfig,
        REPO / "configs/train/waterland_tiny.yaml",
        [f"output={tmp_path}", f"data.root={tmp_path / 'chips'}", f"data.norm={norm}", f"data.gate={gate}"],
    )
    assert run_train(cfg) == 0
    run = tmp_path / "waterland_tiny"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) and "val_iou_water" in r for r in records)
    ckpt = load_checkpoint(str(run / "best.pt"))
    assert ckpt.bands == ["VV", "VH"] and len(ckpt.norm_mean) == 2 and ckpt.norm == norm
    assert ckpt.gate == ("" if gate == "none" else gate)
    channels = 4 if norm == "otsu" else 2  # otsu: VV, VH absolute, then each minus its chip's Otsu threshold
    assert ckpt.model_config["waterland"]["in_bands"] == channels
    assert ckpt.model_config["waterland"]["aux_heads"] == 1  # ce_dice (eq. 3) has two heads
    assert ckpt.train_config["data"]["val_events"] == ["India"]
    best = max(records, key=lambda r: r["val_iou_water"])
    assert ckpt.metrics["epoch"] == best["epoch"]
    model = build_from_checkpoint(ckpt)
    assert model(torch.zeros(1, channels, 20, 20)).shape == (1, 2, 20, 20)
    assert (run / "last.pt").is_file() and (run / "config.yaml").is_file()


def test_lr_schedule_factors_hand_computed() -> None:
    from rrsis.config.train import OptimConfig
    from rrsis.train.optim import build_optimizer, build_scheduler, lr_factor

    # cosine over 5 epochs after 1 warm-up epoch: warm-up (0+1)/(1+1) = 0.5, then span 5-1-1 = 3 epochs:
    # 0.5 * (1 + cos(pi * k / 3)) for k = 0..3 -> 1, 0.75, 0.25, 0; floor 0.1 lifts it to 0.1 + 0.9 * that
    cos = OptimConfig(schedule="cosine", epochs=5, warmup_epochs=1, min_lr_ratio=0.1)
    assert [lr_factor(cos, e) for e in range(5)] == pytest.approx([0.5, 1.0, 0.775, 0.325, 0.1])
    step = OptimConfig(schedule="step", epochs=6, lr_decay_epochs=[2, 4], lr_decay_factor=0.5)
    assert [lr_factor(step, e) for e in range(6)] == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])
    assert [lr_factor(OptimConfig(), e) for e in range(3)] == [1.0, 1.0, 1.0]  # constant by default
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(
        OptimConfig(lr=0.01, schedule="cosine", epochs=5, warmup_epochs=1, min_lr_ratio=0.1), model.parameters()
    )
    sched = build_scheduler(cos, opt)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.005, 0.01, 0.00775, 0.00325, 0.001])
