"""The streaming executor of the tile tasks (water-land, referring with DANet): scenes in, commits out.

Scenes go through Ray Data in waves of `wave_scenes`, one dataset execution each: Ray Data's executor keeps
statistics of every block it ever produced until its execution ends (`MapOperator._output_blocks_stats`),
which made one execution's driver grow with the tile count (bench/map_scale: 414 MB at 10 k tiles, 691 MB
at 200 k). A wave starts its own actor pool (seconds per wave: the model loads again).

Only scene rows enter Ray Data; each scene expands into its tile rows on a worker (`plan.expand_scene`).
Results stream back to the driver, which keeps per scene only the manifest rows of the scenes in flight
(`SceneTracker`): once a scene's last tile is out its products start (a Ray task, overlapping the next
scenes' inference), and once they are done the scene is committed (`rrsis.pipeline.commit`) and forgotten.
A rerun skips committed scenes without touching their tiles and verifies tiles only of scenes that were in
flight. The run's `manifest.parquet`, `failures.parquet` and `summary.json` are built from the commits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import ray

from rrsis import storage
from rrsis.config.map import MapConfig
from rrsis.errors import RrsisError
from rrsis.geo.raster import read_info
from rrsis.pipeline import cores
from rrsis.pipeline.build import (
    background_task,
    cluster_cpus,
    cluster_gpus,
    map_dataset,
    products_task,
    resources_for,
)
from rrsis.pipeline.commit import (
    commit_scene,
    committed_scenes,
    part_key,
    prefetched,
    read_record,
    write_run_manifest,
)
from rrsis.pipeline.context import RunContext, finish_run
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.manifest import MANIFEST_SCHEMA, conform_table, table_bytes
from rrsis.pipeline.plan import Failure, PlanArgs, choose_bands, one_line, scene_row
from rrsis.pipeline.scene_inputs import SceneKey
from rrsis.pipeline.stages import STORAGE_ERRNOS
from rrsis.session import EMBEDDED_MIN_CPUS, connect_ray

log = logging.getLogger("rrsis.map")


@dataclass(frozen=True)
class TileSpec:
    """What a tile task adds to the shared executor."""

    cfg: MapConfig  # the run's config (a task may derive it from the user's, e.g. DANet's checkpoint)
    model: str  # the checkpoint's content tag, name@sha256 (in the manifest and the sidecars)
    plan: PlanArgs
    target: str  # what class 1 of the masks is: "water" or "referred"
    infer: tuple[Any, dict[str, Any]] | None = None  # another per-tile model stage (DANet)
    extra_products: tuple[Callable[..., dict[str, Any]], dict[str, Any]] | None = None  # per scene, after products
    dedicated_cores: bool = True  # may reserve cores for the inference actors (embedded Ray, no GPU)


@dataclass
class OpenScene:
    """A scene with tiles in flight: its grid (from its first tile row) and its manifest rows so far."""

    record: dict[str, Any]
    expected: int
    tiles: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> manifest row (last attempt wins)


def scene_from_row(row: dict[str, Any], run_prefix: str) -> dict[str, Any]:
    """The plain-data scene record that products need, from any of the scene's tile rows."""
    scene_id = str(row["scene_id"])
    return {
        "scene_id": scene_id,
        "uri": str(row["scene_uri"]),
        "prefix": storage.join(run_prefix, scene_id),
        "width": int(row["scene_width"]),
        "height": int(row["scene_height"]),
        "crs": str(row["crs"]),
        "transform": tuple(float(row[f"scene_transform_{k}"]) for k in "abcdef"),  # the scene's, not the tile's
        "bands": [int(b) for b in str(row["bands"]).split(",")],
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class SceneTracker:
    """The driver's per-scene state while results stream in; memory follows the scenes in flight.

    `add` takes each result row; a scene's products task starts when its last tile is out; `poll` commits
    the scenes whose products are done; `finish` waits for the rest. A scene with failed or all-nodata tiles
    gets failures (and its manifest part) instead of products and a commit, so a rerun retries it.
    """

    def __init__(
        self,
        run_prefix: str,
        spec: TileSpec,
        scene_ids: list[str],
        on_last: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_last` runs before the last scene's products start (every forward is done by then)."""
        self.run_prefix, self.spec, self.on_last = run_prefix, spec, on_last
        self.outputs = asdict(spec.cfg.outputs)
        self.num_cpus = spec.cfg.products_num_cpus
        self.unresolved = set(scene_ids)  # scenes whose tiles are not all out yet
        self.open: dict[str, OpenScene] = {}
        self.backgrounds: dict[str, Any] = {}
        self.pending: dict[str, tuple[dict[str, Any], list[dict[str, Any]], Any]] = {}
        self.records: dict[str, dict[str, Any]] = {}  # this run's commit records (counts and products)
        self.failures: list[Failure] = []
        self.tiles_verified = 0
        self.before = 0  # scenes committed before this run

    def add(self, row: dict[str, Any]) -> None:
        scene_id = str(row["scene_id"])
        if not str(row["tile_id"]):  # the scene could not be planned
            self.failures.append(Failure(scene_id, str(row["scene_uri"]), "", "plan", str(row["reason"])))
            self._resolved(scene_id)
            return
        if int(row.get("write_errno", 0)) in STORAGE_ERRNOS:  # the output takes no more writes: stop here
            raise OutputWriteError(f"{row['reason']}; {self.kept()}")
        scene = self.open.get(scene_id)
        if scene is None:
            scene = self.open[scene_id] = OpenScene(scene_from_row(row, self.run_prefix), int(row["scene_tiles"]))
            if self.outputs.get("quicklook"):  # the scene is under way: read its quicklook background now
                self.backgrounds[scene_id] = background_task(scene.record, self.num_cpus)
        tile = {name: _plain(row[name]) for name in MANIFEST_SCHEMA.names if name in row}
        tile["model"] = self.spec.model
        self.tiles_verified += tile["status"] == "skipped"
        scene.tiles[str(tile["key"])] = tile
        if len(scene.tiles) == scene.expected:
            self._tiles_done(self.open.pop(scene_id))

    def kept(self) -> str:
        return (f"kept {len(self.records) + self.before} committed scenes in {self.run_prefix}: rerun the same "
                "command to resume once the output takes writes")  # fmt: skip

    def _tiles_done(self, scene: OpenScene) -> None:
        record = scene.record
        tiles = conform_table(scene.tiles.values()).to_pylist()
        bad = [t for t in tiles if t["status"] == "failed"]
        failure = ""
        if bad:
            self.failures.extend(
                Failure(record["scene_id"], record["uri"], str(t["tile_id"]), "tile", str(t["reason"])) for t in bad
            )
            failure = f"{len(bad)} of {len(tiles)} tiles failed"
            self.failures.append(Failure(record["scene_id"], record["uri"], "", "tiles", failure))
        elif sum(int(t["valid_px"]) for t in tiles) == 0:
            failure = f"scene {record['uri']} is all nodata"
            self.failures.append(Failure(record["scene_id"], record["uri"], "", "stats", failure))
        background = self.backgrounds.pop(record["scene_id"], None)
        self._resolved(record["scene_id"])
        if failure:  # its manifest part (the run manifest lists every tile), but no commit: a rerun retries it
            self._uncommitted_part(record, tiles)
            return
        extra = self.spec.extra_products
        ref = products_task(record, tiles, self.outputs, background, self.num_cpus, extra)
        self.pending[record["scene_id"]] = (record, tiles, ref)

    def _uncommitted_part(self, scene: dict[str, Any], tiles: list[dict[str, Any]]) -> None:
        """A failed scene's manifest part (the run manifest lists every tile) without a commit record."""
        storage.put_bytes(part_key(self.run_prefix, scene["scene_id"]), table_bytes(conform_table(tiles)))

    def _resolved(self, scene_id: str) -> None:
        self.unresolved.discard(scene_id)
        if not self.unresolved:
            self.on_last()

    def poll(self, wait: bool = False) -> None:
        """Commit every scene whose products are done (all of them, waiting, with `wait`)."""
        while self.pending:
            refs = [ref for _, _, ref in self.pending.values()]
            ready, _ = ray.wait(refs, num_returns=len(refs) if wait else 1, timeout=None if wait else 0)
            if not ready:
                return
            done = set(ready)
            for scene_id, (record, tiles, ref) in list(self.pending.items()):
                if ref in done:
                    del self.pending[scene_id]
                    self._commit(record, tiles, ref)
            if not wait:
                return

    def _commit(self, scene: dict[str, Any], tiles: list[dict[str, Any]], ref: Any) -> None:
        try:
            result = ray.get(ref)
        except Exception as exc:  # a products task failing must not lose the other scenes
            reason = one_line(exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause else exc)
            self.failures.append(Failure(scene["scene_id"], scene["uri"], "", "products", reason))
            self._uncommitted_part(scene, tiles)
            return
        self.records[scene["scene_id"]] = commit_scene(self.run_prefix, scene, tiles, result)

    def finish(self) -> None:
        for scene in self.open.values():  # scenes whose tiles never all came back
            scene_id, uri = scene.record["scene_id"], scene.record["uri"]
            self.failures.append(Failure(scene_id, uri, "", "tiles", "not every tile was processed"))
        self.open.clear()
        self.poll(wait=True)


class OutputWriteError(RrsisError):
    """The output location stopped taking writes mid-run (exit code 1: what was committed is kept)."""

    exit_code = 1


def reserve_cores(cfg: MapConfig, spec: TileSpec, how: str) -> cores.CoreReservation | None:
    """Cores of their own for the inference actors: only on an embedded Ray this run started, without GPUs."""
    if how != "embedded" or not (spec.dedicated_cores and cfg.infer.dedicated_cores):
        return None
    if cfg.ray.num_gpus or cores.machine_has_gpus():
        return None
    return cores.reserve(cfg.infer.pool_size, max(1, math.ceil(cfg.infer.num_cpus)))


def first_scene_key(scenes: list[SceneRef], plan: PlanArgs) -> str:
    """The band list of the first scene that plans (its metadata only): a guess for every scene's bands, so
    an inference actor can measure each next scene ahead of its tiles (a wrong guess costs one more read)."""
    for scene in scenes[:3]:
        try:
            bands = choose_bands(read_info(scene.uri), plan.requested_bands, plan.model_bands, plan.in_bands)
        except Exception:
            continue
        return ",".join(str(b) for b in bands)
    return ""


def run_tiles(ctx: RunContext, spec: TileSpec) -> int:
    """Map every scene of the run with a per-tile model; see the module docstring."""
    cfg = spec.cfg
    full = cfg.overwrite or cfg.verify == "full"
    before = {} if full else committed_scenes(ctx.run_prefix)
    todo = [s for s in ctx.scenes if s.scene_id not in before]
    ctx.timings["list_s"] = time.perf_counter() - ctx.start
    tracker = SceneTracker(ctx.run_prefix, spec, [s.scene_id for s in todo])
    tracker.before = len(before)
    if todo:
        phase = time.perf_counter()
        how = connect_ray(cfg.ray, min_cpus=EMBEDDED_MIN_CPUS)
        ctx.timings["ray_start_s"] = time.perf_counter() - phase
        reserved = reserve_cores(cfg, spec, how)
        ctx.notes["inference_cores"] = [list(g) for g in reserved.groups] if reserved else []
        # keeps the driver and Ray's processes off the inference actors' own cores (rrsis.pipeline.cores)
        fence = cores.Fence(reserved) if reserved else None
        tracker.on_last = fence.lift if fence else tracker.on_last
        compute_start = time.perf_counter()
        res = resources_for(cfg, cluster_gpus(), cluster_cpus())
        bands = first_scene_key(todo, spec.plan)
        order: list[SceneKey] = [(s.uri, bands) for s in todo] if bands else []
        rows = [scene_row(s, verify=not cfg.overwrite) for s in todo]
        log.info("run %s: %d scenes to map, %d committed before", ctx.run_id, len(todo), len(before))
        if fence:
            fence.start()
        try:
            for first in range(0, len(rows), cfg.wave_scenes):  # one Ray Data execution per wave of scenes
                wave = slice(first, first + cfg.wave_scenes)
                dataset = map_dataset(rows[wave], spec.plan, cfg, res, model=spec.model, infer=spec.infer,
                                      reserved=reserved, scene_order=order[wave])  # fmt: skip
                for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                    ctx.lease.check()
                    for i in range(len(batch["key"])):
                        tracker.add({k: v[i] for k, v in batch.items()})
                    tracker.poll()
                del dataset  # its executor's per-block statistics go with it
            tracker.finish()
        except OSError as exc:  # the driver's own writes (manifest parts, commit records)
            if exc.errno not in STORAGE_ERRNOS:
                raise
            raise OutputWriteError(
                f"write: [Errno {exc.errno}] {exc.strerror}: {exc.filename or ''}; {tracker.kept()}"
            ) from exc
        finally:
            if fence:
                fence.lift()
        compute_s = ctx.timings["compute_s"] = time.perf_counter() - compute_start
    else:
        compute_s = 0.0
    earlier = dict(prefetched(lambda scene_id: read_record(before[scene_id]), list(before)))
    records = [tracker.records.get(s.scene_id) or earlier.get(s.scene_id) for s in ctx.scenes]
    committed = [r for r in records if r is not None]
    phase = time.perf_counter()
    manifest_uri = storage.join(ctx.run_prefix, "manifest.parquet")
    counts = write_run_manifest(ctx.run_prefix, [s.scene_id for s in ctx.scenes], manifest_uri, set(before))
    ctx.timings["manifest_s"] = time.perf_counter() - phase
    ctx.failures.extend(tracker.failures)
    counts.update(scenes_resumed=len(before), tiles_verified=tracker.tiles_verified)
    return finish_run(ctx, committed, counts, compute_s, spec.target)
