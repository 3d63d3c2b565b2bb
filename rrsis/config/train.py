"""Config of `rrsis train`: model family, data, loss, optimiser, and the Ray Train section."""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.config.common import RayConfig, StorageConfig
from rrsis.fields import bounded, choice
from rrsis.fields import device as device_field
from rrsis.models.config import ModelConfig


@dataclass
class DataConfig:
    format: str = choice(
        "sen1floods11", "sen1floods11", "snowed", "geotiff_pairs", "ombria", "dior_rsvg", "refer", "jsonl"
    )
    root: str = "data/samples/sen1floods11"
    sensor: str = choice("s1", "s1", "s2")
    bands: list[str] = field(default_factory=list)  # empty: the format's default bands
    # groups held out for validation: Sen1Floods11 events; OMBRIA OmbriaS1-train/OmbriaS1-test or a 2021 event
    val_events: list[str] = field(default_factory=list)
    crop_px: int = bounded(256, 0, 8192)  # random crop for training; 0 = whole chip
    crops_per_chip: int = bounded(1, 1, 10000)  # random crops drawn from each training sample per epoch
    # share of training crops placed over a labelled water pixel (the rest uniform; rrsis.data.dataset)
    water_crop_fraction: float = bounded(0.0, 0.0, 1.0)
    val_fraction: float = bounded(0.0, 0.0, 1.0)  # extra held-out share of groups (stable hash of the name)
    eval_tile_px: int = bounded(0, 0, 8192)  # evaluation reads samples in tiles of this size; 0 = whole
    augment: bool = True
    # "split": one mean/std of the training split for every scene; "scene": each scene (chip) its own robust
    # median and IQR/1.349 per band (rrsis.data.normalize.scene_stats); "otsu": the split's mean/std and,
    # beside each band, the band minus the scene's own Otsu threshold (2x the input channels). Stored as the
    # checkpoint's `norm`
    norm: str = choice("split", "split", "scene", "otsu")
    # water-land post-process stored in the checkpoint: "otsu:VV" keeps model water only where VV is below the
    # scene's global Otsu threshold (rrsis.data.otsu), "otsu:VV:median5" where VV's 5x5 median is; "" none.
    # `rrsis eval`: "" = the checkpoint's, "none" = off
    gate: str = ""
    num_workers: int = bounded(0, 0, 64)
    # share of the training images used (PSLG-SAM Table 4's data-fraction axis; a seeded subset; sam_decoder)
    train_fraction: float = bounded(1.0, 0.0, 1.0, open_low=True)
    # referring formats (dior_rsvg, refer, jsonl)
    image_dir: str = ""  # images folder; empty: the format's default (JPEGImages/ or images/ under root)
    split_file: str = ""  # refer: the refs(*).p file name under root; empty: the only one there


@dataclass
class LossConfig:
    name: str = choice("ce_dice", "ce", "dice", "ce_dice", "seg", "edge", "seg_edge")
    alpha: float = bounded(1.0, 0.0)  # eq. 3 weight of CE
    beta: float = bounded(0.7, 0.0)  # eq. 3 weight of Sorensen-Dice
    lam: float = bounded(10.0, 0.0)  # eq. 4 weight of the local regulariser
    eps: float = bounded(1e-5, 0.0, open_low=True)


@dataclass
class OptimConfig:
    name: str = choice("adam", "adam", "adamw", "sgd")
    lr: float = bounded(1e-3, 0.0, 10.0, open_low=True)
    weight_decay: float = bounded(0.0, 0.0, 1.0)
    epochs: int = bounded(20, 1, 100000)
    batch_size: int = bounded(8, 1, 65536)
    grad_accum: int = bounded(1, 1, 1024)
    amp: bool = False
    # validation metric that picks best.pt; "last" keeps the last epoch (when val chips are the test chips)
    monitor: str = choice("iou_mean", "iou_mean", "iou_water", "f1", "last")
    max_minutes: float = bounded(0.0, 0.0)  # stop after the epoch that crosses this wall time; 0 = no limit
    eval_batch_size: int = bounded(2, 1, 4096)
    # water-land loop: per-epoch learning-rate schedule after `warmup_epochs` (rrsis.train.optim.lr_factor)
    schedule: str = choice("constant", "constant", "cosine", "step")
    min_lr_ratio: float = bounded(0.0, 0.0, 1.0)  # cosine: final rate = lr * min_lr_ratio
    # grounding (PSLG-SAM sec. 4.2: text encoder 1e-5, rest `lr` 1e-4, x0.1 at epoch 45 of 60, 3 warm-up epochs)
    lr_text: float = bounded(1e-5, 0.0, 10.0)  # text encoder's learning rate (0 = frozen)
    warmup_epochs: int = bounded(0, 0, 100000)  # linear warm-up from ~0 to the full rates
    lr_decay_epochs: list[int] = field(default_factory=list)  # epochs (1-based) after which rates x decay_factor
    lr_decay_factor: float = bounded(0.1, 0.0, 1.0, open_low=True)


@dataclass
class RayTrainConfig:
    enabled: bool = False
    num_workers: int = bounded(2, 1, 4096)
    use_gpu: bool = False
    cpus_per_worker: float = bounded(1.0, 0.0, 256.0)
    checkpoint_every: int = bounded(1, 1)
    keep_best: int = bounded(2, 1)
    max_failures: int = bounded(3, -1)
    resume: bool = False


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: str = "runs"
    run_name: str = "train"
    seed: int = 0
    device: str = device_field()
    # water-land: start from this checkpoint's weights (fine-tuning; same model config and bands), "" = random
    init_checkpoint: str = ""
    train: RayTrainConfig = field(default_factory=RayTrainConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)
