"""Stages of the `boxes` map task (issue 7 item 5): box groups -> CFPG -> SAM -> MBO -> masks + polygons.

`resume_stage` (groups of an earlier attempt that verify, `verify_boxes_stage`, become `skipped`) -> read (the
shared `read_stage`, window of each box group) -> `prompt_stage` (CPU: tile to RGB uint8, CFPG points when
enabled, so the point prompt feeds SAM) -> `SamBoxStage` (actor, GPU when present: embed the window once,
decode every box of the group) -> `mbo_stage` (CPU: GrabCut per box) -> `write_boxes_stage` (the pipeline
runs resume + read + CFPG and MBO + write as one CPU task each: `read_prompt_stage`, `mbo_write_stage`)
(one GeoTIFF of the group's window, one GeoJSON with a polygon per box carrying its `box_id`, then a JSON
sidecar with both checksums and the per-box results, which `verify_boxes_stage` checks on resume). A row
that is not `ok` (failed upstream, or `skipped`) passes every stage without being prompted, segmented,
refined or written.
Rows are box groups (`box_plan.plan_box_groups`): each box is segmented by exactly one row, seeing the
whole box, so a box across a tile border yields one mask. Every stage is a plain callable over
`dict[str, np.ndarray]` batches, tested without Ray; per-box lists travel as JSON text columns.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from typing import Any

import numpy as np
import rasterio.features
from affine import Affine

from rrsis import storage
from rrsis.errors import RrsisError, StorageError
from rrsis.geo.raster import encode_geotiff
from rrsis.geo.tiling import Tile
from rrsis.models.sam.config import SamConfig
from rrsis.pipeline.box_plan import BoxGroup
from rrsis.pipeline.plan import sidecar_key
from rrsis.pipeline.stages import read_stage, verify_stage
from rrsis.refine.cfpg import cfpg_points
from rrsis.refine.config import CfpgConfig, MboConfig
from rrsis.refine.mbo import mbo_refine
from rrsis.resources import release_freed_memory

Batch = dict[str, np.ndarray]
NODATA = 255
PIXELS = ("image", "valid", "rgb", "box_masks")


def sam_config_from_dict(d: dict[str, Any]) -> SamConfig:
    """Rebuild the nested SamConfig shipped to actors as a plain dict (`dataclasses.asdict`)."""
    flat = {k: v for k, v in d.items() if k not in ("cfpg", "mbo")}
    return SamConfig(**flat, cfpg=CfpgConfig(**d.get("cfpg", {})), mbo=MboConfig(**d.get("mbo", {})))


def group_row(group: BoxGroup, scene_uri: str, bands: str, prefix: str) -> dict[str, Any]:
    """A box group as a plain-data row: the (shifted) tile window plus its boxes in window pixels."""
    row = group.tile.to_row()
    row.update(
        scene_uri=scene_uri,
        bands=bands,
        key=storage.join(prefix, "boxes", f"{group.group_id}.tif"),
        group_id=group.group_id,
        box_ids=json.dumps([b.box_id for b in group.boxes]),
        boxes=json.dumps(group.boxes_in_window().tolist()),
    )
    return row


def to_rgb(image: np.ndarray, value_max: float) -> np.ndarray:
    """(C, H, W) float -> (H, W, 3) uint8 with a fixed scene-wide scale (never the tile's own min/max)."""
    rgb = image[:3] if image.shape[0] >= 3 else np.repeat(image[:1], 3, axis=0)
    return np.clip(rgb.transpose(1, 2, 0) * (255.0 / value_max), 0, 255).round().astype(np.uint8)


def ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """An object column of arrays whose first dimension differs per row."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


@functools.cache
def limit_threads(n: int) -> None:
    """At most `n` threads for OpenCV (GrabCut, watershed) in this worker process.

    A CPU stage holds `n` CPUs; more threads only contend with the SAM actor on the same cores (when CFPG
    clustered with scikit-learn, its default OpenMP team made CFPG ~30x slower per box on a loaded 2-core
    machine; `rrsis.refine.kmeans` is plain numpy and starts no threads). Once per process (cached): Ray
    reuses worker processes.
    """
    import cv2

    cv2.setNumThreads(n)


def _boxes(batch: Batch, i: int) -> np.ndarray:
    return np.asarray(json.loads(str(batch["boxes"][i])), dtype=np.float64).reshape(-1, 4)


def prompt_stage(batch: Batch, *, cfpg: dict[str, Any], value_max: float = 255.0, threads: int = 1) -> Batch:
    """`image` -> `rgb` (B, H, W, 3) uint8, and CFPG `points` (JSON, null = no point) with `cfpg_reasons`."""
    start = time.perf_counter()
    limit_threads(threads)
    cfg = CfpgConfig(**cfpg)
    rgb = np.stack([to_rgb(img, value_max) for img in batch["image"]])
    points, reasons = [], []
    status = _row_status(batch)
    for i in range(len(rgb)):
        boxes = _boxes(batch, i)
        if status[i] != "ok":  # failed upstream, or verified from an earlier attempt: nothing to prompt
            points.append([None] * len(boxes))
            reasons.append([str(status[i])] * len(boxes))
        elif cfg.enabled and len(boxes):
            pts, results = cfpg_points(rgb[i], boxes, cfg, batch["valid"][i])
            points.append([None if np.isnan(p).any() else p.tolist() for p in pts])
            reasons.append([r.reason for r in results])
        else:
            points.append([None] * len(boxes))
            reasons.append(["disabled"] * len(boxes))
    out = {k: v for k, v in batch.items() if k != "image"}
    out.update(rgb=rgb, points=np.array([json.dumps(p) for p in points]))
    out["cfpg_reasons"] = np.array([json.dumps(r) for r in reasons])
    out["cfpg_s"] = np.full(len(rgb), (time.perf_counter() - start) / max(len(rgb), 1))
    return out


def trim_after_block(module: Any, inputs: Any, output: Any) -> None:
    """A forward hook of the SAM actor's image-encoder blocks on a CPU: give the heap's free pages back after
    each block. A block allocates and frees ~100 MB in pieces of many sizes and glibc's heap grew well past
    the live peak: ViT-B at 1024 px, 3 windows, the actor's resident peak was 1390-1425 MB without and
    1331-1344 MB with it, forward time unchanged within the run-to-run noise (making large blocks mmaps instead,
    `MALLOC_MMAP_THRESHOLD_` 4 MB, cost +25 %)."""
    release_freed_memory()


class SamBoxStage:
    """Holds SAM (loaded once per actor); per row: embed the window once, decode all its box prompts."""

    def __init__(
        self,
        sam: dict[str, Any],
        checkpoint: str = "",
        decoder_checkpoint: str = "",
        device: str = "cpu",
        torch_threads: int = 0,
    ) -> None:
        # torch and SAM are imported in the SAM actor only (the CPU stages import this module too)
        import torch

        from rrsis.devices import resolve_device
        from rrsis.models.sam.predictor import SamTilePredictor

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        device = str(resolve_device(device, key="infer.device"))
        cfg = sam_config_from_dict(sam)
        self.predictor = SamTilePredictor.from_config(cfg, checkpoint or None, decoder_checkpoint or None, device)
        if self.predictor.device.type == "cpu":  # (a GPU's caching allocator keeps its own memory)
            for block in self.predictor.sam.image_encoder.blocks:
                block.register_forward_hook(trim_after_block)

    def __call__(self, batch: Batch) -> Batch:
        start = time.perf_counter()
        masks, scores = [], []
        status = _row_status(batch)
        for i in range(len(batch["rgb"])):
            boxes = _boxes(batch, i)
            if status[i] != "ok":  # no embedding for a row that failed or was verified
                masks.append(np.zeros((len(boxes), *batch["rgb"][i].shape[:2]), dtype=np.uint8))
                scores.append([0.0] * len(boxes))
                continue
            pts = [p if p is not None else [np.nan, np.nan] for p in json.loads(str(batch["points"][i]))]
            self.predictor.set_image(batch["rgb"][i], key=str(batch["group_id"][i]))
            m, s = self.predictor.predict(boxes, np.array(pts, dtype=np.float64).reshape(-1, 2))
            masks.append(m.astype(np.uint8))
            scores.append(s.tolist())
        out = dict(batch)
        out["box_masks"] = ragged(masks)  # K boxes per row, K varies
        out["scores"] = np.array([json.dumps(s) for s in scores])
        out["sam_s"] = np.full(len(masks), (time.perf_counter() - start) / max(len(masks), 1))
        return out


def mbo_stage(batch: Batch, *, mbo: dict[str, Any], threads: int = 1) -> Batch:
    """GrabCut-refine every box mask on a window around its box (`enabled: false` passes masks through)."""
    start = time.perf_counter()
    limit_threads(threads)
    cfg = MboConfig(**mbo)
    refined, rounds = [], []
    status = _row_status(batch)
    for i in range(len(batch["rgb"])):
        masks = np.asarray(batch["box_masks"][i]).astype(bool)
        valid = batch["valid"][i]
        out_i, r_i = [], []
        for mask, box in zip(masks, _boxes(batch, i), strict=True):
            if cfg.enabled and status[i] == "ok":
                res = mbo_refine(batch["rgb"][i], mask & valid, box, cfg, valid)
                out_i.append(res.mask)
                r_i.append(res.iterations)
            else:
                out_i.append(mask & valid)
                r_i.append(0)
        refined.append(np.array(out_i, dtype=np.uint8).reshape(masks.shape))
        rounds.append(r_i)
    out = dict(batch)
    out["box_masks"] = ragged(refined)
    out["mbo_iterations"] = np.array([json.dumps(r) for r in rounds])
    out["mbo_s"] = np.full(len(refined), (time.perf_counter() - start) / max(len(refined), 1))
    return out


def box_polygon(mask: np.ndarray, transform: tuple[float, ...]) -> dict[str, Any] | None:
    """All parts of one box's mask as one GeoJSON MultiPolygon in the scene CRS (None if empty)."""
    polys = [
        geom["coordinates"]
        for geom, value in rasterio.features.shapes(
            mask.astype(np.uint8), mask=mask.astype(bool), connectivity=4, transform=Affine(*transform[:6])
        )
        if int(value) == 1
    ]
    return {"type": "MultiPolygon", "coordinates": polys} if polys else None


def write_boxes_stage(batch: Batch) -> Batch:
    """Per row: the window's mask (union of its boxes; 255 = nodata), a GeoJSON of one polygon per box, and
    last the sidecar (so a crash mid-write leaves no sidecar and the group is recomputed on resume).

    A row that failed upstream (e.g. its read) keeps `status="failed"` and its reason and writes nothing, as
    does a row verified from an earlier attempt (`skipped`). `checksum`: the SHA-256 of a written mask tile.
    """
    start = time.perf_counter()
    n = len(batch["rgb"])
    status = _row_status(batch)
    reason = np.asarray(batch["reason"], dtype=object) if "reason" in batch else np.full(n, "", dtype=object)
    box_px, checksums = [], []
    for i in range(n):
        masks = np.asarray(batch["box_masks"][i]).astype(bool)
        areas = [int(m.sum()) for m in masks]
        box_px.append(json.dumps(areas))
        checksums.append("")
        if status[i] != "ok":
            continue
        try:
            checksums[i] = _write_group(batch, i, masks, areas)
            status[i] = "written"
        except RrsisError as exc:
            status[i], reason[i] = "failed", f"write: {exc}"
    meta = {k: v for k, v in batch.items() if k not in PIXELS}
    meta.update(status=status.astype(str), reason=reason.astype(str), box_px=np.array(box_px))
    meta["checksum"] = np.array(checksums)
    meta["write_s"] = np.full(n, (time.perf_counter() - start) / max(n, 1))
    return meta


def read_prompt_stage(batch: Batch, **prompt: Any) -> Batch:
    """resume check + read + CFPG in one CPU task: per window one task before SAM instead of three.

    Both CPU tasks give their freed heap back before they return: their worker then waits, often for a
    whole SAM forward, without holding a window's intermediate arrays (`release_freed_memory`)."""
    out = prompt_stage(read_stage(resume_stage(batch)), **prompt)
    release_freed_memory()
    return out


def mbo_write_stage(batch: Batch, **mbo: Any) -> Batch:
    """MBO + write in one CPU task after SAM."""
    out = write_boxes_stage(mbo_stage(batch, **mbo))
    release_freed_memory()
    return out


def geojson_key(key: str) -> str:
    """The per-box polygons of a group, beside its mask tile."""
    return key[: -len(".tif")] + ".geojson"


# What the sidecar keeps of a written row, so a resumed run's manifest is complete without recomputing.
SIDECAR_META = ("box_ids", "scores", "cfpg_reasons", "mbo_iterations", "cfpg_s", "sam_s", "mbo_s")


def _write_group(batch: Batch, i: int, masks: np.ndarray, areas: list[int]) -> str:
    """Write one group's mask tile, GeoJSON and (last) sidecar; returns the mask tile's SHA-256."""
    tile = Tile.from_row({k: v[i] for k, v in batch.items() if k not in PIXELS})
    union = masks.any(axis=0) if len(masks) else np.zeros(batch["valid"][i].shape, bool)
    pixels = np.where(batch["valid"][i], union.astype(np.uint8), NODATA).astype(np.uint8)
    key = str(batch["key"][i])
    tif = encode_geotiff(pixels, tile.transform, tile.crs, nodata=NODATA)
    ids = json.loads(str(batch["box_ids"][i]))
    scores = json.loads(str(batch["scores"][i]))
    reasons = json.loads(str(batch["cfpg_reasons"][i]))
    features: list[dict[str, Any]] = []
    for k, box_id in enumerate(ids):
        props = {"box_id": box_id, "score": round(float(scores[k]), 4), "cfpg": reasons[k], "area_px": areas[k]}
        features.append({"type": "Feature", "properties": props, "geometry": box_polygon(masks[k], tile.transform)})
    doc = {"type": "FeatureCollection", "features": features}
    vectors = json.dumps(doc, separators=(",", ":")).encode()
    storage.put_bytes(key, tif)
    storage.put_bytes(geojson_key(key), vectors)
    meta: dict[str, Any] = {k: _plain(batch[k][i]) for k in SIDECAR_META if k in batch}
    record = {
        "checksum": hashlib.sha256(tif).hexdigest(),
        "bytes": len(tif),
        "geojson_checksum": hashlib.sha256(vectors).hexdigest(),
        "inputs_sha": str(batch["inputs_sha"][i]) if "inputs_sha" in batch else "",
        "meta": {**meta, "box_px": json.dumps(areas)},
    }
    storage.put_bytes(sidecar_key(key), json.dumps(record, sort_keys=True).encode())
    return str(record["checksum"])


def _row_status(batch: Batch) -> np.ndarray:
    n = len(batch["key"])
    return np.asarray(batch["status"], dtype=object).copy() if "status" in batch else np.full(n, "ok", dtype=object)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def verify_boxes_stage(batch: Batch) -> Batch:
    """Resume check of group rows: `done` when the mask tile verifies against its sidecar (the map task's
    `verify_stage`), the GeoJSON's SHA-256 matches too, and the sidecar was written for the same inputs
    (window, boxes, SAM and refinement settings: `inputs_sha`). `sidecar_meta` carries the recorded
    per-box results (JSON) of a done row, `checksum` its mask tile's SHA-256.
    """
    done = np.asarray(verify_stage(batch)["done"], dtype=bool).copy()
    meta, checksums = [], []
    for i in range(len(done)):
        text, checksum = "", ""
        if done[i]:
            key = str(batch["key"][i])
            try:
                record = json.loads(storage.get_bytes(sidecar_key(key)))
                vectors = hashlib.sha256(storage.get_bytes(geojson_key(key))).hexdigest()
                same_inputs = record.get("inputs_sha") == str(batch["inputs_sha"][i])
                done[i] = vectors == record["geojson_checksum"] and same_inputs
                text = json.dumps(record["meta"]) if done[i] else ""
                checksum = str(record["checksum"]) if done[i] else ""
            except (StorageError, ValueError, KeyError):
                done[i] = False
        meta.append(text)
        checksums.append(checksum)
    out = dict(batch)
    out.update(done=done, sidecar_meta=np.array(meta), checksum=np.array(checksums))
    return out


def resume_stage(batch: Batch) -> Batch:
    """Rows flagged `resume` (their group has a sidecar from an earlier attempt of the run) that verify
    (`verify_boxes_stage`) become `skipped`, with the recorded per-box results and the mask tile's checksum in
    `sidecar_meta` (JSON); they are not read, prompted, segmented or written again."""
    n = len(batch["key"])
    status = _row_status(batch)
    meta = np.full(n, "", dtype=object)
    flagged = np.flatnonzero(np.asarray(batch.get("resume", np.zeros(n, bool)), dtype=bool) & (status == "ok"))
    if len(flagged):
        checked = verify_boxes_stage({k: np.asarray(v)[flagged] for k, v in batch.items()})
        for j, i in enumerate(flagged):
            if checked["done"][j]:
                status[i] = "skipped"
                recorded = json.loads(str(checked["sidecar_meta"][j]))
                meta[i] = json.dumps({**recorded, "checksum": str(checked["checksum"][j])})
    out = dict(batch)
    out.update(status=status.astype(str), sidecar_meta=meta.astype(str))
    if "reason" not in out:
        out["reason"] = np.full(n, "")
    return out


def sam_options(cfg: SamConfig, precision: str = "") -> dict[str, Any]:
    """The plain dict a `SamBoxStage` actor is built from; `precision` (`infer.precision`) replaces the SAM
    config's own when given."""
    return dataclasses.asdict(dataclasses.replace(cfg, precision=precision) if precision else cfg)
