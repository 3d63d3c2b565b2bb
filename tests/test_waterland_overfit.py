"""Each of the six water-land variants overfits one small real Sen1Floods11 batch (loss -90 %, IoU >= 0.95).

The batch: two 32x32 crops of hand-labelled S1 chips (VV, VH in dB, fixed normalisation, NaN -> 0), chosen
to hold both water and land. Training stops as soon as the loss is below 8 % of its start and the
train-mode IoU of both classes reaches 0.97 (or after a step cap), then BatchNorm statistics are
re-estimated on the batch ("precise BN") and the model is scored in eval mode, so the IoU is that of the
deployable model, not of train-mode batch statistics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from torch import nn

from rrsis.losses import build_loss
from rrsis.metrics import ConfusionMeter
from rrsis.models.waterland.config import WaterlandConfig
from rrsis.models.waterland.net import WaterlandNet

# (chip, row_off, col_off) of 32x32 crops with 37-39 % water, no nodata, one shoreline each
CROPS = (("Spain_7370579", 480, 464), ("India_900498", 400, 208))
CROP_PX = 32
DB_MEAN = np.array([-12.0, -20.0], dtype=np.float32)  # VV, VH: a fixed normalisation, not per-tile statistics
DB_STD = np.float32(6.0)
MAX_STEPS = 60
STOP_FRACTION = 0.08
STOP_IOU = 0.97
LEARNING_RATE = 1e-2


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a CPU shared with other jobs, 2 threads per process thrash (3-10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_batch(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = [], []
    for chip, row, col in CROPS:
        window = Window(col, row, CROP_PX, CROP_PX)
        with rasterio.open(root / "S1Hand" / f"{chip}_S1Hand.tif") as src:
            image = src.read(window=window)
        with rasterio.open(root / "LabelHand" / f"{chip}_LabelHand.tif") as src:
            target = src.read(1, window=window)
        images.append(np.nan_to_num((image - DB_MEAN[:, None, None]) / DB_STD, nan=0.0))
        targets.append(target)
    return torch.from_numpy(np.stack(images)).float(), torch.from_numpy(np.stack(targets)).long()


def scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    meter = ConfusionMeter()
    meter.update(pred, target)
    return meter.compute()


def precise_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Replace BN running statistics with the exact statistics of `x` (one train-mode pass, no grad)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("width", ["half", "full"])
@pytest.mark.parametrize("family", ["senet", "deepunet", "munet"])
def test_variant_overfits_one_real_batch(samples: Path, family: str, width: str, one_thread: None) -> None:
    x, y = read_batch(samples / "sen1floods11")
    assert set(y.unique().tolist()) == {0, 1}
    torch.manual_seed(0)
    model = WaterlandNet(WaterlandConfig(family=family, width=width, in_bands=2))
    optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_fn = build_loss("ce")
    start = time.perf_counter()
    losses: list[float] = []
    for _ in range(MAX_STEPS):
        optimiser.zero_grad()
        logits = model(x)
        loss = loss_fn([logits], y, x)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        fit = scores(logits.argmax(dim=1), y)
        if losses[-1] < STOP_FRACTION * losses[0] and min(fit["iou_water"], fit["iou_land"]) >= STOP_IOU:
            break
    precise_batchnorm(model, x)
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    metrics = scores(pred, y)
    seconds = time.perf_counter() - start
    print(
        f"{family}/{width}: {len(losses)} steps {seconds:.1f}s loss {losses[0]:.3f} -> {losses[-1]:.4f} "
        f"IoU water {metrics['iou_water']:.3f} land {metrics['iou_land']:.3f}"
    )
    assert losses[-1] <= 0.1 * losses[0]
    assert metrics["iou_water"] >= 0.95 and metrics["iou_land"] >= 0.95
