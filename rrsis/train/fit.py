"""The one epoch loop every model family runs: plainly (`run_plain`), in a Ray Train worker and in a Tune trial.

`fit_recipe` takes a family's `Recipe` (`rrsis.train.recipes`: data, model, its own `train_epoch` /
`evaluate`, checkpoint) and owns what is the same for all of them: loaders, optimiser and scheduler, resuming
from a `state.pt` dict, the epoch record (`epoch`, the family's training terms, `val_*`, `elapsed_s`), the
time budget (`optim.max_minutes`) and the per-epoch hand-off to the caller (`on_epoch`: write metrics and
checkpoints, or report to Ray). What differs under Ray Train comes in as a `Distribution` (DDP wrapper,
sharded loader, per-worker batch, mean of the workers' terms, one stop decision for all ranks).

The one "best checkpoint" rule (`is_better`), used by the plain run, Ray Train's result and Tune: a higher
score is better; NaN counts as -inf, so it is never better than a number (and is best only while no epoch
has a number); ties keep the earlier epoch. The score is `recipes.score_attribute(cfg)`: the family's
validation metric, else the epoch (the last epoch wins).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from rrsis import storage
from rrsis.config.load import to_yaml
from rrsis.config.train import TrainConfig
from rrsis.devices import resolve_device
from rrsis.log import get_logger
from rrsis.train.recipes import Recipe, build_recipe, model_file, score_attribute

log = get_logger(__name__)

STATE_FILE = "state.pt"


def score_of(record: dict[str, Any], attribute: str) -> float:
    """The ranking score of an epoch record: NaN (no object in label or prediction) becomes -inf."""
    score = float(record.get(attribute, record.get("epoch", 0)))
    return -math.inf if math.isnan(score) else score


def is_better(score: float, best: float | None) -> bool:
    """The one rule: the first epoch is best until a later one scores strictly higher (NaN = -inf)."""
    score = -math.inf if math.isnan(score) else score
    return best is None or score > best


def best_index(records: list[dict[str, Any]], attribute: str) -> int:
    """Index of the best record under `is_better`, scanning in epoch order."""
    best: float | None = None
    index = -1
    for i, record in enumerate(sorted(records, key=lambda r: r.get("epoch", 0))):
        if is_better(score_of(record, attribute), best):
            best, index = score_of(record, attribute), i
    return index


@dataclass
class Epoch:
    """What `on_epoch` gets: the record, and how to write this epoch's checkpoints."""

    record: dict[str, float]
    recipe: Recipe
    state: Callable[[], dict[str, Any]]  # model, optimiser, scheduler, epoch: `state.pt`

    def save(self, folder: str, cfg: TrainConfig, *, with_state: bool = True) -> str:
        """Write `state.pt` (optional) and the family's model file into a local folder; returns the latter."""
        if with_state:
            torch.save(self.state(), os.path.join(folder, STATE_FILE))
        path = os.path.join(folder, model_file(cfg))
        self.recipe.save_model(path, self.record)
        return path


def _same(value: Any) -> Any:
    return value


@dataclass
class Distribution:
    """How this process takes part in the fit: alone (the defaults), or as one Ray Train worker."""

    world: int = 1
    wrap: Callable[[nn.Module, bool], nn.Module] = lambda module, find_unused: module  # DDP: prepare_model
    prepare_loader: Callable[[DataLoader[Any]], Any] = _same  # DDP: prepare_data_loader
    mean: Callable[[dict[str, float]], dict[str, float]] = _same  # the workers' mean of the training terms
    any_rank: Callable[[bool], bool] = _same  # True when any rank says so (one stop decision for all)
    extra: dict[str, float] = field(default_factory=dict)  # fixed entries of every record


def fit_recipe(
    cfg: TrainConfig,
    recipe: Recipe,
    on_epoch: Callable[[Epoch], None],
    *,
    state: dict[str, Any] | None = None,
    dist: Distribution | None = None,
    sampler: Any = None,
) -> list[dict[str, float]]:
    """Train `recipe` for the epochs after `state["epoch"]` (from 1 without a state); returns the records."""
    dist = dist or Distribution()
    start_epoch = 1
    if state is not None:
        recipe.state_module.load_state_dict(state["model"])
        start_epoch = int(state["epoch"]) + 1
    wrapped = dist.wrap(recipe.ddp_module, recipe.find_unused_parameters)
    optimizer = recipe.make_optimizer()
    loader = DataLoader(
        recipe.train_set,
        batch_size=max(1, cfg.optim.batch_size // dist.world),  # optim.batch_size is the global batch
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=recipe.collate,
        num_workers=cfg.data.num_workers,
    )
    loader = dist.prepare_loader(loader)
    scheduler = recipe.make_scheduler(optimizer, len(loader))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
    val_loader = None
    if recipe.val_set is not None and recipe.evaluate is not None:
        val_loader = DataLoader(
            recipe.val_set,
            batch_size=recipe.val_batch_size,
            collate_fn=recipe.collate,
            num_workers=cfg.data.num_workers,
        )
    records: list[dict[str, float]] = []
    started = time.monotonic()
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)  # a different shuffle every epoch, the same on every rank
        record: dict[str, float] = {"epoch": epoch, **dist.extra}
        record.update(dist.mean(recipe.train_epoch(wrapped, loader, optimizer, scheduler)))
        if val_loader is not None and recipe.evaluate is not None:
            record.update({f"val_{k}": v for k, v in recipe.evaluate(val_loader).items()})
        record["elapsed_s"] = round(time.monotonic() - started, 2)
        record = {k: v if k == "epoch" else float(v) for k, v in record.items()}  # epoch stays an int
        records.append(record)

        def state_now(epoch: int = epoch) -> dict[str, Any]:
            return {
                "model": recipe.state_module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "epoch": epoch,
            }

        on_epoch(Epoch(record, recipe, state_now))
        over = bool(cfg.optim.max_minutes) and time.monotonic() - started > 60 * cfg.optim.max_minutes
        if dist.any_rank(over) and epoch < cfg.optim.epochs:
            log.info("optim.max_minutes=%s reached after epoch %d", cfg.optim.max_minutes, epoch)
            break
    return records


def format_record(record: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4f}" for k, v in record.items() if not k.endswith("n_pixels"))


def run_plain(cfg: TrainConfig) -> int:
    """The plain loop (no Ray) over the family's recipe. Run folder `<output>/<run_name>/` (local or s3://):
    config.yaml, metrics.jsonl (one line per epoch), best and last model file (`best.pt`, `last.pt`; the SAM
    decoder also `decoder.pt`, its last epoch)."""
    torch.manual_seed(cfg.seed)
    recipe = build_recipe(cfg, resolve_device(cfg.device))
    run_dir = storage.join(cfg.output, cfg.run_name)
    storage.put_bytes(storage.join(run_dir, "config.yaml"), to_yaml(cfg).encode())
    attr = score_attribute(cfg)
    ext = os.path.splitext(model_file(cfg))[1]
    history: list[str] = []
    best: dict[str, Any] = {"score": None, "epoch": 0}
    log.info("training %s for %d epochs into %s", cfg.model.name, cfg.optim.epochs, run_dir)

    with tempfile.TemporaryDirectory(prefix="rrsis-train-") as tmp:

        def on_epoch(epoch: Epoch) -> None:
            history.append(json.dumps(epoch.record))
            storage.put_bytes(storage.join(run_dir, "metrics.jsonl"), ("\n".join(history) + "\n").encode())
            log.info("epoch %d: %s", epoch.record["epoch"], format_record(epoch.record))
            local = epoch.save(tmp, cfg, with_state=False)
            score = score_of(epoch.record, attr)
            if is_better(score, best["score"]):
                best.update(score=score, epoch=int(epoch.record["epoch"]))
                storage.put_file(local, storage.join(run_dir, f"best{ext}"))
            storage.put_file(local, storage.join(run_dir, f"last{ext}"))

        fit_recipe(cfg, recipe, on_epoch, sampler=recipe.plain_order() if recipe.plain_order else None)
        if model_file(cfg) != f"last{ext}":  # the family's own file name too (SAM: decoder.pt = the last epoch)
            storage.put_file(os.path.join(tmp, model_file(cfg)), storage.join(run_dir, model_file(cfg)))
    print(
        f"{cfg.model.name} run written to {run_dir}: best{ext} = epoch {best['epoch']} "
        f"({attr}={best['score']:.4f}), last{ext}, metrics.jsonl"
    )
    return 0
