"""Train the grounding model (PSLG-SAM stage one, sec. 4.2), read top to bottom.

Samples (image, expression, box) from any referring format -> batches of raw images and expressions (the
model resizes and tokenizes) -> L1 + GIoU + query-score loss -> AdamW with two parameter groups (text
encoder at `optim.lr_text`, the rest at `optim.lr`) -> per-step schedule: linear warm-up over
`optim.warmup_epochs`, then ×`lr_decay_factor` after each of `lr_decay_epochs` (the paper: 60 epochs,
×0.1 at 45, 3 warm-up epochs, batch 2). `train_one_epoch` and `evaluate_boxes` are plain functions, so the
same calls run here and inside a Ray Train worker. No augmentation: the paper names none.

`rrsis train model.name=grounding` runs these through the family's `recipe` and the one epoch loop
(`rrsis.train.fit`): `best.pt` by validation Acc@0.5 (or the last epoch without a validation split, or with
`optim.monitor=last`) and `last.pt`. The saved model config sets `image_weights: none`
because the trained ResNet weights travel in the state dict.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from rrsis.checkpoints import Checkpoint, checkpoint_from_model, save_checkpoint
from rrsis.config.load import to_dict
from rrsis.config.train import OptimConfig, TrainConfig
from rrsis.data.referring import ReferringSample, load_image, load_referring_split
from rrsis.errors import InputError
from rrsis.metrics.referring import ReferringMeter
from rrsis.models.grounding.losses import grounding_loss, xyxy_to_cxcywh
from rrsis.models.grounding.model import GroundingModel
from rrsis.train.preflight import val_samples
from rrsis.train.recipes import Recipe, Scheduler

RGB = ["red", "green", "blue"]


class BoxSamples(Dataset[dict[str, Any]]):
    """(image uint8, expression, target box cxcywh normalised to the image) per sample with a box."""

    def __init__(self, samples: Sequence[ReferringSample]) -> None:
        missing = [s.sample_id for s in samples if s.box_xyxy is None]
        if missing:
            raise InputError(f"grounding training needs a box for every sample; sample {missing[0]} has none")
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        image = load_image(s)
        h, w = image.shape[:2]
        assert s.box_xyxy is not None
        box = torch.tensor(s.box_xyxy, dtype=torch.float32) / torch.tensor([w, h, w, h], dtype=torch.float32)
        return {"image": image, "text": s.text, "target": xyxy_to_cxcywh(box.clamp(0, 1)), "sample": s}


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": [it["image"] for it in items],
        "texts": [it["text"] for it in items],
        "target": torch.stack([it["target"] for it in items]),
        "samples": [it["sample"] for it in items],
    }


def build_optimizer(model: GroundingModel, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW with the paper's two groups (the text group is absent when the text encoder is frozen)."""
    groups = model.param_groups(optim.lr_text, optim.lr)
    if optim.lr_text == 0.0:
        groups = [g for g in groups if g["name"] != "text"]
    return torch.optim.AdamW(groups, weight_decay=optim.weight_decay)  # type: ignore[arg-type]


def lr_factor(step: int, steps_per_epoch: int, optim: OptimConfig) -> float:
    """Multiplier of every group's base rate at optimiser step `step` (0-based)."""
    warm = optim.warmup_epochs * steps_per_epoch
    factor = (step + 1) / warm if warm and step < warm else 1.0
    epoch_done = step // max(steps_per_epoch, 1)  # full epochs finished before this step
    passed = sum(1 for e in optim.lr_decay_epochs if epoch_done >= e)
    return factor * optim.lr_decay_factor**passed


def train_one_epoch(
    model: GroundingModel,
    batches: Iterable[dict[str, Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    forward: torch.nn.Module | None = None,
) -> dict[str, float]:
    """One pass over `batches`; returns the mean of each loss term.

    `forward` is what runs the model: a Ray Train worker passes its DDP wrapper of `model` (DDP's own forward
    arms the gradient all-reduce); tokenizing and preprocessing still go through the plain `model`.
    """
    model.train()
    cfg = model.cfg
    sums: dict[str, float] = {}
    n = 0
    for batch in batches:
        ids, mask = model.text.tokenize(batch["texts"], model.device)
        out = (forward or model)(model.preprocess(batch["images"]), ids, mask)
        terms = grounding_loss(
            out["boxes"],
            out["logits"],
            batch["target"].to(model.device),
            cfg.l1_weight,
            cfg.giou_weight,
            cfg.score_weight,
        )
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n += 1
    return {f"train_{k}": v / max(n, 1) for k, v in sums.items()}


def evaluate_boxes(model: GroundingModel, batches: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Acc@0.5 and mean IoU of the predicted boxes over a split."""
    meter = ReferringMeter()
    for batch in batches:
        boxes, _ = model.predict(batch["images"], batch["texts"])
        for s, box in zip(batch["samples"], boxes, strict=True):
            meter.add(s.sample_id, s.category, pred_box=box, gt_box=np.asarray(s.box_xyxy))
    return meter.summary()


def make_checkpoint(model: GroundingModel, cfg: TrainConfig, metrics: dict[str, float]) -> Checkpoint:
    """A self-describing rrsis checkpoint; `image_weights: none` as the trained weights are in the state dict."""
    saved_cfg = copy.deepcopy(cfg.model)
    saved_cfg.grounding.image_weights = "none"
    return checkpoint_from_model(
        model,
        saved_cfg,
        bands=RGB,
        norm_mean=list(cfg.model.grounding.pixel_mean),
        norm_std=list(cfg.model.grounding.pixel_std),
        metrics=metrics,
        train_config=to_dict(cfg),
    )


def recipe(cfg: TrainConfig, device: torch.device) -> Recipe:
    """DDP wraps the whole model, called through `train_one_epoch(..., forward=ddp)`; ranks by `val_box_acc@0.5`."""
    model = GroundingModel(cfg.model.grounding).to(device)
    train_set = BoxSamples(load_referring_split(cfg.data, "train"))
    val = val_samples(cfg)

    def train_epoch(net: nn.Module, batches: Iterable[Any], opt: torch.optim.Optimizer, sched: Any) -> dict[str, float]:
        terms = train_one_epoch(model, batches, opt, sched, forward=net)
        return {"loss": terms["train_loss"], **terms}

    def evaluate(batches: Iterable[Any]) -> dict[str, float]:
        summary = evaluate_boxes(model, batches)
        return {k: float(summary[k]) for k in ("box_acc@0.5", "box_miou")}

    def make_scheduler(opt: torch.optim.Optimizer, steps: int) -> Scheduler:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, steps, cfg.optim))

    return Recipe(
        model=model,
        ddp_module=model,
        state_module=model,
        train_set=train_set,
        train_epoch=train_epoch,
        make_optimizer=lambda: build_optimizer(model, cfg.optim),
        make_scheduler=make_scheduler,
        save_model=lambda path, m: save_checkpoint(make_checkpoint(model, cfg, m), path),
        collate=collate,
        val_set=BoxSamples(val) if val else None,
        evaluate=evaluate,
        val_batch_size=cfg.optim.eval_batch_size,
    )
