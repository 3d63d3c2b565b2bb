"""The one module that wires the map stages into Ray Data; stage resources come from `rrsis.resources`.

scenes -> plan (each scene expands into tile rows on a worker) -> read (CPU tasks) -> infer (actor pool;
1 GPU per actor when the cluster has GPUs) -> refine (CPU actor pool) -> write (CPU tasks). Rows entering
are scene rows, rows leaving are manifest rows (metadata): pixels exist only between read and write, inside
Ray's object store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray
import ray.data

from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError
from rrsis.pipeline import cores
from rrsis.pipeline.commit import product_checksums
from rrsis.pipeline.plan import PlanArgs, expand_scene
from rrsis.pipeline.products import POLYGONS_WRITTEN, quicklook_background, run_folder, scene_products
from rrsis.pipeline.scene_inputs import SceneKey
from rrsis.pipeline.stages import InferStage, RefineStage, read_stage, write_stage
from rrsis.report.geoparquet import scene_polygons
from rrsis.resources import cpu_scale, heap_reuse_env, ray_options

log = logging.getLogger("rrsis.map")


@dataclass(frozen=True)
class StageRun:
    """How one stage runs: its Ray options (from `rrsis.resources.ray_options`, the one table of stage
    resources) and its actor pool size (0 = stateless Ray tasks)."""

    options: dict[str, Any]
    pool_size: int = 0

    @property
    def num_cpus(self) -> float:
        return float(self.options.get("num_cpus", 0.0))


@dataclass(frozen=True)
class PipelineResources:
    read: StageRun
    infer: StageRun
    refine: StageRun
    write: StageRun
    batch_size: int


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has (0 on a CPU-only cluster)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 0.0))


def resources_for(
    cfg: MapConfig,
    gpus_available: float,
    cpus_available: float | None = None,
    cluster: Mapping[str, float] | None = None,
    *,
    reuse_heap: bool = False,
) -> PipelineResources:
    """Every stage's Ray options: `rrsis.resources` defaults, overridden by the config's CPUs and GPUs.

    `infer.num_gpus = -1` means 1 per actor if GPUs exist. `cluster` (default: the connected Ray's
    resources) decides whether CPU stages ask for the `cpu_pool` node type. Actor pools hold their CPUs for
    the whole run, so the pools plus one read and one write task must fit the cluster, or the run would wait
    forever: when they do not (a 2-CPU head), every stage's CPUs are scaled down alike
    (`rrsis.resources.cpu_scale`, one log line naming the keys). A products task must fit the cluster at
    all: else a ConfigError naming the key. `reuse_heap`: a CPU inference actor starts with
    `rrsis.resources.heap_reuse_env` (the tile tasks' `infer.reuse_heap`).
    """
    needed = (
        cfg.infer.pool_size * cfg.infer.num_cpus
        + cfg.refine.pool_size * cfg.refine.num_cpus
        + cfg.read_num_cpus
        + cfg.write_num_cpus
    )
    held = (
        "'infer.pool_size' x 'infer.num_cpus' + 'refine.pool_size' x 'refine.num_cpus' + 'read_num_cpus' + "
        "'write_num_cpus'"
    )
    scale = 1.0 if cpus_available is None else cpu_scale(needed, cpus_available)
    if scale <= 0:
        raise ConfigError(f"config error: keys {held} = {needed:g} CPUs but the Ray cluster has no CPU")
    if scale < 1:
        log.info("the map's stages hold %g CPUs at once (keys %s) and the Ray cluster has %g: every stage's CPUs "
                 "scaled by %g to fit; set those keys to size the stages yourself", needed, held, cpus_available,
                 scale)  # fmt: skip
    if cpus_available is not None and cfg.products_num_cpus > cpus_available:
        raise ConfigError(
            f"config error: key 'products_num_cpus' = {cfg.products_num_cpus:g} CPUs but the Ray cluster has "
            f"{cpus_available:g}: no scene's products task could ever start; lower it or give Ray more CPUs"
        )
    if cluster is None:
        cluster = ray.cluster_resources() if ray.is_initialized() else {}
    cluster = {**cluster, "GPU": gpus_available}
    infer = ray_options("map.infer", cluster, num_cpus=cfg.infer.num_cpus * scale, num_gpus=cfg.infer.num_gpus)
    heap = heap_reuse_env() if reuse_heap and not infer.get("num_gpus") else {}
    if heap:  # merged by Ray with a job's own runtime_env (its env_vars too)
        infer["runtime_env"] = {"env_vars": heap}
    return PipelineResources(
        read=StageRun(ray_options("map.read", cluster, num_cpus=cfg.read_num_cpus * scale)),
        infer=StageRun(infer, pool_size=cfg.infer.pool_size),
        refine=StageRun(ray_options("map.refine", cluster, num_cpus=cfg.refine.num_cpus * scale), cfg.refine.pool_size),
        write=StageRun(ray_options("map.write", cluster, num_cpus=cfg.write_num_cpus * scale)),
        batch_size=cfg.infer.batch_size,
    )


def map_stage(ds: ray.data.Dataset, fn: Any, res: StageRun, batch_size: int, **kwargs: Any) -> ray.data.Dataset:
    """One `map_batches` with the stage's options. Ray Data spreads its tasks over the nodes by itself.

    The read and infer stages differ in their `memory` reservation (and `cpu_pool` on a cluster), so Ray
    Data never fuses the read into the inference actors: reads stay CPU tasks beside them.
    """
    extra = dict(res.options)
    if res.pool_size:
        extra["compute"] = ray.data.ActorPoolStrategy(size=res.pool_size)
    return ds.map_batches(fn, batch_size=batch_size, batch_format="numpy", **extra, **kwargs)


#: Blocks (batches of tiles) of pixels the object store may hold at once across the whole pipeline.
BLOCKS_IN_FLIGHT = 4
#: Pixel bytes a block aims at. Every block is a task (or actor call) per stage, with its own scheduling
#: work on the driver, task events in the GCS, stats in Ray Data's stats actor and a GDAL open per read
#: task, so that cost follows the block count, not the pixels; but the object store cap (below) must hold
#: enough blocks that the inference actor never waits. bench/map_overhead's map (2 scenes of 8192^2 x 2
#: bands, 512 px tiles, 3.7 MB of pixels per tile; one map each, same run): 8-tile blocks (32 MB) under a
#: 128 MB cap left the actor idle 33 s (73 gaps over 0.1 s) of 223 s; 4-tile blocks (16 MB) under 128 MB:
#: idle 0.1 s, 196 s; 8-tile blocks under 256 MB: idle 0.1 s, 191 s (and 204 s in another run). The memory
#: bench (4 bands, 5.8 MB per tile: 4-tile blocks, 5 at 32 MB) peaks at 2.35 GB at 5k^2 under 128 MB.
TARGET_BLOCK_BYTES = 16 * 1024 * 1024
#: Bounds on the tiles of a block, whatever its bytes: at least 4 (one tile per block made driver, GCS
#: and stats memory grow with the tile count), at most 16 (a small scene still spreads over several blocks,
#: so reads, inference and writes overlap).
MIN_BLOCK_TILES = 4
MAX_BLOCK_TILES = 16
#: Floor of that cap. The object store's pages stay resident once touched, so the floor is memory every run
#: pays. bench/map_memory.py at 5k^2 (4 bands, 512 px, 21 MB blocks, cap = the floor), one run each in
#: alternation: peak summed PSS 2.44 / 2.45 GB with a 256 MB floor, 2.34 / 2.38 GB with 128 MB, map wall
#: 62 / 55 s vs 56 / 59 s.
MIN_OBJECT_STORE_BYTES = 128 * 1024 * 1024


def tile_bytes(bands: int, tile_px: int) -> int:
    """Pixel bytes of one tile on its way through the stages: image f32 per band, valid, prob f32, mask."""
    return tile_px * tile_px * (4 * max(1, bands) + 1 + 4 + 1)


def block_tiles_for(tile_nbytes: int, batch_size: int) -> int:
    """Tiles per Ray Data block for tiles of `tile_nbytes` (`tile_bytes`): about TARGET_BLOCK_BYTES of pixels
    within [MIN_BLOCK_TILES, MAX_BLOCK_TILES], and never fewer than one model batch (the infer stage then
    runs several per block)."""
    return max(batch_size, MIN_BLOCK_TILES, min(MAX_BLOCK_TILES, TARGET_BLOCK_BYTES // tile_nbytes))


def read_block_bytes(bands: int, tile_px: int, block_tiles: int) -> int:
    """Pixel bytes of one read batch (image f32 per band + valid): the biggest block of the pipeline."""
    return block_tiles * tile_px * tile_px * (4 * max(1, bands) + 1)


def bound_object_store(ds: ray.data.Dataset, block_nbytes: int, read_nbytes: int | None = None) -> int:
    """Cap `ds`'s object store use at a few blocks of pixels: memory then does not grow with the scene.

    Without a cap Ray Data lets reads run ahead of a slow inference actor until a fraction of the object
    store (30 % of RAM by default) is full of tiles, i.e. a big scene fills it and a small one does not.
    The cap is set on the dataset's own context (a copy taken when it was created), never on the
    process-global `DataContext`, so other datasets of the same driver keep their settings.
    """
    limit = max(MIN_OBJECT_STORE_BYTES, BLOCKS_IN_FLIGHT * block_nbytes)
    # A scene enters as one block of tile rows and one read task works through it, so every read batch must
    # leave as a block of its own: Ray Data merges a task's outputs until they exceed the target block size
    # (and slices a block past 1.5 x the target). 0.9 x one read batch: one batch always exceeds it, is never
    # sliced, and the later stages' batches (smaller: the image is dropped) stay one block per input block.
    read_nbytes = read_nbytes or block_nbytes
    ds.context.target_max_block_size = max(int(0.9 * read_nbytes), 1 << 20)
    options = ds.context.execution_options
    options.resource_limits = options.resource_limits.copy(object_store_memory=limit)
    return limit


def map_dataset(
    scene_rows: list[dict[str, Any]],
    plan: PlanArgs,
    cfg: MapConfig,
    res: PipelineResources,
    *,
    model: str,
    infer: tuple[Any, dict[str, Any]] | None = None,
    reserved: cores.CoreReservation | None = None,
    scene_order: Sequence[SceneKey] = (),
) -> ray.data.Dataset:
    """Scene rows -> manifest rows: plan (each scene expands into its tile rows on a worker) -> read ->
    infer -> refine -> write. The driver never holds a row per tile: only scenes enter.

    `infer` = (stage class, extra constructor kwargs) replaces `InferStage` (e.g. DANet for task referring);
    it takes the same checkpoint/device/threads/batch_invariant kwargs and must add `prob` (B, T, T).
    `reserved`: the inference actors' own cores on an embedded Ray (`rrsis.pipeline.cores`). `scene_order`:
    the scenes (URI, bands) in the order they enter, so an actor measures the next scene ahead of its tiles.
    """
    infer_stage, infer_kwargs = infer or (
        InferStage,
        {
            "trim_free_mb": cfg.infer.trim_free_mb,
            "scenes": list(scene_order),
            "cores": reserved.groups if reserved else (),
            "core_lock_dir": reserved.lock_dir if reserved else "",
        },
    )
    options = {
        "threshold": cfg.infer.threshold,
        "enabled": cfg.refine.enabled,
        "open_px": cfg.refine.open_px,
        "min_mapping_unit_px": cfg.refine.min_mapping_unit_px,
    }
    torch_threads = cfg.infer.torch_threads or max(1, int(res.infer.num_cpus))
    tile_nbytes = tile_bytes(plan.in_bands, cfg.tiling.tile_px)
    block_tiles = block_tiles_for(tile_nbytes, res.batch_size)
    # Planning runs in the read tasks: both stages have the read options, so Ray Data fuses them into one
    # task per scene (its metadata ~50 ms, then its windows batch by batch), bounded by the object-store cap
    # like any read. A planning stage of its own kept a worker process of its own and, holding CPUs, kept
    # the write stage from starting until every scene was planned.
    ds = scene_dataset(scene_rows, expand_scene, {"plan": plan}, res.read)
    ds = map_stage(ds, read_stage, res.read, block_tiles)
    ds = map_stage(
        ds,
        infer_stage,
        res.infer,
        res.batch_size,
        fn_constructor_kwargs={
            "checkpoint": cfg.infer.checkpoint,
            "device": cfg.infer.device,
            "torch_threads": torch_threads,
            "batch_invariant": cfg.infer.batch_invariant,
            "precision": cfg.infer.precision,
            **infer_kwargs,
        },
    )
    ds = map_stage(
        ds,
        RefineStage,
        res.refine,
        block_tiles,
        fn_constructor_kwargs={"task": cfg.task, "options": options, "keep_prob": cfg.outputs.probability},
    )
    ds = map_stage(ds, write_stage, res.write, block_tiles, fn_kwargs={"model": model})
    bound_object_store(ds, block_tiles * tile_nbytes, read_block_bytes(plan.in_bands, cfg.tiling.tile_px, block_tiles))
    return ds


def background_task(scene: dict[str, Any], num_cpus: float | None = None) -> Any:
    """Start the scene's quicklook background read (`map.products` resources); returns its ObjectRef."""
    options = ray_options("map.products", ray.cluster_resources(), num_cpus=num_cpus)
    remote = ray.remote(max_retries=2, **options)(quicklook_background)
    return remote.remote(scene["uri"], int(scene["bands"][0]), int(scene["width"]), int(scene["height"]))


#: A task's per-scene products: (scene record, its manifest rows, `outputs`, quicklook background) -> result
ProductsFn = Callable[[dict[str, Any], list[dict[str, Any]], dict[str, bool], Any], dict[str, Any]]


def scene_products_committable(
    scene: dict[str, Any],
    tiles: list[dict[str, Any]],
    outputs: dict[str, bool],
    background: Any = None,
    extra: tuple[Any, dict[str, Any]] | None = None,
    products: ProductsFn = scene_products,
) -> dict[str, Any]:
    """A scene's products (the task's `products`; the tile tasks' by default), then the task's own per-scene
    product (`extra` = (function, kwargs), called with the scene record and the products' result), then the
    SHA-256 of every product file for the commit. A scene with vectors also gets its partition of the run's
    GeoParquet polygons here, beside the next scenes' inference (`rrsis.report.geoparquet.scene_polygons`),
    unless the products wrote it from the rings they polygonised (`scene_products` does)."""
    result = products(scene, tiles, outputs, background)
    if result.get("vectors") and not result.pop(POLYGONS_WRITTEN, False):  # not written beside the vectors
        write = bool(outputs.get("report"))
        scene_polygons(run_folder(scene), str(scene["scene_id"]), str(result["vectors"]), write=write)
    if extra is not None:
        fn, kwargs = extra
        result.update(fn(scene, result, **kwargs))
    result["checksums"] = product_checksums(result)
    return result


def products_task(
    scene: dict[str, Any],
    tiles: list[dict[str, Any]],
    outputs: dict[str, bool],
    background: Any = None,
    num_cpus: float | None = None,
    extra: tuple[Any, dict[str, Any]] | None = None,
    products: ProductsFn = scene_products,
) -> Any:
    """Start the products of one scene (the tile tasks': mosaic, vectors, quicklook, stats; streamed tile by
    tile) on a Ray worker with the `map.products` resources; returns the ObjectRef of its result dict."""
    options = ray_options("map.products", ray.cluster_resources(), num_cpus=num_cpus)
    remote = ray.remote(max_retries=2, **options)(scene_products_committable)
    return remote.remote(scene, tiles, outputs, background, extra, products)


def expand_batch(batch: pa.Table, *, expand: Callable[..., list[dict[str, Any]]], kwargs: dict[str, Any]) -> pa.Table:
    """Scene rows -> all their work rows, `expand(scene_row, **kwargs)` on a worker (a task's plan)."""
    return pa.Table.from_pylist([row for scene in batch.to_pylist() for row in expand(scene, **kwargs)])


def scene_dataset(
    scene_rows: list[dict[str, Any]],
    expand: Callable[..., list[dict[str, Any]]],
    kwargs: dict[str, Any],
    res: StageRun,
) -> ray.data.Dataset:
    """Only scenes enter Ray Data; each expands into the task's work rows on a worker with `res`'s options
    (the stage that then reads them: Ray Data fuses the two), scene metadata read on the cluster in parallel."""
    ds: ray.data.Dataset = ray.data.from_items(scene_rows, override_num_blocks=max(1, len(scene_rows)))
    fn_kwargs = {"expand": expand, "kwargs": kwargs}
    return ds.map_batches(expand_batch, batch_size=1, batch_format="pyarrow", fn_kwargs=fn_kwargs, **res.options)  # type: ignore[arg-type]
