"""DANet training as plain functions: one step, one epoch, one evaluation pass.

The same `train_one_epoch` runs in a plain loop (tests, notebooks) and inside a Ray Train worker loop; nothing
here knows about Ray. Paper settings (Sec. 4.2): AdamW, initial lr 5e-4, batch 16, 480x480, lambda_af 0.5.
The paper says "initial learning rate" without a schedule; we follow its LAVT baseline's polynomial decay
(power 0.9), exposed as `poly_lr` for the caller to apply per step.

A batch is a dict of tensors: `image` (B, 3, H, W) normalised, `input_ids` and `attention_mask` (B, L),
`mask` (B, H, W) with 1 = referred region, 0 = background, anything else ignored. `ReferringMasks` makes
them from any referring format (`rrsis.data.referring`); `recipe` puts them behind the one epoch loop for
`rrsis train model.name=danet` (plain loop, or Ray Train with `train.enabled=true`) and `rrsis tune`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
from rrsis.config.load import to_dict
from rrsis.config.train import TrainConfig
from rrsis.data.referring import ReferringSample, load_image, load_mask, load_referring_split
from rrsis.errors import InputError
from rrsis.losses.danet import danet_loss
from rrsis.models.danet.config import DanetConfig
from rrsis.models.danet.model import Danet
from rrsis.models.danet.predictor import rgb_to_input
from rrsis.models.danet.text import load_tokenizer, tokenize
from rrsis.models.registry import build_model
from rrsis.train.preflight import val_samples
from rrsis.train.recipes import Recipe

Batch = dict[str, torch.Tensor]
RGB = ["red", "green", "blue"]


def make_optimizer(model: nn.Module, lr: float = 5e-4, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (a frozen text encoder is skipped)."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)


def poly_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, base_lr: float, power: float = 0.9) -> float:
    """LAVT's schedule: lr = base_lr * (1 - step / total_steps) ** power; returns the lr it set."""
    lr = base_lr * max(0.0, 1.0 - step / max(1, total_steps)) ** power
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def poly_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, power: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """`poly_lr` as a per-step scheduler (its state travels in checkpoints, so a resumed run keeps its place)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** power
    )


class ReferringMasks(Dataset[Batch]):
    """Referring samples with masks as DANet batches at the model's square input size.

    The image is normalised with the model's pixel statistics and resized bilinearly (as `DanetPredictor`
    does), the mask resized nearest; so `evaluate` here scores at input resolution (a training monitor),
    while `rrsis eval` scores at the image's own resolution.
    """

    def __init__(self, samples: Sequence[ReferringSample], cfg: DanetConfig, tokenizer: PreTrainedTokenizerBase):
        missing = [s.sample_id for s in samples if not s.has_mask]
        if missing:
            raise InputError(f"DANet training needs a mask for every sample; sample {missing[0]} has none")
        self.samples, self.cfg, self.tokenizer = list(samples), cfg, tokenizer

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Batch:
        sample, size = self.samples[i], (self.cfg.input_px, self.cfg.input_px)
        rgb = load_image(sample)
        mask = load_mask(sample, rgb.shape[:2])
        assert mask is not None
        image = torch.from_numpy(rgb_to_input(rgb, self.cfg.pixel_mean, self.cfg.pixel_std))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        target = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=size, mode="nearest")[0, 0]
        ids, attention = tokenize(self.tokenizer, [sample.text], self.cfg.max_tokens)
        return {"image": image, "input_ids": ids[0], "attention_mask": attention[0], "mask": target}


def _to(batch: Batch, device: torch.device | str) -> Batch:
    return {k: v.to(device) for k, v in batch.items()}


def _config(model: nn.Module) -> DanetConfig:
    """The DanetConfig of a Danet, also when wrapped (DistributedDataParallel keeps it as `.module`)."""
    core = getattr(model, "module", model)
    assert isinstance(core, Danet)
    return core.cfg


def train_step(
    model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, lambda_af: float | None = None
) -> dict[str, float]:
    """One optimisation step of eq. 11 (lambda_af defaults to the model's config); returns the loss terms."""
    cfg = _config(model)
    model.train()
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
    weight = cfg.lambda_af if lambda_af is None else lambda_af
    loss = danet_loss(out.logits, batch["mask"], out.affinity_features, out.affinity_labels, weight, cfg.affinity_norm)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    optimizer.step()
    terms = {"loss": loss.total, "bce": loss.bce, "affinity": loss.affinity}
    return {k: float(v.detach()) for k, v in terms.items()}


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    lambda_af: float | None = None,
    device: torch.device | str = "cpu",
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, float]:
    """Mean of each loss term over the epoch's batches (`scheduler` steps once per optimiser step)."""
    sums: dict[str, float] = {}
    n = 0
    for batch in batches:
        for key, value in train_step(model, _to(batch, device), optimizer, lambda_af).items():
            sums[key] = sums.get(key, 0.0) + value
        if scheduler is not None:
            scheduler.step()
        n += 1
    return {k: v / max(1, n) for k, v in sums.items()}


@torch.no_grad()
def predict_masks(model: nn.Module, batch: Batch, threshold: float = 0.5) -> torch.Tensor:
    """Boolean masks (B, H, W): sigmoid(Y) > threshold, in eval mode (no EAAS work at inference)."""
    model.eval()
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"])
    return out.logits[:, 0].sigmoid() > threshold


def sample_ious(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU per sample over valid pixels (target 0/1); a sample with empty union scores 1."""
    valid = (target == 0) | (target == 1)
    truth = (target == 1) & valid
    pred = pred & valid
    inter = (pred & truth).flatten(1).sum(1).float()
    union = (pred | truth).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Batch], device: torch.device | str = "cpu") -> dict[str, float]:
    """mIoU (mean of per-sample IoU) and oIoU (total intersection / total union), the papers' main metrics."""
    ious: list[torch.Tensor] = []
    inter = union = 0.0
    for batch in batches:
        batch = _to(batch, device)
        pred, target = predict_masks(model, batch), batch["mask"]
        valid = (target == 0) | (target == 1)
        truth, hit = (target == 1) & valid, pred & valid
        inter += float((hit & truth).sum())
        union += float((hit | truth).sum())
        ious.append(sample_ious(pred, target))
    miou = float(torch.cat(ious).mean()) if ious else 0.0
    return {"miou": miou, "oiou": inter / union if union else 1.0}


def recipe(cfg: TrainConfig, device: torch.device) -> Recipe:
    """DDP wraps the whole model: a frozen text encoder has `requires_grad=False`, which DDP skips; trainable
    but unused parameters (RAAM's query projection) need `find_unused_parameters`. Ranks by `val_miou`."""
    dcfg = cfg.model.danet
    model = build_model(cfg.model).to(device)
    tokenizer = load_tokenizer(dcfg.text_encoder)
    train_set = ReferringMasks(load_referring_split(cfg.data, "train"), dcfg, tokenizer)
    val = val_samples(cfg)

    def train_epoch(net: nn.Module, batches: Iterable[Any], opt: torch.optim.Optimizer, sched: Any) -> dict[str, float]:
        return train_one_epoch(net, batches, opt, device=device, scheduler=sched)

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
        make_optimizer=lambda: make_optimizer(model, cfg.optim.lr, cfg.optim.weight_decay),
        make_scheduler=lambda opt, steps: poly_schedule(opt, steps * cfg.optim.epochs),
        save_model=save,
        val_set=ReferringMasks(val, dcfg, tokenizer) if val else None,
        evaluate=lambda batches: evaluate(model, batches, device=device),
        val_batch_size=cfg.optim.eval_batch_size,
        find_unused_parameters=True,
    )
