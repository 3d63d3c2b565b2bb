"""`rrsis train`: build data, model, loss and optimiser from a TrainConfig and run the plain loop.

Run folder `<output>/<run_name>/` (local or s3://): `config.yaml`, `metrics.jsonl` (one line per epoch),
`best.pt` (best validation `optim.monitor`; the last epoch when there is no validation split) and `last.pt`.
With `train.enabled=true` the same loop runs on Ray Train workers instead (`rrsis.train.ray_train.fit`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from rrsis import storage
from rrsis.checkpoints import Checkpoint, checkpoint_from_model, save_checkpoint
from rrsis.config.load import to_dict, to_yaml
from rrsis.config.train import TrainConfig
from rrsis.data.dataset import SplitRefs, WaterLandDataset, batchable, build_splits
from rrsis.data.normalize import NormStats, compute_stats, input_channels
from rrsis.data.otsu import gate_band
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError
from rrsis.log import get_logger
from rrsis.losses import build_loss, heads_for_loss
from rrsis.models.registry import build_model
from rrsis.session import configure_storage
from rrsis.train.loop import evaluate, train_one_epoch
from rrsis.train.optim import build_optimizer, build_scheduler

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


def run_train(cfg: TrainConfig) -> int:
    resolve_device(cfg.device)  # a CUDA device asked where there is none fails here, before any data is read
    configure_storage(cfg.storage)
    if cfg.train.enabled:  # every family: its recipe inside a Ray Train TorchTrainer
        from rrsis.train.ray_train import fit

        return int(fit(cfg) or 0)
    if cfg.model.name == "sam_decoder":  # PSLG-SAM stage two: fine-tune the SAM mask decoder
        from rrsis.train.sam_decoder import run_sam_decoder

        return run_sam_decoder(cfg)
    if cfg.model.name == "grounding":  # PSLG-SAM stage one has its own plain loop
        from rrsis.train.grounding import run_grounding_train

        return run_grounding_train(cfg)
    if cfg.model.name == "danet":  # the plain loop over the DANet recipe
        from rrsis.train.recipes import run_plain

        return run_plain(cfg)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    setup = prepare_waterland(cfg)
    model = build_model(cfg.model).to(device)
    loss_fn = build_loss(cfg.loss.name, alpha=cfg.loss.alpha, beta=cfg.loss.beta, lam=cfg.loss.lam, eps=cfg.loss.eps)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    scheduler = build_scheduler(cfg.optim, optimizer)  # per epoch; constant unless optim.schedule says otherwise
    scaler = torch.amp.GradScaler(device.type) if cfg.optim.amp and device.type == "cuda" else None
    train_loader = DataLoader(
        setup.train_set, batch_size=cfg.optim.batch_size, shuffle=True, num_workers=cfg.data.num_workers
    )
    val_loader = (
        DataLoader(
            setup.val_set,
            batch_size=cfg.optim.eval_batch_size if batchable(setup.val_set.refs, cfg.data.eval_tile_px) else 1,
            num_workers=cfg.data.num_workers,
        )
        if setup.val_set is not None
        else None
    )
    run_dir = storage.join(cfg.output, cfg.run_name)
    storage.put_bytes(storage.join(run_dir, "config.yaml"), to_yaml(cfg).encode())
    log.info(
        "training %s (%s, %s) for %d epochs into %s",
        cfg.model.name,
        cfg.model.waterland.family,
        cfg.model.waterland.width,
        cfg.optim.epochs,
        run_dir,
    )
    history: list[str] = []
    best_score, best_epoch = -1.0, 0
    started = time.monotonic()
    for epoch in range(1, cfg.optim.epochs + 1):
        record: dict[str, Any] = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"])}
        record.update(
            train_one_epoch(
                model, train_loader, loss_fn, optimizer, device=device, scaler=scaler, grad_accum=cfg.optim.grad_accum
            )
        )
        scheduler.step()
        if val_loader is not None:
            record.update({f"val_{k}": v for k, v in evaluate(model, val_loader, device=device).items()})
        record["elapsed_s"] = round(time.monotonic() - started, 1)
        history.append(json.dumps(record))
        storage.put_bytes(storage.join(run_dir, "metrics.jsonl"), ("\n".join(history) + "\n").encode())
        log.info(
            "epoch %d: %s",
            epoch,
            ", ".join(f"{k}={v:.4f}" for k, v in record.items() if isinstance(v, float) and not k.endswith("n_pixels")),
        )
        metrics = {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}
        # "last" or no validation split: the latest epoch wins
        score = float(epoch if cfg.optim.monitor == "last" else record.get(f"val_{cfg.optim.monitor}", epoch))
        score = -math.inf if math.isnan(score) else score  # NaN: no water in label or prediction
        if best_epoch == 0 or score > best_score:
            best_score, best_epoch = score, epoch
            save_checkpoint(make_checkpoint(model, cfg, setup.stats, metrics), storage.join(run_dir, "best.pt"))
        if cfg.optim.max_minutes and time.monotonic() - started > 60 * cfg.optim.max_minutes:
            log.info("optim.max_minutes=%s reached after epoch %d", cfg.optim.max_minutes, epoch)
            break
    save_checkpoint(make_checkpoint(model, cfg, setup.stats, metrics), storage.join(run_dir, "last.pt"))
    print(f"best epoch {best_epoch} ({cfg.optim.monitor}={best_score:.4f}): {storage.join(run_dir, 'best.pt')}")
    return 0
