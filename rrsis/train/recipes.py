"""One recipe per model family: the pieces the shared epoch loops need, built from a TrainConfig.

A `Recipe` puts a family's model, datasets, its own `train_one_epoch` / `evaluate` functions (from
`rrsis.train.loop`, `.danet`, `.grounding`, `.sam_decoder`) and its self-describing checkpoint behind one
signature, so the one epoch loop (`rrsis.train.fit`: the plain run, the Ray Train worker, the Tune trial)
never branches on the family. Nothing here imports Ray.

Per family (what DDP wraps, what ranks checkpoints):
- waterland: `AllHeads(model)` under DDP (the auxiliary heads go through DDP's forward); `val_<optim.monitor>`
  on the held-out events, else the epoch.
- danet: the whole model; a frozen text encoder has `requires_grad=False`, which DDP skips; trainable but
  unused parameters (RAAM's query projection) need `find_unused_parameters`. `val_miou`.
- grounding: the whole model, called through `train_one_epoch(..., forward=ddp)`; `val_box_acc@0.5`.
- sam_decoder: only the mask decoder (the frozen image/prompt encoders never get gradients, so DDP over the
  whole SAM would all-reduce nothing useful and hold the encoder twice; the IoU head gets no gradient from
  the mask loss, hence `find_unused_parameters`); `state.pt` and `decoder.pt` hold
  the decoder alone. Every worker embeds the training images once up front (as the plain loop does) and
  trains on its DistributedSampler shard of the prompts. No validation split: checkpoints rank by epoch.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rrsis import storage
from rrsis.checkpoints import checkpoint_from_model, save_checkpoint, save_decoder_checkpoint
from rrsis.config.load import to_dict
from rrsis.config.train import TrainConfig
from rrsis.data.dataset import batchable
from rrsis.data.referring import load_referring_split
from rrsis.errors import ConfigError, InputError
from rrsis.log import get_logger
from rrsis.losses import build_loss
from rrsis.models.danet.text import load_tokenizer
from rrsis.models.grounding.model import GroundingModel
from rrsis.models.registry import build_model
from rrsis.models.sam.build import build_sam
from rrsis.models.sam.predictor import SamTilePredictor
from rrsis.train import danet, loop
from rrsis.train import grounding as g
from rrsis.train import sam_decoder as sd
from rrsis.train.optim import build_optimizer, build_scheduler
from rrsis.train.preflight import check_inputs, has_validation
from rrsis.train.waterland import make_checkpoint, prepare_waterland

log = get_logger(__name__)

Scheduler = torch.optim.lr_scheduler.LRScheduler
TrainEpoch = Callable[[nn.Module, Iterable[Any], torch.optim.Optimizer, Scheduler | None], dict[str, float]]
FAMILIES = ("waterland", "danet", "grounding", "sam_decoder")
RGB = ["red", "green", "blue"]


def _no_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> Scheduler | None:
    return None


@dataclass
class Recipe:
    """A family's training pieces. `train_epoch(ddp_module or its DDP wrapper, batches, optimizer, scheduler)`
    returns at least {"loss": mean training loss}; `evaluate(batches)` runs on the unwrapped model."""

    model: nn.Module  # unwrapped: evaluated and checkpointed
    ddp_module: nn.Module  # what DDP wraps
    state_module: nn.Module  # whose weights `state.pt` holds (the trained part)
    train_set: Any  # indexable; a DistributedSampler shards it under Ray
    train_epoch: TrainEpoch
    make_optimizer: Callable[[], torch.optim.Optimizer]
    save_model: Callable[[str, dict[str, float]], None]  # (local file, metrics): self-describing checkpoint
    make_scheduler: Callable[[torch.optim.Optimizer, int], Scheduler | None] = _no_scheduler
    collate: Callable[[list[Any]], Any] | None = None
    val_set: Any = None
    evaluate: Callable[[Iterable[Any]], dict[str, float]] | None = None
    val_batch_size: int = 1
    # the plain run's sample order (None: DataLoader's shuffle); Ray Train shards with a DistributedSampler
    plain_order: Callable[[], Any] | None = None
    # DDP must be told when some trainable parameter gets no gradient in a step (DANet's RAAM query projection
    # with some switches, SAM's IoU head under a mask-only loss): else its bucket is never all-reduced and the
    # ranks' weights drift apart silently until DDP errors on the next step
    find_unused_parameters: bool = False


def model_file(cfg: TrainConfig) -> str:
    """The checkpoint file a family writes: SAM's is decoder-only (`rrsis.models.sam.checkpoint`)."""
    return "decoder.pt" if cfg.model.name == "sam_decoder" else "model.pt"


def check_family(cfg: TrainConfig) -> None:
    if cfg.model.name not in FAMILIES:
        allowed = ", ".join(FAMILIES)
        raise ConfigError(f"config error: key 'model.name': {cfg.model.name!r} does not train; allowed: {allowed}")


def score_attribute(cfg: TrainConfig) -> str:
    """The metric that ranks checkpoints (higher is better): the family's validation metric, else the epoch."""
    check_family(cfg)
    name = cfg.model.name
    if cfg.optim.monitor == "last" or name == "sam_decoder":
        return "epoch"
    if not has_validation(cfg):
        return "epoch"
    if name == "waterland":
        return f"val_{cfg.optim.monitor}"
    return "val_miou" if name == "danet" else "val_box_acc@0.5"


def build_recipe(cfg: TrainConfig, device: torch.device) -> Recipe:
    """The recipe of `cfg.model.name`, its model on `device` (seed the RNG before calling)."""
    check_family(cfg)
    check_inputs(cfg)  # a missing data root, weights file or text encoder: one line, before any model is built
    if cfg.data.train_fraction < 1.0 and cfg.model.name != "sam_decoder":
        raise ConfigError("config error: key 'data.train_fraction': only model.name=sam_decoder subsamples its data")
    if cfg.model.name != "waterland" and (cfg.optim.amp or cfg.optim.grad_accum > 1):
        raise ConfigError(
            f"config error: keys 'optim.amp' / 'optim.grad_accum': only the water-land loop has them, "
            f"not model.name={cfg.model.name!r}; set optim.amp=false optim.grad_accum=1"
        )
    builders = {"waterland": _waterland, "danet": _danet, "grounding": _grounding, "sam_decoder": _sam_decoder}
    return builders[cfg.model.name](cfg, device)


def _waterland(cfg: TrainConfig, device: torch.device) -> Recipe:

    setup = prepare_waterland(cfg)
    model = build_model(cfg.model).to(device)
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


def _danet(cfg: TrainConfig, device: torch.device) -> Recipe:

    dcfg = cfg.model.danet
    model = build_model(cfg.model).to(device)
    tokenizer = load_tokenizer(dcfg.text_encoder)
    train_set = danet.ReferringMasks(load_referring_split(cfg.data, "train"), dcfg, tokenizer)
    val = g.val_samples(cfg)

    def train_epoch(net: nn.Module, batches: Iterable[Any], opt: torch.optim.Optimizer, sched: Any) -> dict[str, float]:
        return danet.train_one_epoch(net, batches, opt, device=device, scheduler=sched)

    def save(path: str, metrics: dict[str, float]) -> None:
        ckpt = checkpoint_from_model(
            model, cfg.model, bands=RGB, norm_mean=list(dcfg.pixel_mean), norm_std=list(dcfg.pixel_std),
            metrics=metrics, train_config=to_dict(cfg),
        )  # fmt: skip
        save_checkpoint(ckpt, path)

    return Recipe(
        model=model,
        ddp_module=model,
        state_module=model,
        train_set=train_set,
        train_epoch=train_epoch,
        make_optimizer=lambda: danet.make_optimizer(model, cfg.optim.lr, cfg.optim.weight_decay),
        make_scheduler=lambda opt, steps: danet.poly_schedule(opt, steps * cfg.optim.epochs),
        save_model=save,
        val_set=danet.ReferringMasks(val, dcfg, tokenizer) if val else None,
        evaluate=lambda batches: danet.evaluate(model, batches, device=device),
        val_batch_size=cfg.optim.eval_batch_size,
        find_unused_parameters=True,
    )


def _grounding(cfg: TrainConfig, device: torch.device) -> Recipe:

    model = GroundingModel(cfg.model.grounding).to(device)
    train_set = g.BoxSamples(load_referring_split(cfg.data, "train"))
    val = g.val_samples(cfg)

    def train_epoch(net: nn.Module, batches: Iterable[Any], opt: torch.optim.Optimizer, sched: Any) -> dict[str, float]:
        terms = g.train_one_epoch(model, batches, opt, sched, forward=net)
        return {"loss": terms["train_loss"], **terms}

    def evaluate(batches: Iterable[Any]) -> dict[str, float]:
        summary = g.evaluate_boxes(model, batches)
        return {k: float(summary[k]) for k in ("box_acc@0.5", "box_miou")}

    def make_scheduler(opt: torch.optim.Optimizer, steps: int) -> Scheduler:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: g.lr_factor(step, steps, cfg.optim))

    return Recipe(
        model=model,
        ddp_module=model,
        state_module=model,
        train_set=train_set,
        train_epoch=train_epoch,
        make_optimizer=lambda: g.build_optimizer(model, cfg.optim),
        make_scheduler=make_scheduler,
        save_model=lambda path, m: save_checkpoint(g.make_checkpoint(model, cfg, m), path),
        collate=g.collate,
        val_set=g.BoxSamples(val) if val else None,
        evaluate=evaluate,
        val_batch_size=cfg.optim.eval_batch_size,
    )


def _sam_decoder(cfg: TrainConfig, device: torch.device) -> Recipe:

    settings = sd.settings_from_train_config(cfg)
    samples = sd.train_samples(cfg)
    if not samples:
        raise InputError(f"data.root={cfg.data.root!r}: no water body large enough for a SAM decoder prompt")
    sam_cfg = dataclasses.replace(cfg.model.sam, mode="finetune")
    local_ckpt = None
    if sam_cfg.checkpoint and "://" in sam_cfg.checkpoint:  # SAM never downloads: fetch the URI first
        local_ckpt = os.path.join(tempfile.mkdtemp(prefix="rrsis-sam-"), "sam.pth")
        storage.get_file(sam_cfg.checkpoint, local_ckpt)
    sam = build_sam(sam_cfg, local_ckpt).to(device)
    predictor = SamTilePredictor(sam, mask_threshold=sam_cfg.mask_threshold)
    items = sd.embed_samples(predictor, samples)

    def train_epoch(net: nn.Module, batches: Iterable[Any], opt: torch.optim.Optimizer, _: Any) -> dict[str, float]:
        return {"loss": sd.train_batches(predictor, opt, batches, settings, decoder=net)}

    def save(path: str, metrics: dict[str, float]) -> None:
        config = {"lr": settings.lr, "epochs": settings.epochs, "batch_size": settings.batch_size}
        save_decoder_checkpoint(sam, path, sam_cfg.model_type, config, metrics, epoch=int(metrics.get("epoch", 0)))

    params = [p for p in sam.parameters() if p.requires_grad]
    return Recipe(
        model=sam,
        ddp_module=sam.mask_decoder,
        state_module=sam.mask_decoder,
        train_set=items,
        train_epoch=train_epoch,
        make_optimizer=lambda: torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay),
        save_model=save,
        collate=list,
        plain_order=lambda: sd.SeededShuffle(len(items), cfg.seed),
        find_unused_parameters=True,
    )
