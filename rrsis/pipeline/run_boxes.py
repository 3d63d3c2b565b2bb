"""`rrsis map` with `task: boxes`: scene + box file -> one SAM mask and one polygon per box.

Driver: scenes -> metadata -> tile plan -> box groups (`box_plan`: the tile owning a box's centre
segments it through a window covering the whole box) -> Ray Data: read + prompt/CFPG (CPU tasks) -> SAM
(actor pool, GPU when present) -> MBO + write (CPU tasks) -> per scene one
`boxes.geojson` (WGS84, a polygon per box with its `box_id`) and `mosaic.tif` (COG, union of the box
masks) -> `boxes_manifest.parquet` (one row per box)
and `failures.parquet`, `summary.json` (counts, phase timings). Pixels never reach the driver.

Resume (as the water-land map task): rerunning the same run id skips every group whose mask tile, GeoJSON
and sidecar verify (SHA-256) and were made from the same inputs; their boxes appear in the manifest as
`skipped`. `overwrite=true` recomputes everything; `resume=false` refuses a run that already has outputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import asdict, replace
from typing import Any

import pyarrow as pa
import ray.data
from rasterio.warp import transform_geom

from rrsis import storage
from rrsis.config.boxes import BoxesConfig
from rrsis.errors import ConfigError
from rrsis.geo.raster import resolve_bands
from rrsis.geo.tiling import PixelWindow, plan_tiles
from rrsis.pipeline.box_inputs import read_boxes
from rrsis.pipeline.box_plan import plan_box_groups
from rrsis.pipeline.box_products import union_mosaic
from rrsis.pipeline.build import cluster_gpus, map_stage, resources_for
from rrsis.pipeline.context import RunContext, failure_groups
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.manifest import table_bytes, write_failures
from rrsis.pipeline.plan import Failure, derive_run_id, one_line, scene_info, sidecar_key
from rrsis.pipeline.products import build_quicklook
from rrsis.pipeline.task_boxes import (
    SamBoxStage,
    geojson_key,
    group_row,
    mbo_write_stage,
    read_prompt_stage,
    sam_options,
    verify_boxes_stage,
)
from rrsis.pipeline.task_table import TaskRun
from rrsis.session import EMBEDDED_MIN_CPUS, connect_ray

# One window (box group) per block and batch: SAM embeds one window at a time anyway, and fine blocks let
# the CPU stages work on neighbouring windows while SAM runs. Results do not depend on it.
WINDOWS_PER_BATCH = 1
BOX_COLUMNS = (
    "scene_id",
    "box_id",
    "group_id",
    "tile_id",
    "key",
    "status",
    "reason",
    "score",
    "cfpg",
    "mbo_rounds",
    "area_px",
    "win_col_off",
    "win_row_off",
    "win_width",
    "win_height",
    "window_cfpg_s",
    "window_sam_s",
    "window_mbo_s",
    "window_write_s",
)
STAGE_TIMES = ("cfpg", "sam", "mbo", "write")  # per-window seconds of each stage, in the manifest


def boxes_run_id(cfg: Any, boxes: BoxesConfig, scene_uris: list[str]) -> str:
    decisive = {"task": "boxes", "scenes": scene_uris, "tiling": asdict(cfg.tiling), "boxes": asdict(boxes)}
    return derive_run_id("boxes", cfg.run_id, decisive)


def plan_scene_rows(
    cfg: Any, boxes_cfg: BoxesConfig, uri: str, scene_id: str, prefix: str
) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Box-group rows of one scene and its per-box failures (bad box file -> one scene failure)."""
    info = scene_info(uri)
    bands = resolve_bands(info, list(cfg.bands) or [1, 2, 3][: min(3, info.count)])
    source = boxes_cfg.path.replace("{scene_id}", scene_id)
    boxes = read_boxes(storage.get_bytes(source), source, info.transform, info.crs)
    tiles = plan_tiles(
        info.width,
        info.height,
        cfg.tiling.tile_px,
        cfg.tiling.overlap_px,
        scene_id=scene_id,
        scene_transform=info.transform,
        crs=info.crs,
    )
    groups, box_failures = plan_box_groups(tiles, boxes, info.width, info.height, info.transform)
    band_text = ",".join(str(b) for b in bands)
    rows = [group_row(g, uri, band_text, storage.join(prefix, scene_id)) for g in groups]
    decisive = json.dumps({"sam": asdict(boxes_cfg.sam), "value_max": boxes_cfg.value_max}, sort_keys=True)
    for row in rows:
        inputs = json.dumps({k: row[k] for k in sorted(row) if k != "key"}, default=str) + decisive
        row["inputs_sha"] = hashlib.sha256(inputs.encode()).hexdigest()
    failures = [Failure(scene_id, uri, box_id, "plan", f"box {box_id}: {reason}") for box_id, reason in box_failures]
    return rows, failures


def boxes_dataset(rows: list[dict[str, Any]], cfg: Any, boxes: BoxesConfig, res: Any) -> Any:
    """Box-group rows -> written metadata rows: [read + CFPG] -> SAM -> [MBO + write].

    Overlap: a block is one window, so read + CFPG of the next windows and MBO + write of the previous ones
    run as CPU tasks (the `map.refine` resources) while the SAM actor embeds the current one; two tasks per
    window, not four, so a busy scheduler does not starve SAM. Their options differ from the SAM actor's,
    so Ray Data does not fuse CFPG into the actor (it would then run serially before each decode). Every
    stage uses as many threads as the CPUs it holds (torch in SAM; OpenCV and OpenMP in CFPG/MBO), so the
    cores are never oversubscribed.
    """
    sam = sam_options(boxes.sam)
    cpu = replace(res.refine, pool_size=0)  # the refine resources, as stateless tasks
    cpu_threads = max(1, int(cpu.num_cpus))
    ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    prompt = {"cfpg": sam["cfpg"], "value_max": boxes.value_max, "threads": cpu_threads}
    ds = map_stage(ds, read_prompt_stage, cpu, WINDOWS_PER_BATCH, fn_kwargs=prompt)
    threads = cfg.infer.torch_threads or max(1, int(res.infer.num_cpus))
    kwargs = {"sam": sam, "device": cfg.infer.device, "torch_threads": threads}
    ds = map_stage(ds, SamBoxStage, res.infer, WINDOWS_PER_BATCH, fn_constructor_kwargs=kwargs)
    return map_stage(ds, mbo_write_stage, cpu, WINDOWS_PER_BATCH, fn_kwargs={"mbo": sam["mbo"], "threads": cpu_threads})


def box_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One manifest row per box of a written group row."""
    ids = json.loads(str(meta["box_ids"]))
    scores = json.loads(str(meta["scores"]))
    cfpg = json.loads(str(meta["cfpg_reasons"]))
    rounds = json.loads(str(meta["mbo_iterations"]))
    areas = json.loads(str(meta["box_px"]))
    return [
        {
            "scene_id": str(meta["scene_id"]),
            "box_id": box_id,
            "group_id": str(meta["group_id"]),
            "tile_id": str(meta["tile_id"]),
            "key": str(meta["key"]),
            "status": str(meta["status"]),
            "reason": str(meta.get("reason", "")),
            "score": float(scores[k]),
            "cfpg": cfpg[k],
            "mbo_rounds": int(rounds[k]),
            "area_px": int(areas[k]),
            **{f"win_{n}": int(meta[f"win_{n}"]) for n in ("col_off", "row_off", "width", "height")},
            **{f"window_{s}_s": float(meta.get(f"{s}_s", 0.0)) for s in STAGE_TIMES},
        }
        for k, box_id in enumerate(ids)
    ]


def scene_vectors(prefix: str, scene_id: str, crs: str, keys: list[str]) -> str:
    """Merge the groups' GeoJSON of one scene into `boxes.geojson` (WGS84), one feature per box."""
    features = []
    for key in sorted(keys):
        for feat in json.loads(storage.get_bytes(geojson_key(key)))["features"]:
            if feat["geometry"] is not None:
                feat["geometry"] = transform_geom(crs, "EPSG:4326", feat["geometry"], precision=9)
            features.append(feat)
    features.sort(key=lambda f: str(f["properties"]["box_id"]))
    out = storage.join(prefix, scene_id, "boxes.geojson")
    storage.put_bytes(out, json.dumps({"type": "FeatureCollection", "features": features}).encode())
    return out


def split_done(
    rows: list[dict[str, Any]], cfg: Any, res: Any, prefix: str, scene_ids: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(group rows to compute, manifest rows of the boxes an earlier attempt of this run already wrote).

    One listing per scene finds the groups with a sidecar; only those are verified, on Ray.
    """
    if cfg.overwrite or not rows:
        return rows, []
    existing: set[str] = set()
    for scene_id in scene_ids:
        existing.update(storage.list_prefix(storage.join(prefix, scene_id, "boxes") + "/"))
    candidates = [r for r in rows if sidecar_key(r["key"]) in existing]
    if not candidates:
        return rows, []
    todo = [r for r in rows if sidecar_key(r["key"]) not in existing]
    done: list[dict[str, Any]] = []
    keep = set(rows[0])
    ds: ray.data.Dataset = ray.data.from_items(candidates)
    for row in map_stage(ds, verify_boxes_stage, res.read, 16).iter_rows():
        if row["done"]:
            meta = {k: v for k, v in row.items() if k in keep}
            done += box_rows({**meta, **json.loads(str(row["sidecar_meta"])), "status": "skipped", "reason": ""})
        else:
            todo.append({k: v for k, v in row.items() if k in keep})
    return todo, done


def prepare(cfg: Any, scenes: list[SceneRef]) -> TaskRun:
    if not cfg.boxes.path:
        raise ConfigError("config error: key 'boxes.path' is required for task 'boxes' (a .csv or .geojson)")
    run_id = boxes_run_id(cfg, cfg.boxes, [s.uri for s in scenes])
    return TaskRun(run_id, functools.partial(run_boxes, boxes=cfg.boxes))


def run_boxes(ctx: RunContext, boxes: BoxesConfig) -> int:
    """Map the boxes of every scene of the run; one summary line; 1 if anything failed."""
    cfg, prefix, run_id, failures = ctx.cfg, ctx.run_prefix, ctx.run_id, ctx.failures
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    info_of: dict[str, Any] = {}
    for scene in ctx.scenes:
        try:
            scene_rows, scene_failures = plan_scene_rows(cfg, boxes, scene.uri, scene.scene_id, prefix)
        except Exception as exc:  # any unusable scene (or box file) is a failure row; the others go on
            failures.append(Failure(scene.scene_id, scene.uri, "", "plan", one_line(exc)))
            continue
        rows += scene_rows
        failures += scene_failures
        info_of[scene.scene_id] = scene_info(scene.uri)
    first_band = {str(r["scene_id"]): int(str(r["bands"]).split(",")[0]) for r in rows}
    timings = {"plan_s": time.perf_counter() - start}
    connect_ray(cfg.ray, min_cpus=EMBEDDED_MIN_CPUS)
    res = resources_for(cfg, cluster_gpus())
    phase = time.perf_counter()
    todo, manifest = split_done(rows, cfg, res, prefix, list(info_of))
    timings["verify_s"] = time.perf_counter() - phase
    phase = time.perf_counter()
    if todo:
        for batch in boxes_dataset(todo, cfg, boxes, res).iter_batches(batch_format="numpy", batch_size=None):
            for i in range(len(batch["key"])):
                manifest += box_rows({k: batch[k][i] for k in batch})
    timings["compute_s"] = time.perf_counter() - phase
    phase = time.perf_counter()
    failed_groups = {(r["scene_id"], r["group_id"]): r for r in manifest if r["status"] == "failed"}
    for (scene_id, group_id), r in sorted(failed_groups.items()):
        failures.append(Failure(scene_id, "", group_id, "boxes", f"{group_id}: {r['reason']}"))
    for scene_id, info in info_of.items():
        rows_here = [r for r in manifest if r["scene_id"] == scene_id and r["status"] in ("written", "skipped")]
        scene_vectors(prefix, scene_id, info.crs, sorted({r["key"] for r in rows_here}))
        parts = {
            r["key"]: PixelWindow(*(r[f"win_{n}"] for n in ("col_off", "row_off", "width", "height")))
            for r in rows_here
        }
        mosaic = storage.join(prefix, scene_id, "mosaic.tif")
        union_mosaic(
            mosaic, info.width, info.height, info.transform, info.crs, [(w, k) for k, w in sorted(parts.items())]
        )
        if cfg.outputs.quicklook:  # the scene's first mapped band in grey, the boxes' masks in blue
            band = first_band.get(scene_id, 1)
            build_quicklook(mosaic, info.uri, band, storage.join(prefix, scene_id, "quicklook.png"))
    timings["products_s"] = time.perf_counter() - phase
    empty = pa.table({c: pa.array([], pa.string()) for c in BOX_COLUMNS})
    manifest.sort(key=lambda r: (r["scene_id"], r["box_id"]))
    table = pa.Table.from_pylist(manifest) if manifest else empty
    storage.put_bytes(storage.join(prefix, "boxes_manifest.parquet"), table_bytes(table))
    write_failures(storage.join(prefix, "failures.parquet"), [f.to_row() for f in failures])
    computed = sum(1 for r in manifest if r["status"] == "written")
    resumed = sum(1 for r in manifest if r["status"] == "skipped")
    summary = {
        "run_id": run_id,
        "output": prefix,
        "boxes": len(manifest),
        "boxes_computed": computed,
        "boxes_resumed": resumed,
        "windows": len(rows),
        "failures": len(failures),
        "wall_s": time.perf_counter() - ctx.start,
        "timings_s": {**ctx.timings, **timings},
    }
    storage.put_bytes(storage.join(prefix, "summary.json"), json.dumps(summary, indent=2).encode())
    phases = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items())
    for reason, group in failure_groups(failures):
        print(f"  FAILED {len(group)} x {reason} ({', '.join(f.scene_id or f.scene_uri for f in group[:3])})")
    print(
        f"rrsis map boxes: run {run_id}: {len(manifest)} boxes in {len(rows)} windows ({computed} computed, "
        f"{resumed} resumed), {len(failures)} failures, {time.perf_counter() - ctx.start:.1f} s "
        f"({phases}) -> {prefix}",
        flush=True,
    )
    return 1 if failures else 0
