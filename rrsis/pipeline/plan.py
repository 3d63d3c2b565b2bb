"""The driver's half of a map run: open scene metadata only and turn every scene into tile rows.

A tile row is plain data (`Tile.to_row()` plus the scene URI, the 1-based band list and the output key), so
the Ray dataset built from rows carries no pixels: every worker reads its own window from the scene URI.
A scene that cannot be mapped (missing, corrupt, truncated, no CRS, wrong band count) becomes a failure row
here and never reaches Ray.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rrsis import storage
from rrsis.errors import ConfigError, InputError, RrsisError
from rrsis.geo.raster import RasterInfo, read_info, resolve_bands, scene_label
from rrsis.geo.tiling import plan_tiles
from rrsis.pipeline.inputs import SceneRef
from rrsis.storage.uri import local_path


def derive_run_id(kind: str, explicit: str, decisive: dict[str, Any]) -> str:
    """`explicit` (the config's `run_id`), or `<kind>-<12 hex>` hashed from what decides the outputs, so a rerun
    of the same inputs, model and settings lands in the same folder and resumes. Every map task names its run
    folder here."""
    if explicit:
        return str(explicit)
    digest = hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()
    return f"{kind}-{digest[:12]}"


def sha256_of(uri: str, chunk_bytes: int = 1 << 24) -> str:
    """SHA-256 of an object's bytes (local files streamed)."""
    digest = hashlib.sha256()
    if storage.is_remote(uri):
        digest.update(storage.get_bytes(uri))
    else:
        with open(local_path(uri), "rb") as f:
            while chunk := f.read(chunk_bytes):
                digest.update(chunk)
    return digest.hexdigest()


def content_tag(uri: str) -> str:
    """First 12 hex of the SHA-256 of a file's bytes: outputs follow the weights, not the path, so a
    checkpoint retrained in place never resumes the old model's tiles."""
    return sha256_of(uri)[:12]


@dataclass(frozen=True)
class ScenePlan:
    """A scene that passed the metadata checks, with where its outputs go."""

    scene_id: str
    uri: str
    info: RasterInfo
    bands: tuple[int, ...]
    prefix: str  # output_uri/run_id/scene_id
    tile_count: int


@dataclass(frozen=True)
class Failure:
    """One row of failures.parquet: a scene (tile_id empty) or a tile that could not be mapped."""

    scene_id: str
    scene_uri: str
    tile_id: str
    stage: str
    reason: str

    def to_row(self) -> dict[str, str]:
        return {
            "scene_id": self.scene_id,
            "scene_uri": self.scene_uri,
            "tile_id": self.tile_id,
            "stage": self.stage,
            "reason": self.reason,
        }


def tile_key(prefix: str, tile_id: str) -> str:
    """Deterministic output key of one mask tile: output_uri/run_id/<scene_id>/tiles/<tile_id>.tif."""
    return storage.join(prefix, "tiles", f"{tile_id}.tif")


def sidecar_key(key: str) -> str:
    """The small JSON written after a tile: its checksum, used to verify the tile on resume."""
    return f"{key}.json"


def choose_bands(
    info: RasterInfo, requested: Sequence[str], model_bands: Sequence[str], in_bands: int, first_bands: int = 0
) -> list[int]:
    """1-based bands for a scene: `requested` if given, else the model's band names, else all bands. With
    `first_bands` (an RGB model that takes any band count from 1 to `first_bands`, so `in_bands` is not
    checked): `requested` if given, else the scene's first `first_bands` bands.

    Model band names that the file does not carry as descriptions fall back to bands 1..n when the file has
    exactly as many bands as the model needs (many GeoTIFFs have no band descriptions).
    """
    if first_bands and not requested and not model_bands:
        return resolve_bands(info, list(range(1, min(first_bands, info.count) + 1)))
    if requested:
        bands = resolve_bands(info, list(requested))
    elif model_bands:
        try:
            bands = resolve_bands(info, list(model_bands))
        except InputError:
            if info.count != len(model_bands):
                raise InputError(
                    f"scene {scene_label(info.uri)} has {info.count} bands; the model needs {len(model_bands)} "
                    f"({', '.join(model_bands)}): set `bands` to choose them"
                ) from None
            bands = list(range(1, info.count + 1))
    else:
        bands = resolve_bands(info, [])
    if len(bands) != in_bands and not first_bands:
        raise InputError(
            f"scene {scene_label(info.uri)}: {len(bands)} band(s) selected ({bands}) but the model takes {in_bands}"
        )
    return bands


def scene_info(uri: str) -> RasterInfo:
    """A scene's metadata with the checks every task needs (readable, georeferenced); InputError otherwise."""
    info = read_info(uri)
    if not info.crs:
        raise InputError(f"scene {scene_label(uri)} has no CRS: outputs could not be georeferenced")
    return info


def plan_scene(
    scene: SceneRef,
    run_prefix: str,
    *,
    tile_px: int,
    overlap_px: int,
    requested_bands: Sequence[str],
    model_bands: Sequence[str],
    in_bands: int,
    first_bands: int = 0,
) -> tuple[ScenePlan, list[dict[str, Any]]]:
    """Metadata checks and tile rows of one scene; InputError (one line naming the file) when unusable."""
    info = scene_info(scene.uri)
    bands = choose_bands(info, requested_bands, model_bands, in_bands, first_bands)
    prefix = storage.join(run_prefix, scene.scene_id)
    try:
        tiles = plan_tiles(
            info.width,
            info.height,
            tile_px,
            overlap_px,
            scene_id=scene.scene_id,
            scene_transform=info.transform,
            crs=info.crs,
        )
    except ConfigError as exc:
        raise InputError(f"scene {scene_label(scene.uri)}: {exc}") from exc
    band_text = ",".join(str(b) for b in bands)
    rows = []
    for tile in tiles:
        row = tile.to_row()
        row["scene_uri"] = scene.uri
        row["bands"] = band_text
        row["key"] = tile_key(prefix, tile.tile_id)
        rows.append(row)
    plan = ScenePlan(scene.scene_id, scene.uri, info, tuple(bands), prefix, len(rows))
    return plan, rows


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(exc: BaseException) -> str:
    """An exception as one plain line (no terminal colour codes): its first line, the class named when it is
    not one of ours."""
    text = (ANSI.sub("", str(exc)).strip().splitlines() or [""])[0]
    return text if isinstance(exc, RrsisError) else f"{type(exc).__name__}: {text}".rstrip(": ")


@dataclass(frozen=True)
class PlanArgs:
    """How every scene of a tile run becomes tile rows (plain data: it travels to the planning tasks)."""

    run_prefix: str
    tile_px: int
    overlap_px: int
    requested_bands: tuple[str, ...]
    model_bands: tuple[str, ...]
    in_bands: int
    first_bands: int = 0  # no bands requested nor named by the model: the scene's first (`choose_bands`)


def scene_row(scene: SceneRef, verify: bool) -> dict[str, Any]:
    """What enters Ray Data for one scene: its id, URI, and whether its tiles may exist from before."""
    return {"scene_id": scene.scene_id, "scene_uri": scene.uri, "verify": verify}


def expand_scene(row: dict[str, Any], *, plan: PlanArgs) -> list[dict[str, Any]]:
    """One scene row -> its tile rows, on a Ray worker: metadata checks, the tiling, and (`verify`) one
    listing of the scene's tiles so that tiles with a sidecar from an earlier attempt are verified, not read.

    Every row carries the scene's grid (`scene_width`, `scene_height`, `scene_transform_a..f`; a tile's own
    `transform_*` is its window's) and tile count (`scene_tiles`), so the driver learns a scene from whichever
    of its tiles comes first and knows when it has them all. An unusable scene becomes a
    single row with an empty `tile_id`, `status` failed and the reason: the other scenes go on.
    """
    scene = SceneRef(str(row["scene_id"]), str(row["scene_uri"]))
    try:
        scene_plan, rows = plan_scene(
            scene,
            plan.run_prefix,
            tile_px=plan.tile_px,
            overlap_px=plan.overlap_px,
            requested_bands=plan.requested_bands,
            model_bands=plan.model_bands,
            in_bands=plan.in_bands,
            first_bands=plan.first_bands,
        )
        existing: set[str] = set()
        if row.get("verify"):
            existing = set(storage.list_prefix(storage.join(scene_plan.prefix, "tiles") + "/"))
    except Exception as exc:  # any unusable scene is a failure row; the run goes on
        return [failure_row(scene, one_line(exc), plan.tile_px)]
    info = scene_plan.info
    grid = {f"scene_transform_{k}": float(v) for k, v in zip("abcdef", info.transform[:6], strict=True)}
    for r in rows:
        r.update(
            grid,
            scene_tiles=len(rows),
            scene_width=info.width,
            scene_height=info.height,
            status="ok",
            reason="",
            verify=sidecar_key(r["key"]) in existing,
        )
    return rows


def failure_row(scene: SceneRef, reason: str, tile_px: int) -> dict[str, Any]:
    """A scene that could not be planned, shaped like a tile row (empty `tile_id`) so it flows through the
    stages untouched (status failed) to the driver, which records it in failures.parquet."""
    row: dict[str, Any] = {"scene_id": scene.scene_id, "row": 0, "col": 0, "tile_id": ""}
    for name in ("win", "core"):
        row.update({f"{name}_col_off": 0, f"{name}_row_off": 0, f"{name}_width": tile_px, f"{name}_height": tile_px})
    for name in ("transform", "scene_transform"):
        row.update({f"{name}_{k}": v for k, v in zip("abcdef", (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), strict=True)})
    row.update(crs="", scene_uri=scene.uri, bands="1", key="", scene_tiles=0, scene_width=0, scene_height=0)
    row.update(status="failed", reason=reason, verify=False)
    return row


def plan_run(
    scenes: Sequence[SceneRef],
    run_prefix: str,
    *,
    tile_px: int,
    overlap_px: int,
    requested_bands: Sequence[str],
    model_bands: Sequence[str],
    in_bands: int,
) -> tuple[list[ScenePlan], list[dict[str, Any]], list[Failure]]:
    """Plan every scene on the caller's side; bad scenes become `Failure`s (stage "plan") and the rest go on.
    (The map driver plans inside Ray instead, `expand_scene`; this serves benchmarks and tests.)"""
    plans: list[ScenePlan] = []
    rows: list[dict[str, Any]] = []
    failures: list[Failure] = []
    for scene in scenes:
        try:
            plan, scene_rows = plan_scene(
                scene,
                run_prefix,
                tile_px=tile_px,
                overlap_px=overlap_px,
                requested_bands=requested_bands,
                model_bands=model_bands,
                in_bands=in_bands,
            )
        except InputError as exc:
            failures.append(Failure(scene.scene_id, scene.uri, "", "plan", str(exc)))
            continue
        plans.append(plan)
        rows.extend(scene_rows)
    return plans, rows, failures
