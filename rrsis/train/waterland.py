"""The water-land family's data, checkpoint and recipe: screened splits, training-split statistics, datasets,
the self-describing checkpoint that carries the normalisation and gate `rrsis map` / `rrsis eval` apply, and
the `Recipe` the one epoch loop trains."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rrsis.checkpoints import Checkpoint, checkpoint_from_model, load_checkpoint, save_checkpoint
from rrsis.config.load import to_dict
from rrsis.config.train import TrainConfig
from rrsis.data import ombria
from rrsis.data.dataset import SplitRefs, WaterLandDataset, batchable, build_splits
from rrsis.data.normalize import NormStats, compute_stats, input_channels
from rrsis.data.otsu import gate_band
from rrsis.errors import CheckpointError, ConfigError
from rrsis.log import get_logger
from rrsis.losses import build_loss, heads_for_loss
from rrsis.models.registry import build_model
from rrsis.train import loop
from rrsis.train.optim import build_optimizer, build_scheduler
from rrsis.train.recipes import Recipe

log = get_logger(__name__)


@dataclass
class WaterlandSetup:
    """Everything a training run needs, built from the config (shared with the Ray Train wrapper)."""

    splits: SplitRefs
    stats: NormStats
    train_set: WaterLandDataset
    val_set: WaterLandDataset | None


LOGGED_IDS = 12  # sample ids named in the data log line; OMBRIA alone has 774 training chips


def _ids(refs: list[Any]) -> str:
    """The first `LOGGED_IDS` sample ids, then how many more (one readable log line for any split size)."""
    shown = ", ".join(r.sample_id for r in refs[:LOGGED_IDS]) or "none"
    return shown + (f" and {len(refs) - LOGGED_IDS} more" if len(refs) > LOGGED_IDS else "")


def prepare_waterland(cfg: TrainConfig) -> WaterlandSetup:
    """Screened splits, training-split statistics, datasets; fixes in_bands / aux_heads to data and loss."""
    if cfg.model.name != "waterland":
        raise ConfigError(f"model.name={cfg.model.name!r}: `rrsis train` runs the water-land family (waterland)")
    if cfg.data.format == "ombria":
        ombria.check_norm(cfg.data.norm)
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
        _ids(splits.train),
        len(splits.val),
        _ids(splits.val),
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


def init_weights(model: nn.Module, cfg: TrainConfig, stats: NormStats) -> None:
    """Load `cfg.init_checkpoint`'s weights into `model` (fine-tuning). The checkpoint must be a water-land
    model of the same family, width, channels and heads, trained on the same bands with the same norm rule,
    so its first layer reads the same input space; anything else is one line naming the key."""
    uri = cfg.init_checkpoint
    ckpt = load_checkpoint(uri)
    mine, theirs = to_dict(cfg.model.waterland), ckpt.model_config.get("waterland", {})
    if ckpt.model_name != cfg.model.name or mine != theirs:
        raise ConfigError(f"init_checkpoint={uri}: model {ckpt.model_name} {theirs} does not match {mine}")
    if [b.upper() for b in ckpt.bands] != [b.upper() for b in stats.bands] or ckpt.norm != stats.norm:
        raise ConfigError(
            f"init_checkpoint={uri}: trained on bands {ckpt.bands} with norm={ckpt.norm}, this run has "
            f"{stats.bands} with norm={stats.norm}"
        )
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or ["state_dict mismatch"])[0]
        raise CheckpointError(f"init_checkpoint={uri}: weights do not fit: {first[:300]}") from exc
    log.info("initialised from %s (its metrics: %s)", uri, ckpt.metrics)


def recipe(cfg: TrainConfig, device: torch.device) -> Recipe:
    """DDP wraps `AllHeads(model)` (the auxiliary heads go through DDP's forward); the schedule is per epoch."""
    setup = prepare_waterland(cfg)
    model = build_model(cfg.model)
    if cfg.init_checkpoint:
        init_weights(model, cfg, setup.stats)
    model = model.to(device)
    loss_fn = build_loss(cfg.loss.name, alpha=cfg.loss.alpha, beta=cfg.loss.beta, lam=cfg.loss.lam, eps=cfg.loss.eps)
    scaler = torch.amp.GradScaler(device.type) if cfg.optim.amp and device.type == "cuda" else None

    def train_epoch(net: nn.Module, batches: Iterable[Any], opt: torch.optim.Optimizer, sched: Any) -> dict[str, float]:
        lr = float(opt.param_groups[0]["lr"])
        terms = loop.train_one_epoch(
            net, batches, loss_fn, opt, device=device, scaler=scaler, grad_accum=cfg.optim.grad_accum
        )
        sched.step()  # the water-land schedule is per epoch (rrsis.train.optim.build_scheduler)
        return {"lr": lr, **terms}

    val_batch = 1
    if setup.val_set is not None and batchable(setup.val_set.refs, cfg.data.eval_tile_px):
        val_batch = cfg.optim.eval_batch_size
    return Recipe(
        model=model,
        ddp_module=loop.AllHeads(model) if hasattr(model, "forward_heads") else model,
        state_module=model,
        train_set=setup.train_set,
        train_epoch=train_epoch,
        make_optimizer=lambda: build_optimizer(cfg.optim, model.parameters()),
        make_scheduler=lambda opt, steps: build_scheduler(cfg.optim, opt),
        save_model=lambda path, m: save_checkpoint(make_checkpoint(model, cfg, setup.stats, m), path),
        val_set=setup.val_set,
        evaluate=lambda batches: loop.evaluate(model, batches, device=device),
        val_batch_size=val_batch,
    )
