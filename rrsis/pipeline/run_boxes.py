"""`rrsis map` with `task: boxes`: scene + box file -> one SAM mask and one polygon per box.

What is specific to it, for the shared executor (`tile_run.execute`): each scene expands on a worker
(`expand_boxes`: the scene's tiling and checks as in every task, then its box file read and its box groups
planned by `box_plan`: the tile owning a box's centre segments it through a window covering the whole box)
-> Ray Data: [resume check + read + prompt/CFPG] (CPU tasks) -> SAM (actor pool, GPU when present) ->
[MBO + write] (CPU tasks) -> per scene (`box_products`) one `boxes.geojson` (WGS84, a polygon per box with
its `box_id`), `mosaic.tif` (COG, union of the box masks) and the quicklook. Its manifest has one row per
box (`BOX_SCHEMA`); a box that cannot be planned (centre outside the scene, larger than a window) is a
failure row kept in its scene's commit record. Pixels never reach the driver.

Resume (as every task): committed scenes are skipped without reading anything of them; in a scene that was
in flight, every group whose mask tile, GeoJSON and sidecar verify (SHA-256) and were made from the same
inputs is `skipped`, not recomputed. `overwrite=true` recomputes everything; `resume=false` refuses a run
that already has outputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import pyarrow as pa
import ray.data

from rrsis import storage
from rrsis.config.boxes import BoxesConfig
from rrsis.config.map import MapConfig
from rrsis.errors import ConfigError
from rrsis.geo.tiling import Tile
from rrsis.pipeline.box_inputs import read_boxes
from rrsis.pipeline.box_plan import plan_box_groups
from rrsis.pipeline.box_products import box_scene_products
from rrsis.pipeline.build import (
    PipelineResources,
    bound_object_store,
    cluster_gpus,
    map_stage,
    resources_for,
    scene_dataset,
    tile_bytes,
)
from rrsis.pipeline.commit import PartFormat, conform_rows
from rrsis.pipeline.context import SummaryFormat
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import PlanArgs, derive_run_id, expand_scene, one_line, sidecar_key
from rrsis.pipeline.task_boxes import SamBoxStage, group_row, mbo_write_stage, read_prompt_stage, sam_options
from rrsis.pipeline.task_table import TaskRun
from rrsis.pipeline.task_waterland import decisive_precision
from rrsis.pipeline.tile_run import Launch, MapTask, run_task

# One window (box group) per block and batch: SAM embeds one window at a time anyway, and fine blocks let
# the CPU stages work on neighbouring windows while SAM runs. Results do not depend on it.
WINDOWS_PER_BATCH = 1
BOX_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("box_id", pa.string()),
        ("group_id", pa.string()),
        ("tile_id", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),  # written | skipped (verified from an earlier attempt) | failed
        ("reason", pa.string()),
        ("score", pa.float64()),
        ("cfpg", pa.string()),
        ("mbo_rounds", pa.int64()),
        ("area_px", pa.int64()),
        ("win_col_off", pa.int64()),
        ("win_row_off", pa.int64()),
        ("win_width", pa.int64()),
        ("win_height", pa.int64()),
        ("window_cfpg_s", pa.float64()),
        ("window_sam_s", pa.float64()),
        ("window_mbo_s", pa.float64()),
        ("window_write_s", pa.float64()),
        ("checksum", pa.string()),  # SHA-256 of the group's mask tile
    ]
)
STAGE_TIMES = ("cfpg", "sam", "mbo", "write")  # per-window seconds of each stage, in the manifest
#: The columns of a group row that a scene without groups (or that could not be planned) carries too.
GROUP_DEFAULTS: dict[str, Any] = {"group_id": "", "box_ids": "[]", "boxes": "[]", "inputs_sha": "", "resume": False}


def conform_boxes(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """A scene's box rows as the manifest stores them: one per box (last attempt wins), ordered by box id."""
    return conform_rows(rows, BOX_SCHEMA, lambda r: (r["key"], r["box_id"]), lambda r: (r["scene_id"], r["box_id"]))


BOX_PARTS = PartFormat(BOX_SCHEMA, conform_boxes, "boxes", id_column="box_id", row_stage="box")


@dataclass(frozen=True)
class BoxPlan:
    """How a scene becomes box-group rows on a worker (plain data: it travels to the planning tasks)."""

    tiles: PlanArgs  # the scene's tiling and checks, as every task plans them
    boxes_path: str  # "{scene_id}" is replaced by the scene's id
    decisive: str  # JSON of the settings that change a group's masks (SAM, refinement, value_max)


def boxes_run_id(cfg: Any, boxes: BoxesConfig, scene_uris: list[str]) -> str:
    decisive = {"task": "boxes", "scenes": scene_uris, "tiling": asdict(cfg.tiling), "boxes": asdict(boxes),
                **decisive_precision(cfg)}  # fmt: skip
    return derive_run_id("boxes", cfg.run_id, decisive)


def box_plan(cfg: MapConfig, boxes: BoxesConfig, run_prefix: str) -> BoxPlan:
    t = cfg.tiling
    tiles = PlanArgs(run_prefix, t.tile_px, t.overlap_px, tuple(cfg.bands), (), 0, first_bands=3)
    decisive = json.dumps({"sam": asdict(boxes.sam), "value_max": boxes.value_max}, sort_keys=True)
    return BoxPlan(tiles, boxes.path, decisive)


def expand_boxes(row: dict[str, Any], *, plan: BoxPlan) -> list[dict[str, Any]]:
    """One scene row -> its box-group rows, on a Ray worker: the scene's tiling and checks (`expand_scene`),
    its box file, its groups (`plan_box_groups`), and (`verify`) one listing of the scene's groups so that
    groups with a sidecar from an earlier attempt are verified (`resume`), not recomputed.

    Boxes that cannot be planned travel as `notes` on the first row; a scene without groups is one row with
    an empty `tile_id` (its products are still made: an empty result); a scene or box file that cannot be
    used is one failed row, as in every task."""
    tile_rows = expand_scene({**row, "verify": False}, plan=plan.tiles)
    first = tile_rows[0]
    if not first["tile_id"]:  # the scene could not be planned
        return [{**first, **GROUP_DEFAULTS, "notes": "[]"}]
    scene_id, uri = str(row["scene_id"]), str(row["scene_uri"])
    width, height = int(first["scene_width"]), int(first["scene_height"])
    transform = tuple(float(first[f"scene_transform_{k}"]) for k in "abcdef")
    prefix = storage.join(plan.tiles.run_prefix, scene_id)
    try:
        source = plan.boxes_path.replace("{scene_id}", scene_id)
        boxes = read_boxes(storage.get_bytes(source), source, transform, str(first["crs"]))
        groups, box_failures = plan_box_groups([Tile.from_row(r) for r in tile_rows], boxes, width, height, transform)
        existing = set(storage.list_prefix(storage.join(prefix, "boxes") + "/")) if row.get("verify") else set()
    except Exception as exc:  # an unusable box file fails its scene; the other scenes go on
        return [{**first, **GROUP_DEFAULTS, "tile_id": "", "key": "", "status": "failed", "reason": one_line(exc),
                 "notes": "[]"}]  # fmt: skip
    grid = {k: first[k] for k in first if k.startswith("scene_")}
    notes = json.dumps([[box_id, "plan", f"box {box_id}: {reason}"] for box_id, reason in box_failures])
    rows = []
    for group in groups:
        out = group_row(group, uri, str(first["bands"]), prefix)
        inputs = json.dumps({k: out[k] for k in sorted(out) if k != "key"}, default=str) + plan.decisive
        out["inputs_sha"] = hashlib.sha256(inputs.encode()).hexdigest()
        out.update(grid, scene_tiles=len(groups), status="ok", reason="", verify=False, notes="[]")
        out["resume"] = sidecar_key(out["key"]) in existing
        rows.append(out)
    if not rows:  # no group: the scene's products are still made (an empty result)
        return [{**first, **GROUP_DEFAULTS, "tile_id": "", "key": "", "scene_tiles": 0, "status": "empty",
                 "notes": notes}]  # fmt: skip
    rows[0]["notes"] = notes
    return rows


def boxes_resources(cfg: MapConfig) -> PipelineResources:
    """The stage resources; only the SAM pool holds CPUs for the run (the CPU stages are tasks)."""
    return resources_for(cfg, cluster_gpus())


def boxes_dataset(rows: list[dict[str, Any]], launch: Launch, *, cfg: MapConfig, plan: BoxPlan) -> ray.data.Dataset:
    """A wave's scene rows -> written group rows: plan -> [resume + read + CFPG] -> SAM -> [MBO + write].

    Overlap: a block is one window, so read + CFPG of the next windows and MBO + write of the previous ones
    run as CPU tasks (the `map.refine` resources) while the SAM actor embeds the current one; two tasks per
    window, not four, so a busy scheduler does not starve SAM. Their options differ from the SAM actor's,
    so Ray Data does not fuse CFPG into the actor (it would then run serially before each decode). Every
    stage uses as many threads as the CPUs it holds (torch in SAM; OpenCV and OpenMP in CFPG/MBO), so the
    cores are never oversubscribed.
    """
    res, boxes = launch.res, cfg.boxes
    sam = sam_options(boxes.sam, cfg.infer.precision)  # SAM's image encoder at `infer.precision`
    cpu = replace(res.refine, pool_size=0)  # the refine resources, as stateless tasks
    cpu_threads = max(1, int(cpu.num_cpus))
    ds = scene_dataset(rows, expand_boxes, {"plan": plan}, res.read)
    prompt = {"cfpg": sam["cfpg"], "value_max": boxes.value_max, "threads": cpu_threads}
    ds = map_stage(ds, read_prompt_stage, cpu, WINDOWS_PER_BATCH, fn_kwargs=prompt)
    threads = cfg.infer.torch_threads or max(1, int(res.infer.num_cpus))
    kwargs = {"sam": sam, "device": cfg.infer.device, "torch_threads": threads}
    ds = map_stage(ds, SamBoxStage, res.infer, WINDOWS_PER_BATCH, fn_constructor_kwargs=kwargs)
    ds = map_stage(ds, mbo_write_stage, cpu, WINDOWS_PER_BATCH, fn_kwargs={"mbo": sam["mbo"], "threads": cpu_threads})
    window = tile_bytes(3, cfg.tiling.tile_px)
    bound_object_store(ds, window)
    # A scene's groups leave its planning task as one block: every row its own block, so each window is a
    # task of its own in the CPU stages (rows are a few hundred bytes; Ray Data slices past the target).
    ds.context.target_max_block_size = 1
    return ds


def box_rows(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """One manifest row per box of a result (group) row; a verified group's come from its sidecar."""
    skipped = str(meta["status"]) == "skipped"
    if skipped:
        meta = {**meta, **json.loads(str(meta["sidecar_meta"])), "write_s": 0.0}
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
            "checksum": str(meta.get("checksum", "")),
        }
        for k, box_id in enumerate(ids)
    ]


def boxes_line(product: dict[str, Any], target: str) -> str:
    return f"{product['boxes']} boxes"


def no_totals(products: list[dict[str, Any]]) -> dict[str, Any]:
    return {}


def boxes_task(cfg: MapConfig, run_prefix: str, extra: tuple[Any, dict[str, Any]] | None = None) -> MapTask:
    """The executor's task for `cfg.boxes`; `extra`: another per-scene product after the boxes' own."""
    plan = box_plan(cfg, cfg.boxes, run_prefix)
    return MapTask(
        cfg,
        functools.partial(boxes_dataset, cfg=cfg, plan=plan),
        box_rows,
        SummaryFormat("boxes", unit="boxes", scene_line=boxes_line, totals=no_totals),
        parts=BOX_PARTS,
        products=box_scene_products,
        extra_products=extra,
        resources=boxes_resources,
    )


def prepare(cfg: Any, scenes: list[SceneRef]) -> TaskRun:
    if not cfg.boxes.path:
        raise ConfigError("config error: key 'boxes.path' is required for task 'boxes' (a .csv or .geojson)")
    run_id = boxes_run_id(cfg, cfg.boxes, [s.uri for s in scenes])
    task = boxes_task(cfg, storage.join(cfg.output, run_id))
    return TaskRun(run_id, functools.partial(run_task, task=task))
