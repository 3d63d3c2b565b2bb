"""`rrsis map` with `task: referring`, `method: pslg_sam`: map a large scene with a sentence.

Two phases through the shared executor (`tile_run.execute`), each committing scene by scene:

1. grounding (`grounding_task`, its books in `<run>/grounding/`): each scene expands into tile rows on a
   worker (the tiling and checks of every task) -> read (CPU tasks) -> `GroundingStage` (actor pool, GPU when
   present: the tile's best box and score for the query; a few numbers per tile, never pixels) -> per scene,
   on a worker: keep boxes scoring >= `referring.min_score`, map them to scene pixels, NMS across tile
   overlaps (`referring_boxes`) -> `<run>/<scene_id>/query_boxes.csv`, the scores in the commit record;
2. the `boxes` task (SAM + CFPG + MBO, masks, mosaic, polygons) on those box files, in the run folder itself,
   for the scenes phase 1 committed; its per-scene products end by giving every polygon of `boxes.geojson`
   the query and its grounding score as attributes (`tag_scene`).

A rerun skips what each phase committed. A scene where no box passes is a valid, empty result.
`method: danet` maps a DANet mask per tile instead (`task_danet.py`). A scene that cannot be read is a failure
row (failures.parquet), like in every task; the other scenes go on.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
from transformers import AutoTokenizer

from rrsis import storage
from rrsis.checkpoints import build_from_checkpoint, load_checkpoint, model_config_from_dict
from rrsis.config.map import MapConfig
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError
from rrsis.geo.tiling import PixelWindow
from rrsis.models.grounding.encoders import text_encoder_path
from rrsis.pipeline.build import (
    block_tiles_for,
    bound_object_store,
    map_stage,
    read_block_bytes,
    scene_dataset,
    tile_bytes,
)
from rrsis.pipeline.commit import PartFormat, commit_key, conform_rows, read_record
from rrsis.pipeline.context import RunContext, SummaryFormat, finish_run
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import PlanArgs, derive_run_id, expand_scene
from rrsis.pipeline.referring_boxes import check_query, nms_across_tiles, to_scene, touches_internal_edge
from rrsis.pipeline.run_boxes import boxes_line, boxes_resources, boxes_task, no_totals
from rrsis.pipeline.stages import read_stage
from rrsis.pipeline.task_boxes import to_rgb
from rrsis.pipeline.task_table import TaskRun
from rrsis.pipeline.task_waterland import decisive_precision
from rrsis.pipeline.tile_run import Launch, MapTask, execute

Batch = dict[str, np.ndarray]


class GroundingStage:
    """Holds the grounding model (loaded once per actor); per tile row: best box (tile pixels) and score."""

    def __init__(self, checkpoint: str, query: str, value_max: float, device: str = "cpu", threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        dev = resolve_device(device, key="infer.device")
        self.model: Any = build_from_checkpoint(load_checkpoint(checkpoint)).to(dev)
        self.query, self.value_max = query, value_max

    def __call__(self, batch: Batch) -> Batch:
        n = len(batch["tile_id"])
        status = np.asarray(batch.get("status", np.full(n, "ok")), dtype=object)
        ok = [i for i in range(n) if status[i] == "ok"]
        boxes, scores = np.full((n, 4), np.nan), np.full(n, np.nan)
        if ok:
            rgb = [to_rgb(batch["image"][i], self.value_max) for i in ok]
            b, s = self.model.predict(rgb, [self.query] * len(ok))
            boxes[ok], scores[ok] = b, s
        out = {k: v for k, v in batch.items() if k not in ("image", "valid")}
        out.update(box=boxes, score=scores)
        return out


def referring_run_id(cfg: Any, scene_uris: list[str]) -> str:
    decisive = {
        "task": "referring",
        "query": cfg.query,
        "scenes": scene_uris,
        "tiling": asdict(cfg.tiling),
        "referring": asdict(cfg.referring),
        "boxes": asdict(cfg.boxes),
        **decisive_precision(cfg),  # SAM's encoder runs at `infer.precision`
    }
    return derive_run_id("referring", cfg.run_id, decisive)


def checked_query(cfg: Any, model_config: dict[str, Any]) -> str:
    g = model_config_from_dict(model_config).grounding
    tok = AutoTokenizer.from_pretrained(text_encoder_path(g.text_encoder), local_files_only=True)
    return check_query(cfg.query, len(tok(cfg.query, truncation=False)["input_ids"]), g.max_query_tokens)


def select_boxes(
    rows: list[dict[str, Any]], width: int, height: int, min_score: float, nms_iou: float
) -> list[tuple[np.ndarray, float]]:
    """Scene boxes and scores that pass `min_score`, one per object after NMS across tiles."""
    cands, scores, cut = [], [], []
    for r in rows:
        if not np.isfinite(r["score"]) or r["score"] < min_score:
            continue
        win = PixelWindow(r["win_col_off"], r["win_row_off"], r["win_width"], r["win_height"])
        box = to_scene(r["box"], win, width, height)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        cands.append(box)
        scores.append(float(r["score"]))
        cut.append(touches_internal_edge(box, win, width, height))
    if not cands:
        return []
    kept = nms_across_tiles(np.stack(cands), np.array(scores), np.array(cut), nms_iou)
    return [(cands[i], scores[i]) for i in kept]


def boxes_csv(selected: list[tuple[np.ndarray, float]]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "x1", "y1", "x2", "y2"])
    for k, (b, _) in enumerate(selected):
        w.writerow([f"q{k:04d}", *(f"{float(v):.2f}" for v in b)])
    return out.getvalue()


def tag_polygons(uri: str, query: str, scores: dict[str, float]) -> None:
    """Add the query and the box's grounding score to every feature of a scene's `boxes.geojson`."""
    fc = json.loads(storage.get_bytes(uri))
    for feat in fc["features"]:
        props = feat.setdefault("properties", {})
        props["query"], props["score"] = query, scores.get(str(props.get("box_id")))
    storage.put_bytes(uri, json.dumps(fc).encode())


GROUNDING = "grounding"  # phase 1's books: <run>/grounding/{_commits,manifest}/, <run>/grounding/manifest.parquet
GROUNDING_SCHEMA = pa.schema(
    [
        ("scene_id", pa.string()),
        ("tile_id", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),  # written | failed
        ("reason", pa.string()),
        ("checksum", pa.string()),  # empty: a tile's grounding writes no file
        ("row", pa.int64()),
        ("col", pa.int64()),
        ("win_col_off", pa.int64()),
        ("win_row_off", pa.int64()),
        ("win_width", pa.int64()),
        ("win_height", pa.int64()),
        ("box_x1", pa.float64()),
        ("box_y1", pa.float64()),
        ("box_x2", pa.float64()),
        ("box_y2", pa.float64()),
        ("score", pa.float64()),  # NaN: no box (a failed read)
        ("read_s", pa.float64()),
    ]
)


def conform_grounding(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """A scene's grounding rows: one per tile (last attempt wins), in tile order."""
    return conform_rows(rows, GROUNDING_SCHEMA, lambda r: (r["key"],), lambda r: (r["scene_id"], r["row"], r["col"]))


GROUNDING_PARTS = PartFormat(GROUNDING_SCHEMA, conform_grounding, "tiles")


def grounding_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest row of one grounded tile: its window, best box (tile pixels) and score."""
    box = [float(v) for v in np.asarray(row["box"]).reshape(4)]
    status = "failed" if str(row["status"]) == "failed" else "written"
    plain = {k: row[k].item() if hasattr(row[k], "item") else row[k] for k in GROUNDING_SCHEMA.names if k in row}
    return [{**plain, "status": status, "checksum": "", "score": float(row["score"]),
             **{f"box_{n}": v for n, v in zip(("x1", "y1", "x2", "y2"), box, strict=True)}}]  # fmt: skip


def grounding_dataset(
    rows: list[dict[str, Any]], launch: Launch, *, cfg: MapConfig, plan: PlanArgs, query: str
) -> ray.data.Dataset:
    """A wave's scene rows -> grounded tile rows: plan + read (CPU tasks, fused) -> `GroundingStage`."""
    res = launch.res
    ds = scene_dataset([{**r, "verify": False} for r in rows], expand_scene, {"plan": plan}, res.read)
    ds = map_stage(ds, read_stage, res.read, res.batch_size)
    kwargs = {
        "checkpoint": cfg.referring.checkpoint,
        "query": query,
        "value_max": cfg.boxes.value_max,
        "device": cfg.infer.device,
        "threads": cfg.infer.torch_threads or max(1, int(res.infer.num_cpus)),
    }
    ds = map_stage(ds, GroundingStage, res.infer, res.batch_size, fn_constructor_kwargs=kwargs)
    block = block_tiles_for(tile_bytes(3, cfg.tiling.tile_px), res.batch_size)
    bound_object_store(ds, block * tile_bytes(3, cfg.tiling.tile_px), read_block_bytes(3, cfg.tiling.tile_px, block))
    return ds


def query_boxes(
    scene: dict[str, Any],
    rows: list[dict[str, Any]],
    outputs: dict[str, bool],
    background: Any = None,
    *,
    min_score: float,
    nms_iou: float,
) -> dict[str, Any]:
    """Phase 1's per-scene product: the scene's boxes (`select_boxes`) as `query_boxes.csv`; their grounding
    scores go into the commit record, for phase 2's polygons."""
    cands = [{**r, "box": [r["box_x1"], r["box_y1"], r["box_x2"], r["box_y2"]]} for r in rows]
    selected = select_boxes(cands, int(scene["width"]), int(scene["height"]), min_score, nms_iou)
    out = storage.join(str(scene["prefix"]), "query_boxes.csv")
    storage.put_bytes(out, boxes_csv(selected).encode())
    scores = {f"q{k:04d}": s for k, (_, s) in enumerate(selected)}
    return {"scene_id": scene["scene_id"], "scene_uri": scene["uri"], "query_boxes": out, "scores": scores}


def tag_scene(scene: dict[str, Any], result: dict[str, Any], *, query: str, books: str) -> dict[str, Any]:
    """Phase 2's last per-scene product: the query and each box's grounding score on its polygons."""
    scores = read_record(commit_key(books, str(scene["scene_id"])))["products"]["scores"]
    tag_polygons(str(result["vectors"]), query, scores)
    return {"objects": len(scores)}


def grounding_task(cfg: MapConfig, run_prefix: str, query: str) -> MapTask:
    t = cfg.tiling
    plan = PlanArgs(run_prefix, t.tile_px, t.overlap_px, tuple(cfg.bands), (), 0, first_bands=3)
    r = cfg.referring
    return MapTask(
        cfg,
        functools.partial(grounding_dataset, cfg=cfg, plan=plan, query=query),
        grounding_rows,
        SummaryFormat("referred"),
        parts=GROUNDING_PARTS,
        products=functools.partial(query_boxes, min_score=r.min_score, nms_iou=r.nms_iou),
        resources=boxes_resources,
        quicklook=False,
        ledger=GROUNDING,
    )


def referring_tasks(cfg: MapConfig, run_prefix: str, query: str) -> tuple[MapTask, MapTask]:
    """(grounding, boxes): phase 2 reads phase 1's box files and scores."""
    boxes_cfg = copy.deepcopy(cfg)
    boxes_cfg.boxes.path = storage.join(run_prefix, "{scene_id}", "query_boxes.csv")
    tag = (tag_scene, {"query": query, "books": storage.join(run_prefix, GROUNDING)})
    return grounding_task(cfg, run_prefix, query), boxes_task(boxes_cfg, run_prefix, extra=tag)


def run_referring(ctx: RunContext, query: str) -> int:
    """Ground the query on every tile, keep one box per object per scene, then run the boxes task on them in
    the same run folder; see the module docstring."""
    grounding, boxes = referring_tasks(ctx.cfg, ctx.run_prefix, query)
    first = execute(ctx, grounding)
    grounded = {str(r["scene_id"]) for r in first.records}
    second = execute(ctx, boxes, [s for s in ctx.scenes if s.scene_id in grounded])
    counts = {**second.counts, **{f"grounding_{k}": v for k, v in first.counts.items()}}
    ctx.notes["query"] = query
    fmt = SummaryFormat("referred", unit="boxes", scene_line=boxes_line, totals=no_totals)
    return finish_run(ctx, second.records, counts, first.compute_s + second.compute_s, fmt)


def prepare(cfg: Any, scenes: list[SceneRef]) -> TaskRun:
    """Checks (a grounding checkpoint, the query's length in the model's own tokens) and the run id."""
    if not cfg.referring.checkpoint:
        raise ConfigError(
            "config error: key 'referring.checkpoint' is required for task 'referring' (a grounding checkpoint: "
            "train one with `rrsis train --config configs/train/grounding_tiny.yaml`, or grounding.yaml on DIOR-RSVG)"
        )
    ckpt = load_checkpoint(cfg.referring.checkpoint)
    if ckpt.model_name != "grounding":
        hint = " (for DANet: method=danet referring.danet=<checkpoint>)" if ckpt.model_name == "danet" else ""
        raise ConfigError(
            f"config error: key 'referring.checkpoint': a grounding checkpoint, not {ckpt.model_name!r}{hint}"
        )
    query = checked_query(cfg, ckpt.model_config)
    run_id = referring_run_id(cfg, [s.uri for s in scenes])
    return TaskRun(run_id, functools.partial(run_referring, query=query))
