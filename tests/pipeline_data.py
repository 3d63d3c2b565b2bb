"""Test data for the map pipeline tests: tiny real GeoTIFF scenes and a tiny real water-land checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from rrsis.config.load import load_config
from rrsis.config.map import MapConfig

UTM_ORIGIN = (500000.0, 4200000.0)  # EPSG:32630, 10 m pixels


def write_scene(
    path: Path | str,
    height: int,
    width: int,
    *,
    bands: int = 2,
    seed: int = 0,
    crs: str | None = "EPSG:32630",
    nan_corner_px: int = 0,
    all_nan: bool = False,
) -> str:
    """A float32 dB-like scene with smooth 'water' blobs (so the mask has regions, not noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    blobs = np.sin(xx / 23.0 + seed) * np.cos(yy / 17.0) * 6.0
    data = np.stack([blobs - 12.0 + rng.normal(0, 1.0, (height, width)) for _ in range(bands)]).astype("float32")
    if nan_corner_px:
        data[:, :nan_corner_px, :nan_corner_px] = np.nan
    if all_nan:
        data[:] = np.nan
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": "float32",
        "transform": from_origin(*UTM_ORIGIN, 10.0, 10.0),
        "nodata": float("nan"),
    }
    if crs:
        profile["crs"] = crs
    with rasterio.open(str(path), "w", **profile) as dst:
        dst.write(data)
        if bands == 2:
            dst.descriptions = ("VV", "VH")
    return str(path)


def tiny_checkpoint(
    path: Path | str, *, family: str = "senet", seed: int = 0, in_bands: int = 2, width: str = "half"
) -> str:
    """A random-initialised model of the real water-land class, saved as a real checkpoint."""
    from rrsis.checkpoints import checkpoint_from_model, save_checkpoint
    from rrsis.models.config import ModelConfig
    from rrsis.models.registry import build_model
    from rrsis.models.waterland.config import WaterlandConfig

    torch.manual_seed(seed)
    model_cfg = ModelConfig(name="waterland", waterland=WaterlandConfig(family=family, width=width, in_bands=in_bands))
    model = build_model(model_cfg).eval()
    _calibrate(model, in_bands)
    names = ["VV", "VH"] if in_bands == 2 else [f"B{i + 1}" for i in range(in_bands)]
    ckpt = checkpoint_from_model(model, model_cfg, bands=names, norm_mean=[-12.0] * in_bands, norm_std=[4.0] * in_bands)
    save_checkpoint(ckpt, str(path))
    return str(path)


def _calibrate(model: torch.nn.Module, in_bands: int) -> None:
    """Make a random model's water share about half, with contrast: masks then have edges to get wrong.

    On a normalised blob image like `write_scene`'s, the head is shifted so the median logit difference is 0
    and scaled so its spread is about 4 (random U-Nets otherwise output one class everywhere).
    """
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    blob = np.sin(xx / 23.0) * np.cos(yy / 17.0) * 1.5
    x = torch.from_numpy(np.stack([blob] * in_bands)[None].astype(np.float32))
    head = model.heads[0]  # type: ignore[index]
    with torch.no_grad():
        logits = model(x)
        diff = (logits[:, 1] - logits[:, 0]).flatten()
        scale = 4.0 / float(diff.std().clamp_min(1e-6))
        head.weight[1] -= head.weight[0]
        head.bias[1] -= head.bias[0] + float(diff.median())
        head.weight[0].zero_()
        head.bias[0].zero_()
        head.weight.mul_(scale)
        head.bias.mul_(scale)


def map_config(*overrides: str) -> MapConfig:
    cfg: MapConfig = load_config(MapConfig, None, list(overrides))
    return cfg


def gated_checkpoint(plain: str, path: Path | str, gate: str = "otsu:VV") -> str:
    """`plain` (a checkpoint file) with an Otsu gate (on VV by default), saved at `path`."""
    from rrsis.checkpoints import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(plain)
    ckpt.gate = gate
    save_checkpoint(ckpt, str(path))
    return str(path)


def read_tiles(
    scenes: list[str], run_prefix: Path | str, tile_px: int = 64, overlap_px: int = 0
) -> dict[str, np.ndarray]:
    """The map's read stage over every tile of `scenes` (2-band VV/VH, no overlap by default): one batch."""
    from rrsis.pipeline.inputs import resolve_inputs
    from rrsis.pipeline.plan import plan_run
    from rrsis.pipeline.stages import read_stage

    resolved, _ = resolve_inputs(scenes)
    _, rows, _ = plan_run(
        resolved, str(run_prefix), tile_px=tile_px, overlap_px=overlap_px, requested_bands=[], model_bands=["VV", "VH"],
        in_bands=2,
    )  # fmt: skip
    return read_stage({k: np.asarray([r[k] for r in rows]) for k in rows[0]})
