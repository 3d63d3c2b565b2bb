"""`rrsis map` task referring with `method: danet`: one DANet mask per tile, stitched like the water-land map.

DANet predicts P(referred) per pixel for an (image, expression) pair, so unlike PSLG-SAM there are no boxes
to reconcile across tiles: the water-land pipeline already does everything a text query needs (windowed
reads, an accelerator actor pool, core-cropped mask tiles with checksummed sidecars, resume, manifest,
failures, COG mosaic, polygons). This module only adds what differs:

- `DanetInferStage`, the infer callable plugged into `build.map_dataset`: per actor it loads the
  checkpoint and embeds the query once; per batch it scales tiles with one scene-wide `referring.value_max`
  and the model's RGB statistics, forwards them at the model's input size and resizes P back to the tile.
- `prepare`: checks (checkpoint kind, query length in the model's own tokens), a run config derived from
  the user's (`infer.checkpoint` = `referring.danet`; band 2 of tiles and mosaic = P, needed for scores;
  a run id from the query and everything else that decides the outputs), run by the shared tile executor;
  in each scene's products task, `referring.geojson` from the mosaic (the map's own polygoniser) whose
  polygons carry `query`, `method` and `score` (mean P over the polygon's pixels, read from the mosaic in
  the polygon's window only). No pixel passes: an empty result (a FeatureCollection without features).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import time
from dataclasses import asdict
from typing import Any

import numpy as np
from rasterio.features import bounds, geometry_mask
from rasterio.warp import transform_geom
from rasterio.windows import Window

from rrsis import storage
from rrsis.checkpoints import build_from_checkpoint, load_checkpoint, model_config_from_dict
from rrsis.devices import resolve_device
from rrsis.errors import ConfigError
from rrsis.geo.raster import open_raster
from rrsis.models.danet.predictor import DanetPredictor, scale_to_input
from rrsis.models.danet.text import load_tokenizer
from rrsis.models.precision import autocast_for, resolve_precision
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.plan import content_tag, derive_run_id
from rrsis.pipeline.products import build_vectors
from rrsis.pipeline.referring_boxes import check_query
from rrsis.pipeline.task_table import TaskRun
from rrsis.pipeline.task_waterland import decisive_precision, model_info, plan_args
from rrsis.pipeline.tile_run import TileSpec, run_tiles

Batch = dict[str, np.ndarray]
VECTORS = "referring.geojson"
SCORE_BLOCK_PX = 2048  # polygon scores read the mosaic in blocks of at most this many pixels square


class DanetInferStage:
    """Holds DANet and the embedded query (once per actor); turns `image` into `prob` = P(referred)."""

    def __init__(
        self,
        checkpoint: str,
        device: str = "auto",
        torch_threads: int = 0,
        batch_invariant: bool = True,
        *,
        query: str,
        value_max: float,
        precision: str = "fp32",
    ) -> None:
        import torch

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        device = str(resolve_device(device, key="infer.device"))
        model: Any = build_from_checkpoint(load_checkpoint(checkpoint))
        self.predictor = DanetPredictor(model, device=device)
        self.query = self.predictor.embed_query(query)  # once, in fp32
        self.precision = resolve_precision(precision, device)
        self.value_max = value_max
        self.batch_invariant = batch_invariant

    def __call__(self, batch: Batch) -> Batch:
        start = time.perf_counter()
        image, valid = batch["image"], batch["valid"]
        n = image.shape[0]
        status = np.asarray(batch["status"], dtype=object) if "status" in batch else np.full(n, "ok", dtype=object)
        ok = [i for i in range(n) if status[i] == "ok"]
        prob = np.zeros(valid.shape, dtype=np.float32)
        cfg = self.predictor.cfg
        step = 1 if self.batch_invariant else max(1, len(ok))
        for first in range(0, len(ok), step):
            rows = ok[first : first + step]
            x = np.stack(
                [scale_to_input(image[i], valid[i], self.value_max, cfg.pixel_mean, cfg.pixel_std) for i in rows]
            )
            with autocast_for(self.precision, self.predictor.device):  # weights stay fp32
                prob[rows] = self.predictor.predict_tiles(x, self.query)
        prob[~valid] = 0.0
        out = {k: v for k, v in batch.items() if k != "image"}
        out["prob"] = prob
        out["infer_s"] = np.full(n, (time.perf_counter() - start) / max(1, n))
        return out


def danet_query(cfg: Any, model_config: dict[str, Any]) -> str:
    """The stripped query; empty or longer than DANet reads (`danet.max_tokens`) is one error line."""
    d = model_config_from_dict(model_config).danet
    n_tokens = len(load_tokenizer(d.text_encoder)(cfg.query, truncation=False)["input_ids"])
    return check_query(cfg.query, n_tokens, d.max_tokens, model="DANet", key="model.danet.max_tokens")


def danet_run_id(cfg: Any, scene_uris: list[str]) -> str:
    decisive = {
        "task": "referring",
        "method": "danet",
        "query": cfg.query.strip(),
        "scenes": scene_uris,
        "bands": list(cfg.bands),
        "checkpoint": cfg.referring.danet,
        "model": content_tag(cfg.referring.danet),  # the weights, not only the path
        "value_max": cfg.referring.value_max,
        "threshold": cfg.infer.threshold,
        **decisive_precision(cfg),
        "tiling": asdict(cfg.tiling),
        "refine": asdict(cfg.refine),
    }
    return derive_run_id("referring-danet", cfg.run_id, decisive)


def polygon_score(src: Any, geometry: dict[str, Any], block_px: int = SCORE_BLOCK_PX) -> float | None:
    """Mean P (mosaic band 2) over the polygon's referred pixels.

    Reads only the polygon's bounding window, in blocks of at most `block_px` square, so a polygon as large
    as the scene never brings the scene into memory.
    """
    geom = transform_geom("EPSG:4326", src.crs, geometry)
    left, bottom, right, top = bounds(geom)
    inv = ~src.transform
    cols, rows = zip(*(inv @ (x, y) for x in (left, right) for y in (bottom, top)), strict=True)
    col0, row0 = max(0, math.floor(min(cols)) - 1), max(0, math.floor(min(rows)) - 1)
    col1, row1 = min(src.width, math.ceil(max(cols)) + 1), min(src.height, math.ceil(max(rows)) + 1)
    blocks = [
        Window(c, r, min(block_px, col1 - c), min(block_px, row1 - r))
        for r in range(row0, row1, block_px)
        for c in range(col0, col1, block_px)
    ]
    for all_touched in (False, True):  # a sliver polygon may cover no pixel centre
        total, count = 0, 0
        for window in blocks:
            classes, scaled = src.read([1, 2], window=window)
            inside = geometry_mask(
                [geom], classes.shape, src.window_transform(window), all_touched=all_touched, invert=True
            )
            inside &= (classes == 1) & (scaled != 255)
            total, count = total + int(scaled[inside].sum(dtype=np.int64)), count + int(inside.sum())
        if count:
            return round(total / count / 254.0, 4)
    return None


def referring_vectors(mosaic_uri: str, out_uri: str, query: str) -> dict[str, Any]:
    """Polygons of the referred pixels (the map's own polygoniser) with query, method and score each."""
    with open_raster(mosaic_uri) as src:
        scene = {"crs": str(src.crs), "transform": tuple(src.transform)[:6], "width": src.width, "height": src.height}
    build_vectors(mosaic_uri, out_uri, scene)
    fc = json.loads(storage.get_bytes(out_uri))
    fc["name"] = "referring"
    area_m2 = 0.0
    with open_raster(mosaic_uri) as src:
        for feat in fc["features"]:
            props = feat.setdefault("properties", {})
            area_m2 += float(props.get("area_m2", 0.0))
            props.update({"class": "referred", "query": query, "method": "danet"})
            props["score"] = polygon_score(src, feat["geometry"])
    storage.put_bytes(out_uri, json.dumps(fc).encode())
    return {"vectors": out_uri, "polygons": len(fc["features"]), "area_km2": area_m2 / 1e6}


def scene_referring_vectors(scene: dict[str, Any], result: dict[str, Any], *, query: str) -> dict[str, Any]:
    """The per-scene product DANet adds (runs in the scene's products task): `referring.geojson`."""
    if "mosaic" not in result:
        return {}
    out = referring_vectors(result["mosaic"], storage.join(str(scene["prefix"]), VECTORS), query)
    return {"referring_vectors": out["vectors"], "polygons": out["polygons"], "referred_km2": out["area_km2"]}


def prepare(cfg: Any, scenes: list[SceneRef]) -> TaskRun:
    """Checks (checkpoint kind, query), the run config derived from the user's, the run id; see the module
    docstring."""
    if not cfg.referring.danet:
        raise ConfigError(
            "config error: key 'referring.danet': a DANet checkpoint is required for method 'danet' (train one "
            "with `rrsis train --config configs/train/danet_tiny.yaml`, or danet_rrsisd.yaml on RRSIS-D)"
        )
    ckpt = load_checkpoint(cfg.referring.danet)
    if ckpt.model_name != "danet":
        raise ConfigError(f"config error: key 'referring.danet': a DANet checkpoint, not {ckpt.model_name!r}")
    query = danet_query(cfg, ckpt.model_config)
    run_cfg = copy.deepcopy(cfg)
    run_cfg.run_id = danet_run_id(cfg, [s.uri for s in scenes])
    run_cfg.infer.checkpoint = cfg.referring.danet
    run_cfg.outputs.probability = True  # band 2 = P: the polygon scores are read from it
    run_cfg.outputs.vectors = False  # polygons come from `referring_vectors`, with the query on them
    run_cfg.query = query
    model, model_bands, in_bands = model_info(run_cfg.infer.checkpoint)
    plan = plan_args(run_cfg, storage.join(cfg.output, run_cfg.run_id), model_bands, in_bands)
    extra = (scene_referring_vectors, {"query": query}) if cfg.outputs.vectors else None
    spec = TileSpec(
        run_cfg,
        model,
        plan,
        target="referred",
        infer=(DanetInferStage, {"query": query, "value_max": cfg.referring.value_max}),
        extra_products=extra,
        dedicated_cores=False,
    )
    return TaskRun(run_cfg.run_id, functools.partial(run_tiles, spec=spec))
