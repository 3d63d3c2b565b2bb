"""Checks run before any data is loaded or any trial starts: each one a single line naming the key to set.

`build_recipe` runs `check_inputs` first (the data root, the weights files and text encoders the family
loads), so `rrsis train` fails on a missing input before it builds a model. A Tune trial fails far from the
user (in a Ray worker, after the cluster started, once per trial), so `rrsis tune` also checks on the driver
that the family reports the metric the search ranks by and that a trial fits on one node of the cluster at
all (Ray would otherwise keep it PENDING forever).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from rrsis import storage
from rrsis.config.train import TrainConfig
from rrsis.data.referring import ReferringSample, load_referring_split
from rrsis.errors import ConfigError, InputError, ModelError
from rrsis.log import get_logger
from rrsis.models.sam.arch import RANDOM_INIT_PRESETS
from rrsis.models.text_path import resolve_text_encoder

log = get_logger(__name__)


def _exists(uri: str) -> bool:
    if storage.is_remote(uri):
        return storage.exists(uri) or bool(storage.list_prefix(uri.rstrip("/") + "/"))
    return os.path.exists(uri)


def _need(uri: str, key: str, what: str) -> None:
    if not _exists(uri):
        raise InputError(f"config error: key '{key}': {what} {uri!r} does not exist; set {key}=<path or s3:// URI>")


def _text_encoder(path: str, key: str) -> None:
    try:
        resolve_text_encoder(path, key)
    except ModelError as exc:
        raise ModelError(f"config error: key '{key}': {exc}; set {key}=<BERT-family model directory>") from exc


def check_inputs(cfg: TrainConfig, prefix: str = "") -> None:
    """Data root, weights files and text encoders of `cfg`'s family exist (`prefix`: where `cfg` sits)."""
    name = cfg.model.name
    _need(cfg.data.root, f"{prefix}data.root", f"{cfg.data.format} data")
    if cfg.init_checkpoint:
        _need(cfg.init_checkpoint, f"{prefix}init_checkpoint", "checkpoint to start from")
    if name == "danet":
        d = cfg.model.danet
        if d.backbone_weights:
            _need(d.backbone_weights, f"{prefix}model.danet.backbone_weights", "Swin weights")
        _text_encoder(d.text_encoder, f"{prefix}model.danet.text_encoder")
    elif name == "grounding":
        gr = cfg.model.grounding
        if gr.image_weights != "none":
            _need(gr.image_weights, f"{prefix}model.grounding.image_weights", "ResNet weights")
        _text_encoder(gr.text_encoder, f"{prefix}model.grounding.text_encoder")
    elif name == "sam_decoder":
        sam = cfg.model.sam
        if sam.checkpoint:
            _need(sam.checkpoint, f"{prefix}model.sam.checkpoint", "SAM checkpoint")
        elif sam.model_type not in RANDOM_INIT_PRESETS:
            key = f"{prefix}model.sam.checkpoint"
            raise ConfigError(f"config error: key '{key}': SAM {sam.model_type} needs its weights; set {key}=<.pth>")
        if sam.decoder_checkpoint:
            _need(sam.decoder_checkpoint, f"{prefix}model.sam.decoder_checkpoint", "decoder checkpoint")


def val_samples(cfg: TrainConfig) -> list[ReferringSample]:
    """A referring family's validation split, or none (formats without one: RRSIS-M ships train/test)."""
    try:
        return load_referring_split(cfg.data, "val")
    except InputError as exc:
        log.info("no validation split (%s): keeping the last epoch", exc)
        return []


def has_validation(cfg: TrainConfig) -> bool:
    """Whether the family evaluates a validation split each epoch (the SAM decoder never does)."""
    if cfg.model.name == "waterland":
        return bool(cfg.data.val_events) or cfg.data.val_fraction > 0
    if cfg.model.name in ("danet", "grounding"):
        return bool(val_samples(cfg))
    return False


def check_metric(metric: str, cfg: TrainConfig) -> None:
    """A validation metric needs a validation split: without one, trials never report it."""
    if metric.startswith("val_") and not has_validation(cfg):
        raise ConfigError(
            f"config error: key 'metric': {metric!r} needs a validation split, and base.data "
            f"({cfg.data.format} at {cfg.data.root}) has none; rank by a training metric (e.g. metric=loss mode=min)"
        )


def check_fits(cpus: float, gpus: float, nodes: Sequence[Mapping[str, float]], *, what: str = "a trial") -> None:
    """One trial's CPUs and GPUs fit on one node (`nodes`: each alive node's resources)."""
    most_cpus = max((float(n.get("CPU", 0.0)) for n in nodes), default=0.0)
    most_gpus = max((float(n.get("GPU", 0.0)) for n in nodes), default=0.0)
    if gpus > most_gpus:
        raise ConfigError(
            f"config error: {what} needs {gpus:g} GPU(s) but no node of the cluster has more than {most_gpus:g}; "
            "set base.train.use_gpu=false, or run on a cluster with GPUs"
        )
    if cpus > most_cpus:
        raise ConfigError(
            f"config error: key 'cpus_per_trial': {what} needs {cpus:g} CPUs but no node of the cluster has more "
            f"than {most_cpus:g}; set cpus_per_trial={most_cpus:g} or less"
        )
