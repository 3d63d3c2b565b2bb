"""Self-describing checkpoints: weights plus everything needed to run them on a new scene.

A checkpoint file is `torch.save` of plain containers only (dict, list, str, float, int, tensors), so it loads
with `torch.load(weights_only=True)`: no pickled classes, no code runs on load. It carries the model name and
full model config (to rebuild the module), the band order and per-band normalisation of the training split
or the `norm="scene"` rule (so inference normalises exactly as training did, never per tile), the metrics,
the rrsis version and the git commit it was trained from. Local paths, file:// and s3:// URIs go through
`rrsis.storage`.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from rrsis import __version__, storage
from rrsis.checkpoint_header import FORMAT_VERSION, KIND
from rrsis.config.load import to_dict
from rrsis.data.normalize import SCENE_RULES
from rrsis.data.normalize import NormSource as NormSource  # re-exported: normalisation lives with the data
from rrsis.data.normalize import norm_for_scene as norm_for_scene
from rrsis.data.normalize import normalize_image as normalize_image
from rrsis.data.normalize import scene_norm as scene_norm
from rrsis.data.normalize import split_norm as split_norm
from rrsis.data.otsu import NO_GATE, gate_band
from rrsis.errors import CheckpointError, ConfigError, RrsisError
from rrsis.models.config import ModelConfig
from rrsis.models.registry import build_model
from rrsis.models.sam.checkpoint import decoder_payload

if TYPE_CHECKING:  # typing only: segment_anything's package import pulls in torchvision
    from segment_anything.modeling import Sam


@dataclass
class Checkpoint:
    model_name: str  # ModelConfig.name, e.g. "waterland"
    model_config: dict[str, Any]  # the ModelConfig as a plain dict
    state_dict: dict[str, torch.Tensor]
    bands: list[str]  # band names in the order the model expects, e.g. ["VV", "VH"]
    norm_mean: list[float]
    norm_std: list[float]
    nodata_fill: float = 0.0  # value fed to the model for invalid pixels, after normalisation
    metrics: dict[str, float] = field(default_factory=dict)
    version: str = __version__
    git_commit: str = "unknown"
    train_config: dict[str, Any] = field(default_factory=dict)
    # "scene": normalise each scene by its own `rrsis.data.normalize.scene_stats`; "otsu": norm_mean/std plus,
    # per band, a channel anchored on the scene's Otsu threshold (`scene_thresholds`)
    norm: str = "split"
    gate: str = ""  # "otsu:<band>[:median<k>]": model water only below the scene's Otsu threshold (rrsis.data.otsu)


OPTIONAL_ENTRIES = {"norm", "gate"}  # added later with a default: older files of the same format still load


def git_commit() -> str:
    """The commit the code runs from, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _payload(ckpt: Checkpoint) -> dict[str, Any]:
    data = dataclasses.asdict(ckpt)
    data["state_dict"] = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    data["norm_mean"] = [float(v) for v in ckpt.norm_mean]
    data["norm_std"] = [float(v) for v in ckpt.norm_std]
    data["metrics"] = {str(k): float(v) for k, v in ckpt.metrics.items()}
    return {"kind": KIND, "format": FORMAT_VERSION, **data}


def save_checkpoint(ckpt: Checkpoint, uri: str) -> None:
    """Write `ckpt` to a local path or object-storage URI (atomically for local paths)."""
    if len(ckpt.norm_mean) != len(ckpt.bands) or len(ckpt.norm_std) != len(ckpt.bands):
        raise CheckpointError(
            f"checkpoint for {uri}: {len(ckpt.bands)} bands but {len(ckpt.norm_mean)} means / {len(ckpt.norm_std)} stds"
        )
    buffer = io.BytesIO()
    torch.save(_payload(ckpt), buffer)
    storage.put_bytes(uri, buffer.getvalue())


_REFUSED_PATTERNS = (
    (re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global"), "global {}"),
    (re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked"), "global {}, from a blocked module"),
    (re.compile(r"unrecognized function (.+?)(?: which belongs to|$)", re.MULTILINE), "call of {}"),
    (re.compile(r"Can only (?:build|create new object for) .*?(?:got|but got) (.+)$", re.MULTILINE), "object {}"),
)


def weights_only_refusal(message: str) -> str | None:
    """What torch's weights-only unpickler refused (e.g. `global posix.system`), from its error message.

    torch wraps the refusal in several lines of advice (with ANSI codes) and puts the reason last; None when
    the message is not a weights-only refusal (a damaged file).
    """
    if "Weights only load failed" not in message and "WeightsUnpickler" not in message:
        return None
    for pattern, template in _REFUSED_PATTERNS:
        found = pattern.search(message)
        if found:
            return template.format(found.group(1).strip().rstrip("."))
    reason = message.rsplit("WeightsUnpickler error:", 1)[-1].replace("Weights only load failed.", "")
    lines = [line.strip() for line in _ANSI.sub("", reason).splitlines() if line.strip()]
    return lines[0][:200] if lines else "an object outside the allowed tensors and containers"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """`Type: first line of the message`, without ANSI codes, at most 200 characters of message."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def load_checkpoint(uri: str) -> Checkpoint:
    """Read a checkpoint with `weights_only=True`; missing, truncated or foreign files -> one CheckpointError line."""
    try:
        raw = storage.get_bytes(uri)
    except RrsisError as exc:
        raise CheckpointError(f"checkpoint {uri} cannot be read: {exc}") from exc
    if not raw:
        raise CheckpointError(f"checkpoint {uri} is empty")
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = weights_only_refusal(str(exc))
        if refused is None:
            raise CheckpointError(f"checkpoint {uri} is truncated or not a torch file ({_first_line(exc)})") from exc
        raise CheckpointError(
            f"checkpoint {uri} holds objects that a weights-only load refuses ({refused}): loading it could run "
            "code, so rrsis will not; use a checkpoint written by rrsis (rrsis train)"
        ) from exc
    except Exception as exc:  # a damaged pickle/zip can raise almost any type; all mean "unreadable"
        first = _first_line(exc)
        raise CheckpointError(f"checkpoint {uri} is truncated or not a torch file ({first})") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise CheckpointError(f"checkpoint {uri} is not an rrsis checkpoint (no kind={KIND!r} entry)")
    if data.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {uri} has format {data.get('format')!r}; this rrsis reads {FORMAT_VERSION}")
    names = {f.name for f in dataclasses.fields(Checkpoint)}
    missing = sorted(n for n in names if n not in data and n not in OPTIONAL_ENTRIES)
    if missing:
        raise CheckpointError(f"checkpoint {uri} lacks entries: {', '.join(missing)}")
    ckpt = Checkpoint(**{n: data[n] for n in names if n in data})
    if ckpt.norm not in ("split", *SCENE_RULES):
        raise CheckpointError(
            f"checkpoint {uri} has norm={ckpt.norm!r}; this rrsis knows split, {', '.join(SCENE_RULES)}"
        )
    try:
        gate_band(ckpt.gate, ckpt.bands, key="gate")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {uri}: {exc}") from exc
    return ckpt


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild the typed ModelConfig; an unknown key or bad value names itself."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ModelConfig), data)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"checkpoint model_config does not fit this rrsis: {first}") from exc
    assert isinstance(cfg, ModelConfig)
    return cfg


def build_from_checkpoint(ckpt: Checkpoint) -> nn.Module:
    """The model in eval mode with the checkpoint's weights (strict: every tensor must match)."""
    cfg = model_config_from_dict(ckpt.model_config)
    if cfg.name != ckpt.model_name:
        raise CheckpointError(f"checkpoint model_name={ckpt.model_name!r} but model_config.name={cfg.name!r}")
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or ["state_dict mismatch"])[0]
        raise CheckpointError(f"checkpoint weights do not fit model {ckpt.model_name!r}: {first[:300]}") from exc
    return model.eval()


def checkpoint_from_model(
    model: nn.Module,
    model_cfg: ModelConfig,
    *,
    bands: list[str],
    norm_mean: list[float],
    norm_std: list[float],
    nodata_fill: float = 0.0,
    metrics: dict[str, float] | None = None,
    train_config: dict[str, Any] | None = None,
    norm: str = "split",
    gate: str = "",
) -> Checkpoint:
    """Snapshot a model (weights copied to CPU) with its config, bands and normalisation."""
    return Checkpoint(
        model_name=model_cfg.name,
        model_config=to_dict(model_cfg),
        state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        bands=list(bands),
        norm_mean=[float(v) for v in norm_mean],
        norm_std=[float(v) for v in norm_std],
        nodata_fill=float(nodata_fill),
        metrics=dict(metrics or {}),
        version=__version__,
        git_commit=git_commit(),
        train_config=dict(train_config or {}),
        norm=norm,
        gate="" if gate in NO_GATE else gate,
    )


def save_decoder_checkpoint(
    sam: Sam,
    uri: str | Path,
    model_type: str,
    config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    epoch: int = 0,
) -> str:
    """Write a SAM decoder-only checkpoint (`rrsis.models.sam.checkpoint` format) to a local path or URI;
    the write is atomic, never a half-written file under the final name. Returns the URI."""
    payload = decoder_payload(sam, model_type, config, metrics, epoch)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    storage.put_bytes(str(uri), buffer.getvalue())
    return str(uri)
