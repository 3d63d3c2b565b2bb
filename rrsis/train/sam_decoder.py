"""Fine-tune SAM's mask decoder (PSLG-SAM sec. 4.2): encoders frozen, AdamW lr 1e-4, BCE, batch 1, 20 epochs.

Read top to bottom: samples (image, box, mask) -> each distinct image embedded once by the frozen image
encoder (the encoder never changes, so epochs only pay for the decoder) -> `train_one_epoch` decodes the box
(and optional point) prompt, upsamples the logits to the image as SAM's predictor does and takes BCE with
logits against the mask -> AdamW steps on the decoder only -> decoder-only checkpoint. `train_one_epoch` is a
plain function over (predictor, optimizer, items): the same call runs in this loop and inside a Ray Train
worker. Dice is optional (`dice_weight`, default 0: the paper optimises BCE alone). `fit_sam_decoder` is the
in-memory API (samples in, decoder out); `rrsis train model.name=sam_decoder` runs `recipe` through the one
epoch loop (`rrsis.train.fit`) with the same seeded prompt order (`SeededShuffle`).
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Sampler

from rrsis import storage
from rrsis.checkpoints import save_decoder_checkpoint
from rrsis.config.train import TrainConfig
from rrsis.data.dataset import find_refs
from rrsis.data.pairs import read_sample
from rrsis.errors import ConfigError, InputError
from rrsis.models.sam.build import build_sam
from rrsis.models.sam.config import SamConfig
from rrsis.models.sam.frame import SamFrame
from rrsis.models.sam.predictor import SamTilePredictor
from rrsis.train.recipes import Recipe


@dataclass(frozen=True)
class DecoderSample:
    """One training prompt: an (H, W, 3) uint8 image, its object's xyxy box and (H, W) bool mask."""

    image: np.ndarray
    box_xyxy: tuple[float, float, float, float]
    mask: np.ndarray
    point_xy: tuple[float, float] | None = None  # e.g. a CFPG point; None = box only
    image_id: str = ""  # samples sharing an image_id share one embedding


@dataclass(frozen=True)
class DecoderTrainSettings:
    """The paper's decoder fine-tuning defaults (AdamW, lr 1e-4, BCE, batch 1, 20 epochs)."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 20
    batch_size: int = 1  # prompts per optimiser step (losses averaged)
    dice_weight: float = 0.0  # 0 = BCE only, as the paper
    bce_weight: float = 1.0
    seed: int = 0


@dataclass
class FitResult:
    history: list[float] = field(default_factory=list)  # mean loss per epoch
    checkpoint: Path | None = None


def samples_from_mask(
    image: np.ndarray, mask: np.ndarray, image_id: str, min_area_px: int = 16, max_objects: int = 32
) -> list[DecoderSample]:
    """One sample per 8-connected object of a semantic mask (largest first); box = the object's extent."""
    if mask.shape != image.shape[:2]:
        raise InputError(f"sample {image_id!r}: mask shape {mask.shape} differs from image {image.shape[:2]}")
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    order = sorted(range(1, n), key=lambda i: -int(stats[i, cv2.CC_STAT_AREA]))
    out = []
    for i in order[:max_objects]:
        x, y, w, h, area = (int(v) for v in stats[i])
        if area >= min_area_px:
            out.append(DecoderSample(image, (x, y, x + w, y + h), comp == i, image_id=image_id))
    return out


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def prompt_loss(
    predictor: SamTilePredictor,
    embedding: torch.Tensor,
    frame: SamFrame,
    sample: DecoderSample,
    settings: DecoderTrainSettings,
    decoder: torch.nn.Module | None = None,
) -> torch.Tensor:
    """BCE (+ optional Dice) of one box/point prompt's single-mask output at image resolution."""
    points = None if sample.point_xy is None else np.array([sample.point_xy], dtype=np.float64)
    box_t, pts_t = predictor.prompt_tensors(np.array([sample.box_xyxy], dtype=np.float64), points, None, frame)
    low_res, _ = predictor.decode(embedding, box_t, pts_t, multimask=False, decoder=decoder)
    logits = predictor.to_tile_logits(low_res, frame)[0, 0]
    target = torch.as_tensor(sample.mask, dtype=torch.float32, device=logits.device)
    loss = settings.bce_weight * F.binary_cross_entropy_with_logits(logits, target)
    if settings.dice_weight > 0:
        loss = loss + settings.dice_weight * dice_loss(logits, target)
    return loss


def embed_samples(
    predictor: SamTilePredictor, samples: Sequence[DecoderSample]
) -> list[tuple[torch.Tensor, SamFrame, DecoderSample]]:
    """Pair every sample with its image embedding, running the frozen encoder once per distinct image."""
    cache: dict[str, tuple[torch.Tensor, SamFrame]] = {}
    items = []
    for i, s in enumerate(samples):
        key = s.image_id or f"#{i}"
        if key not in cache:
            cache[key] = predictor.embed(s.image)
        items.append((*cache[key], s))
    return items


def train_batches(
    predictor: SamTilePredictor,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Sequence[tuple[torch.Tensor, SamFrame, DecoderSample]]],
    settings: DecoderTrainSettings,
    decoder: torch.nn.Module | None = None,
) -> float:
    """One optimiser step per batch of prompts (losses averaged); returns the mean prompt loss.

    In a Ray Train worker pass `decoder=ray.train.torch.prepare_model(predictor.sam.mask_decoder)` (DDP over
    the decoder only: the frozen encoders have nothing to synchronise) and that worker's shard of batches.
    """
    module = decoder or predictor.sam.mask_decoder
    module.train()
    total, count = 0.0, 0
    for chunk in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = sum(
            (prompt_loss(predictor, emb, frame, sample, settings, decoder) for emb, frame, sample in chunk),
            torch.zeros(()),
        ) / len(chunk)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(chunk)
        count += len(chunk)
    module.eval()
    return total / max(count, 1)


class SeededShuffle(Sampler[int]):
    """The prompt order of `train_one_epoch`: one `random.Random(seed)` reshuffles every epoch, so the plain
    `rrsis train` run and `fit_sam_decoder` see the same prompts in the same order."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.rng = n, random.Random(seed)

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.n))
        self.rng.shuffle(order)
        return iter(order)

    def __len__(self) -> int:
        return self.n


def train_one_epoch(
    predictor: SamTilePredictor,
    optimizer: torch.optim.Optimizer,
    items: Sequence[tuple[torch.Tensor, SamFrame, DecoderSample]],
    settings: DecoderTrainSettings,
    rng: random.Random,
    decoder: torch.nn.Module | None = None,
) -> float:
    """One shuffled pass; an optimiser step every `batch_size` prompts. Returns the mean prompt loss."""
    order = list(range(len(items)))
    rng.shuffle(order)
    size = settings.batch_size
    chunks = [[items[j] for j in order[start : start + size]] for start in range(0, len(order), size)]
    return train_batches(predictor, optimizer, chunks, settings, decoder)


def fit_sam_decoder(
    sam_cfg: SamConfig,
    samples: Sequence[DecoderSample],
    settings: DecoderTrainSettings,
    out_dir: str | Path | None = None,
    checkpoint_path: str | None = None,
    device: torch.device | str = "cpu",
) -> FitResult:
    """Fine-tune the decoder of SAM `sam_cfg` (mode forced to finetune) and save `decoder.pt` in out_dir."""
    if not samples:
        raise InputError("SAM decoder fine-tuning got no samples (every mask empty or below min_area_px?)")
    torch.manual_seed(settings.seed)
    cfg = dataclasses.replace(sam_cfg, mode="finetune")
    sam = build_sam(cfg, checkpoint_path).to(device)
    predictor = SamTilePredictor(sam, mask_threshold=cfg.mask_threshold)
    params = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    items = embed_samples(predictor, samples)
    rng = random.Random(settings.seed)
    result = FitResult()
    for _ in range(settings.epochs):
        result.history.append(train_one_epoch(predictor, optimizer, items, settings, rng))
    if out_dir is not None:
        result.checkpoint = Path(out_dir) / "decoder.pt"
        save_decoder_checkpoint(
            sam,
            result.checkpoint,
            cfg.model_type,
            config={"lr": settings.lr, "epochs": settings.epochs, "batch_size": settings.batch_size},
            metrics={"train_loss": result.history[-1]},
            epoch=settings.epochs,
        )
    return result


def settings_from_train_config(cfg: Any) -> DecoderTrainSettings:
    """`rrsis train` config -> settings; loss.name 'ce' is BCE, 'ce_dice' adds Dice (alpha, beta weights)."""
    if cfg.loss.name not in ("ce", "ce_dice"):
        raise ConfigError(f"config error: key 'loss.name': {cfg.loss.name!r} for sam_decoder; allowed: 'ce', 'ce_dice'")
    if cfg.optim.name != "adamw":
        raise ConfigError(f"config error: key 'optim.name': {cfg.optim.name!r} for sam_decoder; allowed: 'adamw'")
    return DecoderTrainSettings(
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        epochs=cfg.optim.epochs,
        batch_size=cfg.optim.batch_size,
        bce_weight=cfg.loss.alpha if cfg.loss.name == "ce_dice" else 1.0,
        dice_weight=cfg.loss.beta if cfg.loss.name == "ce_dice" else 0.0,
        seed=cfg.seed,
    )


S2_RGB_MAX = 3000.0  # Sentinel-2 L1C reflectance x 10000 drawn as 255 in SAM's RGB input (scene-independent)


def sen1floods11_samples(data: Any, min_area_px: int = 64, max_objects: int = 4) -> list[DecoderSample]:
    """(RGB, box, water body) samples from Sen1Floods11 S2 chips, cut into `crop_px` squares without nodata."""
    if data.format != "sen1floods11" or data.sensor != "s2" or len(data.bands) != 3:
        raise ConfigError(
            "config error: key 'data': sam_decoder trains on format 'sen1floods11', sensor 's2', three bands "
            f"(RGB, e.g. [B4, B3, B2]); got {data.format!r}, {data.sensor!r}, {list(data.bands)}"
        )
    _, refs = find_refs(data)
    out: list[DecoderSample] = []
    for ref in refs:
        image, valid, label = read_sample(ref)
        rgb = np.clip(image.transpose(1, 2, 0) * (255.0 / S2_RGB_MAX), 0, 255).round().astype(np.uint8)
        size = data.crop_px or max(ref.width, ref.height)
        for row in range(0, ref.height - size + 1, size):
            for col in range(0, ref.width - size + 1, size):
                win = np.s_[row : row + size, col : col + size]
                if not valid[win].all():
                    continue
                water = label[win] == 1
                crop_id = f"{ref.sample_id}_r{row}_c{col}"
                out += samples_from_mask(rgb[win].copy(), water, crop_id, min_area_px, max_objects)
    return out


def take_fraction(samples: Sequence[DecoderSample], fraction: float, seed: int) -> list[DecoderSample]:
    """A seeded subset of the training *images* (all prompts of a kept image stay): Table 4's data fraction."""
    if fraction >= 1.0:
        return list(samples)
    images = sorted({s.image_id for s in samples})
    keep = set(random.Random(seed).sample(images, max(1, round(fraction * len(images)))))
    return [s for s in samples if s.image_id in keep]


def train_samples(cfg: Any) -> list[DecoderSample]:
    """The training prompts of a `rrsis train` config: Sen1Floods11 water bodies, `data.train_fraction` of them."""
    return take_fraction(sen1floods11_samples(cfg.data), cfg.data.train_fraction, cfg.seed)


def recipe(cfg: TrainConfig, device: torch.device) -> Recipe:
    """DDP wraps only the mask decoder (the frozen encoders never get gradients: DDP over the whole SAM would
    all-reduce nothing useful and hold the encoder twice; the IoU head gets no gradient from the mask loss,
    hence `find_unused_parameters`); `state.pt` and `decoder.pt` hold the decoder alone. Every worker embeds
    the training images once up front and trains on its shard of the prompts. No validation split."""
    settings = settings_from_train_config(cfg)
    samples = train_samples(cfg)
    if not samples:
        raise InputError(f"data.root={cfg.data.root!r}: no water body large enough for a SAM decoder prompt")
    sam_cfg = dataclasses.replace(cfg.model.sam, mode="finetune")
    local_ckpt = None
    if sam_cfg.checkpoint and "://" in sam_cfg.checkpoint:  # SAM never downloads: fetch the URI first
        local_ckpt = os.path.join(tempfile.mkdtemp(prefix="rrsis-sam-"), "sam.pth")
        storage.get_file(sam_cfg.checkpoint, local_ckpt)
    sam = build_sam(sam_cfg, local_ckpt).to(device)
    predictor = SamTilePredictor(sam, mask_threshold=sam_cfg.mask_threshold)
    items = embed_samples(predictor, samples)

    def train_epoch(net: nn.Module, batches: Iterable[Any], opt: torch.optim.Optimizer, _: Any) -> dict[str, float]:
        return {"loss": train_batches(predictor, opt, batches, settings, decoder=net)}

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
        plain_order=lambda: SeededShuffle(len(items), cfg.seed),
        find_unused_parameters=True,
    )
