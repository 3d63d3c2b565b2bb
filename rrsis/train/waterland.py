"""The water-land family's data and checkpoint: screened splits, training-split statistics, datasets, and the
self-describing checkpoint that carries the normalisation and gate `rrsis map` / `rrsis eval` apply."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rrsis.checkpoints import Checkpoint, checkpoint_from_model
from rrsis.config.load import to_dict
from rrsis.config.train import TrainConfig
from rrsis.data.dataset import SplitRefs, WaterLandDataset, build_splits
from rrsis.data.normalize import NormStats, compute_stats, input_channels
from rrsis.data.otsu import gate_band
from rrsis.errors import ConfigError
from rrsis.log import get_logger
from rrsis.losses import heads_for_loss

log = get_logger(__name__)


@dataclass
class WaterlandSetup:
    """Everything a training run needs, built from the config (shared with the Ray Train wrapper)."""

    splits: SplitRefs
    stats: NormStats
    train_set: WaterLandDataset
    val_set: WaterLandDataset | None


def prepare_waterland(cfg: TrainConfig) -> WaterlandSetup:
    """Screened splits, training-split statistics, datasets; fixes in_bands / aux_heads to data and loss."""
    if cfg.model.name != "waterland":
        raise ConfigError(f"model.name={cfg.model.name!r}: `rrsis train` runs the water-land family (waterland)")
    splits = build_splits(cfg.data)
    if not splits.train:
        raise ConfigError(f"data.val_events={cfg.data.val_events} leaves no training sample")
    stats = compute_stats(splits.train, splits.bands, norm=cfg.data.norm)
    wl = cfg.model.waterland
    wl.in_bands = input_channels(len(splits.bands), stats.norm)
    gate_band(cfg.data.gate, splits.bands)  # a bad gate fails before training, naming data.gate
    wl.aux_heads = heads_for_loss(cfg.loss.name) - 1
    train_set = WaterLandDataset(
        splits.train,
        stats,
        train=True,
        crop_px=cfg.data.crop_px,
        augment=cfg.data.augment,
        crops_per_sample=cfg.data.crops_per_chip,
        water_crop_fraction=cfg.data.water_crop_fraction,
    )
    val_set = WaterLandDataset(splits.val, stats, train=False, crop_px=cfg.data.eval_tile_px) if splits.val else None
    log.info(
        "data: %d train samples (%s), %d val samples (%s), bands %s, mean %s, std %s",
        len(splits.train),
        ", ".join(r.sample_id for r in splits.train),
        len(splits.val),
        ", ".join(r.sample_id for r in splits.val) or "none",
        splits.bands,
        [round(v, 3) for v in stats.norm_mean],
        [round(v, 3) for v in stats.norm_std],
    )
    return WaterlandSetup(splits, stats, train_set, val_set)


def make_checkpoint(
    model: torch.nn.Module, cfg: TrainConfig, stats: NormStats, metrics: dict[str, float]
) -> Checkpoint:
    return checkpoint_from_model(
        model,
        cfg.model,
        bands=stats.bands,
        norm_mean=stats.norm_mean,
        norm_std=stats.norm_std,
        nodata_fill=stats.nodata_fill,
        metrics=metrics,
        train_config=to_dict(cfg),
        norm=stats.norm,
        gate=cfg.data.gate,
    )
