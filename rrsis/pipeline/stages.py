"""The four stages of `rrsis map` as plain callables over `dict[str, np.ndarray]` batches.

Each runs without Ray (unit tests call them directly); `rrsis.pipeline.build` wires them into Ray Data.
Row columns in: `Tile.to_row()` + `scene_uri`, `bands` ("1,2"), `key`. Each stage adds its columns and a
`<stage>_s` per-tile timing; a tile that fails gets `status="failed"` and a one-line `reason`, travels on
with empty pixels, and is written to failures.parquet by the driver: never silently dropped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from rrsis import storage
from rrsis.checkpoint_header import read_header
from rrsis.data.normalize import scene_measures_needed
from rrsis.data.otsu import gate_spec, gate_water
from rrsis.errors import InputError, RrsisError, StorageError
from rrsis.geo.raster import encode_geotiff, open_raster, read_window
from rrsis.geo.tiling import Tile
from rrsis.pipeline.area import row_pixel_areas_m2
from rrsis.pipeline.cores import CoreClaim
from rrsis.pipeline.plan import sidecar_key
from rrsis.pipeline.refiners import NODATA, make_refiner
from rrsis.pipeline.scene_inputs import SceneKey, SceneMeasurer
from rrsis.resources import release_freed_memory

log = logging.getLogger("rrsis.map")

Batch = dict[str, np.ndarray]
PIXEL_COLUMNS = ("image", "valid", "prob", "mask")


def _rows(batch: Batch) -> int:
    return len(batch["tile_id"])


def _tile(batch: Batch, i: int) -> Tile:
    return Tile.from_row({name: values[i] for name, values in batch.items() if name not in PIXEL_COLUMNS})


def _status(batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    n = _rows(batch)
    status = np.asarray(batch["status"], dtype=object) if "status" in batch else np.full(n, "ok", dtype=object)
    reason = np.asarray(batch["reason"], dtype=object) if "reason" in batch else np.full(n, "", dtype=object)
    return status, reason


#: OS errors of a write that mean the output takes no more writes (full, read-only, no permission): the
#: tile row carries the errno and the driver stops the run with one line instead of failing every tile
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})
RECORD_FIELDS = ("checksum", "bytes", "attempt", "valid_px", "water_px", "valid_m2", "water_m2")


def read_stage(batch: Batch) -> Batch:
    """Read each row's window (boundless, selected bands) -> `image` (B,C,T,T) float32, `valid` (B,T,T).

    A row marked `verify` (its tile has a sidecar from an earlier attempt of the run) is first checked
    (`verify_tile`): when the stored tile matches its sidecar it becomes `skipped`, carries the recorded
    statistics and is not read. Rows of one scene share one open dataset per batch. A read error fails that
    tile only.
    """
    release_freed_memory()  # the previous batch's arrays (see rrsis.resources)
    start = time.perf_counter()
    n = _rows(batch)
    status, reason = _status(batch)
    records = [dict(EMPTY_RECORD) for _ in range(n)]
    if "verify" in batch:
        for k in np.flatnonzero(np.asarray(batch["verify"], dtype=bool) & (status == "ok")):
            record = verify_tile(str(batch["key"][k]))
            if record is not None:
                status[k], records[k] = "skipped", record
    tiles = [_tile(batch, i) for i in range(n)]
    bands = [[int(b) for b in str(text).split(",")] for text in batch["bands"]]
    size = tiles[0].window.height, tiles[0].window.width
    image = np.zeros((n, len(bands[0]), *size), dtype=np.float32)
    valid = np.zeros((n, *size), dtype=bool)
    for uri in dict.fromkeys(str(batch["scene_uri"][i]) for i in range(n) if status[i] == "ok"):
        members = [i for i in range(n) if str(batch["scene_uri"][i]) == uri and status[i] == "ok"]
        try:
            with open_raster(uri) as src:
                for i in members:
                    try:
                        image[i], valid[i] = read_window(src, tiles[i].window, bands[i], "float32")
                    except InputError as exc:
                        status[i], reason[i] = "failed", f"read: {exc}"
        except InputError as exc:
            for i in members:
                status[i], reason[i] = "failed", f"read: {exc}"
    out = dict(batch)
    out.update(image=image, valid=valid, status=status, reason=reason)
    for name in RECORD_FIELDS:
        out[name] = np.asarray([r[name] for r in records])
    out["read_s"] = np.full(n, (time.perf_counter() - start) / n)
    return out


class InferStage:
    """Holds the model (loaded once per actor) and turns `image` into `prob` = P(class 1) (B,T,T) float32.

    Normalisation uses the statistics stored in the checkpoint, or (a `norm=scene`/`otsu` checkpoint) the
    scene's own, measured once per scene and actor; never the tile's own, so tiles agree at their borders. A
    checkpoint with an Otsu gate (`rrsis.data.otsu`) gets P = 0 wherever the gate band (or its median over the
    gate's window: the window's halo lies in the tiles' overlap) is not below the scene's Otsu threshold. Both
    come from one decimated read per scene, taken a scene ahead of the model in a background thread
    (`rrsis.pipeline.scene_inputs`; `scenes` is the run's scene order). The `image` column is dropped: only
    probabilities travel on. `cores`/`core_lock_dir`: the core groups an embedded Ray
    reserved for inference actors; this actor claims one and runs its forwards there (`rrsis.pipeline.cores`).
    `precision` (`infer.precision`, see `rrsis.models.precision`) autocasts the forward; the weights stay fp32.
    """

    def __init__(
        self,
        checkpoint: str,
        device: str = "auto",
        torch_threads: int = 0,
        batch_invariant: bool = True,
        trim_free_mb: int = 0,
        scenes: Sequence[SceneKey] = (),
        cores: Sequence[Sequence[int]] = (),
        core_lock_dir: str = "",
        precision: str = "fp32",
    ) -> None:
        # This actor's own cores, if the run reserved some: the model's load and forwards run there, the
        # scene reads on the other cores.
        self.cores = CoreClaim(cores, core_lock_dir)
        self.cores.pin()
        # A local checkpoint's header names its per-scene needs without torch: the first scene's read then
        # runs beside the torch import and model load.
        header = None if storage.is_remote(checkpoint) else read_header(checkpoint)
        if header is not None:
            needs = scene_measures_needed(header.get("norm", "split"), header.get("gate", ""))
            self.measurer = SceneMeasurer(*needs, scenes, thread_init=self.cores.unpin)
        # torch (through rrsis.checkpoints) is imported here, in the inference actor only: the read and write
        # workers import this module too and would each pay ~400 MB and ~3 s for it; the scene read above
        # starts before it
        import torch

        from rrsis.checkpoints import build_from_checkpoint, load_checkpoint, norm_for_scene, normalize_image
        from rrsis.devices import resolve_device
        from rrsis.models.precision import autocast_for, resolve_precision

        self.normalize_image, self.norm_for_scene = normalize_image, norm_for_scene
        self.autocast_for = autocast_for

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.device = resolve_device(device, key="infer.device")
        self.precision = resolve_precision(precision, self.device)  # "auto": bf16 where native, else fp32
        self.batch_invariant = batch_invariant
        self.trim_free_bytes = int(trim_free_mb) << 20  # see `infer.trim_free_mb` (rrsis.config.map)
        self.ckpt = load_checkpoint(checkpoint)
        self.model = build_from_checkpoint(self.ckpt).to(self.device).eval()
        if header is None:  # a remote or legacy checkpoint: its needs are known only now
            needs = scene_measures_needed(self.ckpt.norm, self.ckpt.gate)
            self.measurer = SceneMeasurer(*needs, scenes, thread_init=self.cores.unpin)
        self.gate, self.gate_median = gate_spec(self.ckpt.gate, self.ckpt.bands, key=f"{checkpoint}: gate")
        self.scenes: dict[SceneKey, tuple[Any, float]] = {}  # scene -> (its statistics, its gate threshold dB)

    def __call__(self, batch: Batch) -> Batch:
        self.cores.pin()  # Ray calls an actor from its own worker thread: pin that one
        release_freed_memory(self.trim_free_bytes)
        start = time.perf_counter()
        n = batch["image"].shape[0]
        status, _ = _status(batch)
        ok = [int(i) for i in np.flatnonzero(status == "ok")]  # failed or resumed rows need no forward
        step = 1 if self.batch_invariant else max(1, len(ok))
        prob = np.zeros(batch["valid"].shape, dtype=np.float32)
        for s in range(0, len(ok), step):  # normalised one forward at a time: no second copy of the block
            rows = ok[s : s + step]
            prob[rows] = self._forward(self._normalized(batch, rows))
        if self.gate is not None:
            band = self.gate
            for i in ok:
                prob[i] = gate_water(prob[i], batch["image"][i][band], self._scene(batch, i)[1], self.gate_median)
        out = {k: v for k, v in batch.items() if k != "image"}
        out["prob"] = prob
        out["infer_s"] = np.full(n, (time.perf_counter() - start) / n)
        return out

    def _normalized(self, batch: Batch, rows: Sequence[int]) -> np.ndarray:
        normalize_image = self.normalize_image
        image, valid = batch["image"], batch["valid"]
        return np.stack([normalize_image(self._scene(batch, i)[0], image[i], valid[i]) for i in rows])

    def _scene(self, batch: Batch, i: int) -> tuple[Any, float]:
        """Row i's scene's (normalisation statistics, gate threshold in dB), from its `SceneMeasures`.

        A scene without measurements (no valid pixel in the decimated read: an all-nodata scene, whose tiles
        then come out as nodata and the scene as "all nodata" in failures.parquet; or a valid area too small
        for the decimation) gets the checkpoint's training-split statistics and no gate, so no tile is lost.
        """
        key = str(batch["scene_uri"][i]), str(batch["bands"][i])
        if key not in self.scenes:
            measures = self.measurer.get(key)
            if measures.error:
                log.warning("scene measurements unavailable (%s); using the checkpoint's training statistics "
                            "and no Otsu gate for it", measures.error)  # fmt: skip
            norm = self.norm_for_scene(self.ckpt, measures)  # the split's own statistics for a split model
            gate_db = float("inf")
            if self.gate is not None and measures.thresholds is not None:
                gate_db = measures.thresholds[self.gate]
            self.scenes[key] = norm, gate_db
        return self.scenes[key]

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.autocast_for(self.precision, self.device):  # weights stay fp32
            logits = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()  # type: ignore[no-any-return]


class RefineStage:
    """Applies the task's refiner (see `rrsis.pipeline.refiners`) -> `mask` (B,T,T) uint8."""

    def __init__(self, task: str, options: dict[str, Any], keep_prob: bool = False) -> None:
        self.refiner = make_refiner(task, options)
        self.keep_prob = keep_prob

    def __call__(self, batch: Batch) -> Batch:
        release_freed_memory()
        start = time.perf_counter()
        out = self.refiner(dict(batch))
        if not self.keep_prob:
            out.pop("prob", None)
        out["refine_s"] = np.full(_rows(batch), (time.perf_counter() - start) / _rows(batch))
        return out


def tile_pixels(mask: np.ndarray, valid: np.ndarray, prob: np.ndarray | None, tile: Tile) -> np.ndarray:
    """The core of one tile as written: band 1 class (0/1/255), optional band 2 round(P*254) (255 nodata)."""
    rows, cols = tile.core.relative_to(tile.window).slices()
    core = mask[rows, cols]
    if prob is None:
        return np.ascontiguousarray(core)
    scaled = np.rint(np.clip(prob[rows, cols], 0.0, 1.0) * 254.0).astype(np.uint8)
    scaled[~valid[rows, cols]] = NODATA
    return np.stack([core, scaled])


def _previous_attempt(key: str) -> int:
    try:
        return int(json.loads(storage.get_bytes(sidecar_key(key))).get("attempt", 0))
    except (StorageError, ValueError):
        return 0


def write_stage(batch: Batch, *, model: str = "") -> Batch:
    """Write each tile's core to its key (atomic, deterministic bytes) and its JSON sidecar after it.

    Returns metadata only (no pixel columns): the manifest row of each tile.
    """
    release_freed_memory()
    n = _rows(batch)
    status, reason = _status(batch)
    out: dict[str, list[Any]] = {name: [] for name in (*RECORD_FIELDS, "write_errno", "write_s")}
    for i in range(n):
        start = time.perf_counter()
        # a resumed (verified) tile keeps the statistics its read stage took from the sidecar
        record = {name: batch[name][i] if name in batch else EMPTY_RECORD[name] for name in RECORD_FIELDS}
        record["write_errno"] = 0
        if status[i] == "ok":
            tile = _tile(batch, i)
            try:
                record.update(_write_one(batch, i, tile, model))
                status[i] = "written"
            except RrsisError as exc:
                status[i], reason[i] = "failed", f"write: {exc}"
            except OSError as exc:  # the output is full, read-only, ...: the driver stops the run on these
                status[i], reason[i] = "failed", f"write: [Errno {exc.errno}] {exc.strerror}: {exc.filename or ''}"
                record["write_errno"] = exc.errno or 0
        record["write_s"] = time.perf_counter() - start
        for name in out:
            out[name].append(record[name])
    meta = {k: v for k, v in batch.items() if k not in PIXEL_COLUMNS}
    meta.update({name: np.asarray(values) for name, values in out.items()})
    meta["status"], meta["reason"] = status.astype(str), reason.astype(str)
    return meta


def _write_one(batch: Batch, i: int, tile: Tile, model: str) -> dict[str, Any]:
    key = str(batch["key"][i])
    prob = batch["prob"][i] if "prob" in batch else None
    pixels = tile_pixels(batch["mask"][i], batch["valid"][i], prob, tile)
    data = encode_geotiff(pixels, tile.core_transform, tile.crs, nodata=NODATA)
    classes = pixels[0] if pixels.ndim == 3 else pixels
    row_area = row_pixel_areas_m2(tile.transform, tile.crs, *tile.core.relative_to(tile.window).to_tuple())
    valid_rows = (classes != NODATA).sum(axis=1)
    water_rows = (classes == 1).sum(axis=1)
    record = {
        "checksum": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "attempt": _previous_attempt(key) + 1,
        "valid_px": int(valid_rows.sum()),
        "water_px": int(water_rows.sum()),
        "valid_m2": float(np.dot(valid_rows, row_area)),
        "water_m2": float(np.dot(water_rows, row_area)),
    }
    storage.put_bytes(key, data)
    storage.put_bytes(sidecar_key(key), json.dumps({**record, "model": model}, sort_keys=True).encode())
    return record


EMPTY_RECORD: dict[str, Any] = {"checksum": "", "bytes": 0, "attempt": 0, "valid_px": 0, "water_px": 0,
                                "valid_m2": 0.0, "water_m2": 0.0}  # fmt: skip


def verify_tile(key: str) -> dict[str, Any] | None:
    """The tile's recorded statistics when its sidecar exists and the stored tile's SHA-256 matches it,
    else None (missing, damaged or unreadable: the tile is computed again)."""
    try:
        record = json.loads(storage.get_bytes(sidecar_key(key)))
        if hashlib.sha256(storage.get_bytes(key)).hexdigest() != record.get("checksum"):
            return None
    except (StorageError, ValueError):
        return None
    return {name: type(EMPTY_RECORD[name])(record.get(name, EMPTY_RECORD[name])) for name in RECORD_FIELDS}


def verify_stage(batch: Batch) -> Batch:
    """Resume check: `done` when the tile's sidecar exists and the tile's SHA-256 matches it.

    A verified tile carries its recorded statistics, so the manifest of a resumed run is complete.
    """
    n = _rows(batch)
    records = [verify_tile(str(batch["key"][i])) for i in range(n)]
    out = dict(batch)
    out["done"] = np.array([r is not None for r in records], dtype=bool)
    for name in RECORD_FIELDS:
        out[name] = np.asarray([(r or EMPTY_RECORD)[name] for r in records])
    return out
