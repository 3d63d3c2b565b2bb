"""A tiny DANet (real classes, small widths, the real MiniLM) learns real image/expression/mask samples.

Samples: Sen1Floods11 S1 chips (VV, VH, VV-VH in dB, standardised with fixed constants) with masks from the
hand labels (LabelHand: 1 = water, 0 = land, -1 = ignored). "the water" asks for the water mask, "the land"
for its complement on the same image, so the text must matter. Chips are averaged down to 64x64 and labels
to the decoder's 16x16 grid (then repeated 4x4), so a mask is exactly representable at E's 1/4 resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from rrsis.config.load import load_config
from rrsis.config.train import TrainConfig
from rrsis.models.danet.config import DanetConfig
from rrsis.models.danet.model import build_danet
from rrsis.models.danet.text import load_tokenizer, tokenize
from rrsis.train.danet import Batch, evaluate, make_optimizer, train_step

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "danet_tiny.yaml"
CHIPS = ("India_900498", "Pakistan_849790", "Spain_7370579")
PX = 64


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _chip(root: Path, chip: str) -> tuple[torch.Tensor, torch.Tensor]:
    with rasterio.open(root / "S1Hand" / f"{chip}_S1Hand.tif") as src:
        s1 = src.read().astype(np.float32)
    with rasterio.open(root / "LabelHand" / f"{chip}_LabelHand.tif") as src:
        label = torch.from_numpy(src.read(1).astype(np.float32))[None, None]
    vv, vh = np.nan_to_num(s1[0], nan=-20.0), np.nan_to_num(s1[1], nan=-25.0)
    image = torch.from_numpy(np.stack([(vv + 10) / 4, (vh + 17) / 5, (vv - vh - 7) / 4]))
    image = F.adaptive_avg_pool2d(image[None], PX)[0]

    def on_grid(m: torch.Tensor) -> torch.Tensor:  # fraction on the 16x16 grid, repeated to 64x64
        return F.interpolate(F.adaptive_avg_pool2d(m.float(), PX // 4), scale_factor=4)[0, 0]

    mask = (on_grid(label == 1) > 0.5).float()
    mask[on_grid(label == -1) > 0.5] = -1.0
    return image, mask


@pytest.fixture(scope="module")
def batch(samples: Path) -> Batch:
    images, masks = zip(*(_chip(samples / "sen1floods11", c) for c in CHIPS), strict=True)
    land = torch.where(masks[0] >= 0, 1 - masks[0], masks[0])
    texts = ["the water"] * len(CHIPS) + ["the land"]
    ids, attention = tokenize(load_tokenizer(), texts, 8)
    image = torch.stack([*images, images[0]])
    mask = torch.stack([*masks, land])
    assert 0.2 < float((mask[:3] == 1).float().mean()) < 0.8  # both classes present
    return {"image": image, "input_ids": ids, "attention_mask": attention, "mask": mask}


def _tiny() -> DanetConfig:
    return load_config(TrainConfig, CONFIG).model.danet


@pytest.mark.slow
def test_tiny_danet_overfits_real_samples(batch: Batch) -> None:
    torch.manual_seed(0)
    cfg = _tiny()
    assert cfg.eaas and cfg.raam and cfg.agent_mode == "raam"
    model = build_danet(cfg)
    optimizer = make_optimizer(model, lr=2e-3)
    before = evaluate(model, [batch])["miou"]
    miou, affinity = before, 0.0
    for step in range(1, 101):
        affinity = train_step(model, batch, optimizer, cfg.lambda_af)["affinity"]
        if step % 10 == 0:
            miou = evaluate(model, [batch])["miou"]
            if miou >= 0.9:
                break
    assert affinity > 0  # EAAS was active
    assert miou >= 0.9, f"mIoU {miou:.3f} after {step} steps (was {before:.3f})"


@pytest.mark.slow
@pytest.mark.parametrize(
    "switches",
    [
        {"eaas": False, "raam": False},  # LAVT
        {"eaas": True, "raam": False},
        {"eaas": False, "raam": True},
        {"agent_mode": "cross_attention"},
        {"agent_mode": "masked_attention"},
        {"k": 1, "lambda_af": 1.0, "alpha": 0.5, "affinity_stages": [4], "dis": "cosine", "affinity_norm": "cosine"},
    ],
)
def test_each_ablation_trains(batch: Batch, switches: dict[str, object]) -> None:
    torch.manual_seed(0)
    cfg = _tiny()
    for key, value in switches.items():
        setattr(cfg, key, value)
    model = build_danet(cfg)
    optimizer = make_optimizer(model, lr=2e-3)
    first = [train_step(model, batch, optimizer, cfg.lambda_af) for _ in range(8)]
    assert all(np.isfinite(r["loss"]) for r in first)
    assert (first[-1]["affinity"] > 0) == cfg.eaas
    assert first[-1]["bce"] < first[0]["bce"]
