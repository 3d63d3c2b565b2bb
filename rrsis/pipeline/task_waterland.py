"""`rrsis map` task waterland: a water-land U-Net on every tile, through the shared tile executor.

What is specific to it: the checkpoint's header (model tag, band names, input bands; read without torch),
the run id, and that its CPU inference actors may get cores of their own (`rrsis.pipeline.cores`).
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

from rrsis import storage
from rrsis.checkpoint_header import read_header
from rrsis.config.map import MapConfig
from rrsis.data.otsu import gate_spec
from rrsis.errors import ConfigError
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import PlanArgs, content_tag, derive_run_id
from rrsis.pipeline.task_table import TaskRun
from rrsis.pipeline.tile_run import TileSpec, run_tiles


def model_info(checkpoint: str, header: dict[str, Any] | None = None) -> tuple[str, list[str], int]:
    """(model tag, band names, input bands) from the checkpoint's header, read on the driver without torch
    (`rrsis.checkpoint_header`: ~400 MB less driver memory); a file it cannot read goes through the full
    loader, whose error names the problem. `header`: the header if the caller has already read it."""
    header = header or read_header(checkpoint)
    if header is None:
        # imported here on purpose: it imports torch, which the driver otherwise never needs
        from rrsis.checkpoints import load_checkpoint

        ckpt = load_checkpoint(checkpoint)  # raises the one-line CheckpointError, or reads a legacy format
        header = {"model_name": ckpt.model_name, "bands": ckpt.bands, "model_config": ckpt.model_config}
    bands = [str(b) for b in (header.get("bands") or [])]
    model_config = header.get("model_config") or {}
    family = model_config.get(header["model_name"], {}) if isinstance(model_config, dict) else {}
    in_bands = len(bands) or int(family.get("in_bands", 0) if isinstance(family, dict) else 0)
    return f"{header['model_name']}@{content_tag(checkpoint)}", bands, in_bands


def check_gate_overlap(cfg: MapConfig, header: dict[str, Any] | None) -> None:
    """A gate on a k x k median (`otsu:VV:median5`) needs k // 2 pixels of context around every core, which the
    tiles' overlap gives (`overlap_px // 2` before each core): less, and tiles would disagree at their seams.
    A checkpoint whose header cannot be read without torch is checked by `InferStage` instead (its gate spec);
    its seams are not. `header`: the checkpoint's (`read_header`)."""
    if not header or not header.get("gate"):
        return
    gate, bands = str(header["gate"]), [str(b) for b in header.get("bands") or []]
    half = gate_spec(gate, bands, key=f"{cfg.infer.checkpoint}: gate")[1] // 2
    if cfg.tiling.overlap_px // 2 < half:
        raise ConfigError(
            f"config error: key 'tiling.overlap_px': value {cfg.tiling.overlap_px} is too small for the checkpoint's "
            f"gate {gate!r} (its {2 * half + 1} px median needs overlap_px >= {2 * half}, or tiles disagree at seams)"
        )


def decisive_refine(cfg: MapConfig) -> dict[str, Any]:
    """The refinement settings that change masks (pool sizes and CPUs only change how fast they come)."""
    r = cfg.refine
    return {"enabled": r.enabled, "open_px": r.open_px, "min_mapping_unit_px": r.min_mapping_unit_px}


def decisive_precision(cfg: MapConfig) -> dict[str, Any]:
    """`infer.precision` when it asks for bf16 or fp16: their masks differ from fp32's in the last bits, so
    such a run never resumes an fp32 run's tiles. fp32 and auto add nothing (run ids stay as before): auto
    follows the hardware, as `infer.device` does, which no run id holds either."""
    p = cfg.infer.precision
    return {"precision": p} if p in ("bf16", "fp16") else {}


def decisive_infer(cfg: MapConfig) -> dict[str, Any]:
    """The inference settings that change masks: the threshold, an explicit lower precision, and the batch
    only when batches change the last float bits (`infer.batch_invariant=false`)."""
    i = cfg.infer
    out: dict[str, Any] = {"checkpoint": i.checkpoint, "threshold": i.threshold, **decisive_precision(cfg)}
    if not i.batch_invariant:
        out["batch_size"] = i.batch_size
    return out


def run_id_for(cfg: MapConfig, scenes: list[SceneRef], model: str = "") -> str:
    """`cfg.run_id`, or a deterministic id from what decides the outputs (so a rerun resumes): never from
    resource settings (pool sizes, CPUs, device). `model` is the checkpoint's content tag: a checkpoint
    retrained in place gets a new run id instead of resuming the old model's tiles."""
    decisive = {
        "task": cfg.task,
        "scenes": [s.uri for s in scenes],
        "bands": list(cfg.bands),
        "tiling": asdict(cfg.tiling),
        "infer": decisive_infer(cfg),
        "model": model,
        "refine": decisive_refine(cfg),
        "probability": cfg.outputs.probability,
    }
    return derive_run_id("map", cfg.run_id, decisive)


def plan_args(cfg: MapConfig, run_prefix: str, model_bands: list[str], in_bands: int) -> PlanArgs:
    t = cfg.tiling
    return PlanArgs(run_prefix, t.tile_px, t.overlap_px, tuple(cfg.bands), tuple(model_bands), in_bands)


def prepare(cfg: MapConfig, scenes: list[SceneRef]) -> TaskRun:
    header = read_header(cfg.infer.checkpoint)  # once: a remote checkpoint is fetched for it
    model, model_bands, in_bands = model_info(cfg.infer.checkpoint, header)
    check_gate_overlap(cfg, header)
    run_id = run_id_for(cfg, scenes, model)
    plan = plan_args(cfg, storage.join(cfg.output, run_id), model_bands, in_bands)
    spec = TileSpec(cfg, model, plan, target="water")
    return TaskRun(run_id, functools.partial(run_tiles, spec=spec))
