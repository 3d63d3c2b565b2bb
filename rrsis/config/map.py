"""Config of `rrsis map`: scenes -> tiles -> model -> refinement -> products on object storage."""

from __future__ import annotations

from dataclasses import dataclass, field

from rrsis.config.boxes import BoxesConfig
from rrsis.config.common import RayConfig, StorageConfig
from rrsis.config.fields import bounded, choice
from rrsis.config.referring import ReferringConfig
from rrsis.errors import ConfigError
from rrsis.geo.units import ALLOWED_UNITS, is_known_unit


@dataclass
class TilingConfig:
    tile_px: int = bounded(512, 16, 8192)
    overlap_px: int = bounded(64, 0, 4096)
    # "crop": each tile keeps only its core, the overlap is context for the model (measured in
    # tests/test_pipeline_seams.py against a whole-image forward). Blending is not implemented: with enough
    # context the crop already matches the whole-image forward, and it needs no cross-tile state.
    blend: str = choice("crop", "crop")

    def validate(self, prefix: str) -> None:
        if self.overlap_px >= self.tile_px:
            raise ConfigError(
                f"config error: key '{prefix}overlap_px': value {self.overlap_px} must be smaller than "
                f"{prefix}tile_px ({self.tile_px})"
            )


@dataclass
class InferConfig:
    checkpoint: str = "models/waterland_demo/model.pt"
    batch_size: int = bounded(4, 1, 1024)
    pool_size: int = bounded(1, 1, 4096)
    num_gpus: float = bounded(-1.0, -1.0, 8.0)  # -1: one GPU per actor when the cluster has GPUs, else CPU
    num_cpus: float = bounded(1.0, 0.0, 256.0)
    device: str = choice("auto", "auto", "cpu", "cuda")
    threshold: float = bounded(0.5, 0.0, 1.0)  # water where P(water) >= threshold
    torch_threads: int = bounded(0, 0, 256)  # 0: one per CPU the actor holds (at least 1)
    # Arithmetic of every model stage (water-land, DANet, SAM's image encoder), through autocast; checkpoints
    # stay fp32. auto: bf16 where the hardware runs it natively (a CPU with AMX, a CUDA device with bf16),
    # else fp32, said once in the log. bf16 and fp16 change the masks' last bits, so they enter the run id.
    precision: str = choice("auto", "auto", "fp32", "bf16", "fp16")
    # Forward tiles one at a time: a tile's output then never depends on which tiles share its batch, so
    # reruns and retries are byte-identical (batched CPU convolutions differ in the last float bits).
    # Set false on GPUs for throughput.
    batch_invariant: bool = True
    # The water-land inference actor gives freed heap back to the OS (malloc_trim) before a batch only when
    # glibc holds at least this many MB free; 0 = before every batch. Every trim makes the next forwards
    # fault their pages in again: the demo model's 512 px batches leave 150-200 MB free, and trimming it
    # before each batch made a 4-scene map 11 % slower (bench/map_overhead.py: 350 s vs 312 s). With 512
    # the heap is reused and trimmed only if fragmentation grows past 512 MB; bench/map_memory.py's peak
    # stayed 2.42 GB either way (the actor peaks during its forward, trimmed or not).
    trim_free_mb: int = bounded(512, 0, 1 << 20)
    # The water-land and DANet CPU inference actors start with glibc's malloc set to reuse their heap
    # forward after forward (`rrsis.resources.HEAP_REUSE_TUNABLES`, a runtime_env variable of the infer
    # stage): about 15 % less time per forward of the demo model here, none of it spent faulting pages in.
    # Not with GPUs; the SAM tasks (boxes, referring) keep the default allocator.
    reuse_heap: bool = True
    # On an embedded Ray without GPUs: each inference actor runs its model on cores of its own (pool_size x
    # num_cpus of them, if at least one core is left) and every other process on the rest
    # (`rrsis.pipeline.cores`). Ignored on a cluster (RAY_ADDRESS / ray.address) and with GPUs.
    dedicated_cores: bool = True


@dataclass
class RefineConfig:
    enabled: bool = True
    pool_size: int = bounded(1, 1, 4096)
    num_cpus: float = bounded(1.0, 0.0, 256.0)
    open_px: int = bounded(0, 0, 64)  # morphological opening radius; 0 = off
    min_mapping_unit_px: int = bounded(0, 0)  # remove connected regions smaller than this; 0 = off


@dataclass
class OutputsConfig:
    tiles: bool = True
    mosaic: bool = True
    vectors: bool = True
    quicklook: bool = True
    probability: bool = False  # add band 2 to tiles and mosaic: round(P(water) * 254), 255 = nodata
    report: bool = True  # report.html, a STAC catalog and GeoParquet polygons beside the run (rrsis.report)


@dataclass
class MapConfig:
    task: str = choice("waterland", "waterland", "boxes", "referring")
    input: list[str] = field(default_factory=lambda: ["data/samples/sen1floods11/S1Hand/Spain_7370579_S1Hand.tif"])
    output: str = "outputs"
    run_id: str = ""  # empty: a deterministic id from the config and inputs
    bands: list[str] = field(default_factory=list)  # names or 1-based indexes; empty: the model's band list
    # The unit of input bands that do not declare one (every band of a plain raster; a STAC asset without a
    # raster:bands unit), converted on read to the model's (dB for the SAR models): db, linear (power),
    # amplitude, reflectance, 1; "" = plain rasters are in the model's units already, STAC assets follow
    # their catalog's conventions (SAR: linear power). Spellings: rrsis.geo.units.UNITS.
    units: str = ""
    # digital numbers -> values as value * input_scale + input_offset (plain rasters; STAC assets without a
    # raster:bands scale/offset), e.g. Sentinel-2 L2A from processing baseline 04.00: 0.0001 and -0.1
    input_scale: float = 1.0
    input_offset: float = 0.0
    # the CRS of the GCPs of rasters georeferenced only by GCPs that carry no CRS (e.g. EPSG:4326)
    gcp_crs: str = ""
    # the grid such rasters are warped to: a CRS ("" = the UTM zone of the scene centre) and a pixel size in
    # its units (0 = the native pixel size)
    gcp_warp_crs: str = ""
    gcp_warp_res: float = bounded(0.0, 0.0)
    resume: bool = True
    overwrite: bool = False
    # resume: "quick" skips every scene with a commit record (`<run>/_commits/`) without reading its tiles and
    # verifies tiles only of scenes that were in flight; "full" re-verifies every tile of every scene
    verify: str = choice("quick", "quick", "full")
    # one driver per run folder: a lease (`<run>/_lease.json`) not refreshed for this long is taken over
    lease_stale_s: float = bounded(120.0, 2.0, 86400.0)
    # a Ray Data execution (a wave) takes scenes up to `wave_scenes` and about `wave_rows` work rows (tiles,
    # box windows; counted as they come, the first wave estimated from the first scene): the driver's
    # memory follows one wave, not the run. Each wave loads the model again: on GPUs, whose waves are short,
    # raise wave_rows (the driver holds ~1.5 KB a row of its wave). Resource-like: never in the run id
    wave_scenes: int = bounded(64, 1, 1_000_000)
    wave_rows: int = bounded(8192, 1, 1_000_000_000)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    boxes: BoxesConfig = field(default_factory=BoxesConfig)  # task: boxes (box file, SAM, CFPG/MBO)
    query: str = ""  # task: referring: the expression to map
    # task: referring: grounding boxes -> SAM (pslg_sam, referring.checkpoint) or DANet masks per tile (danet,
    # referring.danet)
    method: str = choice("pslg_sam", "pslg_sam", "danet")
    referring: ReferringConfig = field(default_factory=ReferringConfig)  # task: referring (grounding model)
    read_num_cpus: float = bounded(1.0, 0.0, 256.0)  # per read task (windowed GDAL reads)
    write_num_cpus: float = bounded(1.0, 0.0, 256.0)  # per write task (encode + PUT one mask tile per row)
    products_num_cpus: float = bounded(1.0, 0.0, 256.0)  # per scene's products task (mosaic, vectors, quicklook)
    storage: StorageConfig = field(default_factory=StorageConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self, prefix: str) -> None:
        """`units`, `gcp_crs` and `gcp_warp_crs` name something the readers know (one line naming the key)."""
        if self.units and not is_known_unit(self.units):
            raise ConfigError(
                f"config error: key '{prefix}units': unknown unit {self.units!r}; allowed: {ALLOWED_UNITS}, "
                "or empty for the model's own"
            )
        for key, text in (("gcp_crs", self.gcp_crs), ("gcp_warp_crs", self.gcp_warp_crs)):
            if not text:
                continue
            # rasterio (GDAL) only for these keys, so loading a config imports no GDAL unless one is set
            from rasterio.crs import CRS
            from rasterio.errors import CRSError

            try:
                CRS.from_user_input(text)
            except CRSError as exc:
                raise ConfigError(
                    f"config error: key '{prefix}{key}': {text!r} is not a CRS; e.g. {key}=EPSG:4326"
                ) from exc
