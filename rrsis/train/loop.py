"""The water-land training loop: one epoch of training, one pass of evaluation. Nothing else.

Plain functions over plain DataLoaders, no global state and no Ray, so the same code runs in `rrsis train`
and inside a Ray Train `TorchTrainer` worker (which hands in a DDP-wrapped model and sharded loaders).
Batches are dicts {"image" (B,C,H,W) float, "label" (B,H,W) long with -1 ignore, "valid" (B,H,W) bool}.
Metrics come from confusion counts summed over the whole split (`ConfusionMeter`), never batch averages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sized
from typing import Any

import torch
from torch import nn

from rrsis.metrics.segmentation import ConfusionMeter


class AllHeads(nn.Module):
    """`forward(x)` -> every head (main first). Wrap a model in this before DDP, so DDP's own forward (which
    arms gradient synchronisation) runs for the auxiliary heads too."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model.forward_heads(x))  # type: ignore[operator]


def _heads(model: nn.Module, image: torch.Tensor) -> list[torch.Tensor]:
    """All output heads, main first: `forward_heads` when the model has it, else whatever forward returns."""
    if hasattr(model, "forward_heads"):
        return list(model.forward_heads(image))  # type: ignore[operator]
    out = model(image)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _to_device(batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = batch["image"].to(device, non_blocking=True)
    label = batch["label"].to(device, non_blocking=True)
    valid = batch["valid"].to(device, non_blocking=True)
    return image, label, valid


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device | str,
    scaler: torch.amp.GradScaler | None = None,
    grad_accum: int = 1,
) -> dict[str, float]:
    """Train for one pass over `loader`; returns mean loss and training metrics of the main head."""
    device = torch.device(device)
    model.train()
    meter = ConfusionMeter(num_classes=2, ignore_index=-1)
    n_batches = len(loader) if isinstance(loader, Sized) else -1
    loss_sum, steps = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    for step, batch in enumerate(loader):
        image, label, valid = _to_device(batch, device)
        with torch.autocast(device_type=device.type, enabled=scaler is not None):
            heads = _heads(model, image)
            loss = loss_fn(heads, label, image, valid)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"training loss became {float(loss)} at batch {step}")
        scaled = loss / grad_accum
        if scaler is not None:
            scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if (step + 1) % grad_accum == 0 or step + 1 == n_batches:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss_sum += float(loss.detach())
        steps += 1
        meter.update(heads[0].detach().argmax(dim=1).cpu(), label.cpu(), valid.cpu())
    if steps == 0:
        raise ValueError("train_one_epoch: the training loader yielded no batch")
    metrics = meter.compute()
    return {"loss": loss_sum / steps, **{f"train_{k}": v for k, v in metrics.items()}}


@torch.no_grad()
def predict(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Class map (B,H,W) of the main head: 1 = water."""
    return _heads(model, image)[0].argmax(dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[dict[str, Any]], *, device: torch.device | str) -> dict[str, float]:
    """Metrics of the main head over the whole split (confusion counts summed over every batch)."""
    device = torch.device(device)
    model.eval()
    meter = ConfusionMeter(num_classes=2, ignore_index=-1)
    for batch in loader:
        image, label, valid = _to_device(batch, device)
        meter.update(predict(model, image).cpu(), label.cpu(), valid.cpu())
    return meter.compute()
