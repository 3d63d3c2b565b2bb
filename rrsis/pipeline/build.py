"""The one module that wires the map stages into Ray Data, with every stage's resources declared here.

read (CPU tasks) -> infer (actor pool; 1 GPU per actor when the cluster has GPUs) -> refine (CPU actor
pool) -> write (CPU tasks). Rows entering are tile rows (metadata); rows leaving are manifest rows
(metadata): pixels exist only between read and write, inside Ray's object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ray
import ray.data

from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError
from rrsis.pipeline.plan import ScenePlan
from rrsis.pipeline.products import scene_products, scene_record
from rrsis.pipeline.stages import InferStage, RefineStage, read_stage, verify_stage, write_stage


@dataclass(frozen=True)
class StageResources:
    """Resources of one stage: CPUs/GPUs per task or actor, and the actor pool size (0 = tasks)."""

    num_cpus: float
    num_gpus: float = 0.0
    pool_size: int = 0
    # SPREAD for I/O tasks: reads and writes fan out over every node. It is given per task (a remote-args
    # function), which also keeps Ray Data from fusing the read into the (GPU) actors: reads stay CPU tasks.
    spread: bool = False


@dataclass(frozen=True)
class PipelineResources:
    read: StageResources
    infer: StageResources
    refine: StageResources
    write: StageResources
    batch_size: int


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has (0 on a CPU-only cluster)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))


def resources_for(cfg: MapConfig, gpus_available: float, cpus_available: float | None = None) -> PipelineResources:
    """Every stage's resources from the config; `infer.num_gpus = -1` means 1 per actor if GPUs exist.

    Actor pools hold their CPUs for the whole run, so the pools plus one read and one write task must fit
    the cluster, or the run would wait forever: that is a ConfigError naming the keys.
    """
    gpus = cfg.infer.num_gpus
    if gpus < 0:
        gpus = 1.0 if gpus_available > 0 else 0.0
    needed = (
        cfg.infer.pool_size * cfg.infer.num_cpus
        + cfg.refine.pool_size * cfg.refine.num_cpus
        + cfg.read_num_cpus
        + cfg.write_num_cpus
    )
    if cpus_available is not None and needed > cpus_available:
        raise ConfigError(
            f"config error: keys 'infer.pool_size' x 'infer.num_cpus' + 'refine.pool_size' x 'refine.num_cpus' + "
            f"'read_num_cpus' + 'write_num_cpus' = {needed:g} CPUs but the Ray cluster has {cpus_available:g}; "
            "lower them (fractions are fine) or give Ray more CPUs (ray.num_cpus)"
        )
    return PipelineResources(
        read=StageResources(num_cpus=cfg.read_num_cpus, spread=True),
        infer=StageResources(num_cpus=cfg.infer.num_cpus, num_gpus=gpus, pool_size=cfg.infer.pool_size),
        refine=StageResources(num_cpus=cfg.refine.num_cpus, pool_size=cfg.refine.pool_size),
        write=StageResources(num_cpus=cfg.write_num_cpus, spread=True),
        batch_size=cfg.infer.batch_size,
    )


def _spread() -> dict[str, Any]:
    return {"scheduling_strategy": "SPREAD"}


def _map(ds: ray.data.Dataset, fn: Any, res: StageResources, batch_size: int, **kwargs: Any) -> ray.data.Dataset:
    extra: dict[str, Any] = {"num_cpus": res.num_cpus}
    if res.num_gpus:
        extra["num_gpus"] = res.num_gpus
    if res.spread:
        extra["ray_remote_args_fn"] = _spread
    if res.pool_size:
        extra["compute"] = ray.data.ActorPoolStrategy(size=res.pool_size)
    return ds.map_batches(fn, batch_size=batch_size, batch_format="numpy", **extra, **kwargs)


def verify_dataset(rows: list[dict[str, Any]], res: PipelineResources) -> ray.data.Dataset:
    """Tile rows -> rows with `done` (output exists and its checksum verifies): the resume check."""
    ds: ray.data.Dataset = ray.data.from_items(rows)
    return _map(ds, verify_stage, res.read, max(res.batch_size, 16))


def map_dataset(
    rows: list[dict[str, Any]],
    cfg: MapConfig,
    res: PipelineResources,
    *,
    model: str,
    infer: tuple[Any, dict[str, Any]] | None = None,
) -> ray.data.Dataset:
    """Tile rows -> manifest rows, through read -> infer -> refine -> write.

    `infer` = (stage class, extra constructor kwargs) replaces `InferStage` (e.g. DANet for task referring);
    it takes the same checkpoint/device/threads/batch_invariant kwargs and must add `prob` (B, T, T).
    """
    infer_stage, infer_kwargs = infer or (InferStage, {})
    options = {
        "threshold": cfg.infer.threshold,
        "enabled": cfg.refine.enabled,
        "open_px": cfg.refine.open_px,
        "min_mapping_unit_px": cfg.refine.min_mapping_unit_px,
    }
    torch_threads = cfg.infer.torch_threads or max(1, int(res.infer.num_cpus))
    # Small blocks keep every stage busy and memory bounded: one block holds one batch of tiles.
    ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // res.batch_size)))
    ds = _map(ds, read_stage, res.read, res.batch_size)
    ds = _map(
        ds,
        infer_stage,
        res.infer,
        res.batch_size,
        fn_constructor_kwargs={
            "checkpoint": cfg.infer.checkpoint,
            "device": cfg.infer.device,
            "torch_threads": torch_threads,
            "batch_invariant": cfg.infer.batch_invariant,
            **infer_kwargs,
        },
    )
    ds = _map(
        ds,
        RefineStage,
        res.refine,
        res.batch_size,
        fn_constructor_kwargs={"task": cfg.task, "options": options, "keep_prob": cfg.outputs.probability},
    )
    return _map(ds, write_stage, res.write, res.batch_size, fn_kwargs={"model": model})


# Products of one scene (mosaic, vectors, quicklook, stats) stream tile by tile: one CPU, one task per scene.
PRODUCTS = StageResources(num_cpus=1.0)


def products_task(plan: ScenePlan, tiles: list[dict[str, Any]], outputs: dict[str, bool]) -> Any:
    """Start the products of one scene on a Ray worker; returns the ObjectRef of its stats dict."""
    remote = ray.remote(num_cpus=PRODUCTS.num_cpus, max_retries=2)(scene_products)
    return remote.remote(scene_record(plan), tiles, outputs)
