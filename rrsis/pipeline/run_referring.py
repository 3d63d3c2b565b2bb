"""`rrsis map` with `task: referring`, `method: pslg_sam`: map a large scene with a sentence.

Driver: query check (empty or longer than the grounding model reads -> one error line) -> tile rows of
every scene -> Ray Data: read (CPU tasks) -> `GroundingStage` (actor pool, GPU when present: the tile's
best box and score for the query) -> boxes back on the driver (a few numbers per tile, never pixels) ->
per scene: keep boxes scoring >= `referring.min_score`, map them to scene pixels, NMS across tile overlaps
(`referring_boxes`) -> `<run>/<scene_id>/query_boxes.csv` -> the `boxes` task (SAM + CFPG + MBO, masks,
mosaic, polygons) on those boxes in the same run folder -> every polygon of `boxes.geojson` gets the query
and its grounding score as attributes. A scene where no box passes is a valid, empty result.
`method: danet` maps a DANet mask per tile instead (`task_danet.py`). A scene that cannot be read is a failure
row (failures.parquet), like in every task; the other scenes go on.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import functools
import io
import json
from dataclasses import asdict
from typing import Any

import numpy as np
import ray.data
from transformers import AutoTokenizer

from rrsis import storage
from rrsis.checkpoints import build_from_checkpoint, load_checkpoint, model_config_from_dict
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError
from rrsis.geo.raster import resolve_bands
from rrsis.geo.tiling import PixelWindow, plan_tiles
from rrsis.models.grounding.encoders import text_encoder_path
from rrsis.pipeline.build import cluster_gpus, map_stage, resources_for
from rrsis.pipeline.context import RunContext
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import Failure, derive_run_id, one_line, scene_info
from rrsis.pipeline.referring_boxes import check_query, nms_across_tiles, to_scene, touches_internal_edge
from rrsis.pipeline.run_boxes import run_boxes
from rrsis.pipeline.stages import read_stage
from rrsis.pipeline.task_boxes import to_rgb
from rrsis.pipeline.task_table import TaskRun
from rrsis.session import EMBEDDED_MIN_CPUS, connect_ray

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


def run_referring(ctx: RunContext, query: str) -> int:
    """Ground the query on every tile, keep one box per object per scene, then run the boxes task on them in
    the same run folder; see the module docstring."""
    cfg, prefix = ctx.cfg, ctx.run_prefix
    rows: list[dict[str, Any]] = []
    size_of: dict[str, tuple[int, int]] = {}
    for scene in ctx.scenes:
        try:
            info = scene_info(scene.uri)
            bands = ",".join(str(b) for b in resolve_bands(info, list(cfg.bands) or [1, 2, 3][: min(3, info.count)]))
            tiles = plan_tiles(
                info.width,
                info.height,
                cfg.tiling.tile_px,
                cfg.tiling.overlap_px,
                scene_id=scene.scene_id,
                scene_transform=info.transform,
                crs=info.crs,
            )
        except Exception as exc:  # any unusable scene is a failure row; the others go on
            ctx.failures.append(Failure(scene.scene_id, scene.uri, "", "plan", one_line(exc)))
            continue
        size_of[scene.scene_id] = (info.width, info.height)
        rows.extend({**tile.to_row(), "scene_uri": scene.uri, "bands": bands} for tile in tiles)
    per_scene: dict[str, list[dict[str, Any]]] = {scene_id: [] for scene_id in size_of}
    if rows:
        connect_ray(cfg.ray, min_cpus=EMBEDDED_MIN_CPUS)
        res = resources_for(cfg, cluster_gpus())
        ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // res.batch_size)))
        ds = map_stage(ds, read_stage, res.read, res.batch_size)
        kwargs = {
            "checkpoint": cfg.referring.checkpoint,
            "query": query,
            "value_max": cfg.boxes.value_max,
            "device": cfg.infer.device,
            "threads": cfg.infer.torch_threads or max(1, int(res.infer.num_cpus)),
        }
        ds = map_stage(ds, GroundingStage, res.infer, res.batch_size, fn_constructor_kwargs=kwargs)
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            ctx.lease.check()
            for i in range(len(batch["tile_id"])):
                per_scene[str(batch["scene_id"][i])].append({k: batch[k][i] for k in batch})
    scores_of: dict[str, dict[str, float]] = {}
    for scene_id, scene_rows in per_scene.items():
        w, h = size_of[scene_id]
        selected = select_boxes(scene_rows, w, h, cfg.referring.min_score, cfg.referring.nms_iou)
        storage.put_bytes(storage.join(prefix, scene_id, "query_boxes.csv"), boxes_csv(selected).encode())
        scores_of[scene_id] = {f"q{k:04d}": s for k, (_, s) in enumerate(selected)}
    boxes_cfg = copy.deepcopy(cfg)
    boxes_cfg.boxes.path = storage.join(prefix, "{scene_id}", "query_boxes.csv")
    planned = [s for s in ctx.scenes if s.scene_id in size_of]
    rc = run_boxes(dataclasses.replace(ctx, cfg=boxes_cfg, scenes=planned), boxes_cfg.boxes)
    for scene_id, scores in scores_of.items():
        uri = storage.join(prefix, scene_id, "boxes.geojson")
        if storage.exists(uri):
            tag_polygons(uri, query, scores)
    n = sum(len(s) for s in scores_of.values())
    print(f"rrsis map referring: {query!r}: {n} objects in {len(scores_of)} scenes -> {prefix}", flush=True)
    return rc
