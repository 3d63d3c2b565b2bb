"""`run_map(cfg)`: the driver of `rrsis map`, from scene list to manifest, products and a summary line.

Order: resolve inputs -> plan (metadata only) -> Ray -> resume check -> read/infer/refine/write on Ray Data
-> per-scene products (Ray tasks) -> manifest.parquet, failures.parquet, summary.json -> one summary line.
Returns 0 when every scene was mapped, 1 when any scene or tile failed (the others are complete).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from rrsis import storage
from rrsis.checkpoint_header import read_header
from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError
from rrsis.pipeline import cores
from rrsis.pipeline.inputs import SceneRef, resolve_inputs
from rrsis.pipeline.manifest import conform_tiles
from rrsis.pipeline.plan import Failure, ScenePlan, content_tag, derive_run_id, plan_run, sidecar_key
from rrsis.resources import RAY_PROCESS_ENV

log = logging.getLogger("rrsis.map")


def run_id_for(cfg: MapConfig, scenes: list[SceneRef], model: str = "") -> str:
    """`cfg.run_id`, or a deterministic id from what decides the outputs (so a rerun resumes).

    `model` is the checkpoint's content tag (name@sha256): a checkpoint retrained in place gets a new run id
    instead of resuming the old model's tiles.
    """
    decisive = {
        "task": cfg.task,
        "scenes": [s.uri for s in scenes],
        "bands": list(cfg.bands),
        "tiling": asdict(cfg.tiling),
        "checkpoint": cfg.infer.checkpoint,
        "model": model,
        "threshold": cfg.infer.threshold,
        "refine": asdict(cfg.refine),
        "probability": cfg.outputs.probability,
    }
    return derive_run_id("map", cfg.run_id, decisive)


def connect_ray(cfg: MapConfig) -> None:
    """Reuse a running Ray; else connect to RAY_ADDRESS / ray.address; else start one on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    cores.RESERVED = None
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS", "")
    if address:
        ray.init(address=address, configure_logging=False)
        return
    # Ray's processes inherit this environment (why each setting: `rrsis.resources.RAY_PROCESS_ENV`); a
    # user's own values win. Cluster images set the same in cluster/Dockerfile.
    for name, value in RAY_PROCESS_ENV.items():
        os.environ.setdefault(name, value)
    # Logical CPUs: at least 4, so the two actor pools and the read and write tasks all fit on a laptop.
    # address="local": always a new instance, even when /tmp/ray/ray_current_cluster names another Ray.
    kwargs: dict[str, Any] = {
        "address": "local",
        "_node_ip_address": "127.0.0.1",
        "include_dashboard": False,
        "num_cpus": cfg.ray.num_cpus or max(4, os.cpu_count() or 1),
    }
    if cfg.ray.num_gpus:
        kwargs["num_gpus"] = cfg.ray.num_gpus
    elif cfg.task == "waterland" and cfg.infer.dedicated_cores and not cores.machine_has_gpus():
        # cores for the inference actors, kept free by `run_map`'s fence (see rrsis.pipeline.cores)
        cores.RESERVED = cores.reserve(cfg.infer.pool_size, max(1, math.ceil(cfg.infer.num_cpus)))
    for attempt in range(1, 4):  # a loaded machine can miss Ray's 15 s agent start-up deadline: retry
        try:
            ray.init(**kwargs)
            return
        except Exception as exc:
            if attempt == 3 or "timed out during startup" not in str(exc):
                raise
            log.warning("embedded Ray did not start (attempt %d of 3): %s; retrying", attempt, exc)
            ray.shutdown()


def _configure_storage(cfg: MapConfig) -> None:
    from rrsis.storage import s3

    s3.configure(cfg.storage.endpoint_url, cfg.storage.region, cfg.storage.max_attempts, cfg.storage.backoff_s)
    if cfg.storage.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = cfg.storage.endpoint_url  # GDAL's /vsis3/ and Ray workers read it


def _model_info(checkpoint: str) -> tuple[str, list[str], int]:
    """(model tag, band names, input bands) from the checkpoint's header, read on the driver without torch
    (`rrsis.checkpoint_header`: ~400 MB less driver memory); a file it cannot read goes through the full
    loader, whose error names the problem."""
    header = read_header(checkpoint)
    if header is None:
        from rrsis.checkpoints import load_checkpoint

        ckpt = load_checkpoint(checkpoint)  # raises the one-line CheckpointError, or reads a legacy format
        header = {"model_name": ckpt.model_name, "bands": ckpt.bands, "model_config": ckpt.model_config}
    bands = [str(b) for b in (header.get("bands") or [])]
    model_config = header.get("model_config") or {}
    family = model_config.get(header["model_name"], {}) if isinstance(model_config, dict) else {}
    in_bands = len(bands) or int(family.get("in_bands", 0) if isinstance(family, dict) else 0)
    return f"{header['model_name']}@{content_tag(checkpoint)}", bands, in_bands


def _check_existing(cfg: MapConfig, run_prefix: str) -> None:
    if cfg.resume or cfg.overwrite:
        return
    if storage.list_prefix(storage.join(run_prefix, "")):
        raise ConfigError(
            f"config error: key 'resume': run {run_prefix} already has outputs; set resume=true to continue it "
            "or overwrite=true to recompute every tile"
        )


def _split_done(
    rows: list[dict[str, Any]], plans: list[ScenePlan], cfg: MapConfig, res: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(tiles to compute, verified tiles from an earlier attempt of this run).

    One listing per scene finds the tiles that have a sidecar; only those are verified (checksum of the
    stored tile against its sidecar) on Ray, so a fresh run starts computing at once.
    """
    from rrsis.pipeline.build import verify_dataset

    if cfg.overwrite or not rows:
        return rows, []
    existing: set[str] = set()
    for plan in plans:
        existing.update(storage.list_prefix(storage.join(plan.prefix, "tiles") + "/"))
    candidates = [r for r in rows if sidecar_key(r["key"]) in existing]
    if not candidates:
        return rows, []
    todo = [r for r in rows if sidecar_key(r["key"]) not in existing]
    done: list[dict[str, Any]] = []
    keep = set(rows[0])
    for row in verify_dataset(candidates, res).iter_rows():
        if row["done"]:
            done.append(row)
        else:
            todo.append({k: v for k, v in row.items() if k in keep})
    return todo, done


class SceneProducts:
    """Starts each scene's products (a Ray task) as soon as its last tile leaves the pipeline.

    Products of a finished scene then overlap the inference of the next scenes instead of all running
    after the last tile. A scene with failed or all-nodata tiles gets a failure instead of products.
    """

    def __init__(
        self,
        plans: list[ScenePlan],
        rows: list[dict[str, Any]],
        cfg: MapConfig,
        on_last: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_last` runs before the last scene's products start (the inference is over by then)."""
        self.on_last = on_last
        self.plans = {p.scene_id: p for p in plans}
        self.expected: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            self.expected[str(r["scene_id"])].add(str(r["key"]))
        self.tiles: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.outputs = asdict(cfg.outputs)
        self.num_cpus = cfg.products_num_cpus
        self.pending: dict[str, Any] = {}
        self.backgrounds: dict[str, Any] = {}
        self.failures: list[Failure] = []

    def add(self, tile: dict[str, Any]) -> None:
        from rrsis.pipeline.build import background_task

        scene_id = str(tile["scene_id"])
        if self.outputs.get("quicklook") and scene_id in self.plans and scene_id not in self.backgrounds:
            # the scene is under way: read its quicklook background now, beside the inference
            self.backgrounds[scene_id] = background_task(self.plans[scene_id], self.num_cpus)
        self.tiles[scene_id].append(tile)
        self.seen[scene_id].add(str(tile["key"]))
        if self.seen[scene_id] == self.expected[scene_id] and scene_id in self.plans:
            self._start(self.plans.pop(scene_id), conform_tiles(self.tiles.pop(scene_id)))

    def _start(self, plan: ScenePlan, scene_tiles: list[dict[str, Any]]) -> None:
        from rrsis.pipeline.build import products_task

        bad = [t for t in scene_tiles if t["status"] == "failed"]
        if bad:
            self.failures.extend(
                Failure(plan.scene_id, plan.uri, str(t["tile_id"]), "tile", str(t["reason"])) for t in bad
            )
            reason = f"{len(bad)} of {len(scene_tiles)} tiles failed"
            self.failures.append(Failure(plan.scene_id, plan.uri, "", "tiles", reason))
        elif sum(int(t["valid_px"]) for t in scene_tiles) == 0:
            self.failures.append(Failure(plan.scene_id, plan.uri, "", "stats", f"scene {plan.uri} is all nodata"))
        else:
            background = self.backgrounds.pop(plan.scene_id, None)
            if not self.plans:  # the last scene: every forward is done, its products may use every core
                self.on_last()
            task = products_task(plan, scene_tiles, self.outputs, background, self.num_cpus)
            self.pending[plan.scene_id] = (plan, task)

    def results(self, order: list[ScenePlan]) -> tuple[list[dict[str, Any]], list[Failure]]:
        """Wait for every started products task; results in plan order. A failing task fails its scene only."""
        import ray

        for plan in list(self.plans.values()):  # scenes whose tiles never all came back
            self.failures.append(Failure(plan.scene_id, plan.uri, "", "tiles", "not every tile was processed"))
        results = []
        for scene in order:
            if scene.scene_id not in self.pending:
                continue
            plan, ref = self.pending[scene.scene_id]
            try:
                results.append(ray.get(ref))
            except Exception as exc:  # a products task failing must not lose the other scenes
                self.failures.append(Failure(plan.scene_id, plan.uri, "", "products", f"{type(exc).__name__}: {exc}"))
        return results, self.failures


def run_map(cfg: MapConfig, infer: tuple[Any, dict[str, Any]] | None = None) -> int:
    """Map every scene of `cfg.input`; see the module docstring. Prints one summary line.

    `infer` plugs another per-tile model into the same stages (see `build.map_dataset`); task referring
    with method danet calls back here with its DANet stage.
    """
    from rrsis.pipeline.build import cluster_cpus, cluster_gpus, map_dataset, resources_for
    from rrsis.pipeline.manifest import write_failures, write_manifest

    if cfg.task == "referring" and infer is None:
        from rrsis.pipeline.run_referring import run_referring

        return run_referring(cfg)
    if cfg.task == "boxes":
        from rrsis.pipeline.run_boxes import run_boxes

        return run_boxes(cfg, cfg.boxes)
    if cfg.task != "waterland" and infer is None:
        raise ConfigError(f"config error: key 'task': {cfg.task!r} is not wired into `rrsis map` yet; use 'waterland'")
    start = time.perf_counter()
    _configure_storage(cfg)
    scenes, problems = resolve_inputs(list(cfg.input))
    failures = [Failure("", p.item, "", "input", p.reason) for p in problems]
    model, model_bands, in_bands = _model_info(cfg.infer.checkpoint)
    run_id = run_id_for(cfg, scenes, model)
    run_prefix = storage.join(cfg.output, run_id)
    _check_existing(cfg, run_prefix)
    plans, rows, plan_failures = plan_run(
        scenes,
        run_prefix,
        tile_px=cfg.tiling.tile_px,
        overlap_px=cfg.tiling.overlap_px,
        requested_bands=list(cfg.bands),
        model_bands=model_bands,
        in_bands=in_bands,
    )
    failures.extend(plan_failures)
    for f in plan_failures:
        log.warning("scene %s skipped: %s", f.scene_uri, f.reason)
    timings = {"plan_s": time.perf_counter() - start}
    connect_ray(cfg)
    # keeps the driver and Ray's processes off the inference actors' own cores (rrsis.pipeline.cores)
    fence = cores.Fence(cores.RESERVED) if cores.RESERVED else None
    res = resources_for(cfg, cluster_gpus(), cluster_cpus())
    phase = time.perf_counter()
    todo, done = _split_done(rows, plans, cfg, res)
    timings["verify_s"] = time.perf_counter() - phase
    log.info("run %s: %d scenes, %d tiles (%d verified from before)", run_id, len(plans), len(rows), len(done))
    tiles: list[dict[str, Any]] = [{**r, "status": "skipped", "model": model} for r in done]
    products = SceneProducts(plans, rows, cfg, on_last=fence.lift if fence else lambda: None)
    for tile in tiles:
        products.add(tile)
    compute_start = time.perf_counter()
    if todo:
        if fence:
            fence.start()
        try:
            dataset = map_dataset(todo, cfg, res, model=model, infer=infer)
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                for i in range(len(batch["key"])):
                    tile = {k: v[i] for k, v in batch.items()} | {"model": model}
                    tiles.append(tile)
                    products.add(tile)  # a scene's products start once its last tile is out
        finally:
            if fence:
                fence.lift()
    compute_s = time.perf_counter() - compute_start
    timings["compute_s"] = compute_s
    phase = time.perf_counter()
    manifest = write_manifest(storage.join(run_prefix, "manifest.parquet"), tiles)
    rows_out = manifest.to_pylist()
    timings["manifest_s"] = time.perf_counter() - phase
    phase = time.perf_counter()
    results, product_failures = products.results(plans)
    timings["products_wait_s"] = time.perf_counter() - phase
    failures.extend(product_failures)
    failures_uri = storage.join(run_prefix, "failures.parquet")
    write_failures(failures_uri, [f.to_row() for f in failures])
    summary = _summary(run_id, run_prefix, scenes, plans, rows_out, results, failures, compute_s, start)
    summary["target"] = "water" if cfg.task == "waterland" else "referred"  # what class 1 of the masks is
    summary["timings_s"] = timings
    storage.put_bytes(storage.join(run_prefix, "summary.json"), json.dumps(summary, indent=2, default=str).encode())
    for r in results:
        where = ", ".join(f"{k} {r[k]}" for k in ("mosaic", "vectors", "quicklook", "stats") if k in r)
        share = f"{r['water_km2']:.3f} km² ({100 * r['water_fraction']:.1f} %)"
        print(f"  {r['scene_id']}: {summary['target']} {share}; {where}")
    print(_summary_line(summary), flush=True)
    return 1 if failures else 0


def _summary(
    run_id: str,
    run_prefix: str,
    scenes: list[SceneRef],
    plans: list[ScenePlan],
    tiles: list[dict[str, Any]],
    results: list[dict[str, Any]],
    failures: list[Failure],
    compute_s: float,
    start: float,
) -> dict[str, Any]:
    computed = sum(1 for t in tiles if t["status"] == "written")
    failed_scenes = {f.scene_uri for f in failures if not f.tile_id}
    return {
        "run_id": run_id,
        "output": run_prefix,
        "scenes": len(scenes) + sum(1 for f in failures if f.stage == "input"),
        "scenes_ok": len(results),
        "scenes_failed": len(failed_scenes),
        "tiles": len(tiles),
        "tiles_computed": computed,
        "tiles_skipped": sum(1 for t in tiles if t["status"] == "skipped"),
        "tiles_failed": sum(1 for t in tiles if t["status"] == "failed"),
        "water_km2": sum(float(r["water_km2"]) for r in results),
        "tiles_per_s": computed / compute_s if compute_s > 0 else 0.0,
        "wall_s": time.perf_counter() - start,
        "products": results,
        "planned_scenes": [p.scene_id for p in plans],
    }


def _summary_line(s: dict[str, Any]) -> str:
    status = "ok" if not s["scenes_failed"] else f"{s['scenes_failed']} FAILED (see failures.parquet)"
    return (
        f"rrsis map {s['run_id']}: {status}; scenes {s['scenes_ok']}/{s['scenes']} mapped, "
        f"tiles {s['tiles']} ({s['tiles_computed']} computed, {s['tiles_skipped']} resumed, "
        f"{s['tiles_failed']} failed), {s.get('target', 'water')} {s['water_km2']:.3f} km², "
        f"{s['tiles_per_s']:.1f} tiles/s, "
        f"{s['wall_s']:.1f} s; outputs: {s['output']}"
    )
