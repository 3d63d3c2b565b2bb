"""The one streaming executor of `rrsis map`: scenes in, per-scene commits out, for every task.

A task (`MapTask`) says only what is specific to it: how a wave of scene rows becomes a Ray dataset of result
rows (its plan, each scene expanded into work rows on a worker, and its stage chain), how a result row
becomes manifest rows (`PartFormat`: tiles, or boxes), its per-scene products, and its summary figures. The
tile tasks (water-land, referring with DANet) build theirs from a `TileSpec` (`tile_task`); `boxes` and
`referring/pslg_sam` in `run_boxes` and `run_referring`.

Scenes go through Ray Data in waves (`rrsis.pipeline.waves`), one dataset execution each: Ray Data's executor keeps
statistics of every block it ever produced until its execution ends (`MapOperator._output_blocks_stats`),
which made one execution's driver grow with the tile count (bench/map_scale: 414 MB at 10 k tiles, 691 MB
at 200 k). A wave starts its own actor pool (seconds per wave: the model loads again).

Only scene rows enter Ray Data; each scene expands into its work rows on a worker. Results stream back to
the driver, which keeps per scene only the manifest rows of the scenes in flight (`SceneTracker`): once a
scene's last work row is out its products start (a Ray task, overlapping the next scenes' inference), and
once they are done the scene is committed (`rrsis.pipeline.commit`) and forgotten. A rerun skips committed
scenes without touching their tiles and verifies work rows only of scenes that were in flight. The run's
`manifest.parquet`, `failures.parquet` and `summary.json` are built from the commits.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import ray
import ray.data

from rrsis import storage
from rrsis.config.map import MapConfig
from rrsis.errors import RrsisError
from rrsis.pipeline import cores
from rrsis.pipeline.build import (
    PipelineResources,
    ProductsFn,
    background_task,
    cluster_cpus,
    cluster_gpus,
    map_dataset,
    products_task,
    resources_for,
)
from rrsis.pipeline.commit import (
    TILE_PARTS,
    PartFormat,
    commit_scene,
    committed_scenes,
    part_key,
    prefetched,
    read_record,
    write_run_manifest,
)
from rrsis.pipeline.context import RunContext, SummaryFormat, finish_run, off_driver
from rrsis.pipeline.inputs import SceneRef
from rrsis.pipeline.manifest import MANIFEST_SCHEMA, table_bytes
from rrsis.pipeline.plan import Failure, PlanArgs, one_line, scene_row
from rrsis.pipeline.products import scene_products
from rrsis.pipeline.scene_inputs import SceneKey
from rrsis.pipeline.stages import STORAGE_ERRNOS
from rrsis.pipeline.waves import first_scene_key, tiles_estimate, wave_size
from rrsis.session import EMBEDDED_MIN_CPUS, connect_ray, release_free_memory

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


@dataclass(frozen=True)
class Launch:
    """What a wave's dataset is built with: the stage resources, the inference actors' reserved cores, and
    the wave's scenes (URI, bands) in the order they enter (an actor measures the next scene ahead)."""

    res: PipelineResources
    reserved: cores.CoreReservation | None = None
    scene_order: Sequence[SceneKey] = ()


def all_cpus_resources(cfg: MapConfig) -> PipelineResources:
    """The stage resources on the connected cluster, checked against its CPUs (every pool must fit)."""
    return resources_for(cfg, cluster_gpus(), cluster_cpus(), reuse_heap=cfg.infer.reuse_heap)


def no_scene_order(scenes: list[SceneRef]) -> list[SceneKey]:
    return []


def no_problem(scene: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    return ""


@dataclass(frozen=True)
class MapTask:
    """A map task as the shared executor runs it; planning, waves, resume, commits, failures, manifests and
    summaries are the executor's."""

    cfg: MapConfig  # the run's config
    dataset: Callable[[list[dict[str, Any]], Launch], ray.data.Dataset]  # a wave's scene rows -> result rows
    manifest_rows: Callable[[dict[str, Any]], list[dict[str, Any]]]  # one result (work) row -> its manifest rows
    summary: SummaryFormat
    parts: PartFormat = TILE_PARTS
    products: ProductsFn = scene_products  # per scene, on a Ray worker, once every work row is out
    extra_products: tuple[Callable[..., dict[str, Any]], dict[str, Any]] | None = None  # after `products`
    scene_problem: Callable[[dict[str, Any], list[dict[str, Any]]], str] = no_problem  # why a scene is no result
    resources: Callable[[MapConfig], PipelineResources] = all_cpus_resources
    scene_order: Callable[[list[SceneRef]], list[SceneKey]] = no_scene_order
    dedicated_cores: bool = False  # may reserve cores for the inference actors (embedded Ray, no GPU)
    quicklook: bool = True  # its products draw `outputs.quicklook` (the background is read ahead)
    ledger: str = ""  # the run's sub-folder for `_commits/`, `manifest/` and `manifest.parquet` (a first phase)
    rows_estimate: Callable[[list[SceneRef]], float] | None = None  # work rows a scene makes, for the first wave


@dataclass
class OpenScene:
    """A scene with work rows in flight: its grid (from its first row), the manifest rows of each work row
    so far (by the work row's key, last attempt wins), and failures its plan reported (`notes`)."""

    record: dict[str, Any]
    expected: int
    done: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[Failure] = field(default_factory=list)


@dataclass
class Outcome:
    """What one execution left: the commit records of the scenes (this run's and earlier ones, in scene
    order), the manifest's row counts, and the compute time."""

    records: list[dict[str, Any]]
    counts: dict[str, int]
    compute_s: float


def scene_from_row(row: dict[str, Any], run_prefix: str) -> dict[str, Any]:
    """The plain-data scene record that products need, from any of the scene's work rows."""
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


def row_notes(row: dict[str, Any]) -> list[Failure]:
    """Failures a scene's plan reported on one of its rows (`notes`: JSON [[id, stage, reason], ...]), e.g. a
    box outside the scene: the scene is still a result, and its commit record keeps them."""
    text = str(row.get("notes") or "")
    uri = str(row["scene_uri"])
    return [Failure(str(row["scene_id"]), uri, str(i), str(st), str(r)) for i, st, r in json.loads(text or "[]")]


class SceneTracker:
    """The driver's per-scene state while results stream in; memory follows the scenes in flight.

    `add` takes each result row; a scene's products task starts when its last work row is out; `poll`
    commits the scenes whose products are done; `finish` waits for the rest. A scene with failed rows (or a
    `scene_problem`, e.g. all nodata) gets failures (and its manifest part) instead of products and a commit,
    so a rerun retries it. `books`: where the commits and manifest parts go (the run, or a phase's folder).
    """

    def __init__(
        self,
        run_prefix: str,
        task: MapTask,
        scene_ids: list[str],
        on_last: Callable[[], None] = lambda: None,
        books: str = "",
    ) -> None:
        """`on_last` runs before the last scene's products start (every forward is done by then)."""
        self.run_prefix, self.task, self.on_last = run_prefix, task, on_last
        self.books = books or run_prefix
        self.outputs = asdict(task.cfg.outputs)
        self.num_cpus = task.cfg.products_num_cpus
        self.unresolved = set(scene_ids)  # scenes whose work rows are not all out yet
        self.open: dict[str, OpenScene] = {}
        self.backgrounds: dict[str, Any] = {}
        self.pending: dict[str, tuple[OpenScene, list[dict[str, Any]], Any]] = {}
        self.records: dict[str, dict[str, Any]] = {}  # this run's commit records (counts and products)
        self.failures: list[Failure] = []
        self.tiles_verified = 0  # manifest rows verified from an earlier attempt (tiles, or boxes)
        self.before = 0  # scenes committed before this run

    def add(self, row: dict[str, Any]) -> None:
        scene_id = str(row["scene_id"])
        if not str(row["tile_id"]) and str(row["status"]) == "failed":  # the scene could not be planned
            self.failures.append(Failure(scene_id, str(row["scene_uri"]), "", "plan", str(row["reason"])))
            self._resolved(scene_id)
            return
        if int(row.get("write_errno", 0)) in STORAGE_ERRNOS:  # the output takes no more writes: stop here
            raise OutputWriteError(f"{row['reason']}; {self.kept()}")
        scene = self.open.get(scene_id)
        if scene is None:
            scene = self.open[scene_id] = OpenScene(scene_from_row(row, self.run_prefix), int(row["scene_tiles"]))
            if self.task.quicklook and self.outputs.get("quicklook"):  # under way: read its background now
                self.backgrounds[scene_id] = background_task(scene.record, self.num_cpus)
        scene.notes += row_notes(row)
        if str(row["tile_id"]):  # else: a scene without work rows (e.g. no boxes), a result all the same
            rows = self.task.manifest_rows(row)
            self.tiles_verified += sum(m["status"] == "skipped" for m in rows)
            scene.done[str(row["key"])] = rows
        if len(scene.done) == scene.expected:
            self._tiles_done(self.open.pop(scene_id))

    def kept(self) -> str:
        return (f"kept {len(self.records) + self.before} committed scenes in {self.run_prefix}: rerun the same "
                "command to resume once the output takes writes")  # fmt: skip

    def _tiles_done(self, scene: OpenScene) -> None:
        record, parts = scene.record, self.task.parts
        rows = parts.conform(m for ms in scene.done.values() for m in ms).to_pylist()
        bad = [t for t in rows if t["status"] == "failed"]
        failure = ""
        self.failures.extend(scene.notes)
        if bad:
            self.failures.extend(
                Failure(record["scene_id"], record["uri"], str(t[parts.id_column]), parts.row_stage, str(t["reason"]))
                for t in bad
            )
            failure = f"{len(bad)} of {len(rows)} {parts.unit} failed"
            self.failures.append(Failure(record["scene_id"], record["uri"], "", parts.unit, failure))
        elif failure := self.task.scene_problem(record, rows):
            self.failures.append(Failure(record["scene_id"], record["uri"], "", "stats", failure))
        background = self.backgrounds.pop(record["scene_id"], None)
        self._resolved(record["scene_id"])
        if failure:  # its manifest part (the run manifest lists every row), but no commit: a rerun retries it
            self._uncommitted_part(record, rows)
            return
        ref = products_task(record, rows, self.outputs, background, self.num_cpus, self.task.extra_products,
                            self.task.products)  # fmt: skip
        self.pending[record["scene_id"]] = (scene, rows, ref)

    def _uncommitted_part(self, scene: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """A failed scene's manifest part (the run manifest lists every row) without a commit record."""
        data = table_bytes(self.task.parts.conform(rows))
        storage.put_bytes(part_key(self.books, scene["scene_id"]), data)

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
            for scene_id, (scene, rows, ref) in list(self.pending.items()):
                if ref in done:
                    del self.pending[scene_id]
                    self._commit(scene, rows, ref)
            if not wait:
                return

    def _commit(self, scene: OpenScene, rows: list[dict[str, Any]], ref: Any) -> None:
        record = scene.record
        try:
            result = ray.get(ref)
        except Exception as exc:  # a products task failing must not lose the other scenes
            reason = one_line(exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause else exc)
            self.failures.append(Failure(record["scene_id"], record["uri"], "", "products", reason))
            self._uncommitted_part(record, rows)
            return
        notes = [f.to_row() for f in scene.notes]
        self.records[record["scene_id"]] = commit_scene(self.books, record, rows, result, self.task.parts, notes)

    def finish(self) -> None:
        for scene in self.open.values():  # scenes whose work rows never all came back
            scene_id, uri = scene.record["scene_id"], scene.record["uri"]
            self.failures.append(Failure(scene_id, uri, "", "tiles", "not every tile was processed"))
        self.open.clear()
        self.poll(wait=True)


class OutputWriteError(RrsisError):
    """The output location stopped taking writes mid-run (exit code 1: what was committed is kept)."""

    exit_code = 1


def reserve_cores(cfg: MapConfig, task: MapTask, how: str) -> cores.CoreReservation | None:
    """Cores of their own for the inference actors: only on an embedded Ray this run started, without GPUs."""
    if how != "embedded" or not (task.dedicated_cores and cfg.infer.dedicated_cores):
        return None
    if cfg.ray.num_gpus or cores.machine_has_gpus():
        return None
    return cores.reserve(cfg.infer.pool_size, max(1, math.ceil(cfg.infer.num_cpus)))


def execute(ctx: RunContext, task: MapTask, scenes: list[SceneRef] | None = None) -> Outcome:
    """Map `scenes` (default: the run's) with `task`, committing scene by scene; see the module docstring.
    Failures go to `ctx.failures` (those of scenes committed before this run come from their records)."""
    cfg = task.cfg
    scenes = ctx.scenes if scenes is None else scenes
    books = storage.join(ctx.run_prefix, task.ledger) if task.ledger else ctx.run_prefix
    phase = f"{task.ledger}_" if task.ledger else ""  # the timings' names of a phase
    full = cfg.overwrite or cfg.verify == "full"
    before = {} if full else committed_scenes(books)
    todo = [s for s in scenes if s.scene_id not in before]
    ctx.timings[f"{phase}list_s"] = time.perf_counter() - ctx.start
    tracker = SceneTracker(ctx.run_prefix, task, [s.scene_id for s in todo], books=books)
    tracker.before = len(before)
    compute_s = 0.0
    if todo:
        start = time.perf_counter()
        how = connect_ray(cfg.ray, min_cpus=EMBEDDED_MIN_CPUS)
        ctx.timings[f"{phase}ray_start_s"] = time.perf_counter() - start
        reserved = reserve_cores(cfg, task, how)
        ctx.notes["inference_cores"] = [list(g) for g in reserved.groups] if reserved else []
        # keeps the driver and Ray's processes off the inference actors' own cores (rrsis.pipeline.cores)
        fence = cores.Fence(reserved) if reserved else None
        tracker.on_last = fence.lift if fence else tracker.on_last
        compute_start = time.perf_counter()
        res = task.resources(cfg)
        order = task.scene_order(todo)
        rows = [scene_row(s, verify=not cfg.overwrite) for s in todo]
        log.info("run %s: %d scenes to map, %d committed before", ctx.run_id, len(todo), len(before))
        if fence:
            fence.start()
        try:
            first, seen = 0, 0
            per_scene = task.rows_estimate(todo) if task.rows_estimate else 0.0
            while first < len(rows):  # one Ray Data execution per wave of scenes
                wave = slice(first, first + wave_size(cfg, per_scene))
                first = wave.stop
                dataset = task.dataset(rows[wave], Launch(res, reserved, order[wave]))
                for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                    ctx.lease.check()
                    seen += len(batch["key"])
                    for i in range(len(batch["key"])):
                        tracker.add({k: v[i] for k, v in batch.items()})
                    tracker.poll()
                del dataset  # its executor's per-block statistics go with it
                release_free_memory()
                per_scene = seen / min(first, len(rows))  # measured: the next waves' size
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
        compute_s = ctx.timings[f"{phase}compute_s"] = time.perf_counter() - compute_start
    earlier = dict(prefetched(lambda scene_id: read_record(before[scene_id]), list(before)))
    records = [tracker.records.get(s.scene_id) or earlier.get(s.scene_id) for s in scenes]
    start = time.perf_counter()
    manifest_uri = storage.join(books, "manifest.parquet")
    ids = [s.scene_id for s in scenes]
    counts = off_driver(write_run_manifest, books, ids, manifest_uri, set(before), task.parts)
    ctx.timings[f"{phase}manifest_s"] = time.perf_counter() - start
    for scene in scenes:  # failures a committed scene reported (its plan's), in scene order
        if scene.scene_id in earlier:
            ctx.failures.extend(Failure(**f) for f in earlier[scene.scene_id].get("failures", []))
    ctx.failures.extend(tracker.failures)
    unit = task.parts.unit
    counts.update({"scenes_resumed": len(before), f"{unit}_verified": tracker.tiles_verified})
    return Outcome([r for r in records if r is not None], counts, compute_s)


def run_task(ctx: RunContext, task: MapTask) -> int:
    """Map every scene of the run with `task`, then failures.parquet, summary.json and the console summary."""
    out = execute(ctx, task)
    return finish_run(ctx, out.records, out.counts, out.compute_s, task.summary)


# The tile tasks: one mask tile per tile row (water-land, referring with DANet).


def tile_manifest_row(row: dict[str, Any], *, model: str) -> list[dict[str, Any]]:
    """A tile task's manifest row of one result row (the model tag added)."""
    tile = {name: _plain(row[name]) for name in MANIFEST_SCHEMA.names if name in row}
    tile["model"] = model
    return [tile]


def all_nodata(scene: dict[str, Any], tiles: list[dict[str, Any]]) -> str:
    """A tile scene whose every tile is nodata is no result."""
    return "" if sum(int(t["valid_px"]) for t in tiles) else f"scene {scene['uri']} is all nodata"


def tile_task(spec: TileSpec) -> MapTask:
    """The executor's task for a tile spec: the water-land chain (`build.map_dataset`) with its model."""
    cfg, plan = spec.cfg, spec.plan

    def dataset(rows: list[dict[str, Any]], launch: Launch) -> ray.data.Dataset:
        return map_dataset(rows, plan, cfg, launch.res, model=spec.model, infer=spec.infer,
                           reserved=launch.reserved, scene_order=launch.scene_order)  # fmt: skip

    def scene_order(scenes: list[SceneRef]) -> list[SceneKey]:
        bands = first_scene_key(scenes, plan)
        return [(s.uri, bands) for s in scenes] if bands else []

    return MapTask(
        cfg,
        dataset,
        functools.partial(tile_manifest_row, model=spec.model),
        SummaryFormat(spec.target),
        extra_products=spec.extra_products,
        scene_problem=all_nodata,
        scene_order=scene_order,
        dedicated_cores=spec.dedicated_cores,
        rows_estimate=functools.partial(tiles_estimate, plan=plan),
    )


def run_tiles(ctx: RunContext, spec: TileSpec) -> int:
    """Map every scene of the run with a per-tile model (a tile task); see the module docstring."""
    return run_task(ctx, tile_task(spec))
